/**
 * Contract-test fixtures: a fake `lxc`, passed to the LXD client in place of
 * real processes, that records every argv and answers from a script of
 * canned results, and a Context that collects every log line and everything
 * written to stdout.
 */
import type { Context } from "../../lib/context.ts";
import { createLogger } from "../../lib/log.ts";
import { Lxd, type RunCli, TIMED_OUT_CODE } from "../../lib/lxd.ts";
import { targetOf } from "../../lib/lxd_target.ts";
import { parseSettings } from "../../lib/settings.ts";

/** One canned result of an `lxc` call. `hang` waits until the call is killed (a timeout). */
export interface Reply {
  readonly code?: number;
  readonly stdout?: string;
  readonly stderr?: string;
  readonly hang?: boolean;
}

export const OK: Reply = { code: 0 };
export const INSTANCE_NOT_FOUND: Reply = {
  code: 1,
  stderr: 'Error: Failed checking instance exists "local:x": Instance not found\n',
};
export const IMAGE_NOT_FOUND: Reply = { code: 1, stderr: "Error: Image not found\n" };
export const LXD_DOWN: Reply = {
  code: 1,
  stderr:
    'Error: Get "http://unix.socket/1.0": dial unix /x/unix.socket: connect: no such file or directory\n',
};

/**
 * Answers some calls by what they are rather than by their place in the
 * script (e.g. every readiness exec, however often it is retried); undefined
 * leaves the call to the script.
 */
export type Responder = (argv: readonly string[]) => Reply | undefined;

/**
 * The fake `lxc`: replies to each call the responder does not answer with
 * the script's next reply; calls beyond the script fail.
 */
export class FakeLxc {
  readonly calls: string[][] = [];
  readonly #script: readonly Reply[];
  readonly #respond: Responder | undefined;
  #next = 0;

  constructor(script: readonly Reply[] = [], respond?: Responder) {
    this.#script = script;
    this.#respond = respond;
  }

  /** Calls made to the cli that was not configured (`incus` when `lxc` is, and vice versa). */
  readonly otherCliCalls: string[][] = [];

  /** The argv of every command started detached (see `detached()`); none is run. */
  readonly detachedCalls: string[][] = [];

  /**
   * A `spawnDetached` for `new Lxd(...)` that records instead of starting a
   * process, so that no test can start a real one either.
   */
  detached(cli = "lxc"): (cli: string, argv: readonly string[]) => void {
    return (used, argv) => (used === cli ? this.detachedCalls : this.otherCliCalls).push([...argv]);
  }

  /**
   * A RunCli for `new Lxd(...)` on which `cli` (default `lxc`) runs this
   * fake. The other cli name fails, so that no test can ever reach a real LXD.
   */
  runner(cli = "lxc"): RunCli {
    return (used, args, io) => {
      const argv = [...args];
      if (used !== cli) {
        this.otherCliCalls.push(argv);
        return Promise.resolve({
          code: 127,
          stdout: "",
          stderr: `fake ${used}: not the configured cli\n`,
        });
      }
      const count = this.calls.push(argv);
      const reply = this.#respond?.(argv) ?? this.#script[this.#next++] ??
        { code: 99, stderr: `fake lxc: unexpected call #${count}\n` };
      return answer(reply, io.signal);
    };
  }
}

/** What a fake call gives for `reply`; a hanging one ends when `signal` aborts it. */
export async function answer(reply: Reply, signal: AbortSignal | undefined): Promise<{
  code: number;
  stdout: string;
  stderr: string;
}> {
  if (reply.hang) {
    await new Promise<void>((resolve) => {
      if (!signal || signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve());
    });
    return { code: TIMED_OUT_CODE, stdout: "", stderr: "" };
  }
  return { code: reply.code ?? 0, stdout: reply.stdout ?? "", stderr: reply.stderr ?? "" };
}

export interface HarnessOptions {
  readonly env?: Readonly<Record<string, string>>;
  /** TOML settings text. */
  readonly settings?: string;
  readonly debug?: boolean;
  readonly script?: readonly Reply[];
  /** Answers calls before the script does (see Responder). */
  readonly respond?: Responder;
}

export interface Harness {
  readonly ctx: Context;
  readonly lxc: FakeLxc;
  readonly lxd: Lxd;
  /** Every line the logger emitted. */
  readonly lines: string[];
  /** Every chunk written to stdout. */
  readonly written: string[];
}

export function harness(options: HarnessOptions = {}): Harness {
  const lines: string[] = [];
  const written: string[] = [];
  const vars = { ...options.env };
  const settings = parseSettings(options.settings ?? "", "test.toml");
  const log = createLogger({
    debug: options.debug ?? settings.log.debug,
    sink: (line) => lines.push(line),
  });
  const ctx: Context = {
    env: (name) => vars[name],
    settings,
    log,
    write: (text) => {
      written.push(text);
      return Promise.resolve();
    },
  };
  const lxc = new FakeLxc(options.script, options.respond);
  const lxd = new Lxd({
    target: targetOf(settings.lxd),
    log,
    runCli: lxc.runner(settings.lxd.cli),
    spawnDetached: lxc.detached(settings.lxd.cli),
  });
  return { ctx, lxc, lxd, lines, written };
}

/** A temporary `$JOB_RESPONSE_FILE`, removed when disposed. */
export interface PayloadFile extends AsyncDisposable {
  readonly path: string;
}

export async function payloadFile(
  payload: unknown = { id: 42, job_info: { project_id: 7 } },
): Promise<PayloadFile> {
  const path = await Deno.makeTempFile({ prefix: "lxd-driver-response-", suffix: ".json" });
  await Deno.writeTextFile(path, JSON.stringify(payload));
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path).catch(() => {}),
  };
}

/** The runner's environment for job 42 of project 7 on runner 3, slot 1. */
export function jobEnv(
  payload: PayloadFile,
  extra: Readonly<Record<string, string>> = {},
): Record<string, string> {
  return {
    JOB_RESPONSE_FILE: payload.path,
    CUSTOM_ENV_CI_RUNNER_ID: "3",
    CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID: "1",
    CUSTOM_ENV_CI_JOB_ID: "999",
    CUSTOM_ENV_CI_PROJECT_ID: "888",
    ...extra,
  };
}

/** The container name for jobEnv's job. */
export const NAME = "runner-3-project-7-concurrent-1-job-42";
export const SECRET = "hunter2-value";
