/**
 * Contract-test fixtures for the run stage: a fake LXD client in place of
 * `Deno.Command`, which records every call and answers through a handler,
 * and a cancel trigger in place of the runner's SIGTERM.
 */
import {
  type CancelRequests,
  type ClientOutput,
  type ClientProcess,
  type ClientStatus,
  type CommandFactory,
  STATUS_PROBE,
  STATUS_READER,
  STOPPER,
  WRAPPER,
} from "../../lib/stage_exec.ts";

/** Which of the stage's scripts a call runs: the wrapper (the stage itself) or a short one. */
export type CallKind = "exec" | "stopper" | "probe" | "reader";

export interface Call {
  readonly cli: string;
  readonly args: readonly string[];
  readonly options: Deno.CommandOptions;
  readonly kind: CallKind;
  /** The argument after `lxd-driver`: the stage's id. */
  readonly stageId: string;
}

/** How the fake client answers one call. */
export interface Reply {
  readonly code?: number;
  readonly stdout?: string;
  /** The exec keeps running until it is killed or `FakeClient.finish` ends it. */
  readonly hang?: boolean;
  /** The client cannot be started. */
  readonly unstartable?: boolean;
}

const SCRIPTS: ReadonlyMap<string, CallKind> = new Map([
  [WRAPPER, "exec"],
  [STOPPER, "stopper"],
  [STATUS_PROBE, "probe"],
  [STATUS_READER, "reader"],
]);

const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = { SIGKILL: 9, SIGTERM: 15 };

export class FakeClient {
  readonly calls: Call[] = [];
  /** Signals sent to the exec's client, in order. */
  readonly kills: Deno.Signal[] = [];
  /** Everything written to the exec's stdin. */
  stdin = "";
  #end: ((status: ClientStatus) => void) | undefined;

  constructor(readonly answer: (call: Call) => Reply = () => ({})) {}

  readonly command: CommandFactory = (cli, options) => {
    const args = options.args?.map(String) ?? [];
    const dashC = args.indexOf("-c");
    const kind = SCRIPTS.get(args[dashC + 1] ?? "");
    if (dashC < 0 || kind === undefined) throw new Error(`fake client: unknown call ${args}`);
    const call: Call = { cli, args, options, kind, stageId: args[dashC + 3] ?? "" };
    return {
      spawn: () => this.#spawn(call),
      output: () => this.#output(call),
    };
  };

  /** Ends the running exec with `code`, as the client does once the container's shell exits. */
  finish(code: number, signal: Deno.Signal | null = null): void {
    const end = this.#end;
    this.#end = undefined;
    end?.({ success: code === 0, code, signal });
  }

  /** The calls of one kind, in order. */
  callsOf(kind: CallKind): Call[] {
    return this.calls.filter((call) => call.kind === kind);
  }

  #spawn(call: Call): ClientProcess {
    this.calls.push(call);
    const reply = this.answer(call);
    if (reply.unstartable) throw new Deno.errors.NotFound(`fake client: ${call.cli} not found`);
    const status = new Promise<ClientStatus>((resolve) => (this.#end = resolve));
    const decoder = new TextDecoder();
    const stdin = new WritableStream<Uint8Array>({
      write: (chunk) => {
        this.stdin += decoder.decode(chunk, { stream: true });
      },
      // The shell has read the whole script; a client that does not hang exits now.
      close: () => {
        if (!reply.hang) this.finish(reply.code ?? 0);
      },
    });
    return {
      stdin,
      status,
      kill: (signal: Deno.Signal = "SIGTERM") => {
        if (this.#end === undefined) throw new TypeError("Child process has already terminated");
        this.kills.push(signal);
        this.finish(128 + (SIGNAL_NUMBERS[signal] ?? 0), signal);
      },
    };
  }

  #output(call: Call): Promise<ClientOutput> {
    this.calls.push(call);
    const reply = this.answer(call);
    if (reply.unstartable) {
      return Promise.reject(new Deno.errors.NotFound(`fake client: ${call.cli} not found`));
    }
    const code = reply.code ?? 0;
    const piped = call.options.stdout === "piped";
    const stdout = new TextEncoder().encode(reply.stdout ?? "");
    return Promise.resolve({
      success: code === 0,
      code,
      signal: null,
      // Like Deno's: an output that was not piped cannot be read.
      get stdout(): Uint8Array {
        if (!piped) throw new TypeError("stdout is not piped");
        return stdout;
      },
    });
  }
}

/** Stands in for the runner's SIGTERM: `fire()` calls every listener the stage registered. */
export class CancelTrigger {
  readonly #listeners = new Set<() => void>();

  readonly listen: CancelRequests = (cancel) => {
    this.#listeners.add(cancel);
    return () => this.#listeners.delete(cancel);
  };

  /** How many listeners are registered (none once the stage has ended). */
  get listening(): number {
    return this.#listeners.size;
  }

  fire(): void {
    for (const cancel of this.#listeners) cancel();
  }
}

/** A temporary job script, removed when disposed. */
export interface ScriptFile extends AsyncDisposable {
  readonly path: string;
}

export async function scriptFile(text: string): Promise<ScriptFile> {
  const path = await Deno.makeTempFile({ prefix: "lxd-driver-script-", suffix: ".sh" });
  await Deno.writeTextFile(path, text);
  return {
    path,
    [Symbol.asyncDispose]: () => Deno.remove(path).catch(() => {}),
  };
}
