/**
 * The `user.*` keys the driver writes on every container it launches. `gc`
 * trusts only these: a container without them is never touched.
 */
import type { JobIdentity } from "./job.ts";

export const LABEL_PREFIX = "user.lxd-driver.";
export const MANAGED = `${LABEL_PREFIX}managed`;
export const CREATED = `${LABEL_PREFIX}created`;
/** The runner host that made the container; gc and the pool touch only their own host's. */
export const HOST = `${LABEL_PREFIX}host`;

/** The labels for a job's container, created at `now` by runner host `host`. */
export function labelsFor(id: JobIdentity, host: string, now: Date): Record<string, string> {
  return {
    [MANAGED]: "true",
    [HOST]: host,
    [`${LABEL_PREFIX}runner-id`]: id.runnerId,
    [`${LABEL_PREFIX}project-id`]: id.projectId,
    [`${LABEL_PREFIX}job-id`]: id.jobId,
    [CREATED]: now.toISOString(),
  };
}

/** True when the container's config says this driver launched it. */
export function isManaged(config: Readonly<Record<string, string>>): boolean {
  return config[MANAGED] === "true";
}

/** The host identity for labels: `[lxd] host_id`, else the host name. */
export function hostIdentity(configured: string): string {
  return configured || Deno.hostname();
}

/** True when the container was made by runner host `host`. */
export function madeBy(config: Readonly<Record<string, string>>, host: string): boolean {
  return config[HOST] === host;
}

/** When the driver launched the container, or undefined when the label is missing or invalid. */
export function createdAt(config: Readonly<Record<string, string>>): Date | undefined {
  const value = config[CREATED];
  if (value === undefined) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}
