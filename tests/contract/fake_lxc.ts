/**
 * Contract-test fixtures: a fake `lxc` registered on a dax CommandBuilder
 * that records every argv and answers from a script of canned results, and
 * a Context that collects every log line and everything written to stdout.
 */
import { CommandBuilder } from "dax";
import type { Context } from "../../lib/context.ts";
import { createLogger } from "../../lib/log.ts";
import { Lxd } from "../../lib/lxd.ts";
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

/** The fake `lxc`: replies to the n-th call with the n-th reply; calls beyond the script fail. */
export class FakeLxc {
  readonly calls: string[][] = [];
  readonly #script: readonly Reply[];

  constructor(script: readonly Reply[] = []) {
    this.#script = script;
  }

  /** Calls made to the cli that was not configured (`incus` when `lxc` is, and vice versa). */
  readonly otherCliCalls: string[][] = [];

  /**
   * A builder on which `cli` (default `lxc`) runs this fake. The other cli
   * name is registered too, so that no test can ever reach a real LXD.
   */
  builder(cli = "lxc"): CommandBuilder {
    const other = cli === "incus" ? "lxc" : "incus";
    return new CommandBuilder().registerCommand(other, (context) => {
      this.otherCliCalls.push([...context.args]);
      return context.error(127, `fake ${other}: not the configured cli`);
    }).registerCommand(cli, async (context) => {
      const index = this.calls.push([...context.args]) - 1;
      const reply = this.#script[index] ??
        { code: 99, stderr: `fake lxc: unexpected call #${index + 1}\n` };
      if (reply.hang) {
        await new Promise<void>((resolve) => {
          if (context.signal.aborted) resolve();
          else context.signal.addListener(() => resolve());
        });
        return { code: 130 };
      }
      if (reply.stdout) await context.stdout.writeText(reply.stdout);
      if (reply.stderr) await context.stderr.writeText(reply.stderr);
      return { code: reply.code ?? 0 };
    });
  }
}

export interface HarnessOptions {
  readonly env?: Readonly<Record<string, string>>;
  /** TOML settings text. */
  readonly settings?: string;
  readonly debug?: boolean;
  readonly script?: readonly Reply[];
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
  const lxc = new FakeLxc(options.script);
  const lxd = new Lxd({
    target: targetOf(settings.lxd),
    log,
    builder: lxc.builder(settings.lxd.cli),
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
