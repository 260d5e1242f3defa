/**
 * A runner imitation: starts the driver exactly as gitlab-runner's custom
 * executor does (see the protocol notes in README.md): argv, a fresh working
 * directory shared by the job's stages, the full environment plus the
 * runner's variables and `CUSTOM_ENV_*`, stdin from /dev/null, its own
 * process group, and SIGTERM then SIGKILL to that group on cancel.
 */
import { fileURLToPath } from "node:url";

const MOD_TS = fileURLToPath(new URL("../mod.ts", import.meta.url));

/**
 * The driver command: `$LXD_DRIVER_BIN` (a compiled binary) when set, else
 * `deno run` with the permission set the binary is compiled with.
 */
export function driverCommand(): string[] {
  const bin = Deno.env.get("LXD_DRIVER_BIN");
  return bin ? [bin] : [Deno.execPath(), "run", "-q", "-P=driver", MOD_TS];
}

export interface StageResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** What the runner would read from `$BUILD_EXIT_CODE_FILE`, if it exists. */
  readonly exitCodeFile: string | undefined;
  readonly durationMs: number;
}

export interface JobOptions {
  /** Job id and project id as GitLab sends them in the payload. */
  readonly jobId: number;
  readonly projectId?: number;
  /** Job variables, passed as `CUSTOM_ENV_<NAME>`. */
  readonly variables?: Record<string, string>;
  /** Extra driver environment (e.g. `LXD_DRIVER_CONFIG`, the exit codes). */
  readonly env?: Record<string, string>;
  readonly buildFailureExitCode?: number;
  readonly systemFailureExitCode?: number;
  /** Starts this command instead of `driverCommand()`, e.g. `["bash", "DIR/driver.sh"]`. */
  readonly driver?: readonly string[];
}

export interface RunOptions {
  /** Called with each chunk of the driver's stdout as it arrives (instead of collecting it). */
  readonly onStdout?: (chunk: Uint8Array) => void;
  /** Likewise for stderr. */
  readonly onStderr?: (chunk: Uint8Array) => void;
  /** Resolves when the runner should cancel (SIGTERM, then SIGKILL after `killAfterMs`). */
  readonly cancelWhen?: Promise<unknown>;
  readonly killAfterMs?: number;
}

const decoder = new TextDecoder();

/** One job as the runner sees it: a temp dir, a payload, and the driver's stages. */
export class Job {
  readonly dir: string;
  readonly options: JobOptions;
  #scripts = 0;

  private constructor(dir: string, options: JobOptions) {
    this.dir = dir;
    this.options = options;
  }

  static async create(options: JobOptions): Promise<Job> {
    const dir = await Deno.makeTempDir({ prefix: "lxd-driver-job-" });
    const payload = {
      id: options.jobId,
      token: "job-token-secret",
      job_info: {
        name: "test",
        stage: "test",
        project_id: options.projectId ?? 1,
        project_name: "demo",
      },
      variables: Object.entries(options.variables ?? {}).map(([key, value]) => ({
        key,
        value,
        public: false,
      })),
    };
    await Deno.writeTextFile(`${dir}/response.json`, JSON.stringify(payload), { mode: 0o600 });
    return new Job(dir, options);
  }

  get exitCodeFilePath(): string {
    return `${this.dir}/build_exit_code`;
  }

  /** The environment the runner gives the driver, in the runner's order (later wins). */
  environment(jobEnv: Record<string, string> = {}): Record<string, string> {
    const env: Record<string, string> = { ...Deno.env.toObject() };
    Object.assign(env, {
      TMPDIR: this.dir,
      BUILD_FAILURE_EXIT_CODE: String(this.options.buildFailureExitCode ?? 1),
      SYSTEM_FAILURE_EXIT_CODE: String(this.options.systemFailureExitCode ?? 2),
      BUILD_EXIT_CODE_FILE: this.exitCodeFilePath,
      JOB_RESPONSE_FILE: `${this.dir}/response.json`,
      DENO_NO_UPDATE_CHECK: "1",
    });
    Object.assign(env, this.options.env ?? {}, jobEnv);
    const vars: Record<string, string> = {
      CI_JOB_ID: String(this.options.jobId),
      CI_PROJECT_ID: String(this.options.projectId ?? 1),
      CI_RUNNER_ID: "1",
      CI_CONCURRENT_ID: "0",
      CI_CONCURRENT_PROJECT_ID: "0",
      CI_JOB_SERVICES: "",
      ...this.options.variables,
    };
    for (const [key, value] of Object.entries(vars)) env[`CUSTOM_ENV_${key}`] = value;
    return env;
  }

  /** Starts the driver with `args` and waits for it (and its pipes) to finish. */
  async exec(args: string[], options: RunOptions = {}): Promise<StageResult> {
    const [cmd, ...pre] = this.options.driver ?? driverCommand();
    const started = performance.now();
    const child = new Deno.Command(cmd!, {
      args: [...pre, ...args],
      cwd: this.dir,
      env: this.environment(),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      detached: true, // its own process group, as the runner starts it
    }).spawn();

    let killTimer: ReturnType<typeof setTimeout> | undefined;
    options.cancelWhen?.then(() => {
      signalGroup(child.pid, "SIGTERM");
      killTimer = setTimeout(
        () => signalGroup(child.pid, "SIGKILL"),
        options.killAfterMs ?? 10_000,
      );
    });
    const [stdout, stderr, status] = await Promise.all([
      collect(child.stdout, options.onStdout),
      collect(child.stderr, options.onStderr),
      child.status,
    ]);
    clearTimeout(killTimer);
    const durationMs = performance.now() - started;
    let exitCodeFile: string | undefined;
    try {
      exitCodeFile = await Deno.readTextFile(this.exitCodeFilePath);
    } catch {
      exitCodeFile = undefined;
    }
    return { code: status.code, stdout, stderr, exitCodeFile, durationMs };
  }

  config(options: RunOptions = {}): Promise<StageResult> {
    return this.exec(["config"], options);
  }

  prepare(options: RunOptions = {}): Promise<StageResult> {
    return this.exec(["prepare"], options);
  }

  cleanup(options: RunOptions = {}): Promise<StageResult> {
    return this.exec(["cleanup"], options);
  }

  /** Writes `script` to a fresh `script<n>/script` (mode 0700) and runs it as `stage`. */
  async run(script: string, stage: string, options: RunOptions = {}): Promise<StageResult> {
    const scriptDir = `${this.dir}/script${++this.#scripts}${crypto.randomUUID().slice(0, 8)}`;
    await Deno.mkdir(scriptDir);
    await Deno.writeTextFile(`${scriptDir}/script`, script, { mode: 0o700 });
    return this.exec(["run", `${scriptDir}/script`, stage], options);
  }

  async remove(): Promise<void> {
    await Deno.remove(this.dir, { recursive: true });
  }
}

function signalGroup(pid: number, signal: Deno.Signal): void {
  try {
    Deno.kill(-pid, signal);
  } catch {
    // the group is gone already
  }
}

async function collect(
  stream: ReadableStream<Uint8Array>,
  onChunk?: (chunk: Uint8Array) => void,
): Promise<string> {
  let text = "";
  for await (const chunk of stream) {
    if (onChunk) onChunk(chunk);
    else text += decoder.decode(chunk, { stream: true });
  }
  return text + decoder.decode();
}

/** ANSI-C quoting as bash's `$'...'`, the way the runner embeds scripts. */
function ansiC(text: string): string {
  return "$'" + text.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\n/g, "\\n") + "'";
}

/**
 * A script shaped like the runner's generated bash: trap TERM, errexit and
 * pipefail, the body in a subshell with stdin from /dev/null, every job
 * variable exported by the script itself.
 */
export function runnerScript(body: string, variables: Record<string, string> = {}): string {
  const exports = Object.entries(variables).map(([k, v]) => `export ${k}=${ansiC(v)}`).join("\n");
  return [
    "#!/usr/bin/env bash",
    "",
    "trap exit 1 TERM",
    "",
    "if set -o | grep pipefail > /dev/null; then set -o pipefail; fi; set -o errexit",
    "set +o noclobber",
    `: | (eval ${ansiC(`${exports}\n${body}\n`)}) `,
    "exit 0",
    "",
  ].join("\n");
}
