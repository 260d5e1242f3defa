/**
 * lxd-driver: a GitLab Runner custom-executor driver that runs every job in
 * a fresh LXD container. This entry parses the command line, loads the
 * settings, runs one command and maps its outcome to the exit code the
 * runner expects. Commands are imported on demand so that `run`, started
 * for every stage of every job, loads only what it needs.
 */
import { parseArgv } from "./lib/argv.ts";
import type { Context } from "./lib/context.ts";
import { BuildFailure, DriverError, exitCodeFor, readExitCodes, UsageError } from "./lib/errors.ts";
import { recordJobExitCode } from "./lib/exit_code_file.ts";
import { createLogger, debugRequested, type Logger } from "./lib/log.ts";
import type { Lxd } from "./lib/lxd.ts";
import { targetOf } from "./lib/lxd_target.ts";
import { recordedJobSettings } from "./lib/job_container.ts";
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
  gc --older-than AGE     delete containers this host's driver made more than AGE ago
  doctor                  check this host's setup: one OK/WARN/FAIL line per check
  runner-config           print the [[runners]] block for gitlab-runner's config.toml
  version                 print the driver's version

Options:
  --config FILE           settings file (default: $LXD_DRIVER_CONFIG, else /etc/lxd-driver/config.toml)
  -h, --help              show help (also after a command)

Exit codes follow the runner: $BUILD_FAILURE_EXIT_CODE when the job failed,
$SYSTEM_FAILURE_EXIT_CODE when the infrastructure did.`,
  config: `Usage: lxd-driver config

Prints one JSON object (builds_dir, cache_dir, builds_dir_is_shared, hostname,
driver, shell) for gitlab-runner's config_exec. Nothing else is written to
stdout.`,
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

Deletes containers this runner host's lxd-driver launched more than AGE ago
(e.g. 30m, 6h, 0s), and warm pool containers beyond [pool] size, printing
each one deleted. Other containers, and other runner hosts' (see [lxd]
host_id), are never touched.`,
  doctor: `Usage: lxd-driver [--config FILE] doctor

Checks this host's setup and prints one line per check on stdout:
  OK   CHECK: DETAIL
  WARN CHECK: DETAIL — fix: WHAT TO DO
  FAIL CHECK: DETAIL — fix: WHAT TO DO
Checked: the settings file; LXD (reachable, version); the storage pool and its
driver; the default image and each [image.aliases] target (present locally, or
known to its remote: nothing is downloaded); the gitlab-runner helper; ca_file;
the cache directory; privileged containers; the warm pool. Checks needing LXD are skipped
(SKIP) when it cannot be reached. Nothing is changed.

For administrators: gitlab-runner never calls it. Run it as the user that
gitlab-runner runs the driver as. Exits 0 when no check FAILed (WARN is fine),
1 when one did or the settings file is invalid; any other code means doctor
itself broke.`,
  "runner-config": `Usage: lxd-driver [--config FILE] runner-config

Prints the executor part of a [[runners]] entry for gitlab-runner's
config.toml: executor = "custom" and [runners.custom] with config, prepare,
run and cleanup pointing at this binary's absolute path. --config FILE (or
$LXD_DRIVER_CONFIG) is passed on in each *_args, as an absolute path. Run from
source (deno run mod.ts), it prints the equivalent deno command and says so.`,
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
    const values = parseArgv(argv);
    const positionals = values.positionals;
    command = positionals[0];
    if (values.help || command === undefined || command === "help") {
      const topic = command !== undefined && Object.hasOwn(HELP, command) ? command : "main";
      await writeStdout(HELP[topic]! + "\n");
      return command === undefined && !values.help ? codes.systemFailure : 0;
    }
    if (!Object.hasOwn(HELP, command)) {
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
    if (values.olderThan !== undefined && command !== "gc") {
      throw new UsageError(`--older-than only applies to gc`);
    }

    // run takes the settings prepare recorded; the TOML parser is loaded only when needed.
    let settings = command === "run" ? await recordedJobSettings(env) : undefined;
    try {
      if (settings === undefined) {
        const { loadSettings, settingsPath } = await import("./lib/settings.ts");
        settings = await loadSettings(settingsPath(values.config, env));
      }
    } catch (error) {
      // doctor reports a settings file it cannot use as its first check's FAIL.
      if (command !== "doctor") throw error;
      const { reportSettingsFailure } = await import("./stages/doctor.ts");
      return await reportSettingsFailure(writeStdout, error);
    }
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
        const age = values.olderThan;
        const ms = age === undefined ? undefined : parseDuration(age);
        if (ms === undefined) {
          throw new UsageError(`gc needs --older-than AGE, e.g. --older-than 6h`);
        }
        await (await import("./stages/gc.ts")).gc(ctx, await connect(ctx), ms);
        return 0;
      }
      case "doctor": {
        const doctor = await import("./stages/doctor.ts");
        const failures = await doctor.doctor(ctx, await connect(ctx));
        return failures === 0 ? 0 : doctor.PROBLEMS_FOUND_EXIT_CODE;
      }
      case "runner-config":
        await (await import("./stages/runner_config.ts")).runnerConfig(ctx, values.config);
        return 0;
      default:
        throw new UsageError(`unknown command "${command}"; see lxd-driver --help`);
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
  return new Lxd({ target: targetOf(ctx.settings.lxd), log: ctx.log });
}

function report(log: Logger, error: unknown): void {
  if (error instanceof DriverError) {
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
