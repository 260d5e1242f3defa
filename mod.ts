/**
 * lxd-driver: a GitLab Runner custom-executor driver that runs every job in
 * a fresh LXD container. This entry parses the command line, loads the
 * settings, runs one command and maps its outcome to the exit code the
 * runner expects. Commands are imported on demand so that `run`, started
 * for every stage of every job, loads only what it needs.
 */
import { parseArgs } from "node:util";
import type { Context } from "./lib/context.ts";
import { BuildFailure, exitCodeFor, readExitCodes, UsageError } from "./lib/errors.ts";
import { recordJobExitCode } from "./lib/exit_code_file.ts";
import { createLogger, debugRequested, type Logger } from "./lib/log.ts";
import type { Lxd } from "./lib/lxd.ts";
import { loadSettings, settingsPath } from "./lib/settings.ts";
import { parseDuration } from "./lib/duration.ts";

const HELP: Record<string, string> = {
  main: `lxd-driver: runs GitLab CI jobs in fresh LXD containers (custom executor driver)

Usage: lxd-driver [--config FILE] COMMAND [ARGS]

Commands called by gitlab-runner:
  config                  print the executor settings as JSON
  prepare                 launch the job's container and wait until it is ready
  run SCRIPT STAGE        run one stage's script inside the container
  cleanup                 delete the job's container

Commands for administrators:
  gc --older-than AGE     delete containers this driver made more than AGE ago
  version                 print the driver's version

Options:
  --config FILE           settings file (default: $LXD_DRIVER_CONFIG, else /etc/lxd-driver/config.toml)
  -h, --help              show help (also after a command)

Exit codes follow the runner: $BUILD_FAILURE_EXIT_CODE when the job failed,
$SYSTEM_FAILURE_EXIT_CODE when the infrastructure did.`,
  config: `Usage: lxd-driver config

Prints one JSON object (builds_dir, cache_dir, hostname, driver, shell) for
gitlab-runner's config_exec. Nothing else is written to stdout.`,
  prepare: `Usage: lxd-driver prepare

Launches the job's container from the job's image (when allowed) or the
default image, labels it, waits until it is ready and creates the builds and
cache directories.`,
  run: `Usage: lxd-driver run SCRIPT STAGE

Streams SCRIPT to the configured shell inside the job's container. Exits 0 on
success, $BUILD_FAILURE_EXIT_CODE with the script's exit code in
$BUILD_EXIT_CODE_FILE when it fails, $SYSTEM_FAILURE_EXIT_CODE when LXD does.`,
  cleanup: `Usage: lxd-driver cleanup

Deletes the job's container. Succeeds when it is already gone.`,
  gc: `Usage: lxd-driver gc --older-than AGE

Deletes containers launched by lxd-driver more than AGE ago (e.g. 30m, 6h,
0s) and prints each one deleted. Other containers are never touched.`,
  version: `Usage: lxd-driver version

Prints the driver's name and version.`,
};

const encoder = new TextEncoder();
const env = (name: string) => Deno.env.get(name);

async function writeStdout(text: string): Promise<void> {
  const bytes = encoder.encode(text);
  let written = 0;
  while (written < bytes.length) written += await Deno.stdout.write(bytes.subarray(written));
}

async function main(argv: string[]): Promise<number> {
  const codes = readExitCodes(env);
  let log: Logger = createLogger({ debug: debugRequested(env) });
  let command: string | undefined;
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string" },
        "older-than": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    command = positionals[0];
    if (values.help || command === undefined || command === "help") {
      await writeStdout((HELP[command ?? "main"] ?? HELP.main!) + "\n");
      return command === undefined && !values.help ? codes.systemFailure : 0;
    }
    if (!(command in HELP)) {
      throw new UsageError(`unknown command "${command}"; see lxd-driver --help`);
    }
    if (command === "version") {
      const { DRIVER_NAME, VERSION } = await import("./lib/version.ts");
      await writeStdout(`${DRIVER_NAME} ${VERSION}\n`);
      return 0;
    }
    const args = positionals.slice(1);
    const expected = command === "run" ? 2 : 0;
    if (args.length !== expected) {
      throw new UsageError(
        `${command} takes ${expected || "no"} arguments; see lxd-driver ${command} --help`,
      );
    }
    if (values["older-than"] !== undefined && command !== "gc") {
      throw new UsageError(`--older-than only applies to gc`);
    }

    const settings = await loadSettings(settingsPath(values.config, env));
    log = createLogger({ debug: settings.log.debug || debugRequested(env) });
    const ctx: Context = { env, settings, log, write: writeStdout };

    switch (command) {
      case "config":
        await (await import("./stages/config.ts")).config(ctx);
        break;
      case "prepare":
        await (await import("./stages/prepare.ts")).prepare(ctx, await connect(ctx));
        break;
      case "run":
        await (await import("./stages/run.ts")).run(ctx, args[0]!, args[1]!);
        break;
      case "cleanup":
        await (await import("./stages/cleanup.ts")).cleanup(ctx, await connect(ctx));
        return 0;
      case "gc": {
        const age = values["older-than"];
        const ms = age === undefined ? undefined : parseDuration(age);
        if (ms === undefined) {
          throw new UsageError(`gc needs --older-than AGE, e.g. --older-than 6h`);
        }
        await (await import("./stages/gc.ts")).gc(ctx, await connect(ctx), ms);
        return 0;
      }
    }
    await recordJobExitCode(env, undefined);
    return 0;
  } catch (error) {
    report(log, error);
    if (command === "config" || command === "prepare" || command === "run") {
      await recordJobExitCode(env, error instanceof BuildFailure ? error.jobExitCode : undefined)
        .catch((e) => log.error(`cannot write BUILD_EXIT_CODE_FILE: ${(e as Error).message}`));
    }
    return exitCodeFor(error, codes);
  }
}

async function connect(ctx: Context): Promise<Lxd> {
  const { Lxd } = await import("./lib/lxd.ts");
  return new Lxd({ cli: ctx.settings.lxd.cli, log: ctx.log });
}

function report(log: Logger, error: unknown): void {
  if (error instanceof Error && "kind" in error) {
    log.error(error.message);
  } else {
    log.error(
      `unexpected error (a bug in lxd-driver): ${
        error instanceof Error ? error.stack : String(error)
      }`,
    );
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
