/**
 * cleanup: deletes the job's container. Its exit code never affects the job
 * and the runner may call it after every failed prepare attempt, so a
 * container that is already gone, or an LXD that is down, is a warning at
 * most.
 */
import type { Context } from "../lib/context.ts";
import { forgetJobContainer, jobContainer } from "../lib/job_container.ts";
import { type Lxd, LxdError } from "../lib/lxd.ts";

export async function cleanup(ctx: Context, lxd: Lxd): Promise<void> {
  const name = await jobContainer(ctx.env);
  try {
    if (await lxd.delete(name)) ctx.log.info(`Deleted container ${name}`);
    else ctx.log.info(`Container ${name} was already gone`);
    await forgetJobContainer(ctx.env);
  } catch (error) {
    if (error instanceof LxdError && error.unreachable) {
      ctx.log.warn(
        `could not delete container ${name}; \`gc\` will remove it later. ${error.message}`,
      );
      return;
    }
    throw error;
  }
}
