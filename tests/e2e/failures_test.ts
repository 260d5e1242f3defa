/** End-to-end: what goes wrong, and what the runner is told, against real LXD. */
import assert from "node:assert/strict";
import { Job, runnerScript } from "../runner.ts";
import {
  BUSYBOX,
  DAEMON,
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
const settings = await settingsFile();

/** Containers labelled with the job id: what a prepare of that job would have made. */
async function containersOfJob(jobId: number): Promise<string[]> {
  const list = await lxc("list", "--format", "json");
  return (JSON.parse(list.stdout) as { name: string; config: Record<string, string> }[])
    .filter((i) => i.config?.["user.lxd-driver.job-id"] === String(jobId)).map((i) => i.name);
}

Deno.test({
  name: "prepare rejects images that are not allowed or not plain, before touching LXD",
  ignore,
  async fn() {
    const marker = `/tmp/lxd-driver-pwned-${crypto.randomUUID()}`;
    const images = [
      "ubuntu:24.04", // plain but not allowed
      "--privileged",
      "-c security.privileged=true",
      "lxd-driver-test/bookworm --config security.privileged=true",
      `$(touch ${marker})`,
      `lxd-driver-test/x;touch ${marker}`,
      `\`touch ${marker}\``,
      "lxd-driver-test/../bookworm",
    ];
    for (const image of images) {
      const jobId = uniqueJobId();
      const job = await Job.create({
        jobId,
        env: { LXD_DRIVER_CONFIG: settings },
        buildFailureExitCode: 11,
        systemFailureExitCode: 12,
        variables: { CI_JOB_IMAGE: image },
      });
      const result = await job.prepare();
      assert.equal(result.code, 11, `${image}: ${result.stderr}`);
      assert.equal(
        result.stderr.trim().split("\n").length,
        1,
        `one line for ${image}: ${result.stderr}`,
      );
      assert.ok(result.stderr.includes(JSON.stringify(image)), `names the image: ${result.stderr}`);
      if (image === "ubuntu:24.04") {
        assert.match(result.stderr, /allowed patterns: "lxd-driver-test\/\*"/);
      }
      assert.deepEqual(await containersOfJob(jobId), [], "no container was created");
      assert.equal(await exists(expectedName(jobId)), false);
      await job.remove();
    }
    await assert.rejects(Deno.stat(marker), Deno.errors.NotFound);
  },
});

Deno.test({
  name: "an allowed image that LXD does not have is a build failure",
  ignore,
  async fn() {
    const job = await Job.create({
      jobId: uniqueJobId(),
      env: { LXD_DRIVER_CONFIG: settings },
      variables: { CI_JOB_IMAGE: "lxd-driver-test/no-such-image" },
    });
    const result = await job.prepare();
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /no-such-image/);
    await job.cleanup();
    await job.remove();
  },
});

Deno.test({
  name: "LXD unreachable is a system failure that says what to check; cleanup still succeeds",
  ignore,
  async fn() {
    const job = await Job.create({
      jobId: uniqueJobId(),
      env: {
        LXD_DRIVER_CONFIG: settings,
        LXD_DIR: "/nonexistent/lxd",
        INCUS_DIR: "/nonexistent/lxd",
      },
      buildFailureExitCode: 3,
      systemFailureExitCode: 4,
    });
    const prepare = await job.prepare();
    assert.equal(prepare.code, 4, prepare.stderr);
    assert.match(prepare.stderr, new RegExp(`${DAEMON} is not reachable`));
    assert.match(prepare.stderr, new RegExp(`${TEST_CLI} info`));

    const run = await job.run(runnerScript("echo hi"), "step_script");
    assert.equal(run.code, 4, run.stderr);
    assert.equal(run.exitCodeFile, undefined);

    const cleanup = await job.cleanup();
    assert.equal(cleanup.code, 0, cleanup.stderr);
    assert.match(cleanup.stderr, /WARNING/);
    await job.remove();
  },
});

Deno.test({
  name: "a container that disappears before run is a system failure, not a build failure",
  ignore,
  async fn() {
    const jobId = uniqueJobId();
    const job = await Job.create({ jobId, env: { LXD_DRIVER_CONFIG: settings } });
    assert.equal((await job.prepare()).code, 0);
    await lxc("delete", "--force", expectedName(jobId));
    const run = await job.run(runnerScript("echo hi"), "step_script");
    assert.equal(run.code, 2, run.stderr);
    assert.equal(run.exitCodeFile, undefined);
    assert.equal((await job.cleanup()).code, 0);
    await job.remove();
  },
});

Deno.test({
  name: "an invalid settings file fails every command with the file, line and key",
  ignore,
  async fn() {
    const bad = await Deno.makeTempFile({ suffix: ".toml" });
    await Deno.writeTextFile(bad, `[image]\ndefault = "x"\nallowd = ["y"]\n`);
    const job = await Job.create({
      jobId: uniqueJobId(),
      env: { LXD_DRIVER_CONFIG: bad },
      systemFailureExitCode: 9,
    });
    for (const result of [await job.config(), await job.prepare(), await job.cleanup()]) {
      assert.equal(result.code, 9);
      assert.ok(result.stderr.includes(`${bad}:3`), result.stderr);
      assert.match(result.stderr, /unknown key \[image\] allowd/);
    }
    await job.remove();
  },
});

Deno.test({
  name: "prepare replaces a stale container of the same name; cleanup twice and prepare again work",
  ignore,
  async fn() {
    const jobId = uniqueJobId();
    const name = expectedName(jobId);
    const stale = await lxc("launch", BUSYBOX, name);
    assert.equal(stale.code, 0, stale.stderr);
    const job = await Job.create({ jobId, env: { LXD_DRIVER_CONFIG: settings } });

    const prepare = await job.prepare();
    assert.equal(prepare.code, 0, prepare.stderr);
    assert.match(prepare.stderr, /leftover container/);
    assert.equal((await instanceConfig(name))["user.lxd-driver.managed"], "true");
    const run = await job.run(runnerScript("test -x /usr/bin/git"), "step_script");
    assert.equal(run.code, 0, "the new container is the job's image, not the stale busybox");

    assert.equal((await job.cleanup()).code, 0);
    const again = await job.cleanup();
    assert.equal(again.code, 0, again.stderr);
    assert.equal(await exists(name), false);

    // The runner's retry: prepare -> cleanup -> prepare for the same job.
    assert.equal((await job.prepare()).code, 0);
    assert.equal(await exists(name), true);
    assert.equal((await job.cleanup()).code, 0);
    await job.remove();
  },
});

Deno.test({
  name:
    "job variables that mimic predefined ids cannot point the driver at another job's container",
  ignore,
  async fn() {
    const victimId = uniqueJobId();
    const victim = await Job.create({ jobId: victimId, env: { LXD_DRIVER_CONFIG: settings } });
    assert.equal((await victim.prepare()).code, 0);
    const attacker = await Job.create({
      jobId: uniqueJobId(),
      env: { LXD_DRIVER_CONFIG: settings },
      variables: { CI_JOB_ID: String(victimId), CI_PROJECT_ID: "1", CI_RUNNER_ID: "1" },
    });
    const prepared = await attacker.prepare();
    assert.equal(prepared.code, 0, prepared.stderr);
    assert.match(
      prepared.stderr,
      new RegExp(`Creating container ${expectedName(attacker.options.jobId)}\\b`),
    );
    assert.equal(
      await exists(expectedName(victimId)),
      true,
      "prepare left the victim's container alone",
    );
    assert.equal((await attacker.cleanup()).code, 0);
    assert.equal(await exists(expectedName(victimId)), true, "the victim's container survives");
    await victim.cleanup();
    await victim.remove();
    await attacker.remove();
  },
});
