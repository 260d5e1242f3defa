/**
 * Runs one stage's script inside the container: the script is streamed to
 * the shell over stdin (it holds the job token, so it never touches the
 * container's disk) and the output goes straight to the runner's pipes.
 *
 * This is the hot path, started about ten times per job, so it uses
 * `Deno.Command` directly and loads nothing it does not need.
 */
import { formatDuration } from "./duration.ts";
import { killOnAbort } from "./kill_on_abort.ts";
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
export const WRAPPER = `id=$1; shift
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
export const STOPPER = `f=${STATE_DIR}/$1.pid
[ -r "$f" ] || exit 0
pid=$(cat "$f")
kill -TERM "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || exit 0
i=0
while kill -0 "-$pid" 2>/dev/null && [ "$i" -lt "$2" ]; do sleep 0.1 2>/dev/null || sleep 1; i=$((i+1)); done
kill -KILL "-$pid" 2>/dev/null
exit 0`;

/** Whether the stage's shell has finished (its exit status is recorded), leaving the record in place. */
export const STATUS_PROBE = `[ -r ${STATE_DIR}/$1.rc ]`;

/** Reads (and removes) the stage's recorded exit status; empty when the shell never finished. */
export const STATUS_READER =
  `f=${STATE_DIR}/$1.rc; [ -r "$f" ] && cat "$f"; rm -f "$f" "${STATE_DIR}/$1.pid"; exit 0`;

/** How a client process ended. */
export interface ClientStatus {
  readonly success: boolean;
  readonly code: number;
  readonly signal: Deno.Signal | null;
}

export interface ClientOutput extends ClientStatus {
  readonly stdout: Uint8Array;
}

/** The parts of a `Deno.ChildProcess` the stage uses. */
export interface ClientProcess {
  readonly stdin: WritableStream<Uint8Array>;
  readonly status: Promise<ClientStatus>;
  kill(signal?: Deno.Signal): void;
}

/** The parts of a `Deno.Command` the stage uses. */
export interface ClientCommand {
  spawn(): ClientProcess;
  output(): Promise<ClientOutput>;
}

/**
 * Prepares a client command; `new Deno.Command(cli, options)` unless a test
 * passes a fake. An `options.signal` ends `output()` with SIGKILL (see
 * lib/kill_on_abort.ts), not the TERM `Deno.Command` would send.
 */
export type CommandFactory = (cli: string, options: Deno.CommandOptions) => ClientCommand;

export const denoCommand: CommandFactory = (
  cli: string,
  options: Deno.CommandOptions,
): ClientCommand => {
  const { signal, ...rest } = options;
  const command = new Deno.Command(cli, rest);
  return {
    spawn: () => command.spawn(),
    output: async () => {
      if (!signal) return await command.output();
      const child = command.spawn();
      const stopWatching = killOnAbort(child, signal);
      try {
        return await child.output();
      } finally {
        stopWatching();
      }
    },
  };
};

/** How long one of the short record-keeping execs may take before its client is killed. */
const SHORT_EXEC_TIMEOUT_MS = 15_000;

/** Calls `cancel` when the runner cancels the job; returns a function that stops listening. */
export type CancelRequests = (cancel: () => void) => () => void;

const CANCEL_SIGNALS: Deno.Signal[] = ["SIGTERM", "SIGINT"];

/** The runner cancels by signalling our process group: SIGTERM (or SIGINT). */
const onCancelSignals: CancelRequests = (cancel) => {
  for (const signal of CANCEL_SIGNALS) Deno.addSignalListener(signal, cancel);
  return () => {
    for (const signal of CANCEL_SIGNALS) Deno.removeSignalListener(signal, cancel);
  };
};

/** How the stage reaches processes and signals; the real ones unless a test passes fakes. */
export interface StageIo {
  /** Default: `Deno.Command`. */
  readonly command?: CommandFactory;
  /** Default: SIGTERM and SIGINT, the runner's cancel. */
  readonly cancelRequests?: CancelRequests;
  /** How often a long stage is checked for a client that outlives its script. */
  readonly watchIntervalMs?: number;
}

export interface StageExecOptions extends StageIo {
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

/** One running stage: where it runs, its id in the wrapper's records, and how to reach LXD. */
interface Stage {
  readonly target: LxdTarget;
  readonly container: string;
  readonly stageId: string;
  readonly log: Logger;
  readonly command: CommandFactory;
}

/** Runs the script to completion (or cancel) and reports how it ended. */
export async function execStage(options: StageExecOptions): Promise<StageOutcome> {
  const { target, container, log } = options;
  const stage: Stage = {
    target,
    container,
    stageId: crypto.randomUUID(),
    log,
    command: options.command ?? denoCommand,
  };
  const cli = target.cli;
  const graceMs = options.killGraceMs ?? 3000;
  const script = await Deno.open(options.scriptPath, { read: true }).catch((error) => {
    throw new SystemFailure(`cannot read the job script ${options.scriptPath}: ${error.message}`);
  });

  const inner = ["sh", "-c", WRAPPER, "lxd-driver", stage.stageId, ...options.shell];
  const started = performance.now();
  // detached: the runner signals our whole process group on cancel; the local
  // client must not die with it before the job inside the container is stopped.
  const child = stage.command(cli, {
    args: execArgs(target, container, inner),
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
    const tenths = String(Math.max(1, Math.round(graceMs / 100)));
    shortExec(stage, STOPPER, [tenths]).finally(() => {
      // The wrapper exits once its session is gone; if the client still hangs, drop it.
      const timer = setTimeout(() => {
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
      }, 2000);
      child.status.finally(() => clearTimeout(timer));
    });
  };
  const stopListening = (options.cancelRequests ?? onCancelSignals)(onCancel);
  const stopWatching = watchForHungClient(
    stage,
    child,
    options.watchIntervalMs ?? WATCH_INTERVAL_MS,
  );
  try {
    const status = await child.status;
    logCall(stage, inner, started, ended(status));
    await feeding;
    if (status.success) return { exitCode: 0, cancelled };
    const recorded = await readRecordedStatus(stage);
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
    stopWatching();
    stopListening();
  }
}

/** How often a long stage is checked for a client that outlives its script. */
const WATCH_INTERVAL_MS = 10_000;

/**
 * LXD can leave `lxc exec` waiting after the command inside has exited (seen
 * with many jobs at once), which would hold the job until its timeout. From
 * one interval into a stage, the wrapper's exit record is checked at that
 * interval; once it exists and the client is still there one interval later,
 * the client is stopped and the recorded status used. Short stages never pay
 * for this. Returns a function that stops watching.
 *
 * The interval is an `AbortSignal.timeout`, not `setInterval`: the first use
 * of Deno's timers costs about 5 ms of loading, in every stage of every job.
 */
function watchForHungClient(
  stage: Stage,
  child: ClientProcess,
  intervalMs: number,
): () => void {
  let finishedSeen = false;
  let stopped = false;
  let signal: AbortSignal | undefined;
  const tick = async () => {
    if (stopped) return;
    try {
      if (finishedSeen) {
        stage.log.warn(
          `${stage.target.cli} exec did not return after the script ended; no longer waiting for it`,
        );
        child.kill("SIGKILL");
      } else {
        finishedSeen = (await shortExec(stage, STATUS_PROBE))?.success === true;
      }
    } catch {
      /* the client exited meanwhile */
    }
    schedule();
  };
  const schedule = () => {
    if (stopped) return;
    signal = AbortSignal.timeout(intervalMs);
    signal.addEventListener("abort", tick, { once: true });
  };
  schedule();
  return () => {
    stopped = true;
    signal?.removeEventListener("abort", tick);
  };
}

/** The stage's recorded exit status, removing the record; undefined when there is none. */
async function readRecordedStatus(stage: Stage): Promise<number | undefined> {
  const result = await shortExec(stage, STATUS_READER, [], "piped");
  if (!result?.success) return undefined;
  const text = new TextDecoder().decode(result.stdout).trim();
  return /^\d{1,3}$/.test(text) ? Number(text) : undefined;
}

/**
 * Runs one of the short scripts about the stage's records
 * (`sh -c SCRIPT lxd-driver STAGE_ID ARGS...`) without stdin; its stdout is
 * only readable when `stdout` is "piped". Undefined when the client could not
 * be started.
 */
async function shortExec(
  stage: Stage,
  script: string,
  args: readonly string[] = [],
  stdout: "piped" | "null" = "null",
): Promise<ClientOutput | undefined> {
  const inner = ["sh", "-c", script, "lxd-driver", stage.stageId, ...args];
  const started = performance.now();
  try {
    const result = await stage.command(stage.target.cli, {
      args: execArgs(stage.target, stage.container, inner),
      stdin: "null",
      stdout,
      stderr: "null",
      // LXD can hang an exec under load; a short one must never outlive the stage.
      signal: AbortSignal.timeout(SHORT_EXEC_TIMEOUT_MS),
    }).output();
    logCall(stage, inner, started, ended(result));
    return result;
  } catch (error) {
    logCall(stage, inner, started, `not started (${(error as Error).message})`);
    return undefined;
  }
}

/** `exec` of `argv` in the container, after the project flag. */
function execSubcommand(target: LxdTarget, container: string, argv: readonly string[]): string[] {
  return ["exec", "--force-noninteractive", "--", instanceRef(target, container), ...argv];
}

/** The whole argv of `exec` of `argv` in the container, on the target's remote and project. */
function execArgs(target: LxdTarget, container: string, argv: readonly string[]): string[] {
  return [...globalArgs(target), ...execSubcommand(target, container, argv)];
}

function ended(status: ClientStatus): string {
  return `exit ${status.code}${status.signal ? ` (signal ${status.signal})` : ""}`;
}

/**
 * The debug line of one `exec`, in lib/lxd.ts's form (`lxc ARGS: exit N in
 * DURATION`). `inner` is `sh -c SCRIPT ...`; SCRIPT is shown as `<script>`,
 * the rest are names, ids and flags the driver chose.
 */
function logCall(stage: Stage, inner: readonly string[], started: number, outcome: string): void {
  if (!stage.log.debugEnabled) return;
  const shown = [...inner.slice(0, 2), "<script>", ...inner.slice(3)];
  stage.log.debug(
    `${stage.target.cli} ${
      execSubcommand(stage.target, stage.container, shown).join(" ")
    }: ${outcome} in ${formatDuration(performance.now() - started)}`,
  );
}
