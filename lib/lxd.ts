/**
 * The LXD client: every `lxc` (or `incus`) call the driver makes, except the
 * run stage's streaming exec (lib/stage_exec.ts).
 *
 * Commands are started with `Deno.Command` and an argv array: no shell ever
 * parses them, and positional names and images come after `--`, so no value
 * can become a flag. (A shell library would have been one more import to
 * load on every start of prepare and cleanup; measured, dax's npm build adds
 * about 60 ms to each.)
 */
import { formatDuration } from "./duration.ts";
import { SystemFailure } from "./errors.ts";
import { killOnAbort } from "./kill_on_abort.ts";
import type { InstanceSpec } from "./instance_spec.ts";
import type { Logger } from "./log.ts";
import { apiPath, globalArgs, instanceRef, type LxdTarget } from "./lxd_target.ts";

/** A failed `lxc` call. A system failure unless a stage decides otherwise. */
export class LxdError extends SystemFailure {
  readonly stderr: string;

  constructor(
    readonly args: readonly string[],
    readonly code: number,
    stderr: string,
    cli: string = "lxc",
  ) {
    const detail = stderr.trim().replace(/^Error: /, "") || `exit code ${code}`;
    super(
      `${describe(args)} failed: ${detail}` +
        (isUnreachable(stderr) ? `\n${unreachableHint(cli)}` : ""),
    );
    this.name = "LxdError";
    this.stderr = stderr;
  }

  get notFound(): boolean {
    return /\binstance not found\b/i.test(this.stderr);
  }

  get unreachable(): boolean {
    return isUnreachable(this.stderr);
  }

  /** A change LXD refused because something holds the instance (e.g. its stop operation). */
  get busy(): boolean {
    return /busy/i.test(this.stderr);
  }

  /** A creation that failed because an instance of that name exists (LXD and Incus wordings). */
  get alreadyExists(): boolean {
    return /entry already exists|UNIQUE constraint failed: instances\.|instance .* already exists/i
      .test(this.stderr);
  }
}

/** What to check when the daemon cannot be reached, in the words of the client in use. */
function unreachableHint(cli: string): string {
  return cli === "incus"
    ? "Incus is not reachable. Check that the daemon runs (`incus info`), that this user may use its " +
      "socket (member of the incus-admin group, or INCUS_DIR pointing at the right directory), and " +
      "the [lxd] settings."
    : "LXD is not reachable. Check that the daemon runs (`lxc info`), that this user may use its " +
      "socket (member of the lxd group, or LXD_DIR pointing at the right directory), and the [lxd] " +
      "settings.";
}

function isUnreachable(stderr: string): boolean {
  return /unix\.socket|dial unix|connection refused|not accessible|cannot connect/i
    .test(stderr);
}

/**
 * An `lxc` call for the debug log: request bodies and scripts are shortened
 * to placeholders, so the line stays readable and carries only names, paths
 * and flags, which the driver chose.
 */
export function describe(args: readonly string[]): string {
  return args.map((arg, i) =>
    args[i - 1] === "--data"
      ? "<json>"
      : arg.includes("\n")
      ? "<script>"
      : arg.length > 80
      ? `${arg.slice(0, 77)}...`
      : arg
  ).join(" ");
}

export interface InstanceSummary {
  readonly name: string;
  readonly status: string;
  readonly config: Readonly<Record<string, string>>;
}

export interface ExecOptions {
  readonly stdin?: string;
  readonly timeoutMs?: number;
}

/** What one finished `lxc` call gave. */
export interface CliResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `cli argv...` to completion; `signal` aborts it (a timeout). */
export type RunCli = (
  cli: string,
  argv: readonly string[],
  io: { readonly stdin?: string; readonly signal?: AbortSignal },
) => Promise<CliResult>;

/** The exit code reported for a call stopped by its timeout (as timeout(1) does). */
export const TIMED_OUT_CODE = 124;

const decoder = new TextDecoder();

/** The real RunCli: a child process with piped output. */
export async function runCliProcess(
  cli: string,
  argv: readonly string[],
  io: { readonly stdin?: string; readonly signal?: AbortSignal },
): Promise<CliResult> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(cli, {
      args: [...argv],
      stdin: io.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    // As a shell reports it: 127 for a missing command, 126 for one that cannot be run.
    const missing = error instanceof Deno.errors.NotFound;
    return {
      code: missing ? 127 : 126,
      stdout: "",
      stderr: `${cli}: ${missing ? "command not found" : (error as Error).message}\n`,
    };
  }
  const stopWatching = killOnAbort(child, io.signal);
  // Collected while stdin is written, so a command answering before it has read everything cannot block.
  const collected = child.output().finally(stopWatching);
  if (io.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    // A command that exits without reading all its input is not an error of the write.
    await writer.write(new TextEncoder().encode(io.stdin)).catch(() => {});
    await writer.close().catch(() => {});
  }
  const output = await collected;
  return {
    code: io.signal?.aborted ? TIMED_OUT_CODE : output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

export interface LxdOptions {
  readonly target: LxdTarget;
  readonly log: Logger;
  /** How commands are run; tests pass a fake `lxc`. */
  readonly runCli?: RunCli;
  /** Starts a command without waiting for it (see `Lxd.spawnDetached`); tests record instead. */
  readonly spawnDetached?: (cli: string, argv: readonly string[]) => void;
}

/**
 * Starts `cli argv...` detached, with no standard streams: it outlives the
 * driver and holds none of the runner's pipes open.
 */
function spawnDetachedProcess(cli: string, argv: readonly string[]): void {
  new Deno.Command(cli, {
    args: [...argv],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn().unref();
}

export class Lxd {
  readonly target: LxdTarget;
  readonly #cli: string;
  readonly #log: Logger;
  readonly #runCli: RunCli;
  readonly #spawnDetached: (cli: string, argv: readonly string[]) => void;

  constructor(options: LxdOptions) {
    this.target = options.target;
    this.#cli = options.target.cli;
    this.#log = options.log;
    this.#runCli = options.runCli ?? runCliProcess;
    this.#spawnDetached = options.spawnDetached ?? spawnDetachedProcess;
  }

  /** The instance's reference for CLI commands (with the remote, if any). */
  ref(name: string): string {
    return instanceRef(this.target, name);
  }

  /** The whole argv of a CLI command, with the project flag when one is set. */
  argv(args: readonly string[]): string[] {
    return args[0] === "query" ? [...args] : [...globalArgs(this.target), ...args];
  }

  /** An API path on the remote and in the project. */
  api(path: string): string {
    return apiPath(this.target, path);
  }

  /** Runs `<cli> args...`, returning stdout; throws LxdError on a non-zero exit. */
  async run(args: readonly string[], options: ExecOptions = {}): Promise<string> {
    const started = performance.now();
    const result = await this.#runCli(this.#cli, this.argv(args), {
      ...(options.stdin === undefined ? {} : { stdin: options.stdin }),
      ...(options.timeoutMs === undefined
        ? {}
        : { signal: AbortSignal.timeout(options.timeoutMs) }),
    });
    this.#log.debug(
      `${this.#cli} ${describe(args)}: exit ${result.code} in ${
        formatDuration(performance.now() - started)
      }`,
    );
    if (result.code !== 0) throw new LxdError(args, result.code, result.stderr, this.#cli);
    return result.stdout;
  }

  /** Sends a request to the LXD API (`lxc query`), waiting for its operation; returns the parsed answer. */
  async query(
    method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE",
    path: string,
    body?: unknown,
  ): Promise<unknown> {
    const args = ["query", "--wait", "--request", method];
    if (body !== undefined) args.push("--data", JSON.stringify(body));
    args.push("--", this.api(path));
    const out = await this.run(args);
    return out.trim() ? JSON.parse(out) : undefined;
  }

  /** Creates (without starting) the instance described by `spec`. */
  async create(spec: InstanceSpec): Promise<void> {
    const member = this.target.member ? `?target=${encodeURIComponent(this.target.member)}` : "";
    await this.query("POST", `/1.0/instances${member}`, spec);
  }

  /** Changes some of an instance's config keys and devices, keeping the others. */
  async patch(
    name: string,
    changes: { config?: Record<string, string>; devices?: Record<string, Record<string, string>> },
  ): Promise<void> {
    await this.query("PATCH", `/1.0/instances/${encodeURIComponent(name)}`, changes);
  }

  /** Starts a created instance. */
  async start(name: string): Promise<void> {
    await this.run(["start", "--", this.ref(name)]);
  }

  /** The instance's config keys, including LXD's volatile ones. */
  async instanceConfig(name: string): Promise<Record<string, string>> {
    const answer = await this.query("GET", `/1.0/instances/${encodeURIComponent(name)}`) as {
      config?: Record<string, string>;
    };
    return answer?.config ?? {};
  }

  /** Copies a host file into the container, creating missing directories. */
  async pushFile(
    hostPath: string,
    name: string,
    containerPath: string,
    mode: string,
  ): Promise<void> {
    await this.run([
      "file",
      "push",
      "--create-dirs",
      "--mode",
      mode,
      "--",
      hostPath,
      `${this.ref(name)}${containerPath}`,
    ]);
  }

  /**
   * Starts `<cli> args...` in the background and returns at once; nothing
   * waits for it and its outcome is not reported (the pool's launches and
   * removals, which the next claim checks on).
   */
  spawnDetached(args: readonly string[]): void {
    const argv = this.argv(args);
    this.#log.debug(`${this.#cli} ${describe(args)}: started in the background`);
    this.#spawnDetached(this.#cli, argv);
  }

  /** Force-deletes `name` in the background (see spawnDetached). */
  deleteDetached(name: string): void {
    this.spawnDetached(["delete", "--force", "--", this.ref(name)]);
  }

  /** Force-deletes `name`; returns false when it did not exist. */
  async delete(name: string): Promise<boolean> {
    try {
      await this.run(["delete", "--force", "--", this.ref(name)]);
      return true;
    } catch (error) {
      if (error instanceof LxdError && error.notFound) return false;
      throw error;
    }
  }

  /** Runs argv inside the container and returns its stdout. */
  exec(name: string, argv: readonly string[], options: ExecOptions = {}): Promise<string> {
    return this.run(["exec", "--force-noninteractive", "--", this.ref(name), ...argv], options);
  }

  /**
   * Every instance of the project with its status and config (for the pool,
   * gc and doctor). One API call at recursion 1: `lxc list` would also ask
   * each instance for its state (processes, network, disk), which costs a
   * pool claim time on a busy host.
   */
  async list(): Promise<InstanceSummary[]> {
    const parsed = await this.query("GET", "/1.0/instances?recursion=1") as {
      name: string;
      status: string;
      config?: Record<string, string>;
    }[];
    return parsed.map((i) => ({ name: i.name, status: i.status, config: i.config ?? {} }));
  }
}
