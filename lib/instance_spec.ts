/**
 * The LXD instance a job gets, as one creation request: image, profiles,
 * labels, limits, security and devices. Only the administrator's settings
 * and the validated job requests reach it; no job variable can set an LXD
 * key or device.
 */
import type { JobRequests } from "./job_requests.ts";
import type { Settings } from "./settings.ts";

export interface InstanceSpec {
  readonly name: string;
  readonly type: "container";
  readonly source:
    | { readonly type: "image"; readonly fingerprint: string }
    | { readonly type: "copy"; readonly source: string; readonly instance_only: true };
  readonly profiles: readonly string[];
  readonly ephemeral: boolean;
  readonly config: Readonly<Record<string, string>>;
  readonly devices: Readonly<Record<string, Readonly<Record<string, string>>>>;
}

export interface SpecInput {
  readonly name: string;
  readonly fingerprint: string;
  readonly settings: Settings;
  readonly labels: Readonly<Record<string, string>>;
  readonly requests: JobRequests;
  /** The pool for the root disk, when one must be named (a disk size is set). */
  readonly rootPool: string | undefined;
  /** The host directory mounted at the cache dir, if any. */
  readonly cacheSource: string | undefined;
}

export function instanceSpec(input: SpecInput): InstanceSpec {
  const { settings, requests } = input;
  const { limits, instance } = settings;
  const config: Record<string, string> = { ...input.labels };
  const cpu = requests.cpu ?? limits.cpu;
  if (cpu > 0) config["limits.cpu"] = String(cpu);
  const memory = requests.memory ?? limits.memory;
  if (memory) config["limits.memory"] = memory.text;
  if (limits.processes > 0) config["limits.processes"] = String(limits.processes);
  if (instance.nesting) config["security.nesting"] = "true";
  // Settings refuse privileged without allow_privileged; both are checked again here.
  if (instance.privileged && instance.allowPrivileged) config["security.privileged"] = "true";

  const devices: Record<string, Record<string, string>> = {};
  const pool = instance.storagePool || input.rootPool;
  if (instance.storagePool || limits.disk) {
    devices.root = {
      type: "disk",
      path: "/",
      ...(pool ? { pool } : {}),
      ...(limits.disk ? { size: limits.disk.text } : {}),
    };
  }
  if (input.cacheSource) {
    devices["lxd-driver-cache"] = {
      type: "disk",
      source: input.cacheSource,
      path: settings.job.cacheDir,
    };
  }
  return {
    name: input.name,
    type: "container",
    source: { type: "image", fingerprint: input.fingerprint },
    profiles: instance.profiles,
    ephemeral: instance.ephemeral,
    config,
    devices,
  };
}
