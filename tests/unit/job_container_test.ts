import assert from "node:assert/strict";
import {
  forgetJobContainer,
  jobContainer,
  recordedJobSettings,
  recordJobContainer,
  recordJobSettings,
} from "../../lib/job_container.ts";
import { parseSettings } from "../../lib/settings.ts";

async function jobDir(): Promise<{ env: (name: string) => string | undefined } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "lxd-driver-job-dir-test-" });
  const vars: Record<string, string> = { TMPDIR: path };
  return {
    env: (name) => vars[name],
    [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }),
  };
}

Deno.test("recordedJobSettings() gives back the settings prepare recorded", async () => {
  await using dir = await jobDir();
  const settings = parseSettings(
    `[lxd]\ncli = "incus"\nremote = "far"\n[job]\nshell = "sh"\n[limits]\ncpu = 2\n`,
    "/etc/x.toml",
  );
  assert.equal(await recordedJobSettings(dir.env), undefined, "nothing recorded yet");
  await recordJobSettings(dir.env, settings);
  assert.deepEqual(await recordedJobSettings(dir.env), JSON.parse(JSON.stringify(settings)));
});

Deno.test("recordedJobSettings() ignores a record of another version, or a damaged one", async () => {
  await using dir = await jobDir();
  const path = `${dir.env("TMPDIR")}/lxd-driver-settings.json`;
  const settings = parseSettings("", undefined);
  await Deno.writeTextFile(path, JSON.stringify({ version: "0.0.0-other", settings }));
  assert.equal(await recordedJobSettings(dir.env), undefined);
  await Deno.writeTextFile(path, "{not json");
  assert.equal(await recordedJobSettings(dir.env), undefined);
});

Deno.test("forgetJobContainer() removes the recorded name and settings", async () => {
  await using dir = await jobDir();
  await recordJobContainer(dir.env, "lxd-driver-pool-abc");
  await recordJobSettings(dir.env, parseSettings("", undefined));
  assert.equal(await jobContainer(dir.env), "lxd-driver-pool-abc");
  await forgetJobContainer(dir.env);
  assert.equal(await recordedJobSettings(dir.env), undefined);
  await assert.rejects(jobContainer(dir.env), "without a record, the job payload is needed");
});

Deno.test("recordJobContainer() keeps the record private to the runner's user", async () => {
  await using dir = await jobDir();
  await recordJobContainer(dir.env, "c1");
  await recordJobSettings(dir.env, parseSettings("", undefined));
  for (const name of ["lxd-driver-container", "lxd-driver-settings.json"]) {
    assert.equal((await Deno.stat(`${dir.env("TMPDIR")}/${name}`)).mode! & 0o077, 0, name);
  }
});
