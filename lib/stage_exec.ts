/**
 * Runs one stage's script inside the container: the script is streamed to
 * the shell over stdin (it holds the job token, so it never touches the
 * container's disk) and the output goes straight to the runner's pipes.
 *
 * This is the hot path, started about ten times per job, so it uses
 * `Deno.Command` directly instead of loading dax.
 */
import { SystemFailure } from "./errors.ts";
import type { Logger } from "./log.ts";
import { globalArgs, instanceRef, type LxdTarget } from "./lxd_target.ts";

/** Where the wrapper keeps each stage's pid and exit status inside the container. */
const STATE_DIR = "/run/lxd-driver";

/**
 * The wrapper the shell runs under (`sh -c WRAPPER lxd-driver STAGE_ID SHELL...`).
 * It starts the shell in a session of its own, so that a cancel can signal
 * every process the stage started; records the shell's exit status, so an
 * `lxc` failure is never mistaken for the script's; and, once the shell has
 * exited, kills what it left behind, which would otherwise hold the output
 * open and stall the runner.
 */
const WRAPPER = `id=$1; shift
d=${STATE_DIR}
exec 3<&0
if command -v setsid >/dev/null 2>&1; then setsid "$@" <&3 3<&- & else "$@" <&3 3<&- & fi
pid=$!
exec 3<&-
{ echo "$pid" >"$d/$id.pid"; } 2>/dev/null || { mkdir -p "$d" && echo "$pid" >"$d/$id.pid"; }
trap 'kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null' TERM INT HUP
wait "$pid"; rc=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid"; rc=$?; done
kill -KILL "-$pid" 2>/dev/null
echo "$rc" >"$d/$id.rc"
exit "$rc"`;

/** Stops a stage: TERM to its session, then KILL after `$2` tenths of a second. */
const STOPPER = `f=${STATE_DIR}/$1.pid
[ -r "$f" ] || exit 0
pid=$(cat "$f")
kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || exit 0
i=0
while kill -0 "-$pid" 2>/dev/null && [ "$i" -lt "$2" ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done
kill -KILL "-$pid" 2>/dev/null
exit 0`;

/** Whether the stage's shell has finished (its exit status is recorded), leaving the record in place. */
const STATUS_PROBE = `[ -r ${STATE_DIR}/$1.rc ]`;

/** Reads (and removes) the stage's recorded exit status; empty when the shell never finished. */
const STATUS_READER =
  `f=${STATE_DIR}/$1.rc; [ -r "$f" ] && cat "$f"; rm -f "$f" "${STATE_DIR}/$1.pid"; exit 0`;

export interface StageExecOptions {
  readonly target: LxdTarget;
  readonly container: string;
  /** The shell command that reads the script from stdin. */
  readonly shell: readonly string[];
  readonly scriptPath: string;
  readonly log: Logger;
  /** How long the job's processes get between TERM and KILL on cancel. */
  readonly killGraceMs?: number;
}

export interface StageOutcome {
  /** The script's exact exit status (128+N when killed by signal N). */
  readonly exitCode: number;
  readonly cancelled: boolean;
}

const CANCEL_SIGNALS: Deno.Signal[] = ["SIGTERM", "SIGINT"];

/** Runs the script to completion (or cancel) and reports how it ended. */
export async function execStage(options: StageExecOptions): Promise<StageOutcome> {
  const stageId = crypto.randomUUID();
  const { target, container, log } = options;
  const cli = target.cli;
  const graceMs = options.killGraceMs ?? 3000;
  const script = await Deno.open(options.scriptPath, { read: true }).catch((error) => {
    throw new SystemFailure(`cannot read the job script ${options.scriptPath}: ${error.message}`);
  });

  // detached: the runner signals our whole process group on cancel; the local
  // client must not die with it before the job inside the container is stopped.
  const child = new Deno.Command(cli, {
    args: execArgs(target, container, [
      "sh",
      "-c",
      WRAPPER,
      "lxd-driver",
      stageId,
      ...options.shell,
    ]),
    stdin: "piped",
    stdout: "inherit",
    stderr: "inherit",
    detached: true,
  }).spawn();
  // A shell that exits early closes its stdin; the rest of the script is moot.
  const feeding = script.readable.pipeTo(child.stdin).catch(() => {});

  let cancelled = false;
  const onCancel = () => {
    if (cancelled) return;
    cancelled = true;
    log.info("Cancel received: stopping the job's processes in the container");
    stopStage(target, container, stageId, graceMs).finally(() => {
      // The wrapper exits once its session is gone; if the client still hangs, drop it.
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
      }, 2000);
      child.status.finally(() => clearTimeout(timer));
    });
  };
  for (const signal of CANCEL_SIGNALS) Deno.addSignalListener(signal, onCancel);
  const watchdog = watchForHungClient(target, container, stageId, child, log);
  try {
    const status = await child.status;
    await feeding;
    if (status.success) return { exitCode: 0, cancelled };
    const recorded = await readRecordedStatus(target, container, stageId);
    if (recorded === undefined) {
      if (cancelled) return { exitCode: 128 + 15, cancelled };
      throw new SystemFailure(
        `the script did not run to completion in container ${container}: ${cli} exec exited with ${status.code}` +
          (status.signal ? ` (signal ${status.signal})` : "") +
          "; the container may be gone or LXD may have stopped",
      );
    }
    if (recorded === 0) {
      log.warn(`${cli} exec exited with ${status.code}, but the script succeeded`);
    }
    return { exitCode: recorded, cancelled };
  } finally {
    clearInterval(watchdog);
    for (const signal of CANCEL_SIGNALS) Deno.removeSignalListener(signal, onCancel);
  }
}

/** How often a long stage is checked for a client that outlives its script. */
const WATCH_INTERVAL_MS = 10_000;

/**
 * LXD can leave `lxc exec` waiting after the command inside has exited (seen
 * with many jobs at once), which would hold the job until its timeout. From
 * WATCH_INTERVAL_MS into a stage, the wrapper's exit record is checked at that
 * interval; once it exists and the client is still there one interval later,
 * the client is stopped and the recorded status used. Short stages never pay
 * for this.
 */
function watchForHungClient(
  target: LxdTarget,
  container: string,
  stageId: string,
  child: Deno.ChildProcess,
  log: Logger,
): ReturnType<typeof setInterval> {
  let finishedSeen = false;
  let checking = false;
  return setInterval(async () => {
    if (checking) return;
    checking = true;
    try {
      if (finishedSeen) {
        log.warn(
          `${target.cli} exec did not return after the script ended; no longer waiting for it`,
        );
        child.kill("SIGKILL");
      } else {
        const probe = await new Deno.Command(target.cli, {
          args: execArgs(target, container, ["sh", "-c", STATUS_PROBE, "lxd-driver", stageId]),
          stdin: "null",
          stdout: "null",
          stderr: "null",
        }).output().catch(() => undefined);
        finishedSeen = probe?.success === true;
      }
    } catch {
      /* the client exited meanwhile */
    } finally {
      checking = false;
    }
  }, WATCH_INTERVAL_MS);
}

/** `exec` of `argv` in the container, on the target's remote and project. */
function execArgs(target: LxdTarget, container: string, argv: readonly string[]): string[] {
  return [
    ...globalArgs(target),
    "exec",
    "--force-noninteractive",
    "--",
    instanceRef(target, container),
    ...argv,
  ];
}

async function stopStage(
  target: LxdTarget,
  container: string,
  stageId: string,
  graceMs: number,
): Promise<void> {
  const tenths = String(Math.max(1, Math.round(graceMs / 100)));
  await new Deno.Command(target.cli, {
    args: execArgs(target, container, ["sh", "-c", STOPPER, "lxd-driver", stageId, tenths]),
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).output().catch(() => {});
}

async function readRecordedStatus(
  target: LxdTarget,
  container: string,
  stageId: string,
): Promise<number | undefined> {
  const result = await new Deno.Command(target.cli, {
    args: execArgs(target, container, ["sh", "-c", STATUS_READER, "lxd-driver", stageId]),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => undefined);
  if (!result?.success) return undefined;
  const text = new TextDecoder().decode(result.stdout).trim();
  return /^\d{1,3}$/.test(text) ? Number(text) : undefined;
}
