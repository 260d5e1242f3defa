/**
 * gc: deletes containers this driver launched longer ago than a given age,
 * e.g. after a runner crash left some behind. Containers without the
 * driver's labels are never touched.
 */
import type { Context } from "../lib/context.ts";
import { createdAt, isManaged } from "../lib/labels.ts";
import { SystemFailure } from "../lib/errors.ts";
import type { Lxd } from "../lib/lxd.ts";

export async function gc(
  ctx: Context,
  lxd: Lxd,
  olderThanMs: number,
  now = new Date(),
): Promise<void> {
  const instances = await lxd.list();
  let failures = 0;
  for (const instance of instances) {
    if (!isManaged(instance.config)) continue;
    const created = createdAt(instance.config);
    if (created === undefined || now.getTime() - created.getTime() < olderThanMs) continue;
    try {
      if (!(await lxd.delete(instance.name))) continue; // deleted meanwhile, e.g. by its cleanup
      await ctx.write(`deleted ${instance.name} (created ${created.toISOString()})\n`);
    } catch (error) {
      failures++;
      ctx.log.error(`could not delete ${instance.name}: ${(error as Error).message}`);
    }
  }
  if (failures > 0) throw new SystemFailure(`gc could not delete ${failures} container(s)`);
}
