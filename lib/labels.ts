/**
 * The `user.*` keys the driver writes on every container it launches. `gc`
 * trusts only these: a container without them is never touched.
 */
import type { JobIdentity } from "./job.ts";

export const LABEL_PREFIX = "user.lxd-driver.";
export const MANAGED = `${LABEL_PREFIX}managed`;
export const CREATED = `${LABEL_PREFIX}created`;

/** The labels for a job's container, created at `now`. */
export function labelsFor(id: JobIdentity, now: Date): Record<string, string> {
  return {
    [MANAGED]: "true",
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

/** When the driver launched the container, or undefined when the label is missing or invalid. */
export function createdAt(config: Readonly<Record<string, string>>): Date | undefined {
  const value = config[CREATED];
  if (value === undefined) return undefined;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? undefined : date;
}
