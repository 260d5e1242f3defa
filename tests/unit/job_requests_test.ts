import assert from "node:assert/strict";
import { BuildFailure } from "../../lib/errors.ts";
import { readJobRequests } from "../../lib/job_requests.ts";
import { parseSettings, type Settings } from "../../lib/settings.ts";

const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

/** The [limits] of a settings file holding `text`. */
function limits(text = ""): Settings["limits"] {
  return parseSettings(`[limits]\n${text}\n`, "t.toml").limits;
}

const BOUNDED = limits('max_cpu = 4\nmax_memory = "8GiB"');

/** Runs `fn`, expects a BuildFailure and returns its message. */
function buildFailureOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof BuildFailure, `expected a BuildFailure, got ${error}`);
    return error.message;
  }
  assert.fail("expected a BuildFailure, nothing was thrown");
}

Deno.test("readJobRequests() asks for nothing when LXD_CPU and LXD_MEMORY are unset or empty", () => {
  for (const vars of [{}, { CUSTOM_ENV_LXD_CPU: "", CUSTOM_ENV_LXD_MEMORY: "  " }]) {
    assert.deepEqual(readJobRequests(envOf(vars), BOUNDED), { cpu: undefined, memory: undefined });
    // Without bounds too: an unset request is never refused.
    assert.deepEqual(readJobRequests(envOf(vars), limits()), {
      cpu: undefined,
      memory: undefined,
    });
  }
});

Deno.test("readJobRequests() reads only the CUSTOM_ENV_ variables", () => {
  const env = envOf({ LXD_CPU: "2", LXD_MEMORY: "1GiB" });
  assert.deepEqual(readJobRequests(env, BOUNDED), { cpu: undefined, memory: undefined });
});

Deno.test("readJobRequests() accepts requests within the bounds", () => {
  assert.deepEqual(
    readJobRequests(envOf({ CUSTOM_ENV_LXD_CPU: "2", CUSTOM_ENV_LXD_MEMORY: "512MiB" }), BOUNDED),
    { cpu: 2, memory: { text: "512MiB", bytes: 512 * 2 ** 20 } },
  );
  assert.deepEqual(
    readJobRequests(envOf({ CUSTOM_ENV_LXD_CPU: " 4 ", CUSTOM_ENV_LXD_MEMORY: "8GiB" }), BOUNDED),
    { cpu: 4, memory: { text: "8GiB", bytes: 8 * 2 ** 30 } },
  );
  assert.deepEqual(
    readJobRequests(envOf({ CUSTOM_ENV_LXD_CPU: "1", CUSTOM_ENV_LXD_MEMORY: "8GB" }), BOUNDED),
    { cpu: 1, memory: { text: "8GB", bytes: 8e9 } },
  );
});

Deno.test("readJobRequests() refuses a CPU request when max_cpu is 0 or unset", () => {
  for (const bounds of [limits(), limits("max_cpu = 0"), limits('max_memory = "8GiB"')]) {
    const message = buildFailureOf(() =>
      readJobRequests(envOf({ CUSTOM_ENV_LXD_CPU: "1" }), bounds)
    );
    assert.equal(
      message,
      "LXD_CPU is set, but this runner does not allow CPU requests ([limits] max_cpu)",
    );
  }
});

Deno.test("readJobRequests() refuses a memory request when max_memory is unset", () => {
  for (const bounds of [limits(), limits("max_cpu = 4")]) {
    const message = buildFailureOf(() =>
      readJobRequests(envOf({ CUSTOM_ENV_LXD_MEMORY: "1GiB" }), bounds)
    );
    assert.equal(
      message,
      "LXD_MEMORY is set, but this runner does not allow memory requests ([limits] max_memory)",
    );
  }
});

Deno.test("readJobRequests() refuses requests over the bounds", () => {
  for (const cpu of ["5", "64", "9999"]) {
    const message = buildFailureOf(() =>
      readJobRequests(envOf({ CUSTOM_ENV_LXD_CPU: cpu }), BOUNDED)
    );
    assert.equal(message, "LXD_CPU asks for more than this runner's maximum of 4 CPUs", cpu);
  }
  for (const memory of ["9GB", "8193MiB", "1TiB", "8589934593"]) {
    const message = buildFailureOf(() =>
      readJobRequests(envOf({ CUSTOM_ENV_LXD_MEMORY: memory }), BOUNDED)
    );
    assert.equal(message, "LXD_MEMORY asks for more than this runner's maximum of 8GiB", memory);
  }
});

Deno.test("readJobRequests() refuses malformed requests", () => {
  for (const cpu of ["1; x", "2.5", "-1", "lots", "0", "00", "1e1", "0x2", "2 4", "12345"]) {
    const message = buildFailureOf(() =>
      readJobRequests(envOf({ CUSTOM_ENV_LXD_CPU: cpu }), BOUNDED)
    );
    assert.equal(message, "LXD_CPU must be a whole number of CPUs from 1 to 4", cpu);
  }
  for (const memory of ["1; x", "2.5GiB", "-1", "lots", "0", "4 GB", "GiB", "1gb"]) {
    const message = buildFailureOf(() =>
      readJobRequests(envOf({ CUSTOM_ENV_LXD_MEMORY: memory }), BOUNDED)
    );
    assert.equal(
      message,
      'LXD_MEMORY must be a size such as "2GiB" or "512MiB", at most 8GiB',
      memory,
    );
  }
});

Deno.test("readJobRequests() never puts the job's value in a message", () => {
  const values = ["hunter2-value", "$(id)", "1; hunter2", "99999hunter2", "99999999999"];
  for (const value of values) {
    for (const bounds of [BOUNDED, limits()]) {
      for (const name of ["CUSTOM_ENV_LXD_CPU", "CUSTOM_ENV_LXD_MEMORY"]) {
        const message = buildFailureOf(() => readJobRequests(envOf({ [name]: value }), bounds));
        assert.ok(!message.includes(value), `${name}=${value}: ${message}`);
      }
    }
  }
});
