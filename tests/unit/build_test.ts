/**
 * scripts/build.sh: without a usable denort it must fail saying which target
 * and how to provide one, and a binary joined to the wrong runtime must not
 * pass for a build. Needs no network: every output goes to a temporary dir.
 */
import assert from "node:assert/strict";

const script = new URL("../../scripts/build.sh", import.meta.url).pathname;
const target = Deno.build.target;

/** Runs build.sh for this machine's target only, with `denort` as DENORT_BIN. */
async function build(denort: string): Promise<{ code: number; stderr: string; dist: string[] }> {
  const dist = await Deno.makeTempDir({ prefix: "lxd-driver-dist-" });
  try {
    // Only the variables given here may name a denort, whatever the caller's environment holds.
    const env = Object.fromEntries(
      Object.entries(Deno.env.toObject()).filter(([name]) => !name.startsWith("DENORT_BIN")),
    );
    const out = await new Deno.Command("bash", {
      args: [script, Deno.execPath()],
      env: { ...env, TARGETS: target, DIST_DIR: dist, DENORT_BIN: denort },
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const files: string[] = [];
    for await (const entry of Deno.readDir(dist)) files.push(entry.name);
    return { code: out.code, stderr: new TextDecoder().decode(out.stderr), dist: files.sort() };
  } finally {
    await Deno.remove(dist, { recursive: true });
  }
}

Deno.test("build.sh fails naming the target and DENORT_BIN when denort is missing", async () => {
  const { code, stderr, dist } = await build("/nonexistent/denort");
  assert.notEqual(code, 0, stderr);
  assert.match(stderr, new RegExp(`cannot compile for ${target}: DENORT_BIN=/nonexistent/denort`));
  assert.match(stderr, /set DENORT_BIN=\/path\/to\/denort/);
  assert.match(stderr, new RegExp(`denort-${target}\\.zip`));
  assert.deepEqual(dist, [], "nothing may be left in dist/ (no SHA256SUMS, no binary)");
});

Deno.test("build.sh rejects and removes a binary joined to the full deno instead of denort", async () => {
  const { code, stderr, dist } = await build(Deno.execPath());
  assert.notEqual(code, 0, stderr);
  assert.match(stderr, new RegExp(`lxd-driver-${target} is not a working lxd-driver`));
  assert.match(stderr, /not the full deno binary/);
  assert.deepEqual(dist, [], "the broken binary must not be left for make install");
});
