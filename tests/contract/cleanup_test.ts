import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import { LxdError } from "../../lib/lxd.ts";
import { cleanup } from "../../stages/cleanup.ts";
import {
  harness,
  INSTANCE_NOT_FOUND,
  jobEnv,
  LXD_DOWN,
  NAME,
  OK,
  payloadFile,
  SECRET,
} from "./fake_lxc.ts";

const DELETE = ["delete", "--force", "--", NAME];

Deno.test("cleanup() force-deletes the job's container", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload), script: [OK] });
  await cleanup(h.ctx, h.lxd);
  assert.deepEqual(h.lxc.calls, [DELETE]);
  assert.deepEqual(h.lines, [`Deleted container ${NAME}`]);
  assert.deepEqual(h.written, []);
});

Deno.test("cleanup() resolves with an info line when the container is already gone", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload), script: [INSTANCE_NOT_FOUND] });
  await cleanup(h.ctx, h.lxd);
  assert.deepEqual(h.lxc.calls, [DELETE]);
  assert.deepEqual(h.lines, [`Container ${NAME} was already gone`]);
});

Deno.test("cleanup() resolves with a warning when LXD is unreachable", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload), script: [LXD_DOWN] });
  await cleanup(h.ctx, h.lxd);
  assert.deepEqual(h.lxc.calls, [DELETE]);
  assert.equal(h.lines.length, 1, h.lines.join("\n"));
  assert.ok(h.lines[0]!.startsWith(`WARNING: could not delete container ${NAME}; `), h.lines[0]);
  assert.match(h.lines[0]!, /gc/);
  assert.match(h.lines[0]!, /LXD is not reachable/);
});

Deno.test("cleanup() rejects on any other failure", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    script: [{ code: 1, stderr: "Error: Failed deleting instance: device or resource busy\n" }],
  });
  await assert.rejects(cleanup(h.ctx, h.lxd), (error: unknown) => {
    assert.ok(error instanceof LxdError);
    assert.ok(error instanceof SystemFailure);
    assert.equal(error.unreachable, false);
    assert.match(
      error.message,
      /^delete --force -- runner-3-project-7-concurrent-1-job-42 failed: Failed deleting instance: device/,
    );
    return true;
  });
  assert.deepEqual(h.lxc.calls, [DELETE]);
});

Deno.test("cleanup() uses the payload's ids, not the job's CI_JOB_ID", async () => {
  await using payload = await payloadFile({ id: 5, job_info: { project_id: 6 } });
  const h = harness({
    env: { JOB_RESPONSE_FILE: payload.path, CUSTOM_ENV_CI_JOB_ID: "42" },
    script: [OK],
  });
  await cleanup(h.ctx, h.lxd);
  assert.deepEqual(h.lxc.calls, [[
    "delete",
    "--force",
    "--",
    "runner-0-project-6-concurrent-0-job-5",
  ]]);
});

Deno.test("cleanup() never logs a job variable's value, even with debug on", async () => {
  await using payload = await payloadFile();
  for (const reply of [OK, INSTANCE_NOT_FOUND, LXD_DOWN, { code: 1, stderr: "Error: x\n" }]) {
    const h = harness({
      env: jobEnv(payload, { CUSTOM_ENV_SECRET: SECRET }),
      debug: true,
      script: [reply],
    });
    await cleanup(h.ctx, h.lxd).catch(() => {});
    assert.ok(h.lines.some((line) => line.startsWith("[lxd-driver debug] ")));
    for (const line of h.lines) assert.ok(!line.includes(SECRET), line);
  }
});
