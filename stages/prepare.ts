/**
 * prepare: creates the job's fresh container and waits until it can run the
 * job. Any failure after creation deletes the container again, so a failed
 * prepare (which the runner retries) leaves nothing behind.
 */
import { cacheSourceFor, chownToContainerRoot, ensureCacheDir } from "../lib/cache_dir.ts";
import type { Context } from "../lib/context.ts";
import { formatDuration } from "../lib/duration.ts";
import { BuildFailure, SystemFailure } from "../lib/errors.ts";
import { chooseImage } from "../lib/image_policy.ts";
import { ensureLocalImage } from "../lib/images.ts";
import { type InstanceSpec, instanceSpec } from "../lib/instance_spec.ts";
import { recordJobContainer } from "../lib/job_container.ts";
import { claimWarm, POOL_LOCK_FILE } from "../lib/pool.ts";
import { containerName, readJobIdentity } from "../lib/job.ts";
import { readJobRequests } from "../lib/job_requests.ts";
import { hostIdentity, labelsFor } from "../lib/labels.ts";
import { type Lxd, LxdError } from "../lib/lxd.ts";
import {
  findGitlabRunner,
  installPrerequisites,
  parseProbe,
  PROBED_TOOLS,
} from "../lib/prerequisites.ts";
import { shellCommand } from "../lib/shell.ts";

/**
 * Waits for the container's init: on systemd images until systemd reports
 * running or degraded (so networking and services are up), on others until a
 * command runs at all. Then creates the builds and cache directories and
 * reports which of the tools named after them the image has.
 */
/** The readiness script's last line: without it, LXD lost some of the output. */
const READY_MARK = "lxd-driver: ready";

const READY_SCRIPT = `case "$(readlink -f /sbin/init 2>/dev/null)" in
*/systemd)
  while :; do
    case "$(systemctl is-system-running --wait 2>/dev/null)" in running|degraded) break ;; esac
    sleep 0.1 2>/dev/null || sleep 1
  done ;;
esac
mkdir -p -- "$1" "$2" || exit 1
shift 2
for tool in "$@"; do command -v "$tool" >/dev/null 2>&1 && echo "has $tool"; done
echo "${READY_MARK}"`;

export async function prepare(ctx: Context, lxd: Lxd): Promise<void> {
  const { settings, log, env } = ctx;
  const identity = await readJobIdentity(env);
  let name = await containerName(identity);
  // Everything the job controls is checked before LXD is touched.
  const requestedImage = chooseImage(env("CUSTOM_ENV_CI_JOB_IMAGE"), settings.image);
  const requests = readJobRequests(env, settings.limits);
  const aliases = settings.image.aliases;
  const reference = Object.hasOwn(aliases, requestedImage)
    ? aliases[requestedImage]!
    : requestedImage;
  const jobChoseImage = requestedImage !== settings.image.default;
  const host = hostIdentity(settings.lxd.hostId);
  const usePool = settings.pool.size > 0 && !jobChoseImage;

  if (!usePool && await lxd.delete(name)) log.warn(`deleted a leftover container named ${name}`);

  const started = performance.now();
  const image = await ensureLocalImage(lxd, reference, log).catch((error: unknown) => {
    throw jobChoseImage && isImageNotFound(error)
      ? new BuildFailure(
        `image ${
          JSON.stringify(requestedImage)
        } does not exist on this runner's LXD (${reference})`,
      )
      : error;
  });
  log.info(
    `Using image ${requestedImage}${reference !== requestedImage ? ` (${reference})` : ""}, ` +
      `fingerprint ${image.fingerprint.slice(0, 12)}${
        image.description ? `: ${image.description}` : ""
      }`,
  );

  const cacheSource = cacheSourceFor(settings, identity);
  if (cacheSource) await ensureCacheDir(cacheSource);
  const specInput = {
    name,
    fingerprint: image.fingerprint,
    settings,
    labels: labelsFor(identity, host, new Date()),
    requests,
    rootPool: settings.limits.disk && !settings.instance.storagePool
      ? await rootPool(lxd, settings.instance.profiles)
      : undefined,
    cacheSource,
  };
  const spec = instanceSpec(specInput);

  // Pool containers carry the runner's settings only; the job's requests and devices come with the claim.
  const claimed = usePool
    ? await claimFromPool(
      ctx,
      lxd,
      spec,
      instanceSpec({ ...specInput, requests: NO_REQUESTS, cacheSource: undefined }),
      host,
    )
    : undefined;
  if (claimed) {
    name = claimed;
    log.info(`Took warm container ${name} from the pool`);
  } else {
    log.info(`Creating container ${name}`);
  }
  try {
    if (!claimed) {
      await lxd.create(spec);
      if (cacheSource) await chownToContainerRoot(cacheSource, await lxd.instanceConfig(name));
      await lxd.start(name);
    } else if (cacheSource) {
      await chownToContainerRoot(cacheSource, await lxd.instanceConfig(name));
    }
    const shell = shellCommand(settings.job.shell)[0]!;
    const present = await waitUntilReady(ctx, lxd, name, [shell, ...PROBED_TOOLS]);
    // A job that does not fetch sources needs no git in its image.
    if (env("CUSTOM_ENV_GIT_STRATEGY") === "none") present.add("git");
    await installPrerequisites({
      lxd,
      container: name,
      settings,
      log,
      shell,
      present,
      hostGitlabRunner: await findGitlabRunner(settings, env("PATH")),
    });
  } catch (error) {
    await deleteQuietly(ctx, lxd, name);
    throw error;
  }
  log.info(`Container ${name} is ready (${formatDuration(performance.now() - started)})`);
}

const NO_REQUESTS = { cpu: undefined, memory: undefined } as const;

/**
 * Takes a warm container for the job, giving it the job's labels, limits
 * and devices, and records its name for the later stages. Undefined when
 * the pool has none ready.
 */
async function claimFromPool(
  ctx: Context,
  lxd: Lxd,
  spec: InstanceSpec,
  template: InstanceSpec,
  host: string,
): Promise<string | undefined> {
  let claimed: string | undefined;
  try {
    claimed = await claimWarm(
      {
        lxd,
        size: ctx.settings.pool.size,
        host,
        log: ctx.log,
        lockPath: POOL_LOCK_FILE,
      },
      spec.source.fingerprint,
      template,
      { config: { ...spec.config }, devices: { ...spec.devices } },
    );
  } catch (error) {
    // The pool only makes starts faster: when it fails, the job gets a container of its own.
    ctx.log.warn(`could not use the warm pool: ${(error as Error).message}`);
    return undefined;
  }
  if (claimed) await recordJobContainer(ctx.env, claimed);
  return claimed;
}

function isImageNotFound(error: unknown): boolean {
  const text = error instanceof LxdError
    ? error.stderr
    : error instanceof Error
    ? error.message
    : "";
  return /image not found|requested image couldn.t be found/i.test(text);
}

/** The storage pool of the profiles' root disk (the last profile that has one wins, as in LXD). */
async function rootPool(lxd: Lxd, profiles: readonly string[]): Promise<string | undefined> {
  let pool: string | undefined;
  for (const profile of profiles) {
    const answer = await lxd.query("GET", `/1.0/profiles/${encodeURIComponent(profile)}`) as {
      devices?: Record<string, Record<string, string>>;
    };
    const root = Object.values(answer?.devices ?? {}).find((d) =>
      d.type === "disk" && d.path === "/"
    );
    if (root?.pool) pool = root.pool;
  }
  return pool;
}

async function waitUntilReady(
  ctx: Context,
  lxd: Lxd,
  name: string,
  tools: string[],
): Promise<Set<string>> {
  const { readyTimeoutMs } = ctx.settings.instance;
  const deadline = Date.now() + readyTimeoutMs;
  const argv = [
    "sh",
    "-c",
    READY_SCRIPT,
    "lxd-driver-ready",
    ctx.settings.job.buildsDir,
    ctx.settings.job.cacheDir,
    ...tools,
  ];
  try {
    // Under load LXD 5.0 can drop the end of a short command's output; the
    // script is idempotent (and instant once the container is up), so ask again.
    for (let attempt = 1;; attempt++) {
      const output = await lxd.exec(name, argv, { timeoutMs: Math.max(1, deadline - Date.now()) });
      if (output.includes(READY_MARK)) return parseProbe(output);
      if (attempt === 3) throw new Error("its output was lost three times");
      ctx.log.debug(`readiness output of ${name} was cut short; asking again`);
    }
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new SystemFailure(
      `container ${name} did not become ready within ${formatDuration(readyTimeoutMs)} ` +
        `([instance] ready_timeout): ${reason}`,
    );
  }
}

async function deleteQuietly(ctx: Context, lxd: Lxd, name: string): Promise<void> {
  try {
    await lxd.delete(name);
  } catch (error) {
    ctx.log.warn(`could not delete container ${name}: ${(error as Error).message}`);
  }
}
