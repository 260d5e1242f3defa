/**
 * gc: deletes containers this runner host's driver launched longer ago than
 * a given age (e.g. after a runner crash left some behind), warm pool
 * containers beyond `[pool] size` (a pool that was shrunk or turned off),
 * and pool containers left `retiring` by a deletion that did not finish.
 * Templates (lib/template.ts) go by age too, except while being made: the
 * next job launches a new one, from the image as it is then.
 * Containers without the driver's labels, or made by another runner host
 * sharing the same LXD, are never touched.
 */
import type { Context } from "../lib/context.ts";
import { SystemFailure } from "../lib/errors.ts";
import { createdAt, hostIdentity, isManaged, madeBy } from "../lib/labels.ts";
import { type InstanceSummary, type Lxd, LxdError } from "../lib/lxd.ts";
import { markRetiring, POOL, warmMembers } from "../lib/pool.ts";
import { poolStateDir, withPoolLock } from "../lib/pool_lock.ts";
import { TEMPLATE, templateInTheMaking } from "../lib/template.ts";

interface Victim {
  readonly name: string;
  readonly why: string;
  readonly template?: boolean;
}

export async function gc(
  ctx: Context,
  lxd: Lxd,
  olderThanMs: number,
  now = new Date(),
  stateDir = poolStateDir(),
): Promise<void> {
  const host = hostIdentity(ctx.settings.lxd.hostId);
  const size = ctx.settings.pool.size;
  // Chosen under the pool lock, and warm ones relabelled before it is released,
  // so that no prepare can claim a container gc is about to delete.
  const victims = await withPoolLock(stateDir, async (pending) => {
    const instances = await lxd.list();
    const mine = instances.filter((i) => isManaged(i.config) && madeBy(i.config, host));
    const isOld = (i: InstanceSummary) => {
      const created = createdAt(i.config);
      return created !== undefined && now.getTime() - created.getTime() >= olderThanMs;
    };
    const warm = warmMembers(instances, host);
    const warmVictims = [...warm.filter(isOld), ...warm.filter((i) => !isOld(i)).slice(size)];
    const retired = new Set(await markRetiring(lxd, warmVictims, ctx.log));
    const chosen: Victim[] = [];
    for (const instance of mine) {
      const label = instance.config[POOL];
      if (label === "retiring") {
        chosen.push({ name: instance.name, why: "a pool container being retired" });
      } else if (label === "warm") {
        if (!retired.has(instance.name)) continue;
        chosen.push({
          name: instance.name,
          why: isOld(instance)
            ? `created ${createdAt(instance.config)!.toISOString()}`
            : `beyond [pool] size ${size}`,
        });
      } else if (isOld(instance) && !templateInTheMaking(instance.config, now.getTime())) {
        const template = instance.config[TEMPLATE] !== undefined;
        chosen.push({
          name: instance.name,
          why: `${template ? "a template, " : ""}created ${
            createdAt(instance.config)!.toISOString()
          }`,
          template,
        });
      }
    }
    return { result: chosen, pending };
  });

  let failures = 0;
  for (const victim of victims) {
    try {
      // false: deleted meanwhile, e.g. by its job's cleanup.
      if (await lxd.delete(victim.name)) {
        await ctx.write(`deleted ${victim.name} (${victim.why})\n`);
      }
    } catch (error) {
      // A job's prepare copying from a template holds it for a moment; the next gc takes it.
      if (victim.template && error instanceof LxdError && error.busy) {
        ctx.log.warn(`kept template ${victim.name} for now: LXD is using it`);
        continue;
      }
      failures++;
      ctx.log.error(`could not delete ${victim.name}: ${(error as Error).message}`);
    }
  }
  if (failures > 0) throw new SystemFailure(`gc could not delete ${failures} container(s)`);
}
