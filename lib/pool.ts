/**
 * The warm pool: `[pool] size` containers of the default image, launched
 * ahead of time so that prepare only has to claim one.
 *
 * Every pool decision on a host is taken under one lock (lib/pool_lock.ts):
 * a claim relabels its container `claimed`, and a container to be removed is
 * relabelled `retiring`, before the lock is released, so no container is
 * ever both given to a job and deleted, or given to two jobs. Launches and
 * deletions then run as detached `lxc` processes with no standard streams:
 * they never delay the job or hold the runner's output pipes open.
 */
import type { InstanceSpec } from "./instance_spec.ts";
import { CREATED, createdAt, HOST, isManaged, LABEL_PREFIX, madeBy, MANAGED } from "./labels.ts";
import type { Logger } from "./log.ts";
import type { InstanceSummary, Lxd } from "./lxd.ts";
import { type PendingLaunches, withPoolLock } from "./pool_lock.ts";

/** `warm` while waiting in the pool, `claimed` once a job has it, `retiring` once it is to go. */
export const POOL = `${LABEL_PREFIX}pool`;
/** The fingerprint a pool container was launched from. */
export const IMAGE = `${LABEL_PREFIX}image`;
const NAME_PREFIX = "lxd-driver-pool-";

/** A launch that LXD still does not list after this long has failed. */
export const PENDING_TTL_MS = 120_000;
/** A pool container still not running this long after its launch never will be. */
export const STALLED_AFTER_MS = 120_000;

/** The unclaimed pool containers of `host`, oldest first. */
export function warmMembers(
  instances: readonly InstanceSummary[],
  host: string,
): InstanceSummary[] {
  return instances.filter((i) =>
    isManaged(i.config) && madeBy(i.config, host) && i.config[POOL] === "warm"
  ).sort((a, b) => (a.config[CREATED] ?? "").localeCompare(b.config[CREATED] ?? ""));
}

export interface PoolPlan {
  /** The container to give the job, when one is warm and a claim was asked for. */
  readonly claim: InstanceSummary | undefined;
  /** Containers to relabel `retiring` and delete: of another image, beyond the size, or stalled. */
  readonly retire: InstanceSummary[];
  /** How many new containers to launch. */
  readonly launches: number;
  /** The pending launches still in flight. */
  readonly pending: PendingLaunches;
  /** What an administrator should hear about (failed launches, stalled containers). */
  readonly warnings: string[];
}

export interface PoolGoal {
  readonly host: string;
  readonly fingerprint: string;
  readonly size: number;
  readonly claim: boolean;
  readonly now: number;
}

/** Decides what to do with `host`'s pool, given what LXD lists and the launches in flight. */
export function planPool(
  instances: readonly InstanceSummary[],
  pending: PendingLaunches,
  goal: PoolGoal,
): PoolPlan {
  const warnings: string[] = [];
  const listed = new Set(instances.map((i) => i.name));
  const inFlight: PendingLaunches = {};
  for (const [name, launch] of Object.entries(pending)) {
    if (listed.has(name)) continue; // LXD has it now: it counts as a listed container
    if (goal.now - launch.startedAt > PENDING_TTL_MS) {
      if (launch.host === goal.host) {
        warnings.push(`the pool's launch of ${name} created no container; launching another`);
      }
      continue;
    }
    inFlight[name] = launch;
  }

  const retire: InstanceSummary[] = [];
  const current: InstanceSummary[] = [];
  for (const instance of warmMembers(instances, goal.host)) {
    const age = goal.now - (createdAt(instance.config)?.getTime() ?? 0);
    if (instance.status !== "Running" && age > STALLED_AFTER_MS) {
      warnings.push(
        `pool container ${instance.name} is ${instance.status.toLowerCase()} ` +
          `${Math.round(age / 1000)}s after its launch; replacing it`,
      );
      retire.push(instance);
    } else if (instance.config[IMAGE] !== goal.fingerprint) {
      retire.push(instance);
    } else {
      current.push(instance);
    }
  }
  // Running ones first, each group oldest first: the claim takes the one longest ready.
  current.sort((a, b) => Number(b.status === "Running") - Number(a.status === "Running"));
  const claim = goal.claim && current[0]?.status === "Running" ? current.shift() : undefined;
  retire.push(...current.splice(goal.size));
  const launchingForGoal =
    Object.values(inFlight).filter((l) =>
      l.host === goal.host && l.fingerprint === goal.fingerprint
    ).length;
  return {
    claim,
    retire,
    launches: Math.max(0, goal.size - current.length - launchingForGoal),
    pending: inFlight,
    warnings,
  };
}

export interface PoolOptions {
  readonly lxd: Lxd;
  readonly size: number;
  readonly host: string;
  readonly log: Logger;
  /** The directory of the lock and the pending launches (lib/pool_lock.ts). */
  readonly stateDir: string;
}

/**
 * Claims a warm container of `fingerprint`, applying `changes` (the job's
 * labels, limits and devices) while still holding the lock; then refills
 * the pool and removes what it no longer needs. Returns undefined when none
 * is warm.
 */
export async function claimWarm(
  options: PoolOptions,
  fingerprint: string,
  template: InstanceSpec,
  changes: { config: Record<string, string>; devices: Record<string, Record<string, string>> },
): Promise<string | undefined> {
  const { lxd, log, host } = options;
  const work = await withPoolLock(options.stateDir, async (pending) => {
    const now = Date.now();
    const plan = planPool(await lxd.list(), pending, {
      host,
      fingerprint,
      size: options.size,
      claim: true,
      now,
    });
    if (plan.claim) {
      await lxd.patch(plan.claim.name, {
        config: { ...changes.config, [POOL]: "claimed" },
        devices: changes.devices,
      });
    }
    const retired = await markRetiring(lxd, plan.retire, log);
    const members = Array.from(
      { length: plan.launches },
      () => poolMember(template, fingerprint, host),
    );
    const next = { ...plan.pending };
    for (const member of members) next[member.name] = { startedAt: now, host, fingerprint };
    return { result: { plan, retired, members }, pending: next };
  });
  for (const warning of work.plan.warnings) log.warn(warning);
  try {
    for (const name of work.retired) lxd.deleteDetached(name);
    for (const member of work.members) {
      lxd.spawnDetached(launchArgs(member, (name) => lxd.ref(name), lxd.target.member));
    }
  } catch (error) {
    log.warn(`could not refill the warm pool: ${(error as Error).message}`);
  }
  if (!work.plan.claim) log.info("No warm container in the pool: creating one for this job");
  return work.plan.claim?.name;
}

/**
 * Relabels containers `retiring` so that no claim can take them; returns the
 * names relabelled (one that vanished meanwhile is skipped).
 */
export async function markRetiring(
  lxd: Lxd,
  instances: readonly InstanceSummary[],
  log: Logger,
): Promise<string[]> {
  const names: string[] = [];
  for (const instance of instances) {
    try {
      await lxd.patch(instance.name, { config: { [POOL]: "retiring" } });
      names.push(instance.name);
    } catch (error) {
      log.warn(`could not retire pool container ${instance.name}: ${(error as Error).message}`);
    }
  }
  return names;
}

/** A pool container: the job template without job labels, labelled as warm. */
export function poolMember(
  template: InstanceSpec,
  fingerprint: string,
  host: string,
): InstanceSpec {
  const name = `${NAME_PREFIX}${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const config: Record<string, string> = {};
  for (const [key, value] of Object.entries(template.config)) {
    if (!key.startsWith(LABEL_PREFIX)) config[key] = value;
  }
  Object.assign(config, {
    [MANAGED]: "true",
    [HOST]: host,
    [CREATED]: new Date().toISOString(),
    [POOL]: "warm",
    [IMAGE]: fingerprint,
  });
  const { root } = template.devices;
  return { ...template, name, config, devices: root ? { root } : {} };
}

/**
 * `lxc launch` arguments creating and starting `spec` in one detached call;
 * `ref` adds the remote to the image and instance names.
 */
export function launchArgs(
  spec: InstanceSpec,
  ref: (name: string) => string,
  member: string,
): string[] {
  if (spec.source.type !== "image") throw new Error("launchArgs needs an image source");
  const args = ["launch", "--quiet"];
  if (member) args.push("--target", member);
  if (spec.profiles.length === 0) args.push("--no-profiles");
  for (const profile of spec.profiles) args.push("--profile", profile);
  if (spec.ephemeral) args.push("--ephemeral");
  for (const [key, value] of Object.entries(spec.config)) args.push("--config", `${key}=${value}`);
  const root = spec.devices.root;
  if (root?.pool) args.push("--storage", root.pool);
  if (root?.size) args.push("--device", `root,size=${root.size}`);
  args.push("--", ref(spec.source.fingerprint), ref(spec.name));
  return args;
}
