import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import { VERSION } from "../../lib/version.ts";
import { config } from "../../stages/config.ts";
import { harness, jobEnv, NAME, payloadFile, SECRET } from "./fake_lxc.ts";

Deno.test("config() writes exactly one JSON object with the default settings", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload) });
  await config(h.ctx);
  assert.equal(h.written.length, 1);
  assert.deepEqual(JSON.parse(h.written[0]!), {
    builds_dir: "/builds",
    cache_dir: "/cache",
    builds_dir_is_shared: false,
    hostname: NAME,
    driver: { name: "lxd-driver", version: VERSION },
    shell: "bash",
  });
  assert.equal(typeof VERSION, "string");
  assert.ok(VERSION.length > 0);
  assert.deepEqual(h.lines, []);
  assert.deepEqual(h.lxc.calls, []);
});

Deno.test("config() reports the configured directories and shell", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    settings: '[job]\nshell = "sh"\nbuilds_dir = "/srv/b"\ncache_dir = "/srv/c"\n',
  });
  await config(h.ctx);
  assert.equal(h.written.length, 1);
  assert.deepEqual(JSON.parse(h.written[0]!), {
    builds_dir: "/srv/b",
    cache_dir: "/srv/c",
    builds_dir_is_shared: false,
    hostname: NAME,
    driver: { name: "lxd-driver", version: VERSION },
    shell: "sh",
  });
});

Deno.test("config() names the host after the payload's job, not CUSTOM_ENV_CI_JOB_ID", async () => {
  await using payload = await payloadFile({ id: 1234, job_info: { project_id: 56 } });
  const h = harness({
    env: {
      JOB_RESPONSE_FILE: payload.path,
      CUSTOM_ENV_CI_JOB_ID: "42",
      CUSTOM_ENV_CI_RUNNER_ID: "9",
    },
  });
  await config(h.ctx);
  assert.equal(
    JSON.parse(h.written[0]!).hostname,
    "runner-9-project-56-concurrent-0-job-1234",
  );
});

Deno.test("config() writes nothing when JOB_RESPONSE_FILE is unset", async () => {
  const h = harness();
  await assert.rejects(config(h.ctx), SystemFailure);
  assert.deepEqual(h.written, []);
});

Deno.test("config() never writes or logs a job variable's value, even with debug on", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload, { CUSTOM_ENV_SECRET: SECRET }), debug: true });
  await config(h.ctx);
  for (const line of [...h.lines, ...h.written]) assert.ok(!line.includes(SECRET), line);
});
