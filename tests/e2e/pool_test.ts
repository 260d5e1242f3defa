/** End-to-end: the warm pool and runner-host identities, against real LXD. */
import assert from "node:assert/strict";
import { Job, runnerScript } from "../runner.ts";
import { poolStateDir } from "../../lib/pool_lock.ts";
import {
  BOOKWORM,
  BUSYBOX,
  exists,
  lxc,
  lxdAvailable,
  removeHost,
  settingsFile,
  uniqueJobId,
  waitFor,
} from "../lxd.ts";

const ignore = !(await lxdAvailable());
// A run stopped in the middle of the unusable-pool test below leaves the host's state directory open
// to others, which the driver rightly refuses; put it back first.
await Deno.chmod(poolStateDir(), 0o700).catch(() => {});

interface PoolMember {
  name: string;
  status: string;
  host: string;
  pool: string;
}

async function poolMembers(host: string): Promise<PoolMember[]> {
  const list = await lxc("list", "--format", "json");
  const all = JSON.parse(list.stdout) as {
    name: string;
    status: string;
    config: Record<string, string>;
  }[];
  return all.filter((i) =>
    i.config?.["user.lxd-driver.host"] === host && i.config?.["user.lxd-driver.pool"] === "warm"
  )
    .map((i) => ({
      name: i.name,
      status: i.status,
      host,
      pool: i.config["user.lxd-driver.pool"]!,
    }));
}

const warmCount = (host: string, count: number) => () =>
  poolMembers(host).then((m) =>
    m.filter((x) => x.status === "Running").length >= count ? m : undefined
  );

/** Points a new image alias at the image that `target` (an alias) names. */
async function aliasTo(alias: string, target: string): Promise<void> {
  const info = await lxc("query", `/1.0/images/aliases/${encodeURIComponent(target)}`);
  const fingerprint = (JSON.parse(info.stdout) as { target: string }).target;
  const created = await lxc("image", "alias", "create", alias, fingerprint);
  assert.equal(created.code, 0, created.stderr);
}

async function poolSettings(host: string, size: number, extra = ""): Promise<string> {
  return await settingsFile(`\n[lxd]\nhost_id = "${host}"\n\n[pool]\nsize = ${size}\n${extra}`);
}

Deno.test({
  name:
    "prepare takes a warm container, later stages find it, and the pool refills without delaying the job",
  ignore,
  async fn() {
    const host = `pool-a-${crypto.randomUUID().slice(0, 6)}`;
    const settings = await poolSettings(host, 2);
    try {
      // The first job finds the pool empty: it gets a container of its own and the pool fills behind it.
      const first = await Job.create({
        jobId: uniqueJobId(),
        env: { LXD_DRIVER_CONFIG: settings },
      });
      const cold = await first.prepare();
      assert.equal(cold.code, 0, cold.stderr);
      assert.match(cold.stderr, /No warm container in the pool/);
      await first.cleanup();
      await first.remove();
      const warm = await waitFor("two warm containers", warmCount(host, 2));

      const job = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: settings } });
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      const claimed = prepare.stderr.match(/Took warm container (\S+) from the pool/)?.[1];
      assert.ok(claimed && warm.some((m) => m.name === claimed), prepare.stderr);
      // The refill was started, not waited for: its container is not running yet.
      const right_after = await poolMembers(host);
      assert.ok(
        right_after.filter((m) => m.status === "Running").length < 2,
        JSON.stringify(right_after),
      );

      const run = await job.run(runnerScript("hostname"), "step_script");
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), claimed);
      const cleanup = await job.cleanup();
      assert.equal(cleanup.code, 0, cleanup.stderr);
      assert.equal(await exists(claimed), false);
      await assert.rejects(Deno.stat(`${job.dir}/lxd-driver-container`), Deno.errors.NotFound);
      await job.remove();
      await waitFor("the pool back at two", warmCount(host, 2));
    } finally {
      await removeHost(host);
    }
  },
});

Deno.test({
  name: "two prepares at once never get the same warm container",
  ignore,
  async fn() {
    const host = `pool-b-${crypto.randomUUID().slice(0, 6)}`;
    const settings = await poolSettings(host, 3);
    try {
      const seed = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: settings } });
      assert.equal((await seed.prepare()).code, 0);
      await seed.cleanup();
      await seed.remove();
      await waitFor("three warm containers", warmCount(host, 3));

      const jobs = await Promise.all(
        [1, 2, 3].map(() =>
          Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: settings } })
        ),
      );
      const results = await Promise.all(jobs.map((job) => job.prepare()));
      const names = results.map((r) => {
        assert.equal(r.code, 0, r.stderr);
        return r.stderr.match(/Took warm container (\S+)/)?.[1] ??
          r.stderr.match(/Creating container (\S+)/)?.[1];
      });
      assert.equal(new Set(names).size, 3, names.join(", "));
      // The three refills were counted together: the pool comes back to three, not more.
      await waitFor("three warm containers again", warmCount(host, 3));
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      const members = await poolMembers(host);
      assert.equal(members.length, 3, JSON.stringify(members));
      for (const job of jobs) {
        await job.cleanup();
        await job.remove();
      }
    } finally {
      await removeHost(host);
    }
  },
});

Deno.test({
  name:
    "warm containers of an image the default alias no longer names are replaced, and gc trims a pool that was turned off",
  ignore,
  async fn() {
    const host = `pool-c-${crypto.randomUUID().slice(0, 6)}`;
    const aliases: string[] = [];
    try {
      // The default image is an alias the administrator moves to a new image.
      const alias = `lxd-driver-test/pool-${crypto.randomUUID().slice(0, 6)}`;
      await aliasTo(alias, BOOKWORM);
      aliases.push(alias);
      const settings = await poolSettings(host, 1, `\n[job]\nshell = "sh"\n`).then(async (path) => {
        const text = await Deno.readTextFile(path);
        await Deno.writeTextFile(path, text.replace(/default = ".*"/, `default = "${alias}"`));
        return path;
      });
      const seed = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: settings } });
      assert.equal((await seed.prepare()).code, 0);
      await seed.cleanup();
      const [old] = await waitFor("one warm bookworm container", warmCount(host, 1));

      // The alias now points at another image: the old warm container is not used, and goes.
      await lxc("image", "alias", "delete", alias);
      await aliasTo(alias, BUSYBOX);
      const job = await Job.create({
        jobId: uniqueJobId(),
        env: { LXD_DRIVER_CONFIG: settings },
        variables: { GIT_STRATEGY: "none" },
      });
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.doesNotMatch(prepare.stderr, new RegExp(`Took warm container ${old!.name}`));
      await waitFor(
        "the outdated container gone",
        async () => (await exists(old!.name)) ? undefined : true,
      );
      await job.cleanup();
      await job.remove();
      await seed.remove();
      await waitFor("one warm busybox container", warmCount(host, 1));

      // Turned off: gc removes what the pool left behind, even when young.
      const off = await poolSettings(host, 0);
      const gc = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: off } });
      const result = await gc.exec(["gc", "--older-than", "1h"]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /beyond \[pool\] size 0/);
      assert.deepEqual(await poolMembers(host), []);
      await gc.remove();
    } finally {
      await removeHost(host);
      for (const alias of aliases) await lxc("image", "alias", "delete", alias);
    }
  },
});

Deno.test({
  name: "runner hosts sharing one LXD only ever touch their own containers",
  ignore,
  async fn() {
    const hostA = `host-a-${crypto.randomUUID().slice(0, 6)}`;
    const hostB = `host-b-${crypto.randomUUID().slice(0, 6)}`;
    try {
      const a = await poolSettings(hostA, 1);
      const b = await poolSettings(hostB, 1);
      const seed = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: a } });
      assert.equal((await seed.prepare()).code, 0);
      const [warmA] = await waitFor("host A's warm container", warmCount(hostA, 1));

      // B's prepare does not take A's warm container; B's gc does not delete A's containers.
      const jobB = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: b } });
      const prepare = await jobB.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.match(prepare.stderr, /No warm container in the pool/);
      const gcB = await jobB.exec(["gc", "--older-than", "0s"]);
      assert.equal(gcB.code, 0, gcB.stderr);
      assert.equal(await exists(warmA!.name), true);
      assert.equal(await exists(`runner-1-project-1-concurrent-0-job-${seed.options.jobId}`), true);
      assert.doesNotMatch(gcB.stdout, new RegExp(hostA));
      await seed.cleanup();
      await seed.remove();
      await jobB.cleanup();
      await jobB.remove();
    } finally {
      await removeHost(hostA);
      await removeHost(hostB);
    }
  },
});

Deno.test({
  name: "a pool that cannot be used is a warning, and the job gets a container of its own",
  ignore,
  async fn() {
    const host = `pool-d-${crypto.randomUUID().slice(0, 6)}`;
    // A state directory others could write to is refused (its lock could be held by anyone).
    const dir = poolStateDir();
    await Deno.mkdir(dir, { mode: 0o700 }).catch(() => {});
    await Deno.chmod(dir, 0o777);
    try {
      const job = await Job.create({
        jobId: uniqueJobId(),
        env: { LXD_DRIVER_CONFIG: await poolSettings(host, 1) },
      });
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.match(
        prepare.stderr,
        /WARNING: could not use the warm pool: \S+ is not a directory private to this user/,
      );
      assert.match(prepare.stderr, /Creating container runner-/);
      await job.cleanup();
      await job.remove();
    } finally {
      await Deno.chmod(dir, 0o700);
      await removeHost(host);
    }
  },
});
