import assert from "node:assert/strict";
import { parseArgv } from "../../lib/argv.ts";
import { UsageError } from "../../lib/errors.ts";

Deno.test("parseArgv() reads the runner's run call", () => {
  assert.deepEqual(parseArgv(["run", "/tmp/x/script", "step_script"]), {
    positionals: ["run", "/tmp/x/script", "step_script"],
    config: undefined,
    olderThan: undefined,
    help: false,
  });
});

Deno.test("parseArgv() takes options anywhere, with = or a separate value", () => {
  const parsed = parseArgv(["--config", "/etc/a.toml", "gc", "--older-than=6h"]);
  assert.deepEqual(parsed.positionals, ["gc"]);
  assert.equal(parsed.config, "/etc/a.toml");
  assert.equal(parsed.olderThan, "6h");
  assert.equal(parseArgv(["prepare", "--config=/x.toml"]).config, "/x.toml");
});

Deno.test("parseArgv() recognises help and ends options at --", () => {
  assert.equal(parseArgv(["run", "-h"]).help, true);
  assert.equal(parseArgv(["--help"]).help, true);
  assert.deepEqual(parseArgv(["run", "--", "--odd-script", "stage"]).positionals, [
    "run",
    "--odd-script",
    "stage",
  ]);
});

Deno.test("parseArgv() rejects unknown options, missing values and repeats", () => {
  assert.throws(() => parseArgv(["--privileged", "prepare"]), UsageError);
  assert.throws(() => parseArgv(["prepare", "--config"]), /--config needs a value/);
  assert.throws(() => parseArgv(["--config", "a", "--config", "b"]), /given twice/);
});
