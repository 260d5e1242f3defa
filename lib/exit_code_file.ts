/**
 * `$BUILD_EXIT_CODE_FILE`: one path per job, shared by every stage and never
 * deleted by the runner. It holds the job script's exact exit code after a
 * build failure and must not exist otherwise, or a stale code from an
 * earlier stage would be reported again.
 */

import type { Env } from "./context.ts";

/** Writes `code` as the file's first line, or removes the file when `code` is undefined. */
export async function recordJobExitCode(env: Env, code: number | undefined): Promise<void> {
  const path = env("BUILD_EXIT_CODE_FILE");
  if (!path) return;
  if (code === undefined) {
    await Deno.remove(path).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  } else {
    await Deno.writeTextFile(path, `${code}\n`);
  }
}
