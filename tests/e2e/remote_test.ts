/**
 * End-to-end: the driver working through a remote over HTTPS, in a project
 * (`[lxd] remote` and `[lxd] project`), with either client: lxc reaches LXD
 * on 127.0.0.1:8444, incus reaches Incus on 127.0.0.1:8443 (the listener the
 * image server uses). scripts/setup-remote.sh adds each daemon to its own
 * client as the remote `lxd-driver-https` (trusted with the client's
 * certificate) and creates in each the project `lxd-driver-test`, which shares
 * the default project's images and profiles. With CI=true a missing remote
 * fails these tests instead of skipping them.
 */
import assert from "node:assert/strict";
import { Job, runnerScript } from "../runner.ts";
import {
  DAEMON,
  expectedName,
  lxc,
  lxdAvailable,
  settingsFile,
  TEST_CLI,
  uniqueJobId,
  waitFor,
} from "../lxd.ts";

const REMOTE = "lxd-driver-https";
const PROJECT = "lxd-driver-test";
/** Where each client's remote is: LXD's own listener, or Incus's (shared with the image server). */
const ADDRESS = TEST_CLI === "incus" ? "https://127.0.0.1:8443" : "https://127.0.0.1:8444";
const HOST_LABEL = "user.lxd-driver.host";
const POOL_LABEL = "user.lxd-driver.pool";

/** Matches the driver's debug line for a successful `<TEST_CLI> <call>`. */
function succeeded(call: string): RegExp {
  const literal = `${TEST_CLI} ${call}`.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`\\[lxd-driver debug\\] ${literal}: exit 0\\b`);
}

/** Whether the remote is there, over HTTPS and trusted, with the project. In CI their absence is an error. */
async function remoteAvailable(): Promise<boolean> {
  let problem: string | undefined;
  const remotes = await lxc("remote", "list", "--format", "json");
  const addr = remotes.code === 0
    ? (JSON.parse(remotes.stdout) as Record<string, { Addr?: string }>)[REMOTE]?.Addr
    : undefined;
  if (addr !== ADDRESS) {
    problem = `the ${TEST_CLI} remote ${REMOTE} is ${
      addr ? `at ${addr}, not ${ADDRESS}` : "missing"
    }`;
  } else {
    const server = await lxc("query", `${REMOTE}:/1.0`);
    const auth = server.code === 0 ? (JSON.parse(server.stdout) as { auth?: string }).auth : "";
    if (auth !== "trusted") {
      problem = `the remote ${REMOTE} does not trust this client (${
        server.code === 0 ? `auth: ${auth}` : server.stderr.trim()
      })`;
    } else if ((await lxc("query", `${REMOTE}:/1.0/projects/${PROJECT}`)).code !== 0) {
      problem = `${DAEMON} has no project ${PROJECT}`;
    }
  }
  if (problem === undefined) return true;
  if (Deno.env.get("CI") === "true") {
    throw new Error(
      `remote tests need ${DAEMON} over HTTPS: ${problem} (run scripts/setup-remote.sh)`,
    );
  }
  // deno-lint-ignore no-console -- the only way a local run learns why these tests were skipped
  console.warn(`skipping remote tests: ${problem} (run scripts/setup-remote.sh)`);
  return false;
}

const ignore = !(await lxdAvailable()) || !(await remoteAvailable());

/** Settings for jobs through the remote, in the project; `extra` adds `[lxd]` keys, then tables. */
function remoteSettings(lxdKeys = "", tables = ""): Promise<string> {
  return settingsFile(
    `\n[lxd]\nremote = "${REMOTE}"\nproject = "${PROJECT}"\n${lxdKeys}\n${tables}`,
  );
}

interface RemoteInstance {
  name: string;
  status: string;
  config: Record<string, string>;
}

/** The instance as the remote reports it in the project; undefined when it does not exist. */
async function remoteInstance(name: string): Promise<RemoteInstance | undefined> {
  const result = await lxc("query", `${REMOTE}:/1.0/instances/${name}?project=${PROJECT}`);
  if (result.code === 0) return JSON.parse(result.stdout) as RemoteInstance;
  assert.match(result.stderr, /not found/i, `query ${name}: ${result.stderr}`);
  return undefined;
}

/** Every instance of the project, through the remote. */
async function projectInstances(): Promise<RemoteInstance[]> {
  const result = await lxc(
    "query",
    `${REMOTE}:/1.0/instances?project=${PROJECT}&recursion=1`,
  );
  assert.equal(result.code, 0, result.stderr);
  return JSON.parse(result.stdout) as RemoteInstance[];
}

/** Deletes the project's containers labelled with runner host `host`. */
async function removeHost(host: string): Promise<void> {
  for (const instance of await projectInstances()) {
    if (instance.config[HOST_LABEL] === host) {
      await lxc("delete", "--force", "--project", PROJECT, `${REMOTE}:${instance.name}`);
    }
  }
}

Deno.test({
  name: "a whole job through the HTTPS remote runs in the project and is gone after cleanup",
  ignore,
  async fn() {
    const host = `remote-job-${crypto.randomUUID().slice(0, 6)}`;
    const settings = await remoteSettings(`host_id = "${host}"`);
    const jobId = uniqueJobId();
    const name = expectedName(jobId);
    const job = await Job.create({
      jobId,
      env: { LXD_DRIVER_CONFIG: settings, LXD_DRIVER_DEBUG: "1" },
      buildFailureExitCode: 42,
      systemFailureExitCode: 43,
    });
    try {
      const config = await job.config();
      assert.equal(config.code, 0, config.stderr);
      assert.equal(JSON.parse(config.stdout).driver.name, "lxd-driver");

      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.match(prepare.stderr, new RegExp(`Creating container ${name}\\b`));
      // Every call went through TEST_CLI to the remote, in the project.
      assert.match(prepare.stderr, succeeded(`start -- ${REMOTE}:${name}`));
      assert.match(
        prepare.stderr,
        succeeded(
          `query --wait --request POST --data <json> -- ${REMOTE}:/1.0/instances?project=${PROJECT}`,
        ),
      );

      const created = await remoteInstance(name);
      assert.ok(created, `${name} is in project ${PROJECT} on ${REMOTE}`);
      assert.equal(created.status, "Running");
      assert.equal(created.config["user.lxd-driver.job-id"], String(jobId));
      assert.equal(created.config[HOST_LABEL], host);
      const elsewhere = await lxc("query", `/1.0/instances/${name}`);
      assert.notEqual(elsewhere.code, 0, "not in the default project");

      const stages: [string, string, number, string | undefined][] = [
        ["prepare_script", `echo "Running on $(hostname)"`, 0, undefined],
        ["step_script", `echo built > /builds/artifact.txt; echo step done`, 0, undefined],
        ["step_script", `echo failing; exit 7`, 42, "7\n"],
        ["after_script", `cat /builds/artifact.txt`, 0, undefined],
      ];
      for (const [stage, body, code, exitCodeFile] of stages) {
        const result = await job.run(runnerScript(body), stage);
        assert.equal(result.code, code, `${stage} (${body}): ${result.stdout}${result.stderr}`);
        assert.equal(result.exitCodeFile, exitCodeFile, `${stage} (${body}): exit code file`);
        if (stage === "prepare_script") {
          assert.match(result.stdout, new RegExp(`Running on ${name}`));
        }
        if (body.includes("exit 7")) assert.match(result.stdout, /failing/);
        if (stage === "after_script") assert.match(result.stdout, /^built$/m);
      }

      const cleanup = await job.cleanup();
      assert.equal(cleanup.code, 0, cleanup.stderr);
      assert.match(cleanup.stderr, new RegExp(`Deleted container ${name}`));
      assert.equal(await remoteInstance(name), undefined, "gone after cleanup");
    } finally {
      await job.cleanup();
      await job.remove();
      await removeHost(host);
      await Deno.remove(settings);
    }
  },
});

Deno.test({
  name: "gc through the HTTPS remote deletes the project's old containers and nothing elsewhere",
  ignore,
  async fn() {
    const host = `remote-gc-${crypto.randomUUID().slice(0, 6)}`;
    const remote = await remoteSettings(`host_id = "${host}"`);
    // The same runner host, on the local daemon's default project.
    const local = await settingsFile(`\n[lxd]\nhost_id = "${host}"\n`);
    const jobId = uniqueJobId();
    const localJobId = uniqueJobId();
    const job = await Job.create({ jobId, env: { LXD_DRIVER_CONFIG: remote } });
    const localJob = await Job.create({ jobId: localJobId, env: { LXD_DRIVER_CONFIG: local } });
    try {
      const prepared = await job.prepare();
      assert.equal(prepared.code, 0, prepared.stderr);
      const localPrepared = await localJob.prepare();
      assert.equal(localPrepared.code, 0, localPrepared.stderr);
      assert.ok(await remoteInstance(expectedName(jobId)));

      const young = await job.exec(["gc", "--older-than", "1h"]);
      assert.equal(young.code, 0, young.stderr);
      assert.equal(young.stdout, "");
      assert.ok(await remoteInstance(expectedName(jobId)), "a young container survives");

      const gc = await job.exec(["gc", "--older-than", "0s"]);
      assert.equal(gc.code, 0, gc.stderr);
      assert.match(gc.stdout, new RegExp(`^deleted ${expectedName(jobId)} \\(created `, "m"));
      assert.ok(!gc.stdout.includes(expectedName(localJobId)), gc.stdout);
      assert.equal(await remoteInstance(expectedName(jobId)), undefined);
      const untouched = await lxc("query", `/1.0/instances/${expectedName(localJobId)}`);
      assert.equal(untouched.code, 0, "the default project's container survives the project's gc");
    } finally {
      await job.cleanup();
      await job.remove();
      await localJob.cleanup();
      await localJob.remove();
      await removeHost(host);
      await Deno.remove(remote);
      await Deno.remove(local);
    }
  },
});

Deno.test({
  name:
    "the warm pool through the HTTPS remote: the first job is cold, the second takes a warm one",
  ignore,
  async fn() {
    const host = `remote-pool-${crypto.randomUUID().slice(0, 6)}`;
    const settings = await remoteSettings(`host_id = "${host}"`, `[pool]\nsize = 1\n`);
    const off = await remoteSettings(`host_id = "${host}"`, `[pool]\nsize = 0\n`);
    const warmMembers = async () =>
      (await projectInstances()).filter((i) =>
        i.config?.[HOST_LABEL] === host && i.config?.[POOL_LABEL] === "warm"
      );
    try {
      const first = await Job.create({
        jobId: uniqueJobId(),
        env: { LXD_DRIVER_CONFIG: settings },
      });
      const cold = await first.prepare();
      assert.equal(cold.code, 0, cold.stderr);
      assert.match(cold.stderr, /No warm container in the pool/);
      assert.match(cold.stderr, /Creating container /);
      assert.equal((await first.cleanup()).code, 0);
      await first.remove();

      // The refill was launched through the remote, into the project.
      const [warm] = await waitFor("a warm container in the project", async () => {
        const running = (await warmMembers()).filter((i) => i.status === "Running");
        return running.length >= 1 ? running : undefined;
      });
      assert.ok(warm);

      const second = await Job.create({
        jobId: uniqueJobId(),
        env: { LXD_DRIVER_CONFIG: settings },
      });
      const prepare = await second.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.match(prepare.stderr, new RegExp(`Took warm container ${warm.name} from the pool`));
      assert.equal((await remoteInstance(warm.name))?.config[POOL_LABEL], "claimed");
      const run = await second.run(runnerScript("hostname"), "step_script");
      assert.equal(run.code, 0, run.stderr);
      assert.equal(run.stdout.trim(), warm.name);
      const cleanup = await second.cleanup();
      assert.equal(cleanup.code, 0, cleanup.stderr);
      assert.equal(await remoteInstance(warm.name), undefined, "the claimed container is gone");
      await second.remove();

      // Turned off: gc through the remote removes the refill the second job started.
      await waitFor("the pool refilled", async () => {
        const running = (await warmMembers()).filter((i) => i.status === "Running");
        return running.length >= 1 ? running : undefined;
      });
      const gc = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: off } });
      const result = await gc.exec(["gc", "--older-than", "1h"]);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, /beyond \[pool\] size 0/);
      assert.deepEqual(await warmMembers(), []);
      await gc.remove();
    } finally {
      await removeHost(host);
      await Deno.remove(settings);
      await Deno.remove(off);
    }
  },
});
