/**
 * Looking a program up on `PATH`, as a shell would: the first absolute
 * directory holding an executable file of that name. One definition for
 * prepare (the helper binary), doctor and the choice of `lxc` or `incus`, so
 * they never disagree about what is installed.
 */

/**
 * Why a file system call on a path failed, in an administrator's words: the
 * driver's permission set keeps it out of some paths (`/proc`, `/sys`, ...),
 * and Deno's own message for that would ask for a flag to be changed.
 */
export function fsProblem(error: unknown): string {
  return error instanceof Deno.errors.NotCapable
    ? "is not a path the driver may use (pseudo file systems such as /proc and /sys are off limits)"
    : `cannot be examined: ${(error as Error).message}`;
}

/** Why `path` is not an executable file, or undefined when it is one. */
export function notExecutable(path: string): string | undefined {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(path);
  } catch (error) {
    return error instanceof Deno.errors.NotFound ? "does not exist" : fsProblem(error);
  }
  if (!info.isFile) return "is not a file";
  if (((info.mode ?? 0) & 0o111) === 0) return "is not executable";
  return undefined;
}

/** The first executable `name` in the absolute directories of `path` (a `PATH` value). */
export function findExecutable(name: string, path: string | undefined): string | undefined {
  for (const dir of (path ?? "").split(":")) {
    if (!dir.startsWith("/")) continue; // a relative entry would depend on the working directory
    const candidate = `${dir.replace(/\/+$/, "")}/${name}`;
    if (notExecutable(candidate) === undefined) return candidate;
  }
  return undefined;
}
