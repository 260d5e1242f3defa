/**
 * Templates: one stopped container per image (and per set of runner
 * settings) whose files LXD has already remapped, to create jobs' containers
 * from by copy instead of from the image.
 *
 * LXD without idmapped mounts for the root disk (LXD 5.0, Debian 12's)
 * rewrites the owner of every file of a new unprivileged container on its
 * first start: about a second for a small Debian image, on every job. A copy
 * of a container already remapped to the same map starts without it (LXD
 * records the map on disk in `volatile.last_state.idmap`, and a local copy
 * keeps that key). The template never boots: it is started once with
 * `/bin/true` as its init, which is enough for LXD to remap it, so no first
 * boot state (machine id, logs) is shared by the copies, and no job ever
 * runs in it.
 *
 * A missing template is launched in the background (a detached `lxc launch`)
 * and finished by the first prepare that finds it stopped; until then jobs
 * are created from the image as before. Where LXD remaps nothing (Incus, or
 * LXD with idmapped mounts), and in a cluster without `[lxd] target`, the
 * template is marked `unneeded` and never used.
 */
import type { InstanceSpec } from "./instance_spec.ts";
import { CREATED, HOST, LABEL_PREFIX, MANAGED } from "./labels.ts";
import type { Logger } from "./log.ts";
import { type Lxd, LxdError } from "./lxd.ts";
import { launchArgs } from "./pool.ts";
import { forgetLaunch, poolStateDir, recordLaunch } from "./pool_lock.ts";

/** `making` until a prepare found it remapped and stopped, then `ready` (or `unneeded`). */
export const TEMPLATE = `${LABEL_PREFIX}template`;
const NAME_PREFIX = "lxd-driver-template-";
/** Starting the template with this as init makes LXD remap its files, and nothing boots. */
const NO_BOOT = "lxc.init.cmd=/bin/true";
/** A template still not started this long after its launch never will be. */
const START_DEADLINE_MS = 120_000;

/** Settings keys whose value changes the map LXD remaps to, or that a template cannot carry. */
const NOT_TEMPLATED = ["security.privileged", "security.idmap.isolated", "raw.idmap", "raw.lxc"];

/**
 * The template for `spec`: named after everything a copy takes from it (the
 * image, profiles, root disk and the settings' config keys; not the job's
 * labels, limits, requests or cache mount), so that settings that change
 * make a new one. Undefined for containers that LXD never remaps
 * (privileged) or whose map is their own.
 */
export async function templateFor(
  spec: InstanceSpec,
  host: string,
): Promise<InstanceSpec | undefined> {
  if (spec.source.type !== "image") return undefined;
  if (NOT_TEMPLATED.some((key) => key in spec.config)) return undefined;
  const config: Record<string, string> = {};
  for (const [key, value] of Object.entries(spec.config)) {
    if (!key.startsWith(LABEL_PREFIX) && !key.startsWith("limits.")) config[key] = value;
  }
  const root = spec.devices.root;
  const identity = JSON.stringify({
    fingerprint: spec.source.fingerprint,
    profiles: spec.profiles,
    config: Object.entries(config).sort(),
    root: root ? Object.entries(root).sort() : null,
    host,
  });
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(identity));
  const hash = Array.from(
    new Uint8Array(digest).slice(0, 8),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
  return {
    ...spec,
    name: `${NAME_PREFIX}${hash}`,
    ephemeral: false,
    config: {
      ...config,
      [MANAGED]: "true",
      [HOST]: host,
      [CREATED]: new Date().toISOString(),
      [TEMPLATE]: "making",
      "raw.lxc": NO_BOOT,
    },
    devices: root ? { root } : {},
  };
}

/**
 * Whether a template's launch may still be running: it is `making` and was
 * launched less than two minutes ago. gc leaves it alone (deleting it would
 * only fail, or be undone by the launch), and prepare waits for it.
 */
export function templateInTheMaking(
  config: Readonly<Record<string, string>>,
  now: number,
): boolean {
  const created = Date.parse(config[CREATED] ?? "");
  return config[TEMPLATE] === "making" && !(now - created > START_DEADLINE_MS);
}

/**
 * `spec` created as a copy of `template`. A copy takes the template's config
 * keys that the request does not set, so the template's own (its label and
 * its init) are set empty here, which removes them.
 */
export function copyOf(spec: InstanceSpec, template: string): InstanceSpec {
  return {
    ...spec,
    source: { type: "copy", source: template, instance_only: true },
    config: { ...spec.config, [TEMPLATE]: "", "raw.lxc": "" },
  };
}

/** What prepare can do with a template: copy from it, or launch it once the job is ready. */
export type TemplateState =
  | { readonly ready: string }
  | { readonly launch: () => Promise<void> }
  | Record<string, never>;

/**
 * Whether `template` is ready to copy from. A missing one can be launched
 * (in the background: `launch`); one that has been started and has stopped
 * is marked ready (LXD remapped it) or unneeded (LXD did not have to).
 */
export async function templateState(
  lxd: Lxd,
  template: InstanceSpec,
  log: Logger,
  now = Date.now(),
  stateDir = poolStateDir(),
): Promise<TemplateState> {
  let found:
    | {
      status?: string;
      location?: string;
      config?: Record<string, string>;
      expanded_config?: Record<string, string>;
    }
    | undefined;
  try {
    found = await lxd.query("GET", `/1.0/instances/${encodeURIComponent(template.name)}`) as
      | typeof found
      | undefined;
  } catch (error) {
    if (!(error instanceof LxdError && error.notFound)) throw error;
    return {
      launch: async () => {
        // A launch that failed leaves no container: try again after a while, not in every job.
        if (!(await recordLaunch(stateDir, template.name, START_DEADLINE_MS))) {
          log.debug(`template ${template.name} was launched less than 2 minutes ago`);
          return;
        }
        log.debug(`launching template ${template.name} in the background`);
        // A second prepare doing the same meanwhile fails at creation: the name is taken.
        lxd.spawnDetached(launchArgs(template, (name) => lxd.ref(name), lxd.target.member));
      },
    };
  }
  const config = found?.config ?? {};
  const state = config[TEMPLATE];
  // In a cluster, a copy lands where the cluster places it: without [lxd] target that may be
  // another member, and a copy between members is slower than creating from the image.
  const location = found?.location ?? "none";
  const elsewhere = !lxd.target.member && location !== "none" && location !== "";
  if (state === "ready") {
    return found?.status === "Stopped" && !elsewhere ? { ready: template.name } : {};
  }
  if (state !== "making" || found?.status !== "Stopped") return {};
  // LXD records the power state once the container has been started.
  const started = config["volatile.last_state.power"] !== undefined;
  if (!started && templateInTheMaking(config, now)) return {};
  // A map of its own (from a profile) would be remapped again on every copy's start.
  const ownMap = NOT_TEMPLATED.some((key) =>
    key !== "raw.lxc" && !["", "false"].includes(found?.expanded_config?.[key] ?? "")
  );
  const remapped = started && !ownMap && !elsewhere &&
    (config["volatile.last_state.idmap"] ?? "[]") !== "[]";
  try {
    await lxd.patch(template.name, {
      config: { [TEMPLATE]: remapped ? "ready" : "unneeded", "raw.lxc": "" },
    });
  } catch (error) {
    // LXD lists it stopped while its stop operation is still finishing.
    if (!(error instanceof LxdError && error.busy)) throw error;
    log.debug(`template ${template.name} is still being stopped`);
    return {};
  }
  await forgetLaunch(stateDir, template.name);
  log.debug(
    remapped
      ? `template ${template.name} is ready`
      : `template ${template.name} is not needed: LXD did not remap its files`,
  );
  return remapped ? { ready: template.name } : {};
}
