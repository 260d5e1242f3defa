import assert from "node:assert/strict";
import { runCliProcess, TIMED_OUT_CODE } from "../../lib/lxd.ts";

Deno.test("runCliProcess() passes argv untouched and returns code, stdout and stderr", async () => {
  const result = await runCliProcess(
    "sh",
    ["-c", 'printf "%s|" "$@"; echo oops >&2; exit 3', "sh", "--flag", "$(x) ;y", ""],
    {},
  );
  assert.deepEqual(result, { code: 3, stdout: "--flag|$(x) ;y||", stderr: "oops\n" });
});

Deno.test("runCliProcess() feeds stdin, and no stdin reads as empty", async () => {
  assert.equal((await runCliProcess("cat", [], { stdin: "data\n" })).stdout, "data\n");
  assert.equal((await runCliProcess("cat", [], {})).stdout, "");
});

Deno.test("runCliProcess() stops a call at its timeout and reports it as timed out", async () => {
  const started = performance.now();
  const result = await runCliProcess("sleep", ["5"], { signal: AbortSignal.timeout(100) });
  assert.equal(result.code, TIMED_OUT_CODE);
  assert.ok(performance.now() - started < 3000);
});

Deno.test("runCliProcess() reports a missing command as a shell would (127)", async () => {
  const result = await runCliProcess("lxd-driver-no-such-command", [], {});
  assert.equal(result.code, 127);
  assert.match(result.stderr, /command not found/);
});

Deno.test("runCliProcess() does not block when a command writes much before reading its input", async () => {
  // 1 MiB of output first: more than a pipe holds, so stdout must be read while stdin is written.
  const result = await runCliProcess(
    "sh",
    ["-c", "head -c 1048576 /dev/zero; cat >/dev/null"],
    { stdin: "x".repeat(1 << 20), signal: AbortSignal.timeout(10_000) },
  );
  assert.equal(result.code, 0);
  assert.equal(result.stdout.length, 1 << 20);
});
