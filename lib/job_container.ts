/**
 * Which container belongs to the running job: the name prepare recorded in
 * the runner's per-job temp dir (`$TMPDIR`, the same directory for every
 * stage of a job and out of the job's reach), which is a pool container's
 * name when prepare took one; without a record, the name derived from the
 * job's identity.
 */
import type { Env } from "./context.ts";
import { containerName, readJobIdentity } from "./job.ts";
import type { Settings } from "./settings.ts";
import { VERSION } from "./version.ts";

const FILE_NAME = "lxd-driver-container";
const SETTINGS_FILE_NAME = "lxd-driver-settings.json";
const VALID_NAME = /^[A-Za-z][A-Za-z0-9-]{0,62}$/;

function recordPath(env: Env, name = FILE_NAME): string | undefined {
  const dir = env("TMPDIR");
  return dir ? `${dir}/${name}` : undefined;
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

/**
 * Records the settings prepare made the container with. `run`, started for
 * every stage, reads them back instead of parsing the settings file again
 * (the TOML parser's import and the parse are most of its own start-up
 * work), and so every stage of a job runs as prepare set it up.
 */
export async function recordJobSettings(env: Env, settings: Settings): Promise<void> {
  const path = recordPath(env, SETTINGS_FILE_NAME);
  if (path) {
    await Deno.writeTextFile(path, JSON.stringify({ version: VERSION, settings }), { mode: 0o600 });
  }
}

/** The settings prepare recorded, or undefined without a record (or one from another version). */
export async function recordedJobSettings(env: Env): Promise<Settings | undefined> {
  const path = recordPath(env, SETTINGS_FILE_NAME);
  if (!path) return undefined;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return undefined;
    throw error;
  }
  try {
    const record = JSON.parse(text) as { version?: unknown; settings?: Settings };
    return record.version === VERSION && typeof record.settings?.lxd?.cli === "string"
      ? record.settings
      : undefined;
  } catch {
    return undefined; // damaged: the settings file still says what to do
  }
}

/** Forgets the recorded container and settings (after cleanup, or before a new prepare attempt). */
export async function forgetJobContainer(env: Env): Promise<void> {
  for (const name of [FILE_NAME, SETTINGS_FILE_NAME]) {
    const path = recordPath(env, name);
    if (!path) return;
    await Deno.remove(path).catch((error) => {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    });
  }
}
