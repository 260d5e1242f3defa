/**
 * prepare: launches the job's fresh container and waits until it can run the
 * job. Any failure after the launch deletes the container again, so a failed
 * prepare (which the runner retries) leaves nothing behind.
 */
import type { Context } from "../lib/context.ts";
import { formatDuration } from "../lib/duration.ts";
import { BuildFailure, SystemFailure } from "../lib/errors.ts";
import { chooseImage } from "../lib/image_policy.ts";
import { containerName, readJobIdentity } from "../lib/job.ts";
import { labelsFor } from "../lib/labels.ts";
import { type Lxd, LxdError } from "../lib/lxd.ts";

/**
 * Waits for the container's init: on systemd images until systemd reports
 * running or degraded (so networking and services are up), on others until a
 * command runs at all; then creates the builds and cache directories.
 */
const READY_SCRIPT = `case "$(readlink -f /sbin/init 2>/dev/null)" in
*/systemd)
  while :; do
    case "$(systemctl is-system-running --wait 2>/dev/null)" in running|degraded) break ;; esac
    sleep 0.1 2>/dev/null || sleep 1
  done ;;
esac
mkdir -p -- "$1" "$2"`;

export async function prepare(ctx: Context, lxd: Lxd): Promise<void> {
  const { settings, log } = ctx;
  const identity = await readJobIdentity(ctx.env);
  const name = await containerName(identity);
  const requested = ctx.env("CUSTOM_ENV_CI_JOB_IMAGE");
  const image = chooseImage(requested, settings.image);

  if (await lxd.delete(name)) log.warn(`deleted a leftover container named ${name}`);

  log.info(`Launching container ${name} from image ${image}`);
  const started = performance.now();
  try {
    await lxd.launch(image, name, {
      profiles: settings.instance.profiles,
      storagePool: settings.instance.storagePool,
      ephemeral: settings.instance.ephemeral,
      config: labelsFor(identity, new Date()),
    });
  } catch (error) {
    await deleteQuietly(ctx, lxd, name);
    // A missing image the job asked for is the job's problem; a missing default image is the runner's.
    if (
      error instanceof LxdError &&
      /image not found|requested image couldn.t be found/i.test(error.stderr) &&
      image !== settings.image.default
    ) {
      throw new BuildFailure(`image ${JSON.stringify(image)} does not exist on this runner's LXD`);
    }
    throw error;
  }

  try {
    await waitUntilReady(ctx, lxd, name);
  } catch (error) {
    await deleteQuietly(ctx, lxd, name);
    throw error;
  }
  log.info(`Container ${name} is ready (${formatDuration(performance.now() - started)})`);
}

async function waitUntilReady(ctx: Context, lxd: Lxd, name: string): Promise<void> {
  const { readyTimeoutMs } = ctx.settings.instance;
  try {
    await lxd.exec(
      name,
      [
        "sh",
        "-c",
        READY_SCRIPT,
        "lxd-driver-ready",
        ctx.settings.job.buildsDir,
        ctx.settings.job.cacheDir,
      ],
      { timeoutMs: readyTimeoutMs },
    );
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
