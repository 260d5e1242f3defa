# lxd-driver: thin entry points; the work is in scripts/.
SHELL := /bin/bash
DENO = $(shell scripts/ensure-deno.sh)
export DENO_NO_UPDATE_CHECK := 1

.PHONY: test demo build install check fmt lint setup bench clean

## test: set up LXD, Incus and Deno, then run every test (unit, contract; end-to-end on LXD and on Incus)
test: setup
	scripts/test.sh "$(DENO)"

## demo: set up LXD and Deno, then run a sample CI job through every stage and show its log
demo: setup
	"$(DENO)" run -q -A scripts/demo.ts

## bench: set up, then time lxd-driver against raw lxc and GitLab's example driver; writes BENCHMARKS.md
##   (LXD_DRIVER_BENCH_EXAMPLE: a directory with GitLab's example LXD driver scripts, driver.sh among them)
bench: setup
	"$(DENO)" run -q -A scripts/bench.ts

## setup: install and start what the tests need (Deno, LXD, storage pool, test images; Incus as image
##   server and second daemon; LXD over HTTPS as the remote lxd-driver-https, project lxd-driver-test)
setup:
	@scripts/ensure-deno.sh >/dev/null
	scripts/setup-lxd.sh
	scripts/setup-image-server.sh
	scripts/setup-remote.sh

## check: formatting, lint and type checks
check:
	"$(DENO)" fmt --check
	"$(DENO)" lint
	"$(DENO)" check mod.ts lib stages tests scripts

fmt:
	"$(DENO)" fmt

## build: compile the binary for x86_64 and aarch64 Linux into dist/ (honours DENORT_BIN)
build:
	scripts/build.sh "$(DENO)"

## install: put the binary for this machine in /opt/lxd-driver/
install:
	scripts/install.sh

clean:
	rm -rf dist .tools
