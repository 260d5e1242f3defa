import assert from "node:assert/strict";
import { VERSION } from "../../lib/version.ts";
import { config } from "../../stages/config.ts";
import { harness, jobEnv, payloadFile, SECRET } from "./fake_lxc.ts";

Deno.test("config() writes exactly one JSON object with the default settings", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload) });
  await config(h.ctx);
  assert.equal(h.written.length, 1);
  assert.deepEqual(JSON.parse(h.written[0]!), {
    builds_dir: "/builds",
    cache_dir: "/cache",
    builds_dir_is_shared: false,
    hostname: Deno.hostname(),
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
    hostname: Deno.hostname(),
    driver: { name: "lxd-driver", version: VERSION },
    shell: "sh",
  });
});

Deno.test('config() names the runner host ("via"), and needs no job payload', async () => {
  const h = harness();
  await config(h.ctx);
  assert.equal(JSON.parse(h.written[0]!).hostname, Deno.hostname());
  assert.deepEqual(h.lxc.calls, []);
});

Deno.test("config() never writes or logs a job variable's value, even with debug on", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload, { CUSTOM_ENV_SECRET: SECRET }), debug: true });
  await config(h.ctx);
  for (const line of [...h.lines, ...h.written]) assert.ok(!line.includes(SECRET), line);
});
