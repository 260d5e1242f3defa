/**
 * `make bench`: lxd-driver against raw `lxc` (the floor) and GitLab's example
 * LXD driver (the bash scripts from "Using LXD with the Custom executor"),
 * in one run on this host. The contenders alternate round by round, so a
 * slow moment on a busy host hits each of them alike. Prints medians, ratios
 * and PASS/MISS per target, and writes BENCHMARKS.md.
 *
 * Usage: deno run -A scripts/bench.ts [--rounds N] [--concurrent N] [--quick] [--out FILE]
 *
 * `LXD_DRIVER_BENCH_EXAMPLE`: a directory with GitLab's example LXD driver
 * scripts, driver.sh among them (`driver.sh config|prepare|run SCRIPT
 * STAGE|cleanup`). Unset: the example's columns are left out.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import {
  BOOKWORM,
  exists,
  expectedName,
  lxc,
  removeHost,
  settingsFile,
  TEST_CLI,
  uniqueJobId,
} from "../tests/lxd.ts";
import { Job, runnerScript, type RunOptions, type StageResult } from "../tests/runner.ts";

const USAGE =
  `Usage: deno run -A scripts/bench.ts [--rounds N] [--concurrent N] [--quick] [--out FILE]

  --rounds N       rounds for items 1-3 (default 7; 1 with --quick)
  --concurrent N   jobs started together in item 4 (default 16; 2 with --quick)
  --quick          a smoke run: does not write BENCHMARKS.md, only --out FILE if given
  --out FILE       write the report to FILE instead of BENCHMARKS.md

LXD_DRIVER_BENCH_EXAMPLE: a directory with GitLab's example LXD driver scripts,
driver.sh among them. Unset: the example's columns are left out.`;

const EXAMPLE_ENV = "LXD_DRIVER_BENCH_EXAMPLE";
/**
 * `LXD_DRIVER_BENCH_REMOTE=NAME` (and optionally `LXD_DRIVER_BENCH_PROJECT`)
 * measures through an lxc remote: the driver gets `[lxd] remote` and
 * `project`, and the floor's bare `lxc` calls go to the same place. GitLab's
 * example cannot use a remote and is left out then.
 */
const REMOTE = Deno.env.get("LXD_DRIVER_BENCH_REMOTE") ?? "";
const PROJECT = Deno.env.get("LXD_DRIVER_BENCH_PROJECT") ?? "";

/** An instance or image name on the benchmark's remote. */
function at(name: string): string {
  return REMOTE ? `${REMOTE}:${name}` : name;
}

/** `lxc` for the floor and the bookkeeping, sent to the benchmark's remote and project. */
function lxcAt(command: string, ...args: string[]): ReturnType<typeof lxc> {
  if (command === "query") {
    const path = args.at(-1)!;
    const withProject = PROJECT
      ? `${path}${path.includes("?") ? "&" : "?"}project=${encodeURIComponent(PROJECT)}`
      : path;
    return lxc("query", ...args.slice(0, -1), at(withProject));
  }
  const project = PROJECT ? ["--project", PROJECT] : [];
  switch (command) {
    case "launch":
      return lxc(...project, "launch", at(args[0]!), at(args[1]!), ...args.slice(2));
    case "exec":
    case "delete":
      return lxc(
        ...project,
        command,
        ...args.map((a, i) => i === (command === "delete" ? 1 : 0) ? at(a) : a),
      );
    case "list":
      return lxc(...project, "list", ...(REMOTE ? [`${REMOTE}:`] : []), ...args);
    default:
      return lxc(...project, command, ...args);
  }
}
const DEFAULT_OUT = fileURLToPath(new URL("../BENCHMARKS.md", import.meta.url));
/** A project id the tests do not use, so no container name can collide with theirs. */
const PROJECT_ID = 9001;
/** The run stages of item 3's job: the names the runner uses, each a trivial script. */
const JOB_STAGES = [
  "prepare_script",
  "get_sources",
  "restore_cache",
  "download_artifacts",
  "step_script",
  "after_script",
  "archive_cache",
  "upload_artifacts_on_success",
] as const;
const TRIVIAL = runnerScript("true");
const READY_TIMEOUT_MS = 120_000;

// Contender names, as they appear in the tables.
const DRIVER = "lxd-driver";
const RAW = "raw lxc";
const EXAMPLE = "GitLab example";
const EMPTY_DENO = "empty Deno program";
const DRIVER_VERSION = "lxd-driver version";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function print(line = ""): void {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stdout.writeSync(bytes.subarray(written));
}

// ---------------------------------------------------------------- options

interface Options {
  readonly rounds: number;
  readonly concurrent: number;
  readonly quick: boolean;
  /** Where the report goes; undefined: nowhere (a --quick run without --out). */
  readonly out: string | undefined;
  /** GitLab's example driver directory; undefined: left out. */
  readonly example: string | undefined;
}

class UsageError extends Error {}

function positiveInt(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < 1) {
    throw new UsageError(`${flag} needs a whole number of at least 1, not ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function parseOptions(args: string[]): Options | "help" {
  let values;
  try {
    values = parseArgs({
      args,
      options: {
        rounds: { type: "string" },
        concurrent: { type: "string" },
        quick: { type: "boolean", default: false },
        out: { type: "string" },
        help: { type: "boolean", short: "h", default: false },
      },
      strict: true,
      allowPositionals: false,
    }).values;
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  if (values.help) return "help";
  const quick = values.quick === true;
  const example = REMOTE ? undefined : Deno.env.get(EXAMPLE_ENV) || undefined;
  if (example !== undefined) {
    let isFile = false;
    try {
      isFile = Deno.statSync(`${example}/driver.sh`).isFile;
    } catch { /* reported below */ }
    if (!isFile) throw new UsageError(`${EXAMPLE_ENV}=${example} has no driver.sh`);
  }
  return {
    rounds: positiveInt("--rounds", values.rounds, quick ? 1 : 7),
    concurrent: positiveInt("--concurrent", values.concurrent, quick ? 2 : 16),
    quick,
    out: values.out ?? (quick ? undefined : DEFAULT_OUT),
    example,
  };
}

// ---------------------------------------------------------------- statistics

/** One contender's measurements in one item: a value per round, undefined when it failed. */
class Series {
  readonly values: (number | undefined)[] = [];
  failures = 0;
  lastError: string | undefined;

  add(ms: number | undefined, error?: string): void {
    this.values.push(ms);
    if (ms === undefined) {
      this.failures++;
      this.lastError = error;
    }
  }

  get ok(): number[] {
    return this.values.filter((v): v is number => v !== undefined);
  }

  get median(): number | undefined {
    return median(this.ok);
  }

  get min(): number | undefined {
    return this.ok.length ? Math.min(...this.ok) : undefined;
  }

  get max(): number | undefined {
    return this.ok.length ? Math.max(...this.ok) : undefined;
  }
}

function median(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** The median of per-round differences a − b, over the rounds where both succeeded. */
function pairedDifference(a: Series, b: Series): number | undefined {
  const diffs: number[] = [];
  a.values.forEach((value, i) => {
    const other = b.values[i];
    if (value !== undefined && other !== undefined) diffs.push(value - other);
  });
  return median(diffs);
}

function ms(value: number | undefined): string {
  if (value === undefined) return "–";
  if (Math.abs(value) < 1000) return `${Math.round(value)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

function ratio(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined || b === undefined || b === 0 ? undefined : a / b;
}

function x(value: number | undefined): string {
  return value === undefined ? "–" : `${value.toFixed(2)}×`;
}

function verdict(pass: boolean | undefined): string {
  return pass === undefined ? "n/a" : pass ? "PASS" : "MISS";
}

/** The order of the contenders in round `round`: rotated, so none is always first. */
function rotate<T>(items: readonly T[], round: number): T[] {
  const k = round % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

// ---------------------------------------------------------------- containers and jobs

/** Every container this run may have created, so that all are deleted at the end. */
const containers = new Set<string>();
const liveJobs = new Set<Job>();
/** The container each job's driver names, to tell whether it vanished. */
const containerOf = new WeakMap<Job, string>();
let driverSettings = "";
let scratch = "";

async function newDriverJob(extraEnv: Record<string, string> = {}): Promise<Job> {
  const jobId = uniqueJobId();
  containers.add(expectedName(jobId, PROJECT_ID));
  const job = await Job.create({
    jobId,
    projectId: PROJECT_ID,
    env: { LXD_DRIVER_CONFIG: driverSettings, ...extraEnv },
  });
  liveJobs.add(job);
  containerOf.set(job, expectedName(jobId, PROJECT_ID));
  return job;
}

/** A job for GitLab's example driver, whose container is named by its base.sh. */
async function newExampleJob(dir: string): Promise<Job> {
  const jobId = uniqueJobId();
  containers.add(exampleContainer(jobId));
  const job = await Job.create({
    jobId,
    projectId: PROJECT_ID,
    driver: ["bash", `${dir}/driver.sh`],
    env: { SEED_IMAGE: BOOKWORM },
  });
  liveJobs.add(job);
  containerOf.set(job, exampleContainer(jobId));
  return job;
}

function exampleContainer(jobId: number): string {
  return `runner-1-project-${PROJECT_ID}-concurrent-0-${jobId}`;
}

function rawContainer(): string {
  const name = `lxd-driver-bench-raw-${crypto.randomUUID().slice(0, 8)}`;
  containers.add(name);
  return name;
}

async function retire(job: Job): Promise<void> {
  liveJobs.delete(job);
  await job.remove().catch(() => {});
}

/** Deletes every container of this run that still exists; returns the names that would not go. */
async function deleteLeftovers(): Promise<string[]> {
  if (interruptCode !== undefined) {
    // A cancelled lxc client may leave its operation running in LXD: catch what it creates late.
    await deleteOnce();
    await new Promise((resolve) => setTimeout(resolve, 3000));
  }
  return await deleteOnce();
}

async function deleteOnce(): Promise<string[]> {
  const listed = await lxcAt("list", "--format", "csv", "--columns", "n");
  const present = listed.code === 0
    ? new Set(listed.stdout.split("\n").map((line) => line.trim()))
    : new Set(containers); // cannot tell: try them all
  const leftovers = [...containers].filter((name) => present.has(name));
  await Promise.all(leftovers.map((name) => lxcAt("delete", "--force", name)));
  const stuck: string[] = [];
  for (const name of leftovers) {
    if ((await lxcAt("query", `/1.0/instances/${name}`)).code === 0) stuck.push(name);
  }
  await Promise.all([...liveJobs].map(retire));
  return stuck;
}

/** Stage results that guarded() had to cancel, with the driver's own exit code. */
const hung = new WeakMap<StageResult, number>();

function failure(stage: string, result: StageResult): string {
  const tail = (result.stderr.trim() || result.stdout.trim()).split("\n").filter(Boolean)
    .slice(-3).join(" / ");
  const what = hung.has(result)
    ? `${stage} did not finish within ${STAGE_TIMEOUT_MS / 1000} s and was cancelled; ` +
      `the driver then exited ${hung.get(result)}`
    : `${stage} exited ${result.code}`;
  return `${what}${tail ? `: ${tail}` : ""}`;
}

/**
 * No stage of these trivial jobs should take this long, even with 16 jobs at
 * once; one that does is cancelled as the runner would cancel it at the job's
 * timeout, and counts as a failure. (LXD 5.0.2's `lxc exec` now and then
 * never returns under concurrent load, even after its command has exited.)
 */
const STAGE_TIMEOUT_MS = 60_000;

/** Thrown once the benchmark is interrupted (SIGINT, SIGTERM), so that it stops and cleans up. */
class Interrupted extends Error {}
/** The exit code to leave with after an interrupt. */
let interruptCode: number | undefined;

function stopIfInterrupted(): void {
  if (interruptCode !== undefined) throw new Interrupted("interrupted");
}

/** Resolves when the benchmark is interrupted: every running stage is then cancelled. */
let interrupt!: () => void;
const interrupted = new Promise<void>((resolve) => (interrupt = resolve));
/** The stages running now, so an interrupt can wait for them before deleting containers. */
const running = new Set<Promise<unknown>>();

/**
 * Runs one stage with the runner's cancel (SIGTERM, then SIGKILL) after
 * STAGE_TIMEOUT_MS, or at once when the benchmark is interrupted.
 */
async function guarded(stage: (options: RunOptions) => Promise<StageResult>): Promise<StageResult> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const cancelWhen = Promise.race([
    interrupted,
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        timedOut = true;
        resolve();
      }, STAGE_TIMEOUT_MS);
    }),
  ]);
  stopIfInterrupted();
  const result = stage({ cancelWhen, killAfterMs: 10_000 });
  running.add(result);
  try {
    const done = await result;
    if (!timedOut) return done;
    const failed = { ...done, code: done.code || 1 };
    hung.set(failed, done.code);
    return failed;
  } finally {
    running.delete(result);
    clearTimeout(timer);
  }
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

interface Timed {
  readonly ok: boolean;
  readonly ms: number;
  readonly detail: string;
}

/** Runs a command from this process (no Deno start-up in it) and times it. */
async function timed(cmd: string, args: string[], cwd?: string): Promise<Timed> {
  const started = performance.now();
  const out = await new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
    ...(cwd === undefined ? {} : { cwd }),
  }).output();
  const elapsed = performance.now() - started;
  return { ok: out.success, ms: elapsed, detail: decoder.decode(out.stderr).trim() };
}

/** `lxc launch` and then `lxc exec NAME -- true` until it succeeds. */
async function launchUntilUsable(name: string): Promise<void> {
  stopIfInterrupted();
  const launching = lxcAt("launch", BOOKWORM, name);
  running.add(launching);
  const launch = await launching.finally(() => running.delete(launching));
  if (launch.code !== 0) throw new Error(`lxc launch failed: ${launch.stderr.trim()}`);
  const started = performance.now();
  for (;;) {
    stopIfInterrupted();
    const probe = await lxcAt("exec", name, "--", "true");
    if (probe.code === 0) return;
    if (performance.now() - started > READY_TIMEOUT_MS) {
      throw new Error(`lxc exec ${name} -- true still fails: ${probe.stderr.trim()}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Waits (untimed) until the container's systemd has finished booting, so it sits idle. */
async function settle(name: string): Promise<void> {
  await lxcAt("exec", name, "--", "systemctl", "is-system-running", "--wait");
}

// ---------------------------------------------------------------- the template

/** How lxd-driver made its containers during the run (see lib/template.ts). */
interface TemplateWarmup {
  /** `copies`: of a remapped template; `unneeded`: LXD remaps nothing; `not ready`: gave up. */
  readonly state: "copies" | "unneeded" | "not ready";
  /** The run's first prepare (a single sample), and whether it already found a template ready. */
  readonly firstPrepareMs: number | undefined;
  readonly foundReady: boolean;
  /** How long after that the template was ready to copy from. */
  readonly readyAfterMs: number | undefined;
}

/**
 * Before anything is timed, has the driver make its template for the
 * benchmark's image and settings, as the first job of an image on a runner
 * host does: a prepare launches it in the background, and a later prepare
 * finds it finished and copies from it. Timed items then see the steady state.
 */
async function warmTemplate(): Promise<TemplateWarmup> {
  const tag = "[template]";
  print(`${tag} the first prepare launches lxd-driver's template; waiting until jobs copy from it`);
  const started = performance.now();
  let firstPrepareMs: number | undefined;
  let attempts = 0;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    stopIfInterrupted();
    const job = await newDriverJob({ LXD_DRIVER_DEBUG: "1" });
    try {
      const prepare = await guarded((o) => job.prepare(o));
      await guarded((o) => job.cleanup(o));
      if (prepare.code !== 0) throw new Error(failure("prepare", prepare));
      firstPrepareMs ??= prepare.durationMs;
      const readyAfterMs = performance.now() - started;
      const foundReady = attempts++ === 0;
      if (/as a copy of template/.test(prepare.stderr)) {
        print(`${tag} ready after ${ms(readyAfterMs)}: containers are copies of the template`);
        return { state: "copies", firstPrepareMs, foundReady, readyAfterMs };
      }
      if (/is not needed: LXD did not remap/.test(prepare.stderr)) {
        print(`${tag} not needed: LXD remaps nothing on this host`);
        return { state: "unneeded", firstPrepareMs, foundReady, readyAfterMs };
      }
    } finally {
      await retire(job);
    }
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
  print(`${tag} the template was not ready within 2 minutes: containers come from the image`);
  return { state: "not ready", firstPrepareMs, foundReady: false, readyAfterMs: undefined };
}

// ---------------------------------------------------------------- the host

interface Host {
  readonly rows: [string, string][];
}

async function describeHost(options: Options): Promise<Host> {
  const rows: [string, string][] = [];
  let cpu = "";
  try {
    const info = await Deno.readTextFile("/proc/cpuinfo");
    cpu = info.match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? "";
  } catch { /* not Linux, or hidden */ }
  let cores = navigator.hardwareConcurrency;
  if (!cores) {
    const nproc = await new Deno.Command("nproc", { stdin: "null" }).output().catch(() =>
      undefined
    );
    cores = nproc?.success ? Number(decoder.decode(nproc.stdout).trim()) : 0;
  }
  rows.push(["CPU", `${cores || "?"} cores${cpu ? ` (${cpu})` : ""}`]);
  rows.push(["memory", `${(Deno.systemMemoryInfo().total / 2 ** 30).toFixed(1)} GiB`]);

  const server = await lxcAt("query", "/1.0");
  const env = server.code === 0
    ? (JSON.parse(server.stdout) as { environment?: Record<string, unknown> }).environment ?? {}
    : {};
  rows.push(["LXD", String(env.server_version ?? "unknown")]);
  rows.push([
    "reached through",
    REMOTE
      ? `remote ${REMOTE} (${String(env.addresses ?? "") || "HTTPS"}), project ${
        PROJECT || "default"
      }`
      : "the local unix socket",
  ]);
  rows.push(["storage", await rootPoolDriver()]);
  rows.push(["kernel", String(env.kernel_version ?? Deno.osRelease())]);
  if (env.os_name) rows.push(["OS", `${env.os_name} ${env.os_version ?? ""}`.trim()]);
  rows.push(["Deno", Deno.version.deno]);
  rows.push([
    "lxd-driver",
    Deno.env.get("LXD_DRIVER_BIN")
      ? "compiled binary ($LXD_DRIVER_BIN)"
      : "`deno run -q -P=driver mod.ts` (as the tests run it)",
  ]);
  rows.push([
    "GitLab example",
    options.example ? `from $${EXAMPLE_ENV}` : `left out ($${EXAMPLE_ENV} not set)`,
  ]);
  const listed = await lxcAt("list", "--format", "csv", "--columns", "ns");
  const busy = listed.stdout.split("\n").filter((line) => /,RUNNING$/.test(line.trim())).length;
  rows.push(["other containers running at start", String(busy)]);
  rows.push(["date", new Date().toISOString().replace(/\.\d+Z$/, "Z")]);
  return { rows };
}

/** `<pool> (<driver>)` for the default profile's root disk. */
/** The root disk's pool when it is btrfs (set by rootPoolDriver), for quietStorage. */
let btrfsPool: string | undefined;

async function rootPoolDriver(): Promise<string> {
  const profile = await lxcAt("query", "/1.0/profiles/default");
  if (profile.code !== 0) return "unknown";
  const devices = (JSON.parse(profile.stdout) as {
    devices?: Record<string, Record<string, string>>;
  }).devices ?? {};
  const pool = Object.values(devices).find((d) => d.type === "disk" && d.path === "/")?.pool;
  if (!pool) return "unknown (the default profile has no root disk)";
  const answer = await lxcAt("query", `/1.0/storage-pools/${encodeURIComponent(pool)}`);
  const driver = answer.code === 0
    ? (JSON.parse(answer.stdout) as { driver?: string }).driver ?? "unknown"
    : "unknown";
  if (driver === "btrfs") btrfsPool = pool;
  return `${driver} (pool ${pool}${driver === "btrfs" && !REMOTE ? await btrfsQuotas(pool) : ""})`;
}

/**
 * Whether the local btrfs pool accounts quotas (qgroups): LXD turns them on
 * for the first root disk with a size (the tests' disk limit), and from then
 * on every deletion costs btrfs far more work in the background.
 */
async function btrfsQuotas(pool: string): Promise<string> {
  const out = await new Deno.Command("btrfs", {
    args: ["qgroup", "show", `/var/lib/lxd/storage-pools/${pool}`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).output().catch(() => undefined);
  if (!out) return "";
  if (out.success) return ", quotas on";
  return /not enabled/i.test(decoder.decode(out.stderr)) ? ", quotas off" : "";
}

/**
 * Waits (up to two minutes) until btrfs has cleaned up the subvolumes of
 * deleted containers, which it does in the background and, with quotas on,
 * slowly: an item started meanwhile would share the host with that work.
 */
async function quietStorage(pool: string | undefined): Promise<void> {
  if (!pool || REMOTE) return;
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    const out = await new Deno.Command("btrfs", {
      args: ["subvolume", "list", "-d", `/var/lib/lxd/storage-pools/${pool}`],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
    }).output().catch(() => undefined);
    if (!out?.success || decoder.decode(out.stdout).trim() === "") return;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

// ---------------------------------------------------------------- item 1: the run stage

interface RunStageResult {
  readonly series: Map<string, Series>;
  readonly added: number | undefined;
  readonly allowance: number | undefined;
  readonly setupErrors: Map<string, string>;
}

async function benchRunStage(options: Options): Promise<RunStageResult> {
  const series = new Map<string, Series>();
  const setupErrors = new Map<string, string>();
  const tag = "[1/5 run stage]";
  print(`${tag} preparing one container per contender`);

  const scriptFile = `${scratch}/script`;
  await Deno.writeTextFile(scriptFile, TRIVIAL, { mode: 0o700 });
  const emptyProgram = `${scratch}/empty.ts`;
  await Deno.writeTextFile(emptyProgram, "");
  const versionCommand = Deno.env.get("LXD_DRIVER_BIN")
    ? [Deno.env.get("LXD_DRIVER_BIN")!, "version"]
    : [
      Deno.execPath(),
      "run",
      "-q",
      "-P=driver",
      fileURLToPath(new URL("../mod.ts", import.meta.url)),
      "version",
    ];

  const runners = new Map<string, () => Promise<Timed>>();
  const driverJob = await newDriverJob();
  const rawName = rawContainer();
  const exampleJob = options.example ? await newExampleJob(options.example) : undefined;
  try {
    const [driverUp, rawUp, exampleUp] = await Promise.all([
      guarded((o) => driverJob.prepare(o)),
      launchUntilUsable(rawName).then(() => undefined, (error) => errorText(error)),
      exampleJob ? guarded((o) => exampleJob.prepare(o)) : undefined,
    ]);
    if (driverUp.code === 0) {
      runners.set(DRIVER, async () => {
        const result = await guarded((o) => driverJob.run(TRIVIAL, "step_script", o));
        return { ok: result.code === 0, ms: result.durationMs, detail: failure("run", result) };
      });
    } else setupErrors.set(DRIVER, failure("prepare", driverUp));
    if (rawUp === undefined) {
      runners.set(
        RAW,
        () =>
          timed("sh", [
            "-c",
            'lxc ${3:+--project "$3"} exec "$1" -- bash < "$2"',
            "sh",
            at(rawName),
            scriptFile,
            PROJECT,
          ]),
      );
    } else setupErrors.set(RAW, rawUp);
    if (exampleJob && exampleUp) {
      if (exampleUp.code === 0) {
        runners.set(EXAMPLE, async () => {
          const result = await guarded((o) => exampleJob.run(TRIVIAL, "step_script", o));
          return { ok: result.code === 0, ms: result.durationMs, detail: failure("run", result) };
        });
      } else setupErrors.set(EXAMPLE, failure("prepare", exampleUp));
    }
    runners.set(EMPTY_DENO, () => timed(Deno.execPath(), ["run", "-q", emptyProgram], scratch));
    runners.set(DRIVER_VERSION, () => timed(versionCommand[0]!, versionCommand.slice(1), scratch));
    for (const [name, error] of setupErrors) print(`${tag} ${name} could not be set up: ${error}`);

    // Let every container finish booting, so none is busy while the others are measured.
    await Promise.all([
      driverUp.code === 0 ? settle(expectedName(driverJob.options.jobId, PROJECT_ID)) : undefined,
      rawUp === undefined ? settle(rawName) : undefined,
      exampleJob && runners.has(EXAMPLE)
        ? settle(exampleContainer(exampleJob.options.jobId))
        : undefined,
    ]);

    const names = [...runners.keys()];
    for (const name of names) series.set(name, new Series());
    print(`${tag} warm-up: one untimed run of each`);
    for (const name of names) await runners.get(name)!().catch(() => undefined);
    for (let round = 0; round < options.rounds; round++) {
      stopIfInterrupted();
      const line: string[] = [];
      for (const name of rotate(names, round)) {
        let sample: Timed;
        try {
          sample = await runners.get(name)!();
        } catch (error) {
          sample = { ok: false, ms: 0, detail: errorText(error) };
        }
        series.get(name)!.add(sample.ok ? sample.ms : undefined, sample.detail);
        line.push(`${name} ${sample.ok ? ms(sample.ms) : "FAILED"}`);
      }
      print(`${tag} round ${round + 1}/${options.rounds}: ${line.join(" · ")}`);
    }
  } finally {
    await Promise.allSettled([
      guarded((o) => driverJob.cleanup(o)).then(() => retire(driverJob)),
      lxcAt("delete", "--force", rawName),
      exampleJob ? guarded((o) => exampleJob.cleanup(o)).then(() => retire(exampleJob)) : undefined,
    ]);
  }
  const driver = series.get(DRIVER);
  const raw = series.get(RAW);
  const added = driver && raw ? pairedDifference(driver, raw) : undefined;
  const empty = series.get(EMPTY_DENO)?.median;
  return { series, added, allowance: empty === undefined ? undefined : empty + 15, setupErrors };
}

// ---------------------------------------------------------------- item 2: prepare + cleanup

interface UpDown {
  readonly total: Series;
  readonly up: Series;
  readonly down: Series;
}

function upDown(): UpDown {
  return { total: new Series(), up: new Series(), down: new Series() };
}

async function benchPrepareCleanup(options: Options): Promise<Map<string, UpDown>> {
  const tag = "[2/5 prepare + cleanup]";
  const contenders = new Map<string, () => Promise<{ up: number; down: number }>>();
  contenders.set(DRIVER, async () => {
    const job = await newDriverJob();
    try {
      const prepare = await guarded((o) => job.prepare(o));
      const cleanup = await guarded((o) => job.cleanup(o));
      if (prepare.code !== 0) throw new Error(failure("prepare", prepare));
      if (cleanup.code !== 0) throw new Error(failure("cleanup", cleanup));
      return { up: prepare.durationMs, down: cleanup.durationMs };
    } finally {
      await retire(job);
    }
  });
  contenders.set(RAW, async () => {
    const name = rawContainer();
    const started = performance.now();
    try {
      await launchUntilUsable(name);
    } catch (error) {
      await lxcAt("delete", "--force", name);
      throw error;
    }
    const usable = performance.now();
    const deleted = await lxcAt("delete", "--force", name);
    if (deleted.code !== 0) throw new Error(`lxc delete failed: ${deleted.stderr.trim()}`);
    return { up: usable - started, down: performance.now() - usable };
  });
  const example = options.example;
  if (example) {
    contenders.set(EXAMPLE, async () => {
      const job = await newExampleJob(example);
      try {
        const prepare = await guarded((o) => job.prepare(o));
        const cleanup = await guarded((o) => job.cleanup(o));
        if (prepare.code !== 0) throw new Error(failure("prepare", prepare));
        if (cleanup.code !== 0) throw new Error(failure("cleanup", cleanup));
        return { up: prepare.durationMs, down: cleanup.durationMs };
      } finally {
        await retire(job);
      }
    });
  }
  const results = new Map<string, UpDown>();
  for (const name of contenders.keys()) results.set(name, upDown());
  for (let round = 0; round < options.rounds; round++) {
    stopIfInterrupted();
    const line: string[] = [];
    for (const name of rotate([...contenders.keys()], round)) {
      const series = results.get(name)!;
      try {
        const { up, down } = await contenders.get(name)!();
        series.total.add(up + down);
        series.up.add(up);
        series.down.add(down);
        line.push(`${name} ${ms(up + down)} (${ms(up)} + ${ms(down)})`);
      } catch (error) {
        for (const s of [series.total, series.up, series.down]) s.add(undefined, errorText(error));
        line.push(`${name} FAILED: ${errorText(error)}`);
      }
    }
    print(`${tag} round ${round + 1}/${options.rounds}: ${line.join(" · ")}`);
  }
  return results;
}

/** One lxd-driver prepare with LXD_DRIVER_DEBUG=1: each LXD call and its duration. */
interface Breakdown {
  readonly total: number;
  readonly operations: [string, number][];
}

async function prepareBreakdown(): Promise<Breakdown | undefined> {
  stopIfInterrupted();
  print("[2/5 prepare + cleanup] one more lxd-driver prepare with LXD_DRIVER_DEBUG=1");
  const job = await newDriverJob({ LXD_DRIVER_DEBUG: "1" });
  try {
    const prepare = await guarded((o) => job.prepare(o));
    if (prepare.code !== 0) return undefined;
    const name = expectedName(job.options.jobId, PROJECT_ID);
    const operations: [string, number][] = [];
    for (const line of prepare.stderr.split("\n")) {
      const match = line.match(/^\[lxd-driver debug\] (.+): exit \d+ in ([\d.]+)(ms|s)$/);
      if (!match) continue;
      let what = match[1]!.replaceAll(name, "NAME").replace(" --force-noninteractive", "")
        .replace(/\b([0-9a-f]{12})[0-9a-f]{20,}\b/g, "$1…");
      if (what.length > 64) what = `${what.slice(0, 63)}…`;
      operations.push([what, Number(match[2]) * (match[3] === "s" ? 1000 : 1)]);
    }
    return { total: prepare.durationMs, operations };
  } finally {
    await guarded((o) => job.cleanup(o));
    await retire(job);
  }
}

// ---------------------------------------------------------------- items 3 and 4: whole jobs

/** Where a whole job's time goes: the stages' durations as the runner sees them. */
const PHASES = ["config", "prepare", "runs", "cleanup"] as const;
type Phase = (typeof PHASES)[number];

interface JobSample extends Timed {
  readonly phases: Record<Phase, number>;
}

/** config, prepare, the run stages and cleanup, as the runner drives them; wall time. */
async function wholeJob(job: Job): Promise<JobSample> {
  const phases: Record<Phase, number> = { config: 0, prepare: 0, runs: 0, cleanup: 0 };
  const started = performance.now();
  let problem: string | undefined;
  try {
    const config = await guarded((o) => job.config(o));
    phases.config = config.durationMs;
    if (config.code !== 0) problem = failure("config", config);
    else {
      const prepare = await guarded((o) => job.prepare(o));
      phases.prepare = prepare.durationMs;
      if (prepare.code !== 0) problem = failure("prepare", prepare);
      else {
        for (const stage of JOB_STAGES) {
          const run = await guarded((o) => job.run(TRIVIAL, stage, o));
          phases.runs += run.durationMs;
          if (run.code !== 0) {
            problem = failure(`run ${stage}`, run);
            const name = containerOf.get(job);
            if (name && !(await exists(name))) {
              problem += ` [the container ${name} had vanished: something else deleted it]`;
            }
            break;
          }
        }
      }
    }
  } catch (error) {
    problem = errorText(error);
  } finally {
    try {
      const cleanup = await guarded((o) => job.cleanup(o));
      phases.cleanup = cleanup.durationMs;
      if (cleanup.code !== 0) problem ??= failure("cleanup", cleanup);
    } catch (error) {
      problem ??= errorText(error);
    }
  }
  const elapsed = performance.now() - started;
  return { ok: problem === undefined, ms: elapsed, detail: problem ?? "", phases };
}

function jobFactories(options: Options): Map<string, () => Promise<Job>> {
  const factories = new Map<string, () => Promise<Job>>([[DRIVER, () => newDriverJob()]]);
  const example = options.example;
  if (example) factories.set(EXAMPLE, () => newExampleJob(example));
  return factories;
}

interface JobSeries {
  readonly total: Series;
  readonly phases: Record<Phase, Series>;
}

function jobSeries(): JobSeries {
  return {
    total: new Series(),
    phases: {
      config: new Series(),
      prepare: new Series(),
      runs: new Series(),
      cleanup: new Series(),
    },
  };
}

function record(series: JobSeries, sample: JobSample): void {
  series.total.add(sample.ok ? sample.ms : undefined, sample.detail);
  for (const phase of PHASES) {
    series.phases[phase].add(sample.ok ? sample.phases[phase] : undefined, sample.detail);
  }
}

async function benchWholeJob(options: Options): Promise<Map<string, JobSeries>> {
  const tag = "[3/5 whole job]";
  const factories = jobFactories(options);
  const results = new Map<string, JobSeries>();
  for (const name of factories.keys()) results.set(name, jobSeries());
  for (let round = 0; round < options.rounds; round++) {
    stopIfInterrupted();
    const line: string[] = [];
    for (const name of rotate([...factories.keys()], round)) {
      const job = await factories.get(name)!();
      const sample = await wholeJob(job);
      await retire(job);
      record(results.get(name)!, sample);
      line.push(`${name} ${sample.ok ? ms(sample.ms) : `FAILED: ${sample.detail}`}`);
    }
    print(`${tag} round ${round + 1}/${options.rounds}: ${line.join(" · ")}`);
  }
  return results;
}

interface Batch {
  readonly wall: number;
  readonly failures: number;
  /** Medians over the jobs that succeeded. */
  readonly jobs: JobSeries;
  readonly firstError: string | undefined;
}

async function benchConcurrent(options: Options): Promise<Map<string, Batch>> {
  const tag = "[4/5 concurrent jobs]";
  const results = new Map<string, Batch>();
  for (const [name, factory] of jobFactories(options)) {
    stopIfInterrupted();
    print(`${tag} ${name}: starting ${options.concurrent} whole jobs at once`);
    const jobs = await Promise.all(Array.from({ length: options.concurrent }, () => factory()));
    let done = 0;
    const started = performance.now();
    const samples = await Promise.all(jobs.map(async (job) => {
      const sample = await wholeJob(job);
      done++;
      if (!sample.ok || done % 4 === 0 || done === jobs.length) {
        print(
          `${tag} ${name}: ${done}/${jobs.length} done after ${ms(performance.now() - started)}` +
            (sample.ok ? "" : ` (one FAILED: ${sample.detail})`),
        );
      }
      return sample;
    }));
    const wall = performance.now() - started;
    await Promise.all(jobs.map(retire));
    const series = jobSeries();
    for (const sample of samples) record(series, sample);
    const failed = samples.filter((s) => !s.ok);
    results.set(name, {
      wall,
      failures: failed.length,
      jobs: series,
      firstError: failed[0]?.detail,
    });
    print(`${tag} ${name}: wall ${ms(wall)}, ${failed.length} failed`);
  }
  return results;
}

// ---------------------------------------------------------------- the report

// ---------------------------------------------------------------- item 5: prepare from the warm pool

interface PoolResult {
  /** prepare of a job that takes a warm container. */
  readonly warm: Series;
}

/** This run's own pool identity, so no other host's (or test's) pool is touched. */
const POOL_HOST = `bench-pool-${crypto.randomUUID().slice(0, 8)}`;

async function warmMembers(): Promise<{ name: string; status: string }[]> {
  const listed = await lxcAt("list", "--format", "json");
  if (listed.code !== 0) return [];
  return (JSON.parse(listed.stdout) as {
    name: string;
    status: string;
    config: Record<string, string>;
  }[])
    .filter((i) =>
      i.config?.["user.lxd-driver.host"] === POOL_HOST &&
      i.config?.["user.lxd-driver.pool"] === "warm"
    );
}

/** Waits until the pool has a started container that has finished booting, as a pool in steady state has. */
async function waitForWarm(): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  while (Date.now() < deadline) {
    stopIfInterrupted();
    const warm = (await warmMembers()).find((m) => m.status === "Running");
    if (warm) {
      containers.add(warm.name);
      await settle(warm.name);
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  throw new Error("the pool did not refill in time");
}

async function benchPool(options: Options): Promise<PoolResult> {
  const tag = "[5/5 warm pool]";
  const remote = REMOTE ? `remote = "${REMOTE}"\nproject = "${PROJECT}"\n` : "";
  // Templates off: a job of the pool's own host identity would launch one in the background,
  // disturbing the rounds, and the pool's refills launch from the image either way.
  const settings = await settingsFile(
    `template = false\n[lxd]\nhost_id = "${POOL_HOST}"\n${remote}\n[pool]\nsize = 1\n`,
  );
  const warm = new Series();
  try {
    // The first job finds the pool empty and fills it.
    const seed = await newDriverJob({ LXD_DRIVER_CONFIG: settings });
    const seeded = await guarded((o) => seed.prepare(o));
    await guarded((o) => seed.cleanup(o));
    await retire(seed);
    if (seeded.code !== 0) throw new Error(failure("prepare", seeded));
    for (let round = 0; round < options.rounds; round++) {
      await waitForWarm();
      const job = await newDriverJob({ LXD_DRIVER_CONFIG: settings });
      try {
        const prepare = await guarded((o) => job.prepare(o));
        const claimed = /Took warm container (\S+)/.exec(prepare.stderr)?.[1];
        if (prepare.code !== 0) throw new Error(failure("prepare", prepare));
        if (!claimed) throw new Error("prepare did not take the warm container");
        warm.add(prepare.durationMs);
        print(
          `${tag} round ${round + 1}/${options.rounds}: prepare from the pool ${
            ms(prepare.durationMs)
          }`,
        );
        await guarded((o) => job.cleanup(o));
      } catch (error) {
        warm.add(undefined, errorText(error));
        print(`${tag} round ${round + 1}/${options.rounds}: FAILED: ${errorText(error)}`);
      } finally {
        await retire(job);
      }
    }
  } catch (error) {
    warm.add(undefined, errorText(error));
    print(`${tag} FAILED: ${errorText(error)}`);
  } finally {
    // Including the refill after the last claim, which LXD may not list yet.
    await removeHost(POOL_HOST, lxcAt).catch((error) =>
      print(`${tag} could not delete the pool's containers: ${errorText(error)}`)
    );
    await Deno.remove(settings).catch(() => {});
  }
  return { warm };
}

interface Results {
  readonly options: Options;
  readonly template: TemplateWarmup;
  readonly host: Host;
  readonly runStage: RunStageResult;
  readonly prepareCleanup: Map<string, UpDown>;
  readonly breakdown: Breakdown | undefined;
  readonly wholeJob: Map<string, JobSeries>;
  readonly concurrent: Map<string, Batch>;
  readonly pool: PoolResult;
}

/** A Markdown table; the first column left-aligned, the others right-aligned unless `left`. */
function table(header: string[], rows: string[][], left = false): string[] {
  return [
    `| ${header.join(" | ")} |`,
    `|${header.map((_, i) => (i === 0 || left ? "---" : "---:")).join("|")}|`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ];
}

function samplesCell(series: Series): string {
  return `${series.ok.length}/${series.values.length}`;
}

function failureNotes(entries: [string, Series | undefined][]): string[] {
  return entries.flatMap(([name, series]) =>
    series && series.failures > 0
      ? [`- ${name} failed ${series.failures} time(s); last: ${series.lastError ?? "?"}`]
      : []
  );
}

const FLAGS_LINE = (o: Options) =>
  `${o.rounds} round(s) for items 1–3, ${o.concurrent} concurrent jobs in item 4`;

/** What item 2 says about how lxd-driver made its containers in this run. */
function templateNote(t: TemplateWarmup): string[] {
  const first = t.foundReady
    ? "The template was there from an earlier run."
    : `The run's first lxd-driver prepare, made from the image before any template existed, took ` +
      `${ms(t.firstPrepareMs)} (a single sample; the template's launch starts after it), and the ` +
      `template was ready ${ms(t.readyAfterMs)} after that prepare began.`;
  switch (t.state) {
    case "copies":
      return [
        "On this host LXD rewrites the owner of every file of a new unprivileged container on its",
        "first start (no idmapped mounts for the root disk: LXD 5.0), and lxd-driver avoids that:",
        "its containers are copies of a stopped template that LXD has remapped once (see",
        '"Templates" in README.md). Raw lxc and the example launch from the image and pay for the',
        `remapping every time. ${first}`,
        "",
      ];
    case "unneeded":
      return [
        "LXD remaps nothing on this host (idmapped mounts), so lxd-driver's template is not",
        `needed and its containers come from the image, like the others'. ${first}`,
        "",
      ];
    case "not ready":
      return [
        "lxd-driver's template was not ready within two minutes, so its containers came from",
        `the image, like the others'. ${first}`,
        "",
      ];
  }
}

function render(r: Results): { markdown: string; checks: string[] } {
  const { options } = r;
  const checks: string[] = [];
  const lines: string[] = [
    "# Benchmarks",
    "",
    "Written by `make bench` (`scripts/bench.ts`); re-run it to refresh this file. Each",
    "contender is timed from the runner's side: from starting the command to its exit, as",
    "gitlab-runner waits for it. The contenders alternate round by round (the order rotates",
    "each round), so a busy moment on the host falls on each of them alike; medians are",
    "reported, with the fastest and slowest round.",
    "",
    "- **lxd-driver**: this driver, started by the tests' runner imitation (`tests/runner.ts`)",
    "  exactly as gitlab-runner starts it.",
    "- **raw lxc**: the same work done with bare `lxc` commands and no driver at all: the floor.",
    "- **GitLab example**: the bash scripts from GitLab's documentation page \"Using LXD with",
    '  the Custom executor" (`driver.sh` dispatching to `prepare.sh`, `run.sh`, `cleanup.sh`),',
    "  with the same test image and without its dependency download.",
    "",
    `To include the example, set \`${EXAMPLE_ENV}\` to a directory with GitLab's example LXD`,
    "driver scripts, driver.sh among them:",
    "",
    "```sh",
    `${EXAMPLE_ENV}=/path/to/gitlab-lxd-example make bench`,
    "deno run -A scripts/bench.ts --rounds 15 --concurrent 8   # more rounds, fewer jobs at once",
    "deno run -A scripts/bench.ts --quick --out /tmp/bench.md  # a smoke run (the e2e test's)",
    "```",
    "",
  ];
  if (!options.example) {
    lines.push(
      `> The GitLab example was left out of this run: \`${EXAMPLE_ENV}\` was not set.`,
      "",
    );
  }
  lines.push("## Host", "", ...table(["", "this host"], r.host.rows, true), "");
  lines.push(`Settings: ${FLAGS_LINE(options)}.`, "");

  // 1
  const run = r.runStage;
  const s = (name: string) => run.series.get(name);
  lines.push(
    "## 1. run stage",
    "",
    'One `run` of a trivial runner-shaped script (`runnerScript("true")`) in a container that',
    "is already prepared and idle. Raw lxc is `lxc exec NAME -- bash < SCRIPT` started from a",
    "shell; the example is `driver.sh run SCRIPT STAGE`. The empty Deno program and",
    "`lxd-driver version` (start-up and argument parsing, no LXD) show where the driver's",
    "time goes.",
    "",
  );
  const runRows: string[][] = [];
  for (const name of [DRIVER, RAW, EXAMPLE, EMPTY_DENO, DRIVER_VERSION]) {
    const series = s(name);
    if (!series) continue;
    runRows.push([
      name,
      ms(series.median),
      ms(series.ok.length ? Math.min(...series.ok) : undefined),
      ms(series.ok.length ? Math.max(...series.ok) : undefined),
      samplesCell(series),
    ]);
  }
  lines.push(...table(["contender", "median", "fastest", "slowest", "ok"], runRows), "");
  const runPass = run.added === undefined || run.allowance === undefined
    ? undefined
    : run.added <= run.allowance;
  const runTarget = `lxd-driver − raw = ${ms(run.added)} (median of per-round differences); ` +
    `target ≤ empty Deno start + 15 ms = ${ms(run.allowance)}: **${verdict(runPass)}**`;
  lines.push(`- ${runTarget}`);
  lines.push(`- lxd-driver / raw lxc: ${x(ratio(s(DRIVER)?.median, s(RAW)?.median))}`);
  if (s(EXAMPLE)) {
    lines.push(`- GitLab example / raw lxc: ${x(ratio(s(EXAMPLE)?.median, s(RAW)?.median))}`);
    lines.push(`- lxd-driver / GitLab example: ${x(ratio(s(DRIVER)?.median, s(EXAMPLE)?.median))}`);
  }
  for (const [name, error] of run.setupErrors) {
    lines.push(`- ${name} could not be set up: ${error}`);
  }
  lines.push(...failureNotes([...run.series.entries()]), "");
  checks.push(`1. run stage: ${runTarget.replaceAll("**", "")}`);

  // 2
  const pc = r.prepareCleanup;
  lines.push(
    "## 2. prepare + cleanup",
    "",
    "From nothing to a container that accepts commands, then gone again. lxd-driver:",
    "`prepare` then `cleanup`. Raw lxc: `lxc launch IMAGE NAME`, `lxc exec NAME -- true` every",
    "50 ms until it succeeds, `lxc delete -f NAME`. The example: `prepare.sh` (launch, then",
    "`systemctl isolate multi-user.target` once a second until it succeeds) and `cleanup.sh`.",
    "lxd-driver's prepare does more than the floor: it resolves the image to a fingerprint,",
    "labels the container, waits until systemd reports running or degraded, creates the",
    "builds and cache directories and checks for the shell and git.",
    "",
    ...templateNote(r.template),
  );
  const pcRows: string[][] = [];
  for (const [name, series] of pc) {
    pcRows.push([
      name,
      ms(series.total.median),
      ms(series.up.median),
      ms(series.down.median),
      ms(series.total.ok.length ? Math.min(...series.total.ok) : undefined),
      ms(series.total.ok.length ? Math.max(...series.total.ok) : undefined),
      samplesCell(series.total),
    ]);
  }
  lines.push(
    ...table(
      ["contender", "median total", "median up", "median down", "fastest", "slowest", "ok"],
      pcRows,
    ),
    "",
  );
  const pcRatio = ratio(pc.get(DRIVER)?.total.median, pc.get(RAW)?.total.median);
  const pcTarget = `lxd-driver / raw lxc: ${x(pcRatio)}; target ≤ 1.15: **${
    verdict(pcRatio === undefined ? undefined : pcRatio <= 1.15)
  }**`;
  lines.push(`- ${pcTarget}`);
  if (pc.get(EXAMPLE)) {
    lines.push(
      `- GitLab example / raw lxc: ${
        x(ratio(pc.get(EXAMPLE)?.total.median, pc.get(RAW)?.total.median))
      }`,
      `- lxd-driver / GitLab example: ${
        x(ratio(pc.get(DRIVER)?.total.median, pc.get(EXAMPLE)?.total.median))
      }`,
    );
  }
  lines.push(...failureNotes([...pc.entries()].map(([n, v]) => [n, v.total])), "");
  checks.push(`2. prepare + cleanup: ${pcTarget.replaceAll("**", "")}`);

  if (r.breakdown) {
    const b = r.breakdown;
    const sum = b.operations.reduce((total, [, t]) => total + t, 0);
    lines.push(
      "### Where lxd-driver's prepare time goes",
      "",
      "One extra `prepare` with `LXD_DRIVER_DEBUG=1`, which logs each LXD call and its",
      "duration (a single sample: indicative only).",
      "",
      ...table(
        ["step", "time"],
        [
          ...b.operations.map(([what, t]) => [`\`${what.replaceAll("|", "\\|")}\``, ms(t)]),
          [
            "everything else: Deno start-up, module loading, the driver's own work",
            ms(b.total - sum),
          ],
          ["**prepare, as the runner sees it**", `**${ms(b.total)}**`],
        ],
      ),
      "",
    );
  }

  // 3
  const wj = r.wholeJob;
  lines.push(
    "## 3. a whole job",
    "",
    `\`config\`, \`prepare\`, ${JOB_STAGES.length} trivial \`run\` stages (${
      JOB_STAGES.join(", ")
    }) and \`cleanup\`, driven by the runner imitation; wall time, and the median of each`,
    "part (the run stages summed).",
    "",
  );
  const phaseHeader = ["config", "prepare", `${JOB_STAGES.length} runs`, "cleanup"];
  const phaseCells = (series: JobSeries) => PHASES.map((p) => ms(series.phases[p].median));
  const wjRows: string[][] = [];
  for (const [name, series] of wj) {
    const total = series.total;
    wjRows.push([
      name,
      ms(total.median),
      ...phaseCells(series),
      ms(total.ok.length ? Math.min(...total.ok) : undefined),
      ms(total.ok.length ? Math.max(...total.ok) : undefined),
      samplesCell(total),
    ]);
  }
  lines.push(
    ...table(["contender", "median", ...phaseHeader, "fastest", "slowest", "ok"], wjRows),
    "",
  );
  const wjRatio = ratio(wj.get(DRIVER)?.total.median, wj.get(EXAMPLE)?.total.median);
  const wjTarget = wj.get(EXAMPLE)
    ? `lxd-driver / GitLab example: ${x(wjRatio)}; target ≤ 0.8: **${
      verdict(wjRatio === undefined ? undefined : wjRatio <= 0.8)
    }**`
    : `lxd-driver / GitLab example: target ≤ 0.8: **n/a** (example left out)`;
  lines.push(`- ${wjTarget}`, ...failureNotes([...wj].map(([n, v]) => [n, v.total])), "");
  checks.push(`3. whole job: ${wjTarget.replaceAll("**", "")}`);

  // 4
  const cc = r.concurrent;
  lines.push(
    `## 4. ${options.concurrent} jobs at once`,
    "",
    `${options.concurrent} whole jobs (as in item 3), all started together; wall time until`,
    "the last one has finished, how many failed, and the medians of the jobs that succeeded.",
    "One batch per contender, lxd-driver first.",
    "",
  );
  const ccRows: string[][] = [];
  for (const [name, batch] of cc) {
    ccRows.push([
      name,
      ms(batch.wall),
      `${batch.failures}/${options.concurrent}`,
      ms(batch.jobs.total.median),
      ...phaseCells(batch.jobs),
    ]);
  }
  lines.push(
    ...table(["contender", "wall time", "failed", "median job", ...phaseHeader], ccRows),
    "",
  );
  const driverBatch = cc.get(DRIVER);
  const ccTarget = `lxd-driver failures: ${driverBatch?.failures ?? "–"}; target 0: **${
    verdict(driverBatch === undefined ? undefined : driverBatch.failures === 0)
  }**`;
  lines.push(`- ${ccTarget}`);
  if (cc.get(EXAMPLE)) {
    lines.push(
      `- lxd-driver / GitLab example wall time: ${
        x(ratio(driverBatch?.wall, cc.get(EXAMPLE)?.wall))
      }`,
    );
  }
  for (const [name, batch] of cc) {
    if (batch.firstError) lines.push(`- ${name}, first failure: ${batch.firstError}`);
  }
  lines.push("");
  checks.push(`4. ${options.concurrent} jobs at once: ${ccTarget.replaceAll("**", "")}`);

  // 5
  const pool = r.pool.warm;
  const upMedian = r.prepareCleanup.get(DRIVER)?.up.median;
  lines.push(
    "## 5. prepare from the warm pool",
    "",
    "`[pool] size = 1`: before each round the pool holds one started container that has finished",
    "booting; the job's `prepare` takes it (relabels it, applies the job's limits, checks readiness)",
    "while the pool refills in the background.",
    "",
    ...table(
      ["contender", "median", "fastest", "slowest", "ok"],
      [
        [`${DRIVER}, warm pool`, ms(pool.median), ms(pool.min), ms(pool.max), samplesCell(pool)],
        [`${DRIVER}, new container (item 2's prepare)`, ms(upMedian), "", "", ""],
      ],
    ),
    "",
  );
  const poolTarget = `median ${ms(pool.median)}; target ≤ 300 ms: **${
    verdict(pool.median === undefined ? undefined : pool.median <= 300)
  }**`;
  lines.push(`- ${poolTarget}`, ...failureNotes([[DRIVER, pool]]), "");
  checks.push(`5. warm pool: ${poolTarget.replaceAll("**", "")}`);

  return { markdown: lines.join("\n").replaceAll(/\n{3,}/g, "\n\n"), checks };
}

/** Contenders that produced no measurement at all in items 1–3. */
function didNotRun(r: Results): string[] {
  const broken: string[] = [];
  for (const [name] of r.runStage.setupErrors) broken.push(`run stage: ${name}`);
  for (const [name, series] of r.runStage.series) {
    if (series.ok.length === 0) broken.push(`run stage: ${name}`);
  }
  for (const [name, series] of r.prepareCleanup) {
    if (series.total.ok.length === 0) broken.push(`prepare + cleanup: ${name}`);
  }
  for (const [name, series] of r.wholeJob) {
    if (series.total.ok.length === 0) broken.push(`whole job: ${name}`);
  }
  return broken;
}

// ---------------------------------------------------------------- main

async function main(): Promise<number> {
  let options: Options;
  try {
    const parsed = parseOptions(Deno.args);
    if (parsed === "help") {
      print(USAGE);
      return 0;
    }
    options = parsed;
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    print(`bench: ${error.message}\n\n${USAGE}`);
    return 2;
  }

  if (TEST_CLI !== "lxc") {
    // The floor and GitLab's example call `lxc` itself; a mix of daemons would compare nothing.
    print(`bench: measures LXD through lxc; unset LXD_DRIVER_TEST_CLI (it is ${TEST_CLI})`);
    return 2;
  }
  const probe = await lxcAt("query", "/1.0").catch((error) => ({
    code: 1,
    stdout: "",
    stderr: errorText(error),
  }));
  if (probe.code !== 0) {
    print(`bench: LXD is not reachable: ${probe.stderr.trim()} (run scripts/setup-lxd.sh)`);
    return 1;
  }

  print(`bench: ${FLAGS_LINE(options)}`);
  if (!options.example) {
    print(`bench: ${EXAMPLE_ENV} is not set: the GitLab example's columns are left out`);
  }
  // The driver's defaults, templates included (the tests' settings turn them off).
  driverSettings = await settingsFile(
    "template = true\n" +
      (REMOTE ? `\n[lxd]\nremote = "${REMOTE}"\nproject = "${PROJECT}"\n` : ""),
  );
  scratch = await Deno.makeTempDir({ prefix: "lxd-driver-bench-" });
  const onSignal = (code: number) => () => {
    if (interruptCode !== undefined) {
      print("bench: interrupted again: leaving without deleting this run's containers");
      Deno.exit(code);
    }
    interruptCode = code;
    print("bench: interrupted; cancelling the running stages, then deleting this run's containers");
    interrupt();
  };
  const onInt = onSignal(130);
  const onTerm = onSignal(143);
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);

  let results: Results | undefined;
  try {
    const host = await describeHost(options);
    const template = await warmTemplate();
    // Each item starts once btrfs has cleaned up after the one before.
    await quietStorage(btrfsPool);
    const runStage = await benchRunStage(options);
    await quietStorage(btrfsPool);
    const prepareCleanup = await benchPrepareCleanup(options);
    const breakdown = await prepareBreakdown();
    await quietStorage(btrfsPool);
    const whole = await benchWholeJob(options);
    await quietStorage(btrfsPool);
    const concurrent = await benchConcurrent(options);
    await quietStorage(btrfsPool);
    const pool = await benchPool(options);
    results = {
      template,
      pool,
      options,
      host,
      runStage,
      prepareCleanup,
      breakdown,
      wholeJob: whole,
      concurrent,
    };
  } catch (error) {
    if (!(error instanceof Interrupted)) throw error;
  } finally {
    // Stages cancelled by an interrupt end within seconds; their containers are swept after.
    const settled = Promise.allSettled([...running]);
    await Promise.race([settled, new Promise((resolve) => setTimeout(resolve, 30_000))]);
    const stuck = await deleteLeftovers();
    print(`bench: containers created: ${containers.size}, left behind: ${stuck.length}`);
    if (stuck.length) print(`bench: could not delete ${stuck.join(", ")}`);
    await Deno.remove(scratch, { recursive: true }).catch(() => {});
    await Deno.remove(driverSettings).catch(() => {});
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
  }

  if (interruptCode !== undefined || results === undefined) return interruptCode ?? 1;
  const { markdown, checks } = render(results);
  print("");
  print(markdown);
  print("");
  print("Targets:");
  for (const check of checks) print(`  ${check}`);
  if (options.out) {
    await Deno.writeTextFile(options.out, markdown + "\n");
    // As `deno fmt` would have it, so that `make check` stays clean.
    await new Deno.Command(Deno.execPath(), {
      args: ["fmt", "-q", options.out],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output().catch(() => {});
    print(`bench: wrote ${options.out}`);
  } else {
    print("bench: --quick without --out: no report file written");
  }
  const broken = didNotRun(results);
  if (broken.length > 0) {
    print(`bench: these contenders did not run at all: ${broken.join("; ")}`);
    return 1;
  }
  return 0;
}

Deno.exit(await main());
