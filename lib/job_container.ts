/**
 * Which container belongs to the running job: the name prepare recorded in
 * the runner's per-job temp dir (`$TMPDIR`, the same directory for every
 * stage of a job and out of the job's reach), which is a pool container's
 * name when prepare took one; without a record, the name derived from the
 * job's identity.
 */
import type { Env } from "./context.ts";
import { containerName, readJobIdentity } from "./job.ts";

const FILE_NAME = "lxd-driver-container";
const VALID_NAME = /^[A-Za-z][A-Za-z0-9-]{0,62}$/;

function recordPath(env: Env): string | undefined {
  const dir = env("TMPDIR");
  return dir ? `${dir}/${FILE_NAME}` : undefined;
}

/** The job's container name. */
export async function jobContainer(env: Env): Promise<string> {
  const path = recordPath(env);
  if (path) {
    try {
      const recorded = (await Deno.readTextFile(path)).trim();
      if (VALID_NAME.test(recorded)) return recorded;
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
  return containerName(await readJobIdentity(env));
}

/** Records that the job runs in `name`. */
export async function recordJobContainer(env: Env, name: string): Promise<void> {
  const path = recordPath(env);
  if (path) await Deno.writeTextFile(path, name + "\n", { mode: 0o600 });
}

/** Forgets the recorded container (after cleanup, or before a new prepare attempt). */
export async function forgetJobContainer(env: Env): Promise<void> {
  const path = recordPath(env);
  if (!path) return;
  await Deno.remove(path).catch((error) => {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  });
}
