/** End-to-end: cancel, volume, concurrency and gc, against real LXD. */
import assert from "node:assert/strict";
import { Job, runnerScript } from "../runner.ts";
import {
  BUSYBOX,
  exists,
  expectedName,
  lxc,
  lxdAvailable,
  settingsFile,
  TEST_CLI,
  uniqueJobId,
} from "../lxd.ts";

const ignore = !(await lxdAvailable());
// The default settings, templates included (lib/template.ts), as a runner host has them.
const settings = await settingsFile("template = true\n");

Deno.test({
  name: "cancel mid-script stops the job's processes inside the container and exits within seconds",
  ignore,
  async fn() {
    const jobId = uniqueJobId();
    const name = expectedName(jobId);
    const job = await Job.create({ jobId, env: { LXD_DRIVER_CONFIG: settings } });
    try {
      assert.equal((await job.prepare()).code, 0);
      let seen = "";
      let started!: () => void;
      const marker = new Promise<void>((resolve) => (started = resolve));
      const body = `sleep 1001 & setsid sleep 1002 & echo started; sleep 1003; echo not-reached`;
      const cancelled = await job.run(runnerScript(body), "step_script", {
        onStdout: (chunk) => {
          seen += new TextDecoder().decode(chunk);
          if (seen.includes("started")) started();
        },
        cancelWhen: marker,
        killAfterMs: 30_000,
      });
      assert.ok(!seen.includes("not-reached"));
      assert.ok(cancelled.durationMs < 15_000, `took ${cancelled.durationMs} ms`);
      assert.notEqual(cancelled.code, 0);

      const ps = await lxc("exec", name, "--", "ps", "-eo", "args");
      assert.equal(ps.code, 0, ps.stderr);
      for (const n of ["1001", "1003"]) assert.ok(!ps.stdout.includes(`sleep ${n}`), ps.stdout);

      // The container stays usable for after_script after a graceful cancel.
      const after = await job.run(runnerScript("echo after"), "after_script");
      assert.equal(after.code, 0, after.stderr);
      assert.match(after.stdout, /after/);
    } finally {
      await job.cleanup();
      await job.remove();
    }
  },
});

Deno.test({
  name: "a stage's leftover background processes do not stall the runner",
  ignore,
  async fn() {
    const job = await Job.create({
      jobId: uniqueJobId(),
      env: { LXD_DRIVER_CONFIG: await settingsFile(`\n[job]\nshell = "sh"\n`) },
      variables: { CI_JOB_IMAGE: BUSYBOX, GIT_STRATEGY: "none" },
    });
    try {
      assert.equal((await job.prepare()).code, 0);
      const result = await job.run("sleep 600 &\necho left-behind\n", "step_script");
      assert.equal(result.code, 0, result.stderr);
      assert.ok(result.durationMs < 10_000, `took ${result.durationMs} ms`);
    } finally {
      await job.cleanup();
      await job.remove();
    }
  },
});

Deno.test({
  name: "a client that outlives its script (output held by an escaped process) is not waited for",
  ignore,
  async fn() {
    const job = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: settings } });
    try {
      assert.equal((await job.prepare()).code, 0);
      // setsid escapes the stage's session, so nothing stops this sleep, and it keeps the output open.
      const result = await job.run(
        runnerScript(
          // Wait until the sleep has left the stage's session, or the stage's end would still reach it.
          "setsid sh -c 'touch /tmp/escaped; exec sleep 600' & while [ ! -e /tmp/escaped ]; do sleep 0.1; done; echo escaped; exit 3",
        ),
        "step_script",
      );
      assert.equal(result.code, 1, result.stderr);
      assert.equal(result.exitCodeFile, "3\n", "the recorded status is the script's");
      assert.match(result.stdout, /escaped/);
      // LXD's client waits for the output to close; Incus's returns when the command ends.
      if (TEST_CLI === "lxc") assert.match(result.stderr, /did not return after the script ended/);
      assert.ok(result.durationMs < 40_000, `took ${result.durationMs} ms`);
    } finally {
      await job.cleanup();
      await job.remove();
    }
  },
});

Deno.test({
  name: "100 MB of output reaches the job log byte for byte",
  ignore,
  async fn() {
    const job = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: settings } });
    try {
      assert.equal((await job.prepare()).code, 0);
      const size = 100 * 1024 * 1024;
      // Numbered lines, so lost, repeated or reordered chunks change the hash.
      const stream = `seq 1 100000000 | head -c ${size}`;
      const script = runnerScript(`set +o pipefail; ${stream} | sha256sum >&2; ${stream}`);
      let received = 0;
      const chunks: Uint8Array[] = [];
      const result = await job.run(script, "step_script", {
        onStdout: (chunk) => {
          received += chunk.length;
          chunks.push(chunk);
        },
      });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(received, size);
      const all = new Uint8Array(received);
      let offset = 0;
      for (const chunk of chunks) {
        all.set(chunk, offset);
        offset += chunk.length;
      }
      const digest = Array.from(
        new Uint8Array(await crypto.subtle.digest("SHA-256", all)),
        (b) => b.toString(16).padStart(2, "0"),
      ).join("");
      assert.match(result.stderr, new RegExp(`^${digest}`, "m"));
    } finally {
      await job.cleanup();
      await job.remove();
    }
  },
});

Deno.test({
  name: "six jobs at once each get their own container and result",
  ignore,
  async fn() {
    const jobs = await Promise.all(
      Array.from(
        { length: 6 },
        (_, i) =>
          Job.create({
            jobId: uniqueJobId(),
            projectId: 100 + i,
            env: { LXD_DRIVER_CONFIG: settings },
          }),
      ),
    );
    try {
      const results = await Promise.all(jobs.map(async (job, i) => {
        const prepare = await job.prepare();
        assert.equal(prepare.code, 0, prepare.stderr);
        const run = await job.run(
          runnerScript(`echo "job ${i} on $(hostname)"; exit ${i}`),
          "step_script",
        );
        const cleanup = await job.cleanup();
        assert.equal(cleanup.code, 0, cleanup.stderr);
        return run;
      }));
      results.forEach((run, i) => {
        assert.match(
          run.stdout,
          new RegExp(`job ${i} on ${expectedName(jobs[i]!.options.jobId, 100 + i)}`),
        );
        assert.equal(run.code, i === 0 ? 0 : 1);
        assert.equal(run.exitCodeFile, i === 0 ? undefined : `${i}\n`);
      });
      for (const job of jobs) {
        assert.equal(await exists(expectedName(job.options.jobId, job.options.projectId)), false);
      }
    } finally {
      await Promise.all(jobs.map(async (job) => {
        await job.cleanup();
        await job.remove();
      }));
    }
  },
});

Deno.test({
  name: "gc deletes old containers the driver made and spares one it did not make",
  ignore,
  async fn() {
    const foreign = `not-ours-${crypto.randomUUID().slice(0, 8)}`;
    assert.equal((await lxc("launch", BUSYBOX, foreign)).code, 0);
    const jobId = uniqueJobId();
    const job = await Job.create({ jobId, env: { LXD_DRIVER_CONFIG: settings } });
    try {
      assert.equal((await job.prepare()).code, 0);
      const young = await job.exec(["gc", "--older-than", "1h"]);
      assert.equal(young.code, 0, young.stderr);
      assert.equal(
        await exists(expectedName(jobId)),
        true,
        "a young container survives --older-than 1h",
      );

      const gc = await job.exec(["gc", "--older-than", "0s"]);
      assert.equal(gc.code, 0, gc.stderr);
      assert.match(gc.stdout, new RegExp(`deleted ${expectedName(jobId)}`));
      assert.ok(!gc.stdout.includes(foreign));
      assert.equal(await exists(expectedName(jobId)), false);
      assert.equal(await exists(foreign), true);
    } finally {
      await lxc("delete", "--force", foreign);
      await job.cleanup();
      await job.remove();
    }
  },
});
