/**
 * Real-LXD fixtures for the end-to-end tests. The setup (scripts/setup-lxd.sh,
 * run by `make test`) starts LXD and imports the test images; with CI=true
 * a missing LXD fails the suite instead of skipping it.
 *
 * `LXD_DRIVER_TEST_CLI` picks the client and so the daemon the suite runs
 * against: `lxc` (LXD, the default) or `incus` (Incus, whose test images
 * scripts/setup-image-server.sh copies from LXD). Both the tests' own checks
 * and the driver (through `[lxd] cli` in `settingsFile()`) use it.
 */

import { poolStateDir } from "../lib/pool_lock.ts";

export const BOOKWORM = "lxd-driver-test/bookworm";
export const BUSYBOX = "lxd-driver-test/busybox";

const decoder = new TextDecoder();

/** The client the suite runs: `lxc` for LXD, `incus` for Incus. */
export const TEST_CLI: "lxc" | "incus" = testCli(Deno.env.get("LXD_DRIVER_TEST_CLI"));

function testCli(value: string | undefined): "lxc" | "incus" {
  if (value === undefined || value === "" || value === "lxc") return "lxc";
  if (value === "incus") return "incus";
  throw new Error(`LXD_DRIVER_TEST_CLI must be "lxc" or "incus", not ${JSON.stringify(value)}`);
}

export interface LxcResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the real `lxc` (or `incus`, see TEST_CLI) for a test's own checks. */
export async function lxc(...args: string[]): Promise<LxcResult> {
  const out = await new Deno.Command(TEST_CLI, { args, stdin: "null" }).output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

/** The daemon behind TEST_CLI, for messages. */
export const DAEMON = TEST_CLI === "incus" ? "Incus" : "LXD";

let available: Promise<boolean> | undefined;

/** Whether LXD and the test images are there. In CI their absence is an error. */
export function lxdAvailable(): Promise<boolean> {
  available ??= (async () => {
    let problem: string | undefined;
    try {
      const images = await lxc("image", "list", "--format", "csv", "--columns", "l");
      if (images.code !== 0) problem = `${TEST_CLI} image list failed: ${images.stderr.trim()}`;
      else if (!images.stdout.includes(BOOKWORM) || !images.stdout.includes(BUSYBOX)) {
        problem = `test images ${BOOKWORM} and ${BUSYBOX} are missing (run ${
          TEST_CLI === "incus" ? "scripts/setup-image-server.sh" : "scripts/setup-lxd.sh"
        })`;
      }
    } catch (error) {
      problem = `${TEST_CLI} cannot be run: ${(error as Error).message}`;
    }
    if (problem === undefined) return true;
    if (Deno.env.get("CI") === "true") {
      throw new Error(`end-to-end tests need ${DAEMON}: ${problem}`);
    }
    // deno-lint-ignore no-console -- the only way a local run learns why these tests were skipped
    console.warn(`skipping end-to-end tests: ${problem}`);
    return false;
  })();
  return available;
}

/** Whether the named container exists. */
export async function exists(name: string): Promise<boolean> {
  const result = await lxc("query", `/1.0/instances/${name}`);
  return result.code === 0;
}

/** The container's config keys. */
export async function instanceConfig(name: string): Promise<Record<string, string>> {
  const result = await lxc("query", `/1.0/instances/${name}`);
  if (result.code !== 0) throw new Error(`no instance ${name}: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { config: Record<string, string> }).config;
}

let nextJob = 0;

/** A job id no other test (or earlier run) uses. */
export function uniqueJobId(): number {
  return (Date.now() % 10_000_000) * 100 + (nextJob++ % 100);
}

/**
 * Writes a settings file for the tests and returns its path. `extra` is
 * appended inside `[instance]` (bare keys) and may open tables of its own;
 * `[lxd] cli` is always TEST_CLI, added to the `[lxd]` table `extra` opens
 * (TOML forbids a second one), or in a table of its own. `[instance] template`
 * is false unless `extra` sets it.
 */
export async function settingsFile(extra = ""): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "lxd-driver-settings-", suffix: ".toml" });
  await Deno.writeTextFile(path, settingsText(extra));
  return path;
}

/** The text settingsFile writes. */
export function settingsText(extra = ""): string {
  const cli = `cli = "${TEST_CLI}"`;
  const lxdTable = /^[ \t]*\[lxd\][ \t]*(#.*)?$/m;
  const withCli = lxdTable.test(extra)
    ? (/^[ \t]*cli[ \t]*=/m.test(extra.slice(extra.search(lxdTable)))
      ? extra // the caller chose the client itself
      : extra.replace(lxdTable, (header) => `${header}\n${cli}`))
    : `${extra}\n\n[lxd]\n${cli}`;
  // Templates (lib/template.ts) are off unless a test turns them on: most tests make containers
  // of settings of their own (a profile, a pool, a host id) that would each leave a template behind.
  const template = /^[ \t]*template[ \t]*=/m.test(extra) ? "" : "template = false\n";
  return `[image]
default = "${BOOKWORM}"
allowed = ["lxd-driver-test/*"]

[instance]
ready_timeout = "60s"
${template}${withCli}
`;
}

/** The container name the driver derives for a job with default runner and slot ids. */
export function expectedName(jobId: number, projectId = 1): string {
  return `runner-1-project-${projectId}-concurrent-0-job-${jobId}`;
}

/** Polls `probe` every 250 ms until it gives a value, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** `$PATH` without any directory that holds a gitlab-runner, so none is found by accident. */
export async function pathWithoutGitlabRunner(): Promise<string> {
  const dirs = [];
  for (const dir of (Deno.env.get("PATH") ?? "").split(":").filter(Boolean)) {
    const found = await Deno.stat(`${dir}/gitlab-runner`).then(() => true, () => false);
    if (!found) dirs.push(dir);
  }
  return dirs.join(":");
}

/** An instance as `lxc list --format json` gives it (config is null while LXD is still creating one). */
export interface Listed {
  name: string;
  status: string;
  config: Record<string, string> | null;
}

/** A container the driver labelled (so its config is there). */
export type HostContainer = Listed & { config: Record<string, string> };

/** Runs the client with these arguments: `lxc()` itself, or a wrapper aiming it elsewhere. */
export type LxcCall = (...args: string[]) => Promise<LxcResult>;

/** The containers whose driver label names runner host `host`. */
export async function containersOf(host: string, call: LxcCall = lxc): Promise<HostContainer[]> {
  const list = await call("list", "--format", "json");
  return (JSON.parse(list.stdout) as Listed[]).filter((i): i is HostContainer =>
    i.config?.["user.lxd-driver.host"] === host
  );
}

/** Deletes every container of `host`, including pool refills the driver is still launching. */
export async function removeHost(host: string, call: LxcCall = lxc): Promise<void> {
  // Launches the driver started for this host, which LXD may not list yet.
  const pendingFile = `${poolStateDir()}/pending.json`;
  const pending = await Deno.readTextFile(pendingFile).then(
    (text) => JSON.parse(text) as Record<string, { host: string }>,
    () => ({} as Record<string, { host: string }>),
  );
  const launching = new Set(Object.keys(pending).filter((name) => pending[name]!.host === host));
  const deadline = Date.now() + 30_000;
  do {
    for (const i of await containersOf(host, call)) {
      // A delete can fail while the launch is still starting the container: try again.
      if ((await call("delete", "--force", i.name)).code === 0) launching.delete(i.name);
    }
    if (launching.size > 0) await new Promise((resolve) => setTimeout(resolve, 250));
  } while (launching.size > 0 && Date.now() < deadline);
}
