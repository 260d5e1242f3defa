/**
 * doctor: checks this host's setup for an administrator and prints one line
 * per check on stdout, each with the fix when something is wrong:
 *
 *     OK   CHECK: DETAIL
 *     WARN CHECK: DETAIL — fix: WHAT TO DO
 *     FAIL CHECK: DETAIL — fix: WHAT TO DO
 *     SKIP CHECKS: why they could not run
 *
 * It only looks: nothing is created, changed or downloaded (an image on a
 * remote is asked about, never pulled). gitlab-runner never calls it, so its
 * exit status is a human's: 0 when no check failed, 1 when any did (see
 * mod.ts).
 */
import type { Context } from "../lib/context.ts";
import { DriverError } from "../lib/errors.ts";
import { findExecutable, fsProblem, notExecutable } from "../lib/find_executable.ts";
import { hostIdentity } from "../lib/labels.ts";
import { type Lxd, LxdError } from "../lib/lxd.ts";
import { IMAGE, warmMembers } from "../lib/pool.ts";
import { DEFAULT_SETTINGS_PATH, type Settings } from "../lib/settings.ts";

export type Status = "OK" | "WARN" | "FAIL" | "SKIP";

export interface CheckResult {
  readonly status: Status;
  /** The check's name, e.g. `storage`. */
  readonly check: string;
  readonly detail: string;
  /** What to do about a WARN or FAIL. */
  readonly fix?: string;
}

/** doctor's exit status when a check failed (also for an invalid settings file). */
export const PROBLEMS_FOUND_EXIT_CODE = 1;

/** How long asking a remote image server about an image may take. */
const REMOTE_TIMEOUT_MS = 60_000;

/** One check as one line (no trailing newline): multi-line messages are joined. */
export function formatCheck(result: CheckResult): string {
  const fix = result.fix ? ` — fix: ${oneLine(result.fix)}` : "";
  return `${result.status.padEnd(4)} ${result.check}: ${oneLine(result.detail)}${fix}`;
}

function oneLine(text: string): string {
  return text.trim().replace(/:\s*\n\s*/g, ": ").replace(/\s*\n\s*/g, "; ");
}

/**
 * Runs every check, writing each line as soon as it is known, and returns
 * the number of FAILs. A check that throws is a FAIL of its own; the others
 * still run.
 */
export async function doctor(ctx: Context, lxd: Lxd): Promise<number> {
  const { settings } = ctx;
  const cli = settings.lxd.cli;
  const counts: Record<Status, number> = { OK: 0, WARN: 0, FAIL: 0, SKIP: 0 };
  const report = async (result: CheckResult) => {
    counts[result.status]++;
    await ctx.write(formatCheck(result) + "\n");
  };
  const aliases = Object.entries(settings.image.aliases);

  await report(settingsCheck(settings));
  const server = await guarded(cli, "lxd", () => lxdCheck(lxd, cli));
  await report(server);
  if (server.status === "FAIL") {
    const skipped = ["storage", "default image", ...(aliases.length > 0 ? ["image aliases"] : [])];
    await report({
      status: "SKIP",
      check: skipped.join(", "),
      detail: "skipped because they need LXD, which could not be queried",
    });
  } else {
    await report(await guarded(cli, "storage", () => storageCheck(settings, lxd)));
    await report(
      await guarded(
        cli,
        "default image",
        () => imageCheck(lxd, cli, "default image", settings.image.default, "[image] default"),
      ),
    );
    for (const [alias, target] of aliases) {
      const check = `image alias ${alias}`;
      await report(
        await guarded(
          cli,
          check,
          () => imageCheck(lxd, cli, check, target, `[image.aliases] ${JSON.stringify(alias)}`),
        ),
      );
    }
    await report(await guarded(cli, "pool", () => poolCheck(settings, lxd)));
  }
  await report(await guarded(cli, "helper", () => Promise.resolve(helperCheck(ctx))));
  await report(await guarded(cli, "ca_file", () => caFileCheck(settings)));
  await report(await guarded(cli, "cache", () => cacheCheck(settings)));
  await report(privilegedCheck(settings));

  ctx.log.info(
    `doctor: ${counts.FAIL} failed, ${counts.WARN} warning(s), ${counts.OK} OK` +
      (counts.SKIP > 0 ? `, some checks skipped` : ""),
  );
  return counts.FAIL;
}

/**
 * What doctor prints when the settings file cannot be loaded (mod.ts calls
 * this instead of failing outright): one FAIL line; returns the exit status.
 * Anything but a driver error is a bug and is thrown on.
 */
export async function reportSettingsFailure(
  write: (text: string) => Promise<void>,
  error: unknown,
): Promise<number> {
  if (!(error instanceof DriverError)) throw error;
  await write(
    formatCheck({
      status: "FAIL",
      check: "settings",
      detail: error.message,
      fix:
        "correct the settings file where the message says, or name another one with --config FILE",
    }) + "\n",
  );
  return PROBLEMS_FOUND_EXIT_CODE;
}

/** Runs one check; an error it did not expect becomes that check's FAIL. */
async function guarded(
  cli: string,
  check: string,
  fn: () => Promise<CheckResult>,
): Promise<CheckResult> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof LxdError) {
      return {
        status: "FAIL",
        check,
        detail: error.message,
        fix: `run \`${cli} ${error.args.join(" ")}\` by hand to see more`,
      };
    }
    return {
      status: "FAIL",
      check,
      detail: `unexpected error: ${error instanceof Error ? error.message : String(error)}`,
      fix: "run again with LXD_DRIVER_DEBUG=1; if it persists, report it as a bug in lxd-driver",
    };
  }
}

function settingsCheck(settings: Settings): CheckResult {
  return {
    status: "OK",
    check: "settings",
    detail: settings.source === undefined
      ? `built-in defaults; ${DEFAULT_SETTINGS_PATH} not found`
      : `loaded ${settings.source}`,
  };
}

// --- LXD -------------------------------------------------------------------

/** The warm pool of this runner host: how many containers wait, and of which images. */
async function poolCheck(settings: Settings, lxd: Lxd): Promise<CheckResult> {
  const size = settings.pool.size;
  if (size === 0) return { status: "OK", check: "pool", detail: "off ([pool] size = 0)" };
  const host = hostIdentity(settings.lxd.hostId);
  const members = warmMembers(await lxd.list(), host);
  const running = members.filter((i) => i.status === "Running").length;
  const images = [...new Set(members.map((i) => (i.config[IMAGE] ?? "?").slice(0, 12)))].join(", ");
  const detail = `${running} of ${size} warm, ${members.length - running} starting` +
    (images ? ` (images ${images})` : "") + ` for host ${JSON.stringify(host)}`;
  if (running === 0) {
    return {
      status: "WARN",
      check: "pool",
      detail,
      fix:
        "the next job refills it; if it stays empty, check that the default image launches (lxc launch)",
    };
  }
  return { status: "OK", check: "pool", detail };
}

/**
 * `lxc query PATH` parsed as JSON; undefined when LXD answers "not found".
 * PATH always starts with "/", so it cannot be read as a flag.
 */
async function queryOrMissing<T>(lxd: Lxd, path: string): Promise<T | undefined> {
  try {
    return JSON.parse(await lxd.run(["query", "--", lxd.api(path)])) as T;
  } catch (error) {
    if (error instanceof LxdError && /\bnot found\b/i.test(error.stderr)) return undefined;
    throw error;
  }
}

/** The first line of an LXD error, for a detail. */
function reason(error: LxdError): string {
  return error.message.split("\n")[0]!;
}

async function lxdCheck(lxd: Lxd, cli: string): Promise<CheckResult> {
  let answer: string;
  try {
    answer = await lxd.run(["query", "--", lxd.api("/1.0")]);
  } catch (error) {
    if (!(error instanceof LxdError)) throw error;
    const [first, ...hint] = error.message.split("\n");
    return {
      status: "FAIL",
      check: "lxd",
      detail: error.unreachable ? `not reachable: ${first}` : `cannot query LXD: ${first}`,
      fix: error.unreachable && hint.length > 0
        ? hint.join(" ").replace(/^(LXD|Incus) is not reachable\.\s*/, "")
        : `check that \`${cli} query /1.0\` works for this user, and [lxd] cli`,
    };
  }
  const { environment = {} } = JSON.parse(answer) as {
    environment?: { server?: string; server_version?: string; server_name?: string };
  };
  const name = environment.server_name ? ` on ${environment.server_name}` : "";
  return {
    status: "OK",
    check: "lxd",
    detail: `${environment.server ?? "server"} ${
      environment.server_version ?? "(version unknown)"
    }${name}, reached with ${cli}`,
  };
}

interface Profile {
  devices?: Record<string, { type?: string; path?: string; pool?: string }>;
}

interface StoragePool {
  driver?: string;
  status?: string;
}

async function storageCheck(settings: Settings, lxd: Lxd): Promise<CheckResult> {
  const { profiles, storagePool } = settings.instance;
  const cli = settings.lxd.cli;
  const fail = (detail: string, fix: string): CheckResult => ({
    status: "FAIL",
    check: "storage",
    detail,
    fix,
  });

  // The root disk comes from the last profile that has one, as LXD applies them in order.
  let root: { pool: string; profile: string } | undefined;
  for (const profile of profiles) {
    const answer = await queryOrMissing<Profile>(
      lxd,
      `/1.0/profiles/${encodeURIComponent(profile)}`,
    );
    if (answer === undefined) {
      return fail(
        `profile "${profile}" ([instance] profiles) does not exist`,
        `create it (${cli} profile create ${profile}) or remove it from [instance] profiles`,
      );
    }
    for (const device of Object.values(answer.devices ?? {})) {
      if (device.type === "disk" && device.path === "/" && device.pool) {
        root = { pool: device.pool, profile };
      }
    }
  }

  const pool = storagePool || root?.pool;
  if (!pool) {
    return fail(
      profiles.length === 0
        ? "[instance] storage_pool is empty and [instance] profiles is empty"
        : `[instance] storage_pool is empty and no profile in [instance] profiles has a root disk`,
      `set [instance] storage_pool, or give a profile a root disk ` +
        `(${cli} profile device add ${profiles[0] ?? "default"} root disk path=/ pool=POOL)`,
    );
  }
  const source = storagePool
    ? "from [instance] storage_pool"
    : `the root disk of profile "${root!.profile}"`;
  const info = await queryOrMissing<StoragePool>(
    lxd,
    `/1.0/storage-pools/${encodeURIComponent(pool)}`,
  );
  if (info === undefined) {
    return fail(
      `storage pool "${pool}" (${source}) does not exist`,
      `create it (${cli} storage create ${pool} btrfs) or ` +
        (storagePool
          ? "correct [instance] storage_pool"
          : "point the profile's root disk at an existing pool"),
    );
  }
  if (info.status !== undefined && info.status !== "Created") {
    return fail(
      `storage pool "${pool}" (${source}) is ${info.status}`,
      `see \`${cli} storage show ${pool}\` and LXD's log`,
    );
  }
  const driver = info.driver ?? "unknown driver";
  if (driver === "dir") {
    return {
      status: "WARN",
      check: "storage",
      detail: `pool "${pool}" (${source}) uses the dir driver, ` +
        "several times slower to launch than btrfs or zfs",
      fix: `create a btrfs or zfs pool (${cli} storage create NAME btrfs) ` +
        `and set [instance] storage_pool = "NAME"`,
    };
  }
  return { status: "OK", check: "storage", detail: `pool "${pool}" (${driver}), ${source}` };
}

/** The 12 characters of a fingerprint that `lxc image list` shows. */
function short(fingerprint: string | undefined): string {
  return fingerprint ? fingerprint.slice(0, 12) : "(fingerprint unknown)";
}

function fingerprintIn(imageInfo: string): string | undefined {
  return imageInfo.match(/^Fingerprint:\s*(\S+)/m)?.[1];
}

/**
 * Whether LXD can launch `reference`: a local alias or fingerprint that is
 * there, or `REMOTE:NAME` that the remote knows. Nothing is downloaded.
 */
async function imageCheck(
  lxd: Lxd,
  cli: string,
  check: string,
  reference: string,
  setting: string,
): Promise<CheckResult> {
  const shown = JSON.stringify(reference);
  const colon = reference.indexOf(":");
  const remote = colon > 0 ? reference.slice(0, colon) : undefined;

  if (remote !== undefined && remote !== "local") {
    try {
      const info = await lxd.run(["image", "info", "--", reference], {
        timeoutMs: REMOTE_TIMEOUT_MS,
      });
      return {
        status: "OK",
        check,
        detail: `${shown} is pullable from remote "${remote}" (image ${
          short(fingerprintIn(info))
        })`,
      };
    } catch (error) {
      if (!(error instanceof LxdError)) throw error;
      return {
        status: "FAIL",
        check,
        detail: `${shown} cannot be found on remote "${remote}": ${reason(error)}`,
        fix: `check the remote (${cli} remote list), the image's name (${cli} image list ` +
          `${remote}:) and this host's network, or import the image and use its local alias ` +
          `in ${setting}`,
      };
    }
  }

  const name = remote === "local" ? reference.slice(colon + 1) : reference;
  const alias = await queryOrMissing<{ target?: string }>(
    lxd,
    `/1.0/images/aliases/${encodeURIComponent(name)}`,
  );
  if (alias !== undefined) {
    return {
      status: "OK",
      check,
      detail: `${shown} is a local alias of image ${short(alias.target)}`,
    };
  }
  if (/^[0-9a-f]{1,64}$/i.test(name)) {
    try {
      const info = await lxd.run(["image", "info", "--", lxd.ref(name)]);
      return {
        status: "OK",
        check,
        detail: `${shown} is a local image (${short(fingerprintIn(info))})`,
      };
    } catch (error) {
      if (!(error instanceof LxdError && /\bnot found\b/i.test(error.stderr))) throw error;
    }
  }
  return {
    status: "FAIL",
    check,
    detail: `${shown} is neither an image alias nor a fingerprint on this host's LXD`,
    fix: `import it (${cli} image import FILE --alias ${name}) or copy it from a remote ` +
      `(${cli} image copy REMOTE:IMAGE local: --alias ${name}), or change ${setting}`,
  };
}

// --- host files ---------------------------------------------------------------

function helperCheck(ctx: Context): CheckResult {
  const configured = ctx.settings.helper.gitlabRunner;
  if (configured !== undefined) {
    const problem = notExecutable(configured);
    return problem === undefined
      ? { status: "OK", check: "helper", detail: `${configured} ([helper] gitlab_runner)` }
      : {
        status: "FAIL",
        check: "helper",
        detail: `${configured} ([helper] gitlab_runner) ${problem}`,
        fix: "install gitlab-runner there (chmod +x), or correct or remove [helper] gitlab_runner",
      };
  }
  const found = findExecutable("gitlab-runner", ctx.env("PATH"));
  return found !== undefined
    ? { status: "OK", check: "helper", detail: `${found} (gitlab-runner on PATH)` }
    : {
      status: "WARN",
      check: "helper",
      detail: "no [helper] gitlab_runner and no gitlab-runner on PATH: " +
        "cache and artifacts will be disabled in images without gitlab-runner",
      fix: "install gitlab-runner on this host, or set [helper] gitlab_runner to its path",
    };
}

async function caFileCheck(settings: Settings): Promise<CheckResult> {
  const file = settings.helper.caFile;
  if (file === undefined) {
    return { status: "OK", check: "ca_file", detail: "[helper] ca_file not set" };
  }
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (error) {
    return {
      status: "FAIL",
      check: "ca_file",
      detail: `${file} ([helper] ca_file) cannot be read: ${(error as Error).message}`,
      fix: "make it readable for the user that runs the driver, or correct [helper] ca_file",
    };
  }
  const certificates = text.split("-----BEGIN CERTIFICATE-----").length - 1;
  if (certificates === 0) {
    return {
      status: "FAIL",
      check: "ca_file",
      detail: `${file} ([helper] ca_file) holds no "-----BEGIN CERTIFICATE-----"`,
      fix: "point [helper] ca_file at a PEM file of CA certificates",
    };
  }
  return {
    status: "OK",
    check: "ca_file",
    detail: `${file} (${certificates} certificate${certificates === 1 ? "" : "s"})`,
  };
}

/** Why this user cannot create files in `dir`, or undefined when it can (tried with a temp file). */
async function notWritable(dir: string): Promise<string | undefined> {
  try {
    const probe = await Deno.makeTempFile({ dir, prefix: ".lxd-driver-doctor-" });
    await Deno.remove(probe);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** A stat error saying the path is not there (also when one of its parents is a file). */
function missing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory;
}

async function cacheCheck(settings: Settings): Promise<CheckResult> {
  const dir = settings.cache.hostDir;
  if (dir === undefined) {
    return {
      status: "OK",
      check: "cache",
      detail: "[cache] host_dir not set: each job's cache stays in its container " +
        "and is deleted with it",
    };
  }
  const fix =
    "create it and make it writable for the user that runs the driver, or correct [cache] host_dir";
  const fail = (detail: string): CheckResult => ({ status: "FAIL", check: "cache", detail, fix });
  const slots = settings.cache.perSlot ? ", one directory per concurrent slot" : "";

  let info: Deno.FileInfo | undefined;
  try {
    info = await Deno.stat(dir);
  } catch (error) {
    if (!missing(error)) {
      return fail(`${dir} ([cache] host_dir) ${fsProblem(error)}`);
    }
  }
  if (info !== undefined) {
    if (!info.isDirectory) return fail(`${dir} ([cache] host_dir) is not a directory`);
    const problem = await notWritable(dir);
    if (problem) return fail(`${dir} ([cache] host_dir) is not writable: ${problem}`);
    return { status: "OK", check: "cache", detail: `${dir} is writable${slots}` };
  }

  // Missing: it can be created when its nearest existing ancestor is a writable directory.
  let ancestor = dir;
  let ancestorInfo: Deno.FileInfo | undefined;
  while (ancestorInfo === undefined && ancestor !== "/") {
    ancestor = ancestor.replace(/\/+[^/]*\/*$/, "") || "/";
    try {
      ancestorInfo = await Deno.stat(ancestor);
    } catch (error) {
      if (!missing(error)) {
        return fail(
          `${dir} ([cache] host_dir) does not exist and ${ancestor} ${fsProblem(error)}`,
        );
      }
    }
  }
  if (!ancestorInfo?.isDirectory) {
    return fail(`${dir} ([cache] host_dir) cannot be created: ${ancestor} is not a directory`);
  }
  const problem = await notWritable(ancestor);
  if (problem) {
    return fail(
      `${dir} ([cache] host_dir) does not exist and cannot be created: ${ancestor} is not ` +
        `writable: ${problem}`,
    );
  }
  return {
    status: "OK",
    check: "cache",
    detail: `${dir} does not exist yet and can be created (${ancestor} is writable)${slots}`,
  };
}

function privilegedCheck(settings: Settings): CheckResult {
  const { privileged, nesting } = settings.instance;
  if (privileged) {
    return {
      status: "WARN",
      check: "privileged",
      detail: "privileged containers ([instance] privileged, allowed by allow_privileged): " +
        `jobs run as the host's root${nesting ? ", with nesting on" : ""}`,
      fix: "set [instance] privileged = false unless everyone who can run jobs on this runner " +
        "may be root on this host",
    };
  }
  return {
    status: "OK",
    check: "privileged",
    detail: nesting
      ? "unprivileged containers; nesting is on, which is fairly safe in unprivileged containers"
      : "unprivileged containers",
  };
}
