/** End-to-end: limits, job requests, security, host caches and job prerequisites, against real LXD. */
import assert from "node:assert/strict";
import { Job, runnerScript } from "../runner.ts";
import {
  BUSYBOX,
  exists,
  instanceConfig,
  lxdAvailable,
  settingsFile,
  uniqueJobId,
} from "../lxd.ts";

const ignore = !(await lxdAvailable());

interface Options {
  settings: string;
  variables?: Record<string, string>;
  projectId?: number;
  concurrent?: string;
}

async function withJob(
  options: Options,
  fn: (job: Job, name: string) => Promise<void>,
): Promise<void> {
  const jobId = uniqueJobId();
  const job = await Job.create({
    jobId,
    projectId: options.projectId ?? 1,
    env: { LXD_DRIVER_CONFIG: options.settings },
    variables: { CI_CONCURRENT_PROJECT_ID: options.concurrent ?? "0", ...options.variables },
  });
  const name = `runner-1-project-${options.projectId ?? 1}-concurrent-${
    options.concurrent ?? "0"
  }-job-${jobId}`;
  try {
    await fn(job, name);
  } finally {
    await job.cleanup();
    await job.remove();
  }
}

/** Prints CPUs, the memory limit and the process limit, for cgroup v2 or v1 hosts. */
const SHOW_LIMITS = `nproc
cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes
cat /sys/fs/cgroup/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids/pids.max`;

Deno.test({
  name: "resource limits apply to every container and are visible inside it",
  ignore,
  async fn() {
    const settings = await settingsFile(`[limits]\ncpu = 1\nmemory = "300MiB"\nprocesses = 300\n`);
    await withJob({ settings }, async (job, name) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      const run = await job.run(
        runnerScript(SHOW_LIMITS),
        "step_script",
      );
      assert.equal(run.code, 0, run.stderr);
      assert.deepEqual(run.stdout.trim().split("\n"), ["1", String(300 * 2 ** 20), "300"]);
      const config = await instanceConfig(name);
      assert.equal(config["limits.cpu"], "1");
      assert.equal(config["security.privileged"], undefined);
    });
  },
});

Deno.test({
  name: "jobs may ask for CPUs and memory within the maximums, and are refused beyond them",
  ignore,
  async fn() {
    const settings = await settingsFile(`[limits]\ncpu = 1\nmax_cpu = 2\nmax_memory = "1GiB"\n`);
    await withJob({ settings, variables: { LXD_CPU: "2", LXD_MEMORY: "512MiB" } }, async (job) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      const run = await job.run(runnerScript(SHOW_LIMITS), "step_script");
      assert.deepEqual(run.stdout.trim().split("\n").slice(0, 2), ["2", String(512 * 2 ** 20)]);
    });
    for (
      const [variables, reason] of [
        [{ LXD_CPU: "3" }, /LXD_CPU asks for more than this runner's maximum of 2 CPUs/],
        [{ LXD_MEMORY: "2GiB" }, /LXD_MEMORY asks for more than this runner's maximum of 1GiB/],
        [{ LXD_CPU: "1; limits.cpu=64" }, /LXD_CPU must be a whole number/],
        [{ LXD_MEMORY: "lots" }, /LXD_MEMORY must be a size/],
      ] as const
    ) {
      await withJob({ settings, variables }, async (job, name) => {
        const prepare = await job.prepare();
        assert.equal(prepare.code, 1, prepare.stderr);
        assert.match(prepare.stderr, reason);
        assert.ok(!prepare.stderr.includes("limits.cpu=64"), "the value is not echoed");
        assert.equal(await exists(name), false);
      });
    }
  },
});

Deno.test({
  name: "nesting is applied when enabled, and privileged is refused without allow_privileged",
  ignore,
  async fn() {
    await withJob({ settings: await settingsFile(`nesting = true\n`) }, async (job, name) => {
      assert.equal((await job.prepare()).code, 0);
      assert.equal((await instanceConfig(name))["security.nesting"], "true");
    });
    await withJob({ settings: await settingsFile(`privileged = true\n`) }, async (job, name) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 2);
      assert.match(prepare.stderr, /privileged = true needs \[instance\] allow_privileged = true/);
      assert.equal(await exists(name), false);
    });
  },
});

Deno.test({
  name: "the host cache dir survives the container, per project, and per slot when asked",
  ignore,
  async fn() {
    const hostDir = await Deno.makeTempDir({ prefix: "lxd-driver-cache-" });
    const settings = await settingsFile(`[cache]\nhost_dir = "${hostDir}"\n`);
    const write = runnerScript(`echo "$MARK" > /cache/mark; ls -la /cache; ls /cache/.. `, {
      MARK: "project-1",
    });
    await withJob({ settings, projectId: 11 }, async (job) => {
      assert.equal((await job.prepare()).code, 0);
      const run = await job.run(write, "archive_cache");
      assert.equal(run.code, 0, run.stdout + run.stderr);
    });
    assert.equal(await Deno.readTextFile(`${hostDir}/11/mark`), "project-1\n");

    // The next job of the same project sees it; another project does not, and cannot reach it.
    await withJob({ settings, projectId: 11 }, async (job) => {
      assert.equal((await job.prepare()).code, 0);
      const run = await job.run(runnerScript("cat /cache/mark"), "restore_cache");
      assert.equal(run.stdout.trim(), "project-1");
    });
    await withJob({ settings, projectId: 12 }, async (job) => {
      assert.equal((await job.prepare()).code, 0);
      const run = await job.run(
        runnerScript(
          `ls -A /cache; test ! -e /cache/mark; find / -xdev -name mark 2>/dev/null | grep . && exit 1; echo isolated`,
        ),
        "restore_cache",
      );
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.match(run.stdout, /isolated/);
      const link = await job.run(
        runnerScript("ln -s ../11 /cache/evil; cat /cache/evil/mark || echo blocked"),
        "x",
      );
      assert.match(link.stdout, /blocked/);
    });
    assert.equal(await Deno.readTextFile(`${hostDir}/11/mark`), "project-1\n");

    const perSlot = await settingsFile(`[cache]\nhost_dir = "${hostDir}"\nper_slot = true\n`);
    await withJob({ settings: perSlot, projectId: 11, concurrent: "3" }, async (job) => {
      assert.equal((await job.prepare()).code, 0);
      const run = await job.run(
        runnerScript("test ! -e /cache/mark && echo slot > /cache/slot"),
        "archive_cache",
      );
      assert.equal(run.code, 0, run.stdout + run.stderr);
    });
    assert.equal(await Deno.readTextFile(`${hostDir}/11-slot-3/slot`), "slot\n");
    await Deno.remove(hostDir, { recursive: true });
  },
});

Deno.test({
  name: "prepare pushes the host's gitlab-runner and CA bundle into images that lack them",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lxd-driver-helper-" });
    await Deno.writeTextFile(
      `${dir}/gitlab-runner`,
      '#!/bin/sh\necho "stand-in gitlab-runner $*"\n',
      { mode: 0o755 },
    );
    const ca = await Deno.readTextFile("/etc/ssl/certs/ca-certificates.crt").catch(() => "");
    const pem = ca.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/)?.[0];
    assert.ok(pem, "the host has a CA bundle to borrow a certificate from");
    await Deno.writeTextFile(`${dir}/ca.pem`, pem);
    const settings = await settingsFile(
      `[helper]\ngitlab_runner = "${dir}/gitlab-runner"\nca_file = "${dir}/ca.pem"\n`,
    );
    await withJob({ settings }, async (job) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.match(prepare.stderr, /Added gitlab-runner/);
      const run = await job.run(
        runnerScript(
          `gitlab-runner artifacts-uploader; grep -c 'BEGIN CERTIFICATE' /usr/local/share/ca-certificates/lxd-driver-ca.crt; ls /etc/ssl/certs | grep -c lxd-driver-ca`,
        ),
        "upload_artifacts_on_success",
      );
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.deepEqual(run.stdout.trim().split("\n"), [
        "stand-in gitlab-runner artifacts-uploader",
        "1",
        "1",
      ]);
    });
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "the CA bundle reaches the trust store of an image without update-ca-certificates",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lxd-driver-ca-" });
    const ca = await Deno.readTextFile("/etc/ssl/certs/ca-certificates.crt");
    const pem = ca.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/)?.[0];
    assert.ok(pem);
    await Deno.writeTextFile(`${dir}/ca.pem`, pem);
    const settings = await settingsFile(
      `[job]\nshell = "sh"\n[helper]\nca_file = "${dir}/ca.pem"\n`,
    );
    await withJob(
      { settings, variables: { CI_JOB_IMAGE: BUSYBOX, GIT_STRATEGY: "none" } },
      async (job) => {
        const prepare = await job.prepare();
        assert.equal(prepare.code, 0, prepare.stderr);
        const run = await job.run("cat /etc/ssl/certs/ca-certificates.crt\n", "step_script");
        assert.equal(run.code, 0, run.stderr);
        assert.ok(run.stdout.includes(pem.trim()), run.stdout);
      },
    );
    await Deno.remove(dir, { recursive: true });
  },
});

Deno.test({
  name: "without any gitlab-runner the job log says once that cache and artifacts are disabled",
  ignore,
  async fn() {
    await withJob({ settings: await settingsFile() }, async (job) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.equal(prepare.stderr.match(/cache and artifacts are disabled/g)?.length, 1);
    });
  },
});

Deno.test({
  name: "an image without the configured shell or git is a build failure with a clear message",
  ignore,
  async fn() {
    await withJob(
      { settings: await settingsFile(), variables: { CI_JOB_IMAGE: BUSYBOX } },
      async (job, name) => {
        const prepare = await job.prepare();
        assert.equal(prepare.code, 1, prepare.stderr);
        assert.match(prepare.stderr, /has no bash and no git/);
        assert.equal(await exists(name), false);
      },
    );
    const sh = await settingsFile(`[job]\nshell = "sh"\n`);
    await withJob({ settings: sh, variables: { CI_JOB_IMAGE: BUSYBOX } }, async (job) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 1, prepare.stderr);
      assert.match(prepare.stderr, /has no git/);
    });
    await withJob(
      { settings: sh, variables: { CI_JOB_IMAGE: BUSYBOX, GIT_STRATEGY: "none" } },
      async (job) => {
        assert.equal((await job.prepare()).code, 0, "GIT_STRATEGY none needs no git");
      },
    );
  },
});
