/**
 * The one logger. Every human-readable line goes to stderr: in config, stdout
 * is the JSON the runner parses; in prepare and run, stderr reaches the job
 * log just the same. Never pass a job variable's value to it.
 */

const encoder = new TextEncoder();

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string): void;
  debug(message: string): void;
  readonly debugEnabled: boolean;
}

/** A logger writing lines to `sink` (stderr by default). */
export function createLogger(
  options: { debug?: boolean; sink?: (line: string) => void } = {},
): Logger {
  const sink = options.sink ?? writeStderr;
  const debugEnabled = options.debug ?? false;
  return {
    info: (message) => sink(message),
    warn: (message) => sink(`WARNING: ${message}`),
    error: (message) => sink(`ERROR: ${message}`),
    debug: (message) => {
      if (debugEnabled) sink(`[lxd-driver debug] ${message}`);
    },
    debugEnabled,
  };
}

function writeStderr(line: string): void {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) written += Deno.stderr.writeSync(bytes.subarray(written));
}

/** True when `LXD_DRIVER_DEBUG` asks for debug output. */
export function debugRequested(env: (name: string) => string | undefined): boolean {
  const value = env("LXD_DRIVER_DEBUG")?.trim().toLowerCase();
  return value !== undefined && ["1", "true", "yes", "on"].includes(value);
}
