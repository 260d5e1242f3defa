import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import { LxdError } from "../../lib/lxd.ts";
import { gc } from "../../stages/gc.ts";
import { harness, INSTANCE_NOT_FOUND, LXD_DOWN, OK, type Reply, SECRET } from "./fake_lxc.ts";

const NOW = new Date("2024-06-01T12:00:00.000Z");
/** A pool state directory of the tests' own, not the host's. */
const STATE_ROOT = await Deno.makeTempDir({ prefix: "lxd-driver-gc-test-" });
const STATE_DIR = `${STATE_ROOT}/state`;
globalThis.addEventListener("unload", () => Deno.removeSync(STATE_ROOT, { recursive: true }));
const HOUR = 3_600_000;
const LIST = ["query", "--wait", "--request", "GET", "--", "/1.0/instances?recursion=1"];
/** The runner host identity of the fake's settings (the host name: no [lxd] host_id). */
const HOST = Deno.hostname();

function ago(ms: number): string {
  return new Date(NOW.getTime() - ms).toISOString();
}

function managed(name: string, created: string | undefined): Record<string, unknown> {
  const config: Record<string, string> = {
    "user.lxd-driver.managed": "true",
    "user.lxd-driver.host": HOST,
    "user.lxd-driver.job-id": "1",
    "image.os": "Debian",
  };
  if (created !== undefined) config["user.lxd-driver.created"] = created;
  return { name, status: "Running", config };
}

function listing(instances: readonly Record<string, unknown>[]): Reply {
  return { code: 0, stdout: JSON.stringify(instances) + "\n" };
}

const INSTANCES = [
  managed("old-a", ago(2 * HOUR)),
  managed("young", ago(30 * 60_000)),
  { name: "unmanaged-old", status: "Running", config: { "image.os": "Debian" } },
  {
    name: "managed-false",
    status: "Stopped",
    config: { "user.lxd-driver.managed": "false", "user.lxd-driver.created": ago(9 * HOUR) },
  },
  { name: "no-config", status: "Stopped" },
  managed("no-created", undefined),
  managed("bad-created", "last tuesday"),
  managed("future", new Date(NOW.getTime() + HOUR).toISOString()),
  managed("exactly-1h", ago(HOUR)),
  managed("old-b", ago(48 * HOUR)),
  // Another runner host's container sharing the LXD: never this host's to delete.
  {
    name: "other-host-old",
    status: "Running",
    config: {
      "user.lxd-driver.managed": "true",
      "user.lxd-driver.host": "elsewhere",
      "user.lxd-driver.created": ago(9 * HOUR),
    },
  },
];

Deno.test("gc() lists, then deletes only managed instances older than the threshold", async () => {
  const h = harness({ script: [listing(INSTANCES), OK, OK, OK] });
  await gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [
    LIST,
    ["delete", "--force", "--", "old-a"],
    ["delete", "--force", "--", "exactly-1h"],
    ["delete", "--force", "--", "old-b"],
  ]);
  assert.deepEqual(h.written, [
    `deleted old-a (created ${ago(2 * HOUR)})\n`,
    `deleted exactly-1h (created ${ago(HOUR)})\n`,
    `deleted old-b (created ${ago(48 * HOUR)})\n`,
  ]);
  assert.deepEqual(h.lines, []);
});

Deno.test("gc() with a zero age deletes every managed instance that has a created label", async () => {
  const h = harness({ script: [listing(INSTANCES), OK, OK, OK, OK, OK] });
  await gc(h.ctx, h.lxd, 0, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls.slice(1).map((argv) => argv.at(-1)), [
    "old-a",
    "young",
    "exactly-1h",
    "old-b",
  ]);
});

Deno.test("gc() never deletes an unmanaged or young instance", async () => {
  const h = harness({
    script: [
      listing([
        { name: "pet", status: "Running", config: { "user.lxd-driver.created": ago(99 * HOUR) } },
        managed("young", ago(59 * 60_000)),
      ]),
    ],
  });
  await gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [LIST]);
  assert.deepEqual(h.written, []);
});

Deno.test("gc() with no instances does nothing", async () => {
  const h = harness({ script: [listing([])] });
  await gc(h.ctx, h.lxd, 0, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [LIST]);
  assert.deepEqual(h.written, []);
});

Deno.test("gc() goes on after a failed delete, then fails counting the failures", async () => {
  const h = harness({
    script: [
      listing([managed("a", ago(2 * HOUR)), managed("b", ago(2 * HOUR))]),
      { code: 1, stderr: "Error: Failed deleting instance: busy\n" },
      OK,
    ],
  });
  await assert.rejects(gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR), (error: unknown) => {
    assert.ok(error instanceof SystemFailure);
    assert.match(error.message, /could not delete 1 container\(s\)/);
    return true;
  });
  assert.deepEqual(h.lxc.calls.length, 3);
  assert.deepEqual(h.written, [`deleted b (created ${ago(2 * HOUR)})\n`]);
  assert.equal(h.lines.length, 1);
  assert.match(h.lines[0]!, /^ERROR: could not delete a: delete --force -- a failed: .*busy/);
});

Deno.test("gc() fails when LXD cannot list instances", async () => {
  const h = harness({ script: [LXD_DOWN] });
  await assert.rejects(gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR), (error: unknown) => {
    assert.ok(error instanceof LxdError);
    assert.equal(error.unreachable, true);
    return true;
  });
  assert.deepEqual(h.lxc.calls, [LIST]);
});

Deno.test("gc() does not fail when an instance vanished before its delete", async () => {
  const h = harness({ script: [listing([managed("gone", ago(2 * HOUR))]), INSTANCE_NOT_FOUND] });
  await gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [LIST, ["delete", "--force", "--", "gone"]]);
});

Deno.test("gc() never logs or prints a job variable's value, even with debug on", async () => {
  const h = harness({
    env: { CUSTOM_ENV_SECRET: SECRET },
    debug: true,
    script: [listing(INSTANCES), OK, { code: 1, stderr: "Error: x\n" }, OK],
  });
  await gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR).catch(() => {});
  assert.ok(h.lines.some((line) => line.startsWith("[lxd-driver debug] ")));
  for (const line of [...h.lines, ...h.written]) assert.ok(!line.includes(SECRET), line);
});

function poolMember(name: string, pool: string, created: string): Record<string, unknown> {
  const instance = managed(name, created);
  return { ...instance, config: { ...instance.config as object, "user.lxd-driver.pool": pool } };
}

const PATCH_RETIRING = (name: string) => [
  "query",
  "--wait",
  "--request",
  "PATCH",
  "--data",
  JSON.stringify({ config: { "user.lxd-driver.pool": "retiring" } }),
  "--",
  `/1.0/instances/${name}`,
];

Deno.test("gc() retires warm containers beyond [pool] size before deleting them, sparing claimed ones", async () => {
  const h = harness({
    settings: "[pool]\nsize = 1\n",
    script: [
      listing([
        poolMember("warm-old", "warm", ago(3 * 60_000)),
        poolMember("warm-new", "warm", ago(60_000)),
        poolMember("claimed", "claimed", ago(2 * 60_000)),
        poolMember("stuck", "retiring", ago(60_000)),
      ]),
      OK,
      OK,
      OK,
    ],
  });
  await gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [
    LIST,
    // Relabelled under the pool lock: no prepare can claim it from here on.
    PATCH_RETIRING("warm-new"),
    ["delete", "--force", "--", "warm-new"],
    ["delete", "--force", "--", "stuck"],
  ]);
  assert.deepEqual(h.written, [
    "deleted warm-new (beyond [pool] size 1)\n",
    "deleted stuck (a pool container being retired)\n",
  ]);
});

Deno.test("gc() does not delete a warm container it could not retire", async () => {
  const h = harness({
    script: [
      listing([poolMember("warm", "warm", ago(2 * HOUR))]),
      { code: 1, stderr: "Error: Instance not found\n" },
    ],
  });
  await gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [LIST, PATCH_RETIRING("warm")]);
  assert.deepEqual(h.written, []);
  assert.match(h.lines.join("\n"), /could not retire pool container warm/);
});

Deno.test("gc() deletes templates by age like other containers, saying they are templates", async () => {
  const template = (name: string, created: string) => ({
    name,
    status: "Stopped",
    config: {
      "user.lxd-driver.managed": "true",
      "user.lxd-driver.host": HOST,
      "user.lxd-driver.created": created,
      "user.lxd-driver.template": "ready",
    },
  });
  const h = harness({
    script: [
      listing([
        template("lxd-driver-template-old", ago(2 * HOUR)),
        template("lxd-driver-template-new", ago(60_000)),
      ]),
      OK,
    ],
  });
  await gc(h.ctx, h.lxd, HOUR, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [LIST, ["delete", "--force", "--", "lxd-driver-template-old"]]);
  assert.deepEqual(h.written, [
    `deleted lxd-driver-template-old (a template, created ${ago(2 * HOUR)})\n`,
  ]);
});

Deno.test("gc() leaves a template being made alone, and keeps one LXD is busy with", async () => {
  const template = (name: string, state: string, created: string) => ({
    name,
    status: "Running",
    config: {
      "user.lxd-driver.managed": "true",
      "user.lxd-driver.host": HOST,
      "user.lxd-driver.created": created,
      "user.lxd-driver.template": state,
    },
  });
  const h = harness({
    script: [
      listing([
        template("lxd-driver-template-launching", "making", ago(60_000)),
        template("lxd-driver-template-stuck", "making", ago(3 * 60_000)),
        template("lxd-driver-template-in-use", "ready", ago(2 * HOUR)),
      ]),
      OK,
      {
        code: 1,
        stderr:
          'Error: Failed to create instance delete operation: Instance is busy running a "copy" operation\n',
      },
    ],
  });
  await gc(h.ctx, h.lxd, 0, NOW, STATE_DIR);
  assert.deepEqual(h.lxc.calls, [
    LIST,
    ["delete", "--force", "--", "lxd-driver-template-stuck"],
    ["delete", "--force", "--", "lxd-driver-template-in-use"],
  ]);
  assert.deepEqual(h.written, [
    `deleted lxd-driver-template-stuck (a template, created ${ago(3 * 60_000)})\n`,
  ]);
  assert.deepEqual(h.lines, [
    "WARNING: kept template lxd-driver-template-in-use for now: LXD is using it",
  ]);
});
