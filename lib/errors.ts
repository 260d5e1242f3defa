/**
 * The driver's one error hierarchy. Every failure a stage can report is one
 * of these; `exitCodeFor` (called only by mod.ts) turns it into the exit code
 * gitlab-runner expects.
 */

/** Base of every failure the driver reports on purpose. */
export abstract class DriverError extends Error {
  abstract readonly kind: "build" | "system";
}

/**
 * The job itself failed or asked for something not allowed (a rejected
 * image, a failing script). Exits with `$BUILD_FAILURE_EXIT_CODE`; the runner
 * does not retry it.
 */
export class BuildFailure extends DriverError {
  readonly kind = "build";
  /** The job script's exact exit code, written to `$BUILD_EXIT_CODE_FILE`. */
  readonly jobExitCode: number | undefined;

  constructor(message: string, jobExitCode?: number) {
    super(message);
    this.name = "BuildFailure";
    this.jobExitCode = jobExitCode;
  }
}

/**
 * The infrastructure failed: LXD unreachable, a launch that did not work, an
 * invalid settings file. Exits with `$SYSTEM_FAILURE_EXIT_CODE`; the runner
 * retries config and prepare.
 */
export class SystemFailure extends DriverError {
  readonly kind = "system";

  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "SystemFailure";
  }
}

/** The command line was wrong. Reported like a system failure. */
export class UsageError extends SystemFailure {
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The exit codes the runner asked for, read from the environment. */
export interface ExitCodes {
  buildFailure: number;
  systemFailure: number;
}

/** Reads the runner's exit codes, defaulting to its documented 1 and 2. */
export function readExitCodes(env: (name: string) => string | undefined): ExitCodes {
  return {
    buildFailure: parseCode(env("BUILD_FAILURE_EXIT_CODE"), 1),
    systemFailure: parseCode(env("SYSTEM_FAILURE_EXIT_CODE"), 2),
  };
}

function parseCode(value: string | undefined, fallback: number): number {
  if (value === undefined || !/^\d{1,3}$/.test(value.trim())) return fallback;
  const code = Number(value.trim());
  return code <= 255 ? code : fallback;
}

/** Maps any thrown value to the process exit code. Unknown errors are bugs: system failures. */
export function exitCodeFor(error: unknown, codes: ExitCodes): number {
  if (error instanceof BuildFailure) return codes.buildFailure;
  return codes.systemFailure;
}
