import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import { withPoolLock } from "../../lib/pool_lock.ts";

async function tempRoot(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "lxd-driver-pool-lock-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("withPoolLock() creates a private directory and keeps the pending launches", async () => {
  await using root = await tempRoot();
  const dir = `${root.path}/state`;
  const launch = { startedAt: 1, host: "h", fingerprint: "f" };
  await withPoolLock(dir, async (pending) => {
    assert.deepEqual(pending, {});
    return await Promise.resolve({ result: undefined, pending: { a: launch } });
  });
  assert.equal((await Deno.stat(dir)).mode! & 0o777, 0o700);
  const seen = await withPoolLock(dir, (pending) => Promise.resolve({ result: pending, pending }));
  assert.deepEqual(seen, { a: launch });
});

Deno.test("withPoolLock() serialises its holders", async () => {
  await using root = await tempRoot();
  const dir = `${root.path}/state`;
  const events: string[] = [];
  const hold = (id: string) =>
    withPoolLock(dir, async (pending) => {
      events.push(`${id} in`);
      await new Promise((resolve) => setTimeout(resolve, 30));
      events.push(`${id} out`);
      return { result: undefined, pending };
    });
  await Promise.all([hold("a"), hold("b")]);
  assert.deepEqual(events.map((e) => e.split(" ")[1]), ["in", "out", "in", "out"]);
});

Deno.test("withPoolLock() refuses a state directory others can write to", async () => {
  await using root = await tempRoot();
  const dir = `${root.path}/state`;
  await Deno.mkdir(dir);
  await Deno.chmod(dir, 0o777);
  await assert.rejects(
    withPoolLock(dir, (pending) => Promise.resolve({ result: undefined, pending })),
    (error: unknown) =>
      error instanceof SystemFailure && /not a directory private to this user/.test(error.message),
  );
});

Deno.test("withPoolLock() refuses a symlink in place of its directory", async () => {
  await using root = await tempRoot();
  await Deno.mkdir(`${root.path}/elsewhere`, { mode: 0o700 });
  await Deno.symlink(`${root.path}/elsewhere`, `${root.path}/state`);
  await assert.rejects(
    withPoolLock(
      `${root.path}/state`,
      (pending) => Promise.resolve({ result: undefined, pending }),
    ),
    SystemFailure,
  );
});

Deno.test("withPoolLock() gives up when the lock stays busy", async () => {
  await using root = await tempRoot();
  const dir = `${root.path}/state`;
  let release!: () => void;
  const held = withPoolLock(dir, async (pending) => {
    await new Promise<void>((resolve) => release = resolve);
    return { result: undefined, pending };
  });
  await new Promise((resolve) => setTimeout(resolve, 20));
  await assert.rejects(
    withPoolLock(dir, (pending) => Promise.resolve({ result: undefined, pending }), 50),
    /stayed busy/,
  );
  release();
  await held;
});
