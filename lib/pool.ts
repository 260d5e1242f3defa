/**
 * The warm pool: `[pool] size` containers of the default image, launched
 * ahead of time so that prepare only has to claim one.
 *
 * Claims are serialised on this host by a lock file, and a claimed container
 * is relabelled before the lock is released, so two prepares never get the
 * same container. Refills and the removal of containers of an outdated image
 * run as detached `lxc` processes with no standard streams: they never delay
 * the job or hold the runner's output pipes open, and a failed one only
 * leaves the pool short until the next claim refills it.
 */
import { SystemFailure } from "./errors.ts";
import type { InstanceSpec } from "./instance_spec.ts";
import { CREATED, HOST, isManaged, LABEL_PREFIX, madeBy, MANAGED } from "./labels.ts";
import type { Logger } from "./log.ts";
import type { InstanceSummary, Lxd } from "./lxd.ts";

/** `warm` while waiting in the pool, `claimed` once a job has it. */
export const POOL = `${LABEL_PREFIX}pool`;
/** The fingerprint a pool container was launched from. */
export const IMAGE = `${LABEL_PREFIX}image`;
const NAME_PREFIX = "lxd-driver-pool-";
/** Serialises claims among the driver processes of this host. */
export const POOL_LOCK_FILE = "/tmp/lxd-driver-pool.lock";

export interface PoolState {
  /** Running and unclaimed, of the current image, oldest first. */
  readonly warm: InstanceSummary[];
  /** Unclaimed, of the current image, still being created or started. */
  readonly starting: InstanceSummary[];
  /** Unclaimed, of another image or beyond the pool's size. */
  readonly surplus: InstanceSummary[];
}

/** Sorts this host's unclaimed pool containers into warm, starting and surplus. */
export function poolState(
  instances: readonly InstanceSummary[],
  host: string,
  fingerprint: string,
  size: number,
): PoolState {
  const mine = instances.filter((i) =>
    isManaged(i.config) && madeBy(i.config, host) && i.config[POOL] === "warm"
  )
    .sort((a, b) => (a.config[CREATED] ?? "").localeCompare(b.config[CREATED] ?? ""));
  const current = mine.filter((i) => i.config[IMAGE] === fingerprint);
  const surplus = mine.filter((i) => i.config[IMAGE] !== fingerprint);
  const keep = current.slice(0, size);
  surplus.push(...current.slice(size));
  return {
    warm: keep.filter((i) => i.status === "Running"),
    starting: keep.filter((i) => i.status !== "Running"),
    surplus,
  };
}

export interface PoolOptions {
  readonly lxd: Lxd;
  readonly size: number;
  readonly host: string;
  readonly log: Logger;
  /** The lock file serialising claims on this host. */
  readonly lockPath: string;
}

/**
 * Claims a warm container of `fingerprint`, applying `changes` (the job's
 * labels, limits and devices) while still holding the lock; then refills.
 * Returns undefined when none is warm.
 */
export async function claimWarm(
  options: PoolOptions,
  fingerprint: string,
  template: InstanceSpec,
  changes: { config: Record<string, string>; devices: Record<string, Record<string, string>> },
): Promise<string | undefined> {
  const { lxd, log } = options;
  let state: PoolState;
  let claimed: string | undefined;
  const lock = await Deno.open(options.lockPath, { create: true, write: true, mode: 0o600 }).catch(
    (error) => {
      throw new SystemFailure(
        `cannot open the pool's lock file ${options.lockPath}: ${error.message}`,
      );
    },
  );
  try {
    await lock.lock(true);
    state = poolState(await lxd.list(), options.host, fingerprint, options.size);
    const chosen = state.warm.shift();
    if (chosen) {
      await lxd.patch(chosen.name, {
        config: { ...changes.config, [POOL]: "claimed" },
        devices: changes.devices,
      });
      claimed = chosen.name;
    }
  } finally {
    lock.close(); // closing releases the lock
  }
  refill(options, fingerprint, template, state);
  if (!claimed) log.info("No warm container in the pool: creating one for this job");
  return claimed;
}

/** Starts enough pool containers to bring the pool back to its size, and removes the surplus. */
export function refill(
  options: PoolOptions,
  fingerprint: string,
  template: InstanceSpec,
  state: PoolState,
): void {
  const missing = options.size - state.warm.length - state.starting.length;
  try {
    for (const instance of state.surplus) {
      spawnDetached(options.lxd, ["delete", "--force", "--", options.lxd.ref(instance.name)]);
    }
    for (let i = 0; i < missing; i++) {
      const member = poolMember(template, fingerprint, options.host);
      spawnDetached(
        options.lxd,
        launchArgs(member, (name) => options.lxd.ref(name), options.lxd.target.member),
      );
    }
  } catch (error) {
    options.log.warn(`could not refill the warm pool: ${(error as Error).message}`);
  }
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

function spawnDetached(lxd: Lxd, args: string[]): void {
  const child = new Deno.Command(lxd.target.cli, {
    args: lxd.argv(args),
    stdin: "null",
    stdout: "null",
    stderr: "null",
    detached: true,
  }).spawn();
  child.unref();
}
