import assert from "node:assert/strict";
import { createLogger, debugRequested } from "../../lib/log.ts";

Deno.test("createLogger() prefixes warnings, errors and debug lines", () => {
  const lines: string[] = [];
  const log = createLogger({ debug: true, sink: (line) => lines.push(line) });
  log.info("hello");
  log.warn("careful");
  log.error("broken");
  log.debug("details");
  assert.equal(log.debugEnabled, true);
  assert.deepEqual(lines, [
    "hello",
    "WARNING: careful",
    "ERROR: broken",
    "[lxd-driver debug] details",
  ]);
});

Deno.test("createLogger() drops debug lines unless debug is on", () => {
  const lines: string[] = [];
  const log = createLogger({ sink: (line) => lines.push(line) });
  log.debug("details");
  log.info("hello");
  assert.equal(log.debugEnabled, false);
  assert.deepEqual(lines, ["hello"]);
});

Deno.test("debugRequested() accepts the usual spellings of yes", () => {
  for (const value of ["1", "true", "TRUE", " yes ", "on"]) {
    assert.equal(debugRequested((n) => n === "LXD_DRIVER_DEBUG" ? value : undefined), true, value);
  }
  for (const value of [undefined, "", "0", "false", "no", "off", "2"]) {
    assert.equal(
      debugRequested((n) => n === "LXD_DRIVER_DEBUG" ? value : undefined),
      false,
      String(value),
    );
  }
});
