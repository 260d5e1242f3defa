/** End-to-end: whole jobs through every stage, against real LXD. */
import assert from "node:assert/strict";
import { getSourcesBody, sourceBundle } from "../git_fixture.ts";
import { Job, runnerScript } from "../runner.ts";
import {
  BUSYBOX,
  exists,
  expectedName,
  instanceConfig,
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
  name: "a whole job runs config, prepare, every run stage and cleanup in a fresh container",
  ignore,
  async fn() {
    const jobId = uniqueJobId();
    const job = await Job.create({
      jobId,
      projectId: 7,
      env: { LXD_DRIVER_CONFIG: settings, LXD_DRIVER_DEBUG: "1" },
      variables: { CI_RUNNER_ID: "1", MY_SECRET: "s3cr3t-value-never-logged" },
    });
    const name = expectedName(jobId, 7);
    const vars = {
      CI_PROJECT_DIR: "/builds/group/project",
      MY_SECRET: "s3cr3t-value-never-logged",
    };

    const config = await job.config();
    assert.equal(config.code, 0, config.stderr);
    const answer = JSON.parse(config.stdout);
    assert.equal(answer.builds_dir, "/builds");
    assert.equal(answer.cache_dir, "/cache");
    assert.equal(answer.builds_dir_is_shared, false);
    assert.equal(answer.hostname, Deno.hostname(), "the runner host, shown as 'via'");
    assert.equal(answer.driver.name, "lxd-driver");

    const prepare = await job.prepare();
    assert.equal(prepare.code, 0, prepare.stderr);
    assert.match(prepare.stderr, new RegExp(`Creating container ${name}`));
    assert.match(prepare.stderr, /Using image lxd-driver-test\/bookworm, fingerprint [0-9a-f]{12}/);
    // Debug logging names each LXD operation and its duration.
    assert.match(
      prepare.stderr,
      new RegExp(
        `\\[lxd-driver debug\\] ${TEST_CLI} query --wait --request POST --data <json> -- /1\\.0/instances: exit 0 in \\d+ms`,
      ),
    );
    assert.match(
      prepare.stderr,
      new RegExp(`\\[lxd-driver debug\\] ${TEST_CLI} start -- ${name}: exit 0 in`),
    );
    const labels = await instanceConfig(name);
    assert.equal(labels["user.lxd-driver.managed"], "true");
    assert.equal(labels["user.lxd-driver.job-id"], String(jobId));
    assert.equal(labels["user.lxd-driver.runner-id"], "1");
    assert.ok(!Number.isNaN(Date.parse(labels["user.lxd-driver.created"]!)));

    const bundle = await sourceBundle({ "hello.txt": "hello from the repository\n" });
    const stages: [string, string][] = [
      ["prepare_script", `echo "Running on $(hostname)"; systemctl is-system-running || true`],
      ["get_sources", getSourcesBody(bundle)],
      [
        "step_script",
        `cd "$CI_PROJECT_DIR"; cat hello.txt; test -n "$MY_SECRET"; echo built > artifact.txt`,
      ],
      ["after_script", `cat "$CI_PROJECT_DIR/artifact.txt"`],
      ["a_stage_name_from_the_future", `echo any stage name works`],
      ["cleanup_file_variables", `true`],
    ];
    for (const [stage, body] of stages) {
      const result = await job.run(runnerScript(body, vars), stage);
      assert.equal(result.code, 0, `${stage}: ${result.stdout}${result.stderr}`);
      assert.equal(result.exitCodeFile, undefined, `${stage} left an exit-code file`);
      if (stage === "prepare_script") assert.match(result.stdout, new RegExp(`Running on ${name}`));
      if (stage === "get_sources") assert.match(result.stdout, /first commit/);
      if (stage === "step_script") assert.match(result.stdout, /hello from the repository/);
      if (stage === "after_script") assert.match(result.stdout, /built/);
    }

    // The script, which holds the job token, never lands on the container's disk.
    const found = await lxc(
      "exec",
      name,
      "--",
      "sh",
      "-c",
      "grep -rl 'trap exit 1 TERM' /tmp /var/tmp /root /builds /cache /run /home 2>/dev/null; true",
    );
    assert.equal(found.stdout.trim(), "");

    const cleanup = await job.cleanup();
    assert.equal(cleanup.code, 0, cleanup.stderr);
    assert.equal(await exists(name), false);

    // Nothing the driver printed in any stage contains a variable's value.
    for (const result of [config, prepare, cleanup]) {
      assert.ok(!(result.stdout + result.stderr).includes("s3cr3t"));
    }
    await job.remove();
  },
});

Deno.test({
  name:
    "a failing script exits with BUILD_FAILURE_EXIT_CODE and writes its exact code; success clears it",
  ignore,
  async fn() {
    const job = await Job.create({
      jobId: uniqueJobId(),
      env: { LXD_DRIVER_CONFIG: settings },
      buildFailureExitCode: 42,
      systemFailureExitCode: 43,
    });
    try {
      assert.equal((await job.prepare()).code, 0);
      const failed = await job.run(runnerScript("echo before; exit 7"), "step_script");
      assert.equal(failed.code, 42);
      assert.equal(failed.exitCodeFile, "7\n");
      assert.match(failed.stdout, /before/);

      const killed = await job.run(runnerScript("kill -KILL $$"), "step_script");
      assert.equal(killed.code, 42);
      assert.equal(killed.exitCodeFile, "137\n", "a signal is reported as 128+N");

      const ok = await job.run(runnerScript("echo fine"), "after_script");
      assert.equal(ok.code, 0);
      assert.equal(ok.exitCodeFile, undefined, "success removes a stale exit code");
    } finally {
      await job.cleanup();
      await job.remove();
    }
  },
});

Deno.test({
  name: "jobs on a systemd-less image run with sh",
  ignore,
  async fn() {
    const config = await settingsFile(`\n[job]\nshell = "sh"\n`);
    const job = await Job.create({
      jobId: uniqueJobId(),
      env: { LXD_DRIVER_CONFIG: config },
      variables: { CI_JOB_IMAGE: BUSYBOX, GIT_STRATEGY: "none" },
    });
    try {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.match(prepare.stderr, /lxd-driver-test\/busybox/);
      const run = await job.run("set -e\necho from busybox; ls -d /builds /cache\n", "step_script");
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stdout, /from busybox/);
    } finally {
      await job.cleanup();
      await job.remove();
    }
  },
});

Deno.test({
  name: "[log] debug = true in the settings turns on the same debug lines as LXD_DRIVER_DEBUG",
  ignore,
  async fn() {
    const jobId = uniqueJobId();
    const quiet = await Job.create({ jobId, env: { LXD_DRIVER_CONFIG: settings } });
    const debug = await Job.create({
      jobId,
      env: { LXD_DRIVER_CONFIG: await settingsFile(`\n[log]\ndebug = true\n`) },
    });
    try {
      // cleanup of a container that never existed: one LXD call, quickly.
      const line = new RegExp(
        `\\[lxd-driver debug\\] ${TEST_CLI} delete --force -- ${expectedName(jobId)}: exit 1 in`,
      );
      const off = await quiet.cleanup();
      assert.equal(off.code, 0, off.stderr);
      assert.doesNotMatch(off.stderr, /lxd-driver debug/);
      const on = await debug.cleanup();
      assert.equal(on.code, 0, on.stderr);
      assert.match(on.stderr, line);
    } finally {
      await quiet.remove();
      await debug.remove();
    }
  },
});
