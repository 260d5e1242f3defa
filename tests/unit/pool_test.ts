import assert from "node:assert/strict";
import type { InstanceSummary } from "../../lib/lxd.ts";
import { IMAGE, PENDING_TTL_MS, planPool, POOL, STALLED_AFTER_MS } from "../../lib/pool.ts";
import type { PendingLaunches } from "../../lib/pool_lock.ts";

const NOW = Date.parse("2026-01-01T12:00:00.000Z");
const HOST = "runner-a";
const FP = "f".repeat(64);
const OLD_FP = "0".repeat(64);

function member(
  name: string,
  options: { status?: string; ageMs?: number; fp?: string; host?: string; pool?: string } = {},
): InstanceSummary {
  return {
    name,
    status: options.status ?? "Running",
    config: {
      "user.lxd-driver.managed": "true",
      "user.lxd-driver.host": options.host ?? HOST,
      "user.lxd-driver.created": new Date(NOW - (options.ageMs ?? 10_000)).toISOString(),
      [POOL]: options.pool ?? "warm",
      [IMAGE]: options.fp ?? FP,
    },
  };
}

const goal = (size: number, claim = true) => ({
  host: HOST,
  fingerprint: FP,
  size,
  claim,
  now: NOW,
});
const names = (instances: readonly InstanceSummary[]) => instances.map((i) => i.name);

Deno.test("planPool() claims the oldest running container and launches one to replace it", () => {
  const plan = planPool(
    [member("young", { ageMs: 1_000 }), member("old", { ageMs: 50_000 })],
    {},
    goal(2),
  );
  assert.equal(plan.claim?.name, "old");
  assert.deepEqual(names(plan.retire), []);
  assert.equal(plan.launches, 1);
  assert.deepEqual(plan.warnings, []);
});

Deno.test("planPool() never claims a container that is still starting", () => {
  const plan = planPool([member("booting", { status: "Stopped" })], {}, goal(1));
  assert.equal(plan.claim, undefined);
  assert.equal(plan.launches, 0, "the starting one fills the pool");
});

Deno.test("planPool() counts launches in flight, so prepares arriving together do not overshoot", () => {
  const pending: PendingLaunches = {
    "lxd-driver-pool-a": { startedAt: NOW - 500, host: HOST, fingerprint: FP },
    "lxd-driver-pool-b": { startedAt: NOW - 500, host: HOST, fingerprint: FP },
  };
  const plan = planPool([member("warm-1")], pending, goal(3));
  assert.equal(plan.claim?.name, "warm-1");
  assert.equal(plan.launches, 1);
  assert.deepEqual(Object.keys(plan.pending), ["lxd-driver-pool-a", "lxd-driver-pool-b"]);
});

Deno.test("planPool() drops launches LXD now lists, and warns of ones that never appeared", () => {
  const pending: PendingLaunches = {
    listed: { startedAt: NOW - 500, host: HOST, fingerprint: FP },
    lost: { startedAt: NOW - PENDING_TTL_MS - 1, host: HOST, fingerprint: FP },
    "lost-elsewhere": { startedAt: NOW - PENDING_TTL_MS - 1, host: "other", fingerprint: FP },
  };
  const plan = planPool([member("listed", { status: "Stopped" })], pending, goal(2, false));
  assert.deepEqual(plan.pending, {});
  assert.equal(plan.launches, 1);
  assert.equal(plan.warnings.length, 1);
  assert.match(plan.warnings[0]!, /launch of lost created no container/);
});

Deno.test("planPool() ignores launches in flight for another image or another host", () => {
  const pending: PendingLaunches = {
    a: { startedAt: NOW, host: HOST, fingerprint: OLD_FP },
    b: { startedAt: NOW, host: "other", fingerprint: FP },
  };
  assert.equal(planPool([], pending, goal(1)).launches, 1);
});

Deno.test("planPool() retires containers of another image and those beyond the size", () => {
  const plan = planPool(
    [
      member("outdated", { fp: OLD_FP, ageMs: 90_000 }),
      member("a", { ageMs: 30_000 }),
      member("b", { ageMs: 20_000 }),
      member("c", { ageMs: 10_000 }),
    ],
    {},
    goal(1),
  );
  assert.equal(plan.claim?.name, "a");
  assert.deepEqual(names(plan.retire).sort(), ["c", "outdated"]);
  assert.equal(plan.launches, 0);
});

Deno.test("planPool() replaces a pool container that never started, with a warning", () => {
  const plan = planPool(
    [member("stuck", { status: "Stopped", ageMs: STALLED_AFTER_MS + 1_000 })],
    {},
    goal(1),
  );
  assert.equal(plan.claim, undefined);
  assert.deepEqual(names(plan.retire), ["stuck"]);
  assert.equal(plan.launches, 1);
  assert.match(plan.warnings[0] ?? "", /pool container stuck is stopped \d+s after its launch/);
});

Deno.test("planPool() leaves claimed, retiring and other hosts' containers alone", () => {
  const plan = planPool(
    [
      member("claimed", { pool: "claimed" }),
      member("retiring", { pool: "retiring" }),
      member("theirs", { host: "other" }),
      { name: "unmanaged", status: "Running", config: {} },
    ],
    {},
    goal(1),
  );
  assert.equal(plan.claim, undefined);
  assert.deepEqual(plan.retire, []);
  assert.equal(plan.launches, 1);
});

Deno.test("planPool() without a claim only tops up", () => {
  const plan = planPool([member("a")], {}, goal(2, false));
  assert.equal(plan.claim, undefined);
  assert.equal(plan.launches, 1);
});
