import assert from "node:assert/strict";
import { denoCommand } from "../../lib/stage_exec.ts";

Deno.test("denoCommand() output() stops a client that ignores TERM once its signal aborts", async () => {
  const started = performance.now();
  const result = await denoCommand("sh", {
    args: ["-c", "trap '' TERM; sleep 30"],
    stdin: "null",
    stdout: "null",
    stderr: "null",
    signal: AbortSignal.timeout(100),
  }).output();
  assert.equal(result.signal, "SIGKILL");
  assert.ok(performance.now() - started < 5_000);
});

Deno.test("denoCommand() output() without a signal runs to the end and keeps stdout", async () => {
  const result = await denoCommand("sh", {
    args: ["-c", "echo out; exit 3"],
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).output();
  assert.equal(result.code, 3);
  assert.equal(new TextDecoder().decode(result.stdout), "out\n");
});
