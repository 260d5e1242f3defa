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
import { forgetJobContainer, recordJobContainer, recordJobSettings } from "../lib/job_container.ts";
import { claimWarm } from "../lib/pool.ts";
import { poolStateDir } from "../lib/pool_lock.ts";
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
import { copyOf, templateFor, type TemplateState, templateState } from "../lib/template.ts";

/** The readiness script's last line: without it, LXD lost some of the output. */
const READY_MARK = "lxd-driver: ready";

/**
 * Waits for the container's init: on systemd images until systemd reports
 * running or degraded (so networking and services are up), on others until a
 * command runs at all. Then creates the builds and cache directories and
 * reports which of the tools named after them the image has.
 */
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
  // A record left by an earlier attempt of this job must not point later stages at its container.
  await forgetJobContainer(env);

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
      image.fingerprint,
      instanceSpec({ ...specInput, requests: NO_REQUESTS, cacheSource: undefined }),
      host,
    )
    : undefined;
  if (claimed) {
    // A container left under the job's own name by an earlier attempt is not needed now.
    lxd.deleteDetached(name);
    name = claimed;
    log.info(`Took warm container ${name} from the pool`);
  } else {
    log.info(`Creating container ${name}`);
  }
  let launchTemplate: (() => Promise<void>) | undefined;
  try {
    // Later stages read the name from here rather than parsing the job payload again.
    await recordJobContainer(env, name);
    await recordJobSettings(env, settings);
    if (!claimed) {
      launchTemplate = await createContainer(ctx, lxd, spec, host);
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
      hostGitlabRunner: findGitlabRunner(settings, env("PATH")),
    });
  } catch (error) {
    await deleteQuietly(ctx, lxd, name);
    await forgetJobContainer(env).catch(() => {});
    throw error;
  }
  log.info(`Container ${name} is ready (${formatDuration(performance.now() - started)})`);
  try {
    await launchTemplate?.();
  } catch (error) {
    log.warn(`could not launch the template container: ${(error as Error).message}`);
  }
}

const NO_REQUESTS = { cpu: undefined, memory: undefined } as const;

/**
 * Takes a warm container for the job, giving it the job's labels, limits
 * and devices. Undefined when the pool has none ready, or cannot be used.
 */
async function claimFromPool(
  ctx: Context,
  lxd: Lxd,
  spec: InstanceSpec,
  fingerprint: string,
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
        stateDir: poolStateDir(),
      },
      fingerprint,
      template,
      { config: { ...spec.config }, devices: { ...spec.devices } },
    );
  } catch (error) {
    // The pool only makes starts faster: when it fails, the job gets a container of its own.
    ctx.log.warn(`could not use the warm pool: ${(error as Error).message}`);
    return undefined;
  }
  return claimed;
}

/**
 * Creates the container: as a copy of its template when one is ready (see
 * lib/template.ts), else from the image. Returns the template's launch when
 * there is none yet, for prepare to start once the job's container is ready
 * (two remappings at once would slow this job down).
 */
async function createContainer(
  ctx: Context,
  lxd: Lxd,
  spec: InstanceSpec,
  host: string,
): Promise<(() => Promise<void>) | undefined> {
  const template = ctx.settings.instance.template ? await templateFor(spec, host) : undefined;
  const state: TemplateState = template
    ? await templateState(lxd, template, ctx.log).catch((error) => {
      ctx.log.warn(`could not use the template container: ${(error as Error).message}`);
      return {};
    })
    : {};
  if ("ready" in state) {
    try {
      await createReplacingLeftover(ctx, lxd, copyOf(spec, state.ready));
      ctx.log.debug(`created ${spec.name} as a copy of template ${state.ready}`);
      return undefined;
    } catch (error) {
      // Deleted meanwhile (gc): the image is still there.
      if (!(error instanceof LxdError && error.notFound)) throw error;
      ctx.log.debug(`template ${state.ready} is gone: creating ${spec.name} from the image`);
    }
  }
  await createReplacingLeftover(ctx, lxd, spec);
  return "launch" in state ? state.launch : undefined;
}

/**
 * Creates the container; when one of the same name is left from an earlier
 * attempt of this job, deletes it and creates again. Trying first keeps the
 * usual case to one call.
 */
async function createReplacingLeftover(ctx: Context, lxd: Lxd, spec: InstanceSpec): Promise<void> {
  try {
    await lxd.create(spec);
  } catch (error) {
    if (!(error instanceof LxdError && error.alreadyExists)) throw error;
    await lxd.delete(spec.name);
    ctx.log.warn(`deleted a leftover container named ${spec.name}`);
    await lxd.create(spec);
  }
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
  let lastProblem = "";
  let lostOutput = 0;
  const timedOut = () =>
    new SystemFailure(
      `container ${name} did not become ready within ${formatDuration(readyTimeoutMs)} ` +
        `([instance] ready_timeout)${lastProblem ? `: ${lastProblem}` : ""}`,
    );
  while (true) {
    const remaining = deadline - Date.now();
    if (remaining <= 0) throw timedOut();
    try {
      const output = await lxd.exec(name, argv, { timeoutMs: remaining });
      if (output.includes(READY_MARK)) return parseProbe(output);
      // Under load LXD 5.0 can drop the end of a short command's output; the
      // script is idempotent (and instant once the container is up), so ask again.
      lastProblem = `its output was cut short ${++lostOutput} time(s)`;
      ctx.log.debug(`readiness output of ${name} was cut short; asking again`);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      if (Date.now() >= deadline) {
        lastProblem = reason;
        throw timedOut();
      }
      if (!(error instanceof LxdError) || !isTransientExecFailure(error)) {
        throw new SystemFailure(`container ${name} could not be made ready: ${reason}`);
      }
      // Right after start LXD may refuse exec until the container's init is up.
      lastProblem = reason;
      ctx.log.debug(`${name} does not accept commands yet: ${reason}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * An exec that LXD itself refused (its client's "Error: ..."), e.g. while the
 * container is still starting, as opposed to the readiness script failing
 * inside a container that runs.
 */
function isTransientExecFailure(error: LxdError): boolean {
  return /^Error: /m.test(error.stderr) && !error.notFound && !error.unreachable;
}

async function deleteQuietly(ctx: Context, lxd: Lxd, name: string): Promise<void> {
  try {
    await lxd.delete(name);
  } catch (error) {
    ctx.log.warn(`could not delete container ${name}: ${(error as Error).message}`);
  }
}
