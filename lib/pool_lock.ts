/**
 * The warm pool's host-local state: a directory private to the runner's user
 * holding the lock that serialises every pool decision on this host (claims,
 * refills, gc), and the record of refill launches that have been started but
 * that LXD may not list yet. Without that record, prepares arriving together
 * would each see the pool short and launch the same refill again. Template
 * launches (lib/template.ts) are recorded here too, one file each.
 */
import { SystemFailure } from "./errors.ts";

/** A refill launch in flight: when it was started, for which host and image. */
export interface PendingLaunch {
  readonly startedAt: number;
  readonly host: string;
  readonly fingerprint: string;
}

export type PendingLaunches = Record<string, PendingLaunch>;

/** The state directory of the user running the driver (not `$TMPDIR`: the runner sets that per job). */
export function poolStateDir(): string {
  return `/tmp/lxd-driver-${Deno.uid() ?? "user"}`;
}

/** How long a prepare waits for the lock before doing without the pool. */
const LOCK_TIMEOUT_MS = 30_000;

/**
 * Runs `fn` holding the pool lock, with the pending launches it may read and
 * replace (`fn` returns the new record along with its result).
 */
export async function withPoolLock<T>(
  dir: string,
  fn: (pending: PendingLaunches) => Promise<{ result: T; pending: PendingLaunches }>,
  timeoutMs = LOCK_TIMEOUT_MS,
): Promise<T> {
  await ensurePrivateDir(dir);
  const lockPath = `${dir}/pool.lock`;
  const lock = await Deno.open(lockPath, { create: true, write: true, mode: 0o600 }).catch(
    (error) => {
      throw new SystemFailure(`cannot open the pool's lock file ${lockPath}: ${error.message}`);
    },
  );
  try {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () =>
          reject(
            new SystemFailure(`the pool's lock ${lockPath} stayed busy for ${timeoutMs / 1000}s`),
          ),
        timeoutMs,
      );
    });
    try {
      await Promise.race([lock.lock(true), timeout]);
    } finally {
      clearTimeout(timer);
    }
    const { result, pending } = await fn(await readPending(dir));
    await writePending(dir, pending);
    return result;
  } finally {
    lock.close(); // closing releases the lock
  }
}

/**
 * Creates `dir` for this user only, or checks that an existing one is that:
 * a real directory, owned by this user, that nobody else can write to. Any
 * local user can create names in /tmp, and a lock file someone else controls
 * could stall every prepare.
 */
async function ensurePrivateDir(dir: string): Promise<void> {
  try {
    await Deno.mkdir(dir, { mode: 0o700 });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) {
      throw new SystemFailure(
        `cannot create the pool's state directory ${dir}: ${(error as Error).message}`,
      );
    }
  }
  const info = await Deno.lstat(dir);
  const uid = Deno.uid();
  if (!info.isDirectory || (uid !== null && info.uid !== uid) || ((info.mode ?? 0) & 0o077) !== 0) {
    throw new SystemFailure(
      `${dir} is not a directory private to this user (owner ${info.uid}, mode ${
        ((info.mode ?? 0) & 0o777).toString(8)
      }); remove it and let the driver create it again`,
    );
  }
}

/**
 * Records that `name` is being launched in the background, unless a launch
 * of it was recorded less than `ttlMs` ago; true when the caller should
 * launch. Keeps a launch that keeps failing (e.g. refused by LXD) from being
 * started again by every job.
 */
export async function recordLaunch(dir: string, name: string, ttlMs: number): Promise<boolean> {
  await ensurePrivateDir(dir);
  const path = `${dir}/launched-${name}`;
  const last = await Deno.stat(path).then((info) => info.mtime?.getTime(), () => undefined);
  if (last !== undefined && Date.now() - last < ttlMs) return false;
  await Deno.writeTextFile(path, new Date().toISOString() + "\n", { mode: 0o600 });
  return true;
}

/** Forgets the record of `name`'s launch (it has appeared). */
export async function forgetLaunch(dir: string, name: string): Promise<void> {
  await Deno.remove(`${dir}/launched-${name}`).catch(() => {});
}

async function readPending(dir: string): Promise<PendingLaunches> {
  try {
    const parsed = JSON.parse(await Deno.readTextFile(`${dir}/pending.json`));
    return typeof parsed === "object" && parsed !== null && !Array.isArray(parsed)
      ? parsed as PendingLaunches
      : {};
  } catch {
    return {}; // missing or damaged: at worst one refill too many
  }
}

async function writePending(dir: string, pending: PendingLaunches): Promise<void> {
  const path = `${dir}/pending.json`;
  await Deno.writeTextFile(`${path}.new`, JSON.stringify(pending), { mode: 0o600 });
  await Deno.rename(`${path}.new`, path);
}
