/**
 * The runner's local cache on the host: `<host_dir>/<project id>` (or
 * `<host_dir>/<project id>-slot-<concurrent id>` with `per_slot`) mounted at
 * the container's cache dir, so caches outlive containers. Each container
 * sees only its own directory, and those directories sit side by side in
 * `host_dir`, where no job can write, so no job can plant a link that a later
 * mount would follow.
 */
import type { Settings } from "./settings.ts";
import type { JobIdentity } from "./job.ts";
import { SystemFailure } from "./errors.ts";

/** The job's cache directory on the host, or undefined when host caching is off. */
export function cacheSourceFor(settings: Settings, id: JobIdentity): string | undefined {
  const root = settings.cache.hostDir;
  if (root === undefined) return undefined;
  const leaf = settings.cache.perSlot
    ? `${id.projectId}-slot-${id.concurrentProjectId}`
    : id.projectId;
  return `${root.replace(/\/+$/, "")}/${leaf}`;
}

/** Creates the directory (never following a link) before the container mounts it. */
export async function ensureCacheDir(path: string): Promise<void> {
  const root = path.slice(0, path.lastIndexOf("/")) || "/";
  // host_dir itself: only root may enter it; the mount does not need more.
  try {
    await Deno.mkdir(root, { recursive: true, mode: 0o711 });
  } catch (error) {
    throw new SystemFailure(`cannot create [cache] host_dir ${root}: ${(error as Error).message}`);
  }
  try {
    await Deno.mkdir(path, { mode: 0o755 });
  } catch (error) {
    if (!(error instanceof Deno.errors.AlreadyExists)) {
      throw new SystemFailure(`cannot create cache directory ${path}: ${(error as Error).message}`);
    }
  }
  const info = await Deno.lstat(path);
  if (info.isSymlink || !info.isDirectory) {
    throw new SystemFailure(`cache directory ${path} is not a plain directory; remove it`);
  }
}

/**
 * Gives the directory to the container's root user. An unprivileged
 * container's root is an unprivileged host uid, read from LXD's idmap.
 */
export async function chownToContainerRoot(
  path: string,
  config: Readonly<Record<string, string>>,
): Promise<void> {
  const { uid, gid } = containerRoot(config);
  const info = await Deno.stat(path);
  if (info.uid === uid && info.gid === gid) return;
  try {
    await Deno.chown(path, uid, gid);
  } catch (error) {
    throw new SystemFailure(
      `cannot give cache directory ${path} to the container's root (uid ${uid}): ${
        (error as Error).message
      }; ` +
        "the driver must run as root to use [cache] host_dir",
    );
  }
}

interface IdmapEntry {
  Isuid?: boolean;
  Isgid?: boolean;
  Hostid?: number;
  Nsid?: number;
}

/** The host uid and gid of the container's root: from the idmap it will start with, else 0 (privileged). */
export function containerRoot(
  config: Readonly<Record<string, string>>,
): { uid: number; gid: number } {
  const raw = config["volatile.idmap.next"] ?? config["volatile.idmap.current"];
  if (!raw || config["security.privileged"] === "true") return { uid: 0, gid: 0 };
  let entries: IdmapEntry[];
  try {
    entries = JSON.parse(raw) as IdmapEntry[];
  } catch {
    throw new SystemFailure(`cannot read the container's id map (${raw.slice(0, 80)})`);
  }
  const find = (kind: "Isuid" | "Isgid") =>
    entries.find((e) => e[kind] && e.Nsid === 0)?.Hostid ?? 0;
  return { uid: find("Isuid"), gid: find("Isgid") };
}
