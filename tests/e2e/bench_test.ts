/**
 * End-to-end: `scripts/bench.ts --quick` runs every item against real LXD,
 * writes its report where --out says (and not to BENCHMARKS.md), and deletes
 * every container it made. GitLab's example driver takes part only when
 * `LXD_DRIVER_BENCH_EXAMPLE` is set in the environment, which is passed on.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { lxdAvailable, TEST_CLI } from "../lxd.ts";

// The bench measures against raw `lxc` on LXD (`make bench`); the lxc run covers it.
const ignore = TEST_CLI !== "lxc" || !(await lxdAvailable());
const BENCH = fileURLToPath(new URL("../../scripts/bench.ts", import.meta.url));
const REPORT = fileURLToPath(new URL("../../BENCHMARKS.md", import.meta.url));

async function readOrUndefined(path: string): Promise<string | undefined> {
  try {
    return await Deno.readTextFile(path);
  } catch {
    return undefined;
  }
}

Deno.test({
  name: "bench --quick measures all five items and writes their tables to --out",
  ignore,
  async fn() {
    const out = await Deno.makeTempFile({ prefix: "lxd-driver-bench-", suffix: ".md" });
    const before = await readOrUndefined(REPORT);
    try {
      const result = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-q", "-A", BENCH, "--quick", "--out", out],
        env: { DENO_NO_UPDATE_CHECK: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(180_000),
      }).output();
      const stdout = new TextDecoder().decode(result.stdout);
      const stderr = new TextDecoder().decode(result.stderr);
      assert.equal(result.code, 0, `${stdout}\n${stderr}`);
      assert.match(stdout, /left behind: 0\b/);

      const report = await Deno.readTextFile(out);
      // How the driver made its containers: copies of its template where LXD remaps (LXD 5.0 here).
      assert.match(
        report,
        /its containers are copies of a stopped template|template is not\s+needed/,
      );
      const withExample = Boolean(Deno.env.get("LXD_DRIVER_BENCH_EXAMPLE"));
      const items: [string, string[]][] = [
        ["## 1. run stage", ["lxd-driver", "raw lxc", "empty Deno program"]],
        ["## 2. prepare + cleanup", ["lxd-driver", "raw lxc"]],
        ["## 3. a whole job", ["lxd-driver"]],
        ["## 4. 2 jobs at once", ["lxd-driver"]],
        ["## 5. prepare from the warm pool", ["lxd-driver, warm pool"]],
      ];
      const sections = report.split(/^(?=## )/m);
      for (const [heading, rows] of items) {
        const section = sections.find((s) => s.startsWith(heading + "\n"));
        assert.ok(section, `no "${heading}" in the report:\n${report}`);
        assert.match(section, /^\| contender +\|/m, `${heading} has no table`);
        for (const row of [...rows, ...(withExample ? ["GitLab example"] : [])]) {
          assert.match(section, new RegExp(`^\\| ${row} +\\|`, "m"), `${heading}: no ${row} row`);
        }
        if (!withExample) assert.doesNotMatch(section, /^\| GitLab example/m);
        assert.match(section, /\b(PASS|MISS|n\/a)\b/, `${heading} has no verdict`);
      }
      assert.match(report, /^## Host$/m);
      if (!withExample) {
        const prose = report.replace(/\s*\n>?\s*/g, " "); // undo deno fmt's line wrapping
        assert.match(prose, /left out of this run: `LXD_DRIVER_BENCH_EXAMPLE` was not set/);
      }

      assert.equal(await readOrUndefined(REPORT), before, "--quick must not touch BENCHMARKS.md");
    } finally {
      await Deno.remove(out).catch(() => {});
    }
  },
});
