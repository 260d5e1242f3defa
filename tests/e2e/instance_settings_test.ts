/**
 * End-to-end: the `[instance]`, `[limits] disk` and `[helper]` settings as
 * the containers LXD creates for them show, checked both through LXD's API
 * and from inside the job's container.
 */
import assert from "node:assert/strict";
import { Job, type JobOptions, runnerScript, type StageResult } from "../runner.ts";
import {
  exists,
  expectedName,
  lxc,
  lxdAvailable,
  pathWithoutGitlabRunner,
  settingsFile,
  settingsText,
  TEST_CLI,
  uniqueJobId,
  waitFor,
} from "../lxd.ts";

const ignore = !(await lxdAvailable());
const MiB = 2 ** 20;

interface Instance {
  ephemeral: boolean;
  profiles: string[];
  config: Record<string, string>;
  expanded_config: Record<string, string>;
  devices: Record<string, Record<string, string>>;
}

async function instance(name: string): Promise<Instance> {
  const result = await lxc("query", `/1.0/instances/${name}`);
  if (result.code !== 0) throw new Error(`no instance ${name}: ${result.stderr}`);
  return JSON.parse(result.stdout) as Instance;
}

/** Runs `fn` with a fresh job under `settings`; cleanup and the job dir go in any case. */
async function withJob(
  settings: string,
  fn: (job: Job, name: string) => Promise<void>,
  options: Partial<JobOptions> = {},
): Promise<void> {
  const jobId = uniqueJobId();
  const job = await Job.create({
    jobId,
    ...options,
    env: { LXD_DRIVER_CONFIG: settings, ...options.env },
  });
  try {
    await fn(job, expectedName(jobId));
  } finally {
    await job.cleanup();
    await job.remove();
  }
}

function assertPrepared(prepare: StageResult): void {
  assert.equal(prepare.code, 0, prepare.stdout + prepare.stderr);
}

/** The pool of the default profile's root disk, which the test daemon's containers use. */
async function defaultPool(): Promise<string> {
  const profile = JSON.parse((await lxc("query", "/1.0/profiles/default")).stdout) as {
    devices: Record<string, Record<string, string>>;
  };
  const root = Object.values(profile.devices).find((d) => d.type === "disk" && d.path === "/");
  assert.ok(root?.pool, "the default profile has a root disk on a pool");
  return root.pool;
}

/**
 * Puts the pool's btrfs quota accounting right. After many subvolumes come
 * and go (a whole test suite's containers) btrfs can mark its qgroup data
 * inconsistent and stop enforcing limits until a rescan; the limit the
 * driver asked for is still set, but a fill would not show it.
 */
async function rescanQuotas(pool: string): Promise<void> {
  const info = JSON.parse((await lxc("query", `/1.0/storage-pools/${pool}`)).stdout) as {
    driver: string;
  };
  if (info.driver !== "btrfs") return;
  const root = TEST_CLI === "incus" ? "/var/lib/incus" : "/var/lib/lxd";
  const rescan = await new Deno.Command("btrfs", {
    args: ["quota", "rescan", "-w", `${root}/storage-pools/${pool}`],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert.equal(rescan.code, 0, new TextDecoder().decode(rescan.stderr));
}

Deno.test({
  name: "[limits] disk sizes the root disk, and writes stop at that size",
  ignore,
  async fn() {
    const pool = await defaultPool();
    await withJob(await settingsFile(`[limits]\ndisk = "400MiB"\n`), async (job, name) => {
      assertPrepared(await job.prepare());
      assert.deepEqual((await instance(name)).devices.root, {
        type: "disk",
        path: "/",
        pool,
        size: "400MiB",
      });
      await rescanQuotas(pool);
      // On btrfs the size is a qgroup quota, which df does not show (it reports
      // the whole pool), so the test fills the disk instead and sees where it
      // stops. btrfs accounts quotas as data reaches the disk, and can let a
      // write run past the limit before it says so: conv=fsync makes dd wait
      // for that, and the filler is three times the quota.
      const run = await job.run(
        runnerScript(`if dd if=/dev/zero of=/fill bs=1M count=1200 conv=fsync 2>/run/dd.err; then
  echo "wrote all"
else
  echo "stopped: $(grep -o 'Disk quota exceeded' /run/dd.err | head -n 1)"
fi
stat -c %s /fill
du -sxB1 / | cut -f1
rm -f /fill`),
        "step_script",
      );
      assert.equal(run.code, 0, run.stdout + run.stderr);
      const [outcome, written, used] = run.stdout.trim().split("\n");
      assert.equal(outcome, "stopped: Disk quota exceeded");
      assert.ok(Number(written) > 16 * MiB, `only ${written} bytes fit: the quota is too small`);
      assert.ok(Number(written) < 1200 * MiB, `${written} bytes written: nothing stopped them`);
      // The image's files and the filler together come to about the quota, or
      // a little past it (du counts blocks unlike btrfs' qgroups, which lag).
      const total = Number(used);
      assert.ok(total > 320 * MiB && total < 900 * MiB, `${total} bytes used on a 400MiB disk`);
    });
  },
});

Deno.test({
  name: "[instance] profiles are applied to the container in order",
  ignore,
  async fn() {
    const profile = `lxd-driver-test-profile-${uniqueJobId()}`;
    const mark = crypto.randomUUID();
    const created = await lxc("profile", "create", profile);
    assert.equal(created.code, 0, created.stderr);
    try {
      const set = await lxc(
        "profile",
        "set",
        profile,
        `environment.LXD_DRIVER_PROFILE_MARK=${mark}`,
        `user.lxd-driver-test.mark=${mark}`,
      );
      assert.equal(set.code, 0, set.stderr);
      const settings = await settingsFile(`profiles = ["default", "${profile}"]\n`);
      await withJob(settings, async (job, name) => {
        assertPrepared(await job.prepare());
        const info = await instance(name);
        assert.deepEqual(info.profiles, ["default", profile]);
        assert.equal(info.expanded_config["user.lxd-driver-test.mark"], mark);
        const run = await job.run(runnerScript(`echo "$LXD_DRIVER_PROFILE_MARK"`), "step_script");
        assert.equal(run.code, 0, run.stdout + run.stderr);
        assert.equal(run.stdout.trim(), mark);
      });
    } finally {
      await lxc("profile", "delete", profile);
    }
  },
});

Deno.test({
  name: "[instance] storage_pool puts the root disk on the named pool",
  ignore,
  async fn() {
    const pool = await defaultPool();
    await withJob(await settingsFile(`storage_pool = "${pool}"\n`), async (job, name) => {
      assertPrepared(await job.prepare());
      assert.deepEqual((await instance(name)).devices.root, { type: "disk", path: "/", pool });
      const volume = await lxc("query", `/1.0/storage-pools/${pool}/volumes/container/${name}`);
      assert.equal(volume.code, 0, `no root volume of ${name} on ${pool}: ${volume.stderr}`);
    });
    // A pool that does not exist is a system failure, so the setting is really used.
    const missing = "lxd-driver-test-no-such-pool";
    await withJob(await settingsFile(`storage_pool = "${missing}"\n`), async (job, name) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 2, prepare.stdout + prepare.stderr);
      assert.match(prepare.stderr, /storage pool not found/i);
      assert.equal(await exists(name), false);
    });
  },
});

Deno.test({
  name: "[instance] ready_timeout expiring is a system failure naming it, and the container goes",
  ignore,
  async fn() {
    // systemd in the bookworm image takes well over 100ms to report running.
    const settings = await Deno.makeTempFile({ prefix: "lxd-driver-settings-", suffix: ".toml" });
    const text = settingsText();
    assert.match(text, /^ready_timeout = "60s"$/m);
    await Deno.writeTextFile(
      settings,
      text.replace(/^ready_timeout = .*$/m, 'ready_timeout = "100ms"'),
    );
    await withJob(settings, async (job, name) => {
      const prepare = await job.prepare();
      assert.equal(prepare.code, 42, prepare.stdout + prepare.stderr);
      assert.match(
        prepare.stderr,
        new RegExp(
          `container ${name} did not become ready within 100ms \\(\\[instance\\] ready_timeout\\)`,
        ),
      );
      assert.equal(await exists(name), false);
    }, { systemFailureExitCode: 42, buildFailureExitCode: 43 });
  },
});

Deno.test({
  name: "[instance] ephemeral = true makes a container LXD deletes when it stops",
  ignore,
  async fn() {
    await withJob(await settingsFile(`ephemeral = true\n`), async (job, name) => {
      assertPrepared(await job.prepare());
      assert.equal((await instance(name)).ephemeral, true);
      const stop = await lxc("stop", "--force", name);
      assert.equal(stop.code, 0, stop.stderr);
      await waitFor(
        "LXD to delete the stopped container",
        async () => await exists(name) ? undefined : true,
        10_000,
      );
    });
    await withJob(await settingsFile(), async (job, name) => {
      assertPrepared(await job.prepare());
      assert.equal((await instance(name)).ephemeral, false, "ephemeral is off by default");
    });
  },
});

Deno.test({
  name: "[instance] privileged = true with allow_privileged runs the job as the host's root",
  ignore,
  async fn() {
    const settings = await settingsFile(`privileged = true\nallow_privileged = true\n`);
    await withJob(settings, async (job, name) => {
      assertPrepared(await job.prepare());
      assert.equal((await instance(name)).config["security.privileged"], "true");
      const run = await job.run(runnerScript("head -n 1 /proc/self/uid_map"), "step_script");
      assert.equal(run.code, 0, run.stdout + run.stderr);
      // inside uid, host uid, count: uid 0 inside is uid 0 on the host.
      assert.deepEqual(run.stdout.trim().split(/\s+/).slice(0, 2), ["0", "0"]);
    });
    const doctor = await withJobDir((job) => job.exec(["--config", settings, "doctor"]));
    assert.equal(doctor.code, 0, doctor.stdout + doctor.stderr);
    assert.match(
      doctor.stdout,
      /^WARN privileged: privileged containers \(\[instance\] privileged, allowed by allow_privileged\): jobs run as the host's root — fix: set \[instance\] privileged = false unless /m,
    );
  },
});

/** Runs `fn` in a job directory that no container belongs to. */
async function withJobDir(fn: (job: Job) => Promise<StageResult>): Promise<StageResult> {
  const job = await Job.create({ jobId: uniqueJobId() });
  try {
    return await fn(job);
  } finally {
    await job.remove();
  }
}

Deno.test({
  name: "without [helper] gitlab_runner the first executable gitlab-runner on PATH is pushed",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "lxd-driver-path-" });
    try {
      // The first one on PATH is not executable, so it is passed over.
      await Deno.mkdir(`${dir}/first`);
      await Deno.writeTextFile(`${dir}/first/gitlab-runner`, "#!/bin/sh\necho wrong one\n", {
        mode: 0o644,
      });
      await Deno.chmod(`${dir}/first/gitlab-runner`, 0o644);
      await Deno.mkdir(`${dir}/second`);
      await Deno.writeTextFile(
        `${dir}/second/gitlab-runner`,
        '#!/bin/sh\necho "stand-in gitlab-runner $*"\n',
        { mode: 0o755 },
      );
      const path = `${dir}/first:${dir}/second:${await pathWithoutGitlabRunner()}`;
      await withJob(await settingsFile(), async (job) => {
        const prepare = await job.prepare();
        assertPrepared(prepare);
        assert.match(prepare.stderr, /Added gitlab-runner to the container/);
        assert.doesNotMatch(prepare.stderr, /cache and artifacts are disabled/);
        const run = await job.run(
          runnerScript("command -v gitlab-runner; gitlab-runner --version"),
          "upload_artifacts_on_success",
        );
        assert.equal(run.code, 0, run.stdout + run.stderr);
        assert.deepEqual(run.stdout.trim().split("\n"), [
          "/usr/local/bin/gitlab-runner",
          "stand-in gitlab-runner --version",
        ]);
      }, { env: { PATH: path } });
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "with no gitlab-runner anywhere the job log says once that cache and artifacts are disabled",
  ignore,
  async fn() {
    const env = { PATH: await pathWithoutGitlabRunner() };
    await withJob(await settingsFile(), async (job) => {
      const prepare = await job.prepare();
      assertPrepared(prepare);
      assert.equal(
        prepare.stderr.match(/^WARNING: .*cache and artifacts are disabled for this job$/gm)
          ?.length,
        1,
        prepare.stderr,
      );
      const run = await job.run(
        runnerScript("command -v gitlab-runner || echo none"),
        "step_script",
      );
      assert.equal(run.stdout.trim(), "none");
    }, { env });
  },
});
