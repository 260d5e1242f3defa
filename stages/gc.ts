/**
 * gc: deletes containers this runner host's driver launched longer ago than
 * a given age (e.g. after a runner crash left some behind), and warm pool
 * containers beyond `[pool] size` (a pool that was shrunk or turned off).
 * Containers without the driver's labels, or made by another runner host
 * sharing the same LXD, are never touched.
 */
import type { Context } from "../lib/context.ts";
import { SystemFailure } from "../lib/errors.ts";
import { createdAt, hostIdentity, isManaged, madeBy } from "../lib/labels.ts";
import type { InstanceSummary, Lxd } from "../lib/lxd.ts";
import { POOL } from "../lib/pool.ts";

export async function gc(
  ctx: Context,
  lxd: Lxd,
  olderThanMs: number,
  now = new Date(),
): Promise<void> {
  const host = hostIdentity(ctx.settings.lxd.hostId);
  const mine = (await lxd.list()).filter((i) => isManaged(i.config) && madeBy(i.config, host));
  const old = mine.filter((i) => {
    const created = createdAt(i.config);
    return created !== undefined && now.getTime() - created.getTime() >= olderThanMs;
  });
  const warm = mine.filter((i) => i.config[POOL] === "warm" && !old.includes(i))
    .sort((a, b) => (createdAt(a.config)?.getTime() ?? 0) - (createdAt(b.config)?.getTime() ?? 0));
  const beyondPool = warm.slice(ctx.settings.pool.size);

  let failures = 0;
  const remove = async (instance: InstanceSummary, why: string) => {
    try {
      // false: deleted meanwhile, e.g. by its job's cleanup.
      if (await lxd.delete(instance.name)) await ctx.write(`deleted ${instance.name} (${why})\n`);
    } catch (error) {
      failures++;
      ctx.log.error(`could not delete ${instance.name}: ${(error as Error).message}`);
    }
  };
  for (const instance of old) {
    await remove(instance, `created ${createdAt(instance.config)!.toISOString()}`);
  }
  for (const instance of beyondPool) {
    await remove(instance, `beyond [pool] size ${ctx.settings.pool.size}`);
  }
  if (failures > 0) throw new SystemFailure(`gc could not delete ${failures} container(s)`);
}
