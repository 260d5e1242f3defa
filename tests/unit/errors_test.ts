import assert from "node:assert/strict";
import {
  BuildFailure,
  exitCodeFor,
  readExitCodes,
  SystemFailure,
  UsageError,
} from "../../lib/errors.ts";

const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

Deno.test("readExitCodes() defaults to 1 and 2", () => {
  assert.deepEqual(readExitCodes(envOf({})), { buildFailure: 1, systemFailure: 2 });
});

Deno.test("readExitCodes() reads the runner's custom values", () => {
  assert.deepEqual(
    readExitCodes(envOf({ BUILD_FAILURE_EXIT_CODE: "42", SYSTEM_FAILURE_EXIT_CODE: " 43 " })),
    { buildFailure: 42, systemFailure: 43 },
  );
  assert.deepEqual(
    readExitCodes(envOf({ BUILD_FAILURE_EXIT_CODE: "0", SYSTEM_FAILURE_EXIT_CODE: "255" })),
    { buildFailure: 0, systemFailure: 255 },
  );
});

Deno.test("readExitCodes() falls back to the defaults for garbage values", () => {
  for (const junk of ["", "abc", "-1", "1.5", "256", "1000", "3; rm -rf /", "0x10", " "]) {
    assert.deepEqual(
      readExitCodes(envOf({ BUILD_FAILURE_EXIT_CODE: junk, SYSTEM_FAILURE_EXIT_CODE: junk })),
      { buildFailure: 1, systemFailure: 2 },
      `value ${JSON.stringify(junk)}`,
    );
  }
});

Deno.test("exitCodeFor() gives the build code for a BuildFailure", () => {
  const codes = { buildFailure: 42, systemFailure: 43 };
  assert.equal(exitCodeFor(new BuildFailure("script failed", 7), codes), 42);
  assert.equal(exitCodeFor(new BuildFailure("image rejected"), codes), 42);
});

Deno.test("exitCodeFor() gives the system code for everything else", () => {
  const codes = { buildFailure: 42, systemFailure: 43 };
  for (
    const error of [
      new SystemFailure("lxd down"),
      new UsageError("bad flag"),
      new Error("a bug"),
      new TypeError("another bug"),
      "a string",
      undefined,
      null,
      { kind: "build" },
    ]
  ) {
    assert.equal(exitCodeFor(error, codes), 43, String(error));
  }
});

Deno.test("BuildFailure and SystemFailure carry their kind, name and job exit code", () => {
  const build = new BuildFailure("failed", 7);
  assert.equal(build.kind, "build");
  assert.equal(build.name, "BuildFailure");
  assert.equal(build.jobExitCode, 7);
  assert.equal(new BuildFailure("no code").jobExitCode, undefined);

  const usage = new UsageError("bad");
  assert.ok(usage instanceof SystemFailure);
  assert.equal(usage.kind, "system");
  assert.equal(usage.name, "UsageError");

  const cause = new Error("root");
  assert.equal(new SystemFailure("wrapped", { cause }).cause, cause);
});
