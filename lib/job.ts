/**
 * Which job this is, and the name of its container.
 *
 * A job can define variables named like the predefined ones (`CI_JOB_ID`,
 * `CI_PROJECT_ID`), so `CUSTOM_ENV_*` ids are job-controlled. The job and
 * project ids are therefore read from `$JOB_RESPONSE_FILE`, which the runner
 * writes from GitLab's answer. The runner and concurrency ids are not in
 * the payload: they come from the environment, reduced to digits, so a job
 * can change them, but only in its own container's name and labels.
 * Because the authoritative job id is always in the name, no job can name
 * another job's container.
 */
import type { Env } from "./context.ts";
import { SystemFailure } from "./errors.ts";

export interface JobIdentity {
  readonly jobId: string;
  readonly projectId: string;
  readonly runnerId: string;
  readonly concurrentProjectId: string;
}

/** Reads the job's identity from the runner's job payload. */
export async function readJobIdentity(env: Env): Promise<JobIdentity> {
  const file = env("JOB_RESPONSE_FILE");
  if (!file) {
    throw new SystemFailure(
      "JOB_RESPONSE_FILE is not set: this command must be started by gitlab-runner's custom executor",
    );
  }
  let payload: unknown;
  try {
    payload = JSON.parse(await Deno.readTextFile(file));
  } catch (error) {
    throw new SystemFailure(`cannot read the job payload ${file}: ${(error as Error).message}`);
  }
  return identityFromPayload(payload, env);
}

/** Extracts the identity from a parsed job payload; exported for tests. */
export function identityFromPayload(payload: unknown, env: Env): JobIdentity {
  const job = payload as { id?: unknown; job_info?: { project_id?: unknown } } | null;
  const jobId = digits(job?.id);
  const projectId = digits(job?.job_info?.project_id);
  if (!jobId || !projectId) {
    throw new SystemFailure("the job payload has no numeric id and job_info.project_id");
  }
  return {
    jobId,
    projectId,
    runnerId: digits(env("CUSTOM_ENV_CI_RUNNER_ID")) || "0",
    concurrentProjectId: digits(env("CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID")) || "0",
  };
}

function digits(value: unknown): string {
  const text = typeof value === "number" ? String(value) : typeof value === "string" ? value : "";
  return /^\d{1,20}$/.test(text) ? text.replace(/^0+(?=\d)/, "") : "";
}

/** LXD instance names: at most 63 characters, letters, digits and hyphens, not starting with a digit. */
export const MAX_NAME_LENGTH = 63;

/**
 * The job's container name: `runner-R-project-P-concurrent-C-job-J` when it
 * fits, else `job-J-` and a hash of the long form, which keeps it
 * deterministic, unique and still recognisable.
 */
export async function containerName(id: JobIdentity): Promise<string> {
  const full =
    `runner-${id.runnerId}-project-${id.projectId}-concurrent-${id.concurrentProjectId}-job-${id.jobId}`;
  if (full.length <= MAX_NAME_LENGTH) return full;
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(full)),
  );
  const hash = Array.from(digest.subarray(0, 6), (b) => b.toString(16).padStart(2, "0")).join("");
  return `job-${id.jobId}-${hash}`;
}
