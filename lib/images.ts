/**
 * Images: makes sure the image a job runs on is in the local image store,
 * downloading it from a remote first if need be, and returns its fingerprint
 * (the driver launches from the fingerprint, so a remote alias that moves
 * while a job starts cannot give it a different image than the one logged).
 *
 * A reference is what `lxc launch` takes: a local alias
 * (`lxd-driver-test/bookworm`), a fingerprint or a unique prefix of one, or
 * `REMOTE:NAME` (`images:debian/12`) with REMOTE a remote of the lxc client
 * (`local:NAME` works too). "Local" means the client's default remote, the
 * one every other `lxc` call of the driver talks to.
 *
 * Downloads go through `lxc image copy`, not a hand-made `POST /1.0/images`:
 * only the client knows how to reach each remote (the certificate it pinned
 * with `lxc remote add`, a secret for private images, simplestreams or LXD
 * protocol), so letting it build the request works for every kind of remote
 * it can use. The copy's own progress output needs a terminal, so while it
 * runs this module reads the download's progress from LXD's operations
 * (`metadata.download_progress`) and logs a line every few seconds.
 *
 * No alias is ever created: the local store's aliases belong to the admin.
 */
import { formatDuration } from "./duration.ts";
import type { Logger } from "./log.ts";
import { type Lxd, LxdError } from "./lxd.ts";

export interface LocalImage {
  readonly fingerprint: string;
  readonly description: string;
}

export interface EnsureImageOptions {
  /** Time between two progress lines while downloading (default 3 s). */
  readonly progressIntervalMs?: number;
  /** Limit for looking an image up on a remote (default 2 min); downloads have none. */
  readonly lookupTimeoutMs?: number;
}

const DEFAULT_PROGRESS_INTERVAL_MS = 3_000;
const DEFAULT_LOOKUP_TIMEOUT_MS = 120_000;
/** A progress poll that hangs must not stop the heartbeat lines. */
const OPERATIONS_TIMEOUT_MS = 10_000;

/**
 * A failed image lookup or download. `stderr` keeps LXD's own words; for an
 * image that does not exist, or names a remote the client does not know, it
 * contains "Image not found", which prepare recognises (for an image the job
 * chose, the job's fault). `unreachable` is false: when this is thrown the
 * local LXD answered, and a remote that cannot be reached is not a local LXD
 * outage.
 */
export class ImageError extends LxdError {
  constructor(args: readonly string[], code: number, stderr: string, message: string) {
    super(args, code, stderr);
    this.name = "ImageError";
    this.message = message;
  }

  /** True when the image does not exist (as opposed to a failed lookup or download). */
  get imageNotFound(): boolean {
    return /image not found/i.test(this.stderr);
  }

  override get unreachable(): boolean {
    return false;
  }
}

/** Makes sure `reference` is in the local image store and returns its fingerprint. */
export async function ensureLocalImage(
  lxd: Lxd,
  reference: string,
  log: Logger,
  options: EnsureImageOptions = {},
): Promise<LocalImage> {
  const colon = reference.indexOf(":");
  if (colon < 0) return await findLocalImage(lxd, reference);

  const remote = reference.slice(0, colon);
  const name = reference.slice(colon + 1);
  const found = await lookUpRemoteImage(lxd, reference, remote, name, options);
  const cached = await localImageByFingerprint(lxd, found.fingerprint);
  if (cached) return cached;

  await download(lxd, reference, remote, found, log, options);
  const local = await localImageByFingerprint(lxd, found.fingerprint);
  if (!local) {
    throw new ImageError(
      ["image", "copy"],
      1,
      "",
      `image ${JSON.stringify(reference)} (fingerprint ${found.fingerprint}) is not in the ` +
        "local image store after downloading it",
    );
  }
  return { fingerprint: local.fingerprint, description: local.description || found.description };
}

// --- local store -------------------------------------------------------------

interface ApiImage {
  fingerprint: string;
  properties?: Record<string, string> | null;
}

/**
 * An alias of the local store, else a fingerprint or unique prefix of one,
 * resolved as `lxc launch` resolves it. One `lxc image info` call answers
 * both the fingerprint and the description: prepare's start time counts.
 */
async function findLocalImage(lxd: Lxd, reference: string): Promise<LocalImage> {
  let out: string;
  try {
    out = await lxd.run(["image", "info", "--", lxd.ref(reference)]);
  } catch (error) {
    if (!(error instanceof LxdError) || !isNotFound(error.stderr)) throw error;
    throw notFound(
      error,
      reference,
      `image ${JSON.stringify(reference)} not found: no alias or fingerprint of that name ` +
        "in the local image store",
    );
  }
  const image = parseImageInfo(out);
  if (!image) {
    throw new ImageError(
      ["image", "info"],
      1,
      "",
      `image ${JSON.stringify(reference)}: no fingerprint in ${lxd.target.cli}'s answer`,
    );
  }
  return { fingerprint: image.fingerprint, description: image.description };
}

/** The local image with this fingerprint (or unique prefix), undefined when there is none. */
async function localImageByFingerprint(
  lxd: Lxd,
  fingerprint: string,
): Promise<LocalImage | undefined> {
  let out: string;
  try {
    out = await lxd.run(["query", "--", lxd.api(`/1.0/images/${encodeURIComponent(fingerprint)}`)]);
  } catch (error) {
    if (error instanceof LxdError && isNotFound(error.stderr)) return undefined;
    throw error;
  }
  const image = JSON.parse(out) as ApiImage;
  return { fingerprint: image.fingerprint, description: image.properties?.description ?? "" };
}

// --- remotes -----------------------------------------------------------------

interface RemoteImage extends LocalImage {
  /** As `lxc image info` shows it (`1.00MB`), or empty. */
  readonly size: string;
}

/**
 * The remote's current image for NAME, via `lxc image info REMOTE:NAME`: the
 * one call that resolves aliases and fingerprints alike on LXD and
 * simplestreams remotes (`lxc query` only reaches private LXD remotes).
 */
async function lookUpRemoteImage(
  lxd: Lxd,
  reference: string,
  remote: string,
  name: string,
  options: EnsureImageOptions,
): Promise<RemoteImage> {
  const args = ["image", "info", "--", reference];
  const timeoutMs = options.lookupTimeoutMs ?? DEFAULT_LOOKUP_TIMEOUT_MS;
  let out: string;
  try {
    out = await lxd.run(args, { timeoutMs });
  } catch (error) {
    if (!(error instanceof LxdError)) throw error;
    // No such remote in the client's config: for this runner, no such image.
    if (isUnknownRemote(error.stderr)) {
      throw notFound(
        error,
        reference,
        `image ${JSON.stringify(reference)} not found: this runner has no image remote ` +
          JSON.stringify(remote),
      );
    }
    if (isNotFound(error.stderr)) {
      throw notFound(
        error,
        reference,
        `image ${JSON.stringify(reference)} not found: remote ${JSON.stringify(remote)} has ` +
          `no image or alias ${JSON.stringify(name)}`,
      );
    }
    throw new ImageError(
      error.args,
      error.code,
      error.stderr,
      `looking up image ${JSON.stringify(reference)} on remote ${JSON.stringify(remote)} ` +
        `failed: ${detailOf(error, timeoutMs)}`,
    );
  }
  const image = parseImageInfo(out);
  if (!image) {
    throw new ImageError(
      args,
      0,
      "",
      `lxc image info ${reference}: no fingerprint in its output: ${out.trim().slice(0, 500)}`,
    );
  }
  return image;
}

/** Reads fingerprint, size and description from `lxc image info` (the same text in lxc and incus). */
export function parseImageInfo(text: string): RemoteImage | undefined {
  const fingerprint = text.match(/^Fingerprint:\s*([0-9a-f]{64})\s*$/m)?.[1];
  if (!fingerprint) return undefined;
  const size = text.match(/^Size:\s*(\S.*?)\s*$/m)?.[1] ?? "";
  // Properties are indented under "Properties:"; no other section has this key.
  const description = text.match(/^\s+description:[ \t]*(.*?)\s*$/m)?.[1] ?? "";
  return { fingerprint, size, description };
}

// --- download ----------------------------------------------------------------

/**
 * Copies the remote image (by fingerprint, so exactly the one looked up) into
 * the local store, logging progress until the copy ends.
 *
 * Two jobs that need the same new image at once both copy it. That is safe
 * without a lock of our own: LXD serialises downloads of one fingerprint
 * (the second waits, then finds the image and succeeds; seen on LXD 5.0.2,
 * see tests/e2e/images_test.ts), and should some version refuse the second
 * copy (image already exists), the local store is checked again before
 * giving up. A lock file would only cover jobs on this host that share its
 * lock directory, while the LXD daemon is the one place that sees every
 * download (other hosts, other users, `lxc launch` from a remote).
 */
async function download(
  lxd: Lxd,
  reference: string,
  remote: string,
  image: RemoteImage,
  log: Logger,
  options: EnsureImageOptions,
): Promise<void> {
  const intervalMs = options.progressIntervalMs ?? DEFAULT_PROGRESS_INTERVAL_MS;
  // The store the driver launches from: the configured remote's, else the client's default.
  const target = lxd.target.remote || (await lxd.run(["remote", "get-default"])).trim() || "local";
  // Downloads that were already running are someone else's.
  const earlier = new Set((await downloadOperations(lxd).catch(() => [])).map((op) => op.id));

  const short = image.fingerprint.slice(0, 12);
  log.info(
    `Downloading image ${reference} (fingerprint ${short}${
      image.size ? `, ${image.size}` : ""
    }) into the local image store`,
  );
  const started = performance.now();
  const args = ["image", "copy", "--", `${remote}:${image.fingerprint}`, `${target}:`];
  const copy: Promise<{ error?: unknown }> = lxd.run(args).then(
    () => ({}),
    (error: unknown) => ({ error }),
  );

  let result: { error?: unknown } | typeof TICK;
  while ((result = await within(copy, intervalMs)) === TICK) {
    const elapsed = `${formatDuration(performance.now() - started)} elapsed`;
    let progress: string[] = [];
    try {
      progress = (await downloadOperations(lxd))
        .filter((op) => !earlier.has(op.id) && op.progress)
        .map((op) => op.progress!);
    } catch (error) {
      log.debug(`reading download progress failed: ${(error as Error).message}`);
    }
    const unique = [...new Set(progress)];
    log.info(
      `Downloading image ${reference}: ` +
        (unique.length === 0
          ? `in progress, ${elapsed}`
          : unique.length === 1
          ? `${unique[0]}, ${elapsed}`
          // Operations do not say which image they download: show every new one.
          : `${unique.join("; ")} (${unique.length} image downloads running), ${elapsed}`),
    );
  }

  if (result.error === undefined) {
    log.info(`Downloaded image ${reference} in ${formatDuration(performance.now() - started)}`);
    return;
  }
  const error = result.error;
  if (!(error instanceof LxdError)) throw error;
  // A concurrent copy of the same image may have won (some versions then refuse ours).
  const local = await localImageByFingerprint(lxd, image.fingerprint).catch(() => undefined);
  if (local) {
    log.debug(`image copy failed but ${short} is in the local store now: ${error.message}`);
    log.info(`Downloaded image ${reference} in ${formatDuration(performance.now() - started)}`);
    return;
  }
  throw new ImageError(
    error.args,
    error.code,
    error.stderr,
    `downloading image ${JSON.stringify(reference)} (fingerprint ${short}) from remote ` +
      `${JSON.stringify(remote)} failed: ${detailOf(error)}`,
  );
}

interface DownloadOperation {
  readonly id: string;
  readonly progress: string | undefined;
}

/** LXD's running image downloads, with their progress text (`45% (12.3MB/s)`, `218.68MB (218.28MB/s)`). */
async function downloadOperations(lxd: Lxd): Promise<DownloadOperation[]> {
  const out = await lxd.run(["query", "--", lxd.api("/1.0/operations?recursion=1")], {
    timeoutMs: OPERATIONS_TIMEOUT_MS,
  });
  const byStatus = JSON.parse(out) as Record<string, ApiOperation[] | null> | null;
  const running = byStatus?.["running"] ?? [];
  return running
    .filter((op) => op.description === "Downloading image")
    .map((op) => {
      const progress = op.metadata?.["download_progress"];
      return { id: op.id, progress: typeof progress === "string" ? progress : undefined };
    });
}

interface ApiOperation {
  id: string;
  description?: string;
  metadata?: Record<string, unknown> | null;
}

const TICK = Symbol("tick");

/** `promise`'s value if it settles within `ms`, else TICK (without leaving a timer behind). */
async function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof TICK> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const tick = new Promise<typeof TICK>((resolve) => {
    timer = setTimeout(() => resolve(TICK), ms);
  });
  try {
    return await Promise.race([promise, tick]);
  } finally {
    clearTimeout(timer);
  }
}

// --- errors ------------------------------------------------------------------

function isNotFound(stderr: string): boolean {
  return /not found|couldn.t be found/i.test(stderr);
}

/** lxc and incus: `The remote "debian" doesn't exist` (from the client's config, before any request). */
function isUnknownRemote(stderr: string): boolean {
  return /\bremote\b.*\b(?:doesn.t|does not) exist/i.test(stderr);
}

function notFound(cause: LxdError, reference: string, message: string): ImageError {
  const lxdSays = cause.stderr.trim().replace(/^Error: /, "");
  return new ImageError(
    cause.args,
    cause.code,
    `Error: Image not found: ${reference}${lxdSays ? ` (${lxdSays})` : ""}\n`,
    lxdSays ? `${message} (${lxdSays})` : message,
  );
}

/** LXD's message, or what a timeout (exit 124 from the command's kill, no stderr) means. */
function detailOf(error: LxdError, timeoutMs?: number): string {
  const stderr = error.stderr.trim().replace(/^Error: /, "");
  if (stderr) return stderr;
  if (error.code === 124 && timeoutMs !== undefined) {
    return `no answer within ${formatDuration(timeoutMs)}`;
  }
  return `exit code ${error.code}`;
}
