/**
 * End-to-end: templates (lib/template.ts). Where LXD remaps a new
 * container's files on its first start (LXD 5.0 here), the first job
 * launches a template that LXD remaps without booting it, and later jobs'
 * containers are copies of it that start without remapping; where nothing is
 * remapped (Incus here: idmapped mounts), the template is marked unneeded
 * and jobs keep coming from the image.
 */
import assert from "node:assert/strict";
import { Job } from "../runner.ts";
import {
  BOOKWORM,
  BUSYBOX,
  containersOf,
  DAEMON,
  expectedName,
  type HostContainer,
  lxc,
  lxdAvailable,
  removeHost,
  settingsFile,
  TEST_CLI,
  uniqueJobId,
  waitFor,
} from "../lxd.ts";

const ignore = !(await lxdAvailable());

/** The host's template once its launch has started and stopped it, and LXD is done with it. */
function launchedTemplate(host: string): () => Promise<HostContainer | undefined> {
  return async () => {
    const template = (await containersOf(host)).find((i) =>
      i.config["user.lxd-driver.template"] !== undefined && i.status === "Stopped" &&
      i.config["volatile.last_state.power"] !== undefined
    );
    if (!template) return undefined;
    // LXD lists it stopped a moment before its stop operation ends, and refuses changes until then;
    // an empty change tells.
    const probe = await lxc(
      "query",
      "--request",
      "PATCH",
      "--data",
      "{}",
      `/1.0/instances/${template.name}`,
    );
    return probe.code === 0 ? template : undefined;
  };
}

const NOT_REMAPPED = "[]";

for (const image of [BOOKWORM, BUSYBOX]) {
  Deno.test({
    name:
      `jobs after the first are copies of a remapped template where ${DAEMON} remaps new containers (${image})`,
    ignore,
    async fn() {
      const host = `tpl-${crypto.randomUUID().slice(0, 8)}`;
      // The busybox image has neither bash nor git.
      const busybox = image === BUSYBOX;
      const settings = await settingsFile(
        `template = true\n${busybox ? '[job]\nshell = "sh"\n' : ""}\n[lxd]\nhost_id = "${host}"\n`,
      );
      const text = (await Deno.readTextFile(settings)).replace(
        `default = "${BOOKWORM}"`,
        `default = "${image}"`,
      );
      await Deno.writeTextFile(settings, text);
      const env = { LXD_DRIVER_CONFIG: settings, LXD_DRIVER_DEBUG: "1" };
      const variables: Record<string, string> = busybox ? { GIT_STRATEGY: "none" } : {};
      try {
        const first = await Job.create({ jobId: uniqueJobId(), env, variables });
        const cold = await first.prepare();
        assert.equal(cold.code, 0, cold.stderr);
        assert.match(
          cold.stderr,
          /launching template lxd-driver-template-[0-9a-f]{16} in the background/,
        );
        // Whether this daemon remaps a new container: the first job's came from the image.
        const firstConfig = (await containersOf(host)).find((i) =>
          i.name === expectedName(first.options.jobId)
        )?.config;
        const remaps =
          (firstConfig?.["volatile.last_state.idmap"] ?? NOT_REMAPPED) !== NOT_REMAPPED;
        // LXD 5.0 (Debian 12's, as here) has no idmapped root disks: the copy path must be tested.
        if (TEST_CLI === "lxc") assert.ok(remaps, "LXD here remaps new containers");
        await first.cleanup();
        await first.remove();

        const template = await waitFor("the template's launch", launchedTemplate(host));
        assert.equal(template.config["raw.lxc"], "lxc.init.cmd=/bin/true");
        assert.equal(template.config["user.lxd-driver.template"], "making");
        assert.equal(template.config["user.lxd-driver.job-id"], undefined);

        const second = await Job.create({ jobId: uniqueJobId(), env, variables });
        const prepare = await second.prepare();
        assert.equal(prepare.code, 0, prepare.stderr);
        const name = expectedName(second.options.jobId);
        const [after] = (await containersOf(host)).filter((i) => i.name === template.name);
        assert.ok(after);
        assert.equal(
          after.config["raw.lxc"],
          undefined,
          `the template's init is gone once it is finished\n${prepare.stderr}`,
        );
        assert.equal(after.status, "Stopped", "the template never runs");
        if (remaps) {
          assert.equal(after.config["user.lxd-driver.template"], "ready");
          assert.match(
            prepare.stderr,
            new RegExp(`created ${name} as a copy of template ${template.name}`),
          );
        } else {
          assert.equal(after.config["user.lxd-driver.template"], "unneeded");
          assert.doesNotMatch(prepare.stderr, /as a copy of template/);
        }
        const config = (await containersOf(host)).find((i) => i.name === name)?.config ?? {};
        assert.equal(config["user.lxd-driver.template"], undefined, JSON.stringify(config));
        assert.equal(config["raw.lxc"], undefined, JSON.stringify(config));
        assert.equal(config["user.lxd-driver.job-id"], String(second.options.jobId));

        // The copy is a normal job container: booted by its own init, files owned by its root.
        const run = await second.run(
          'echo "pid1=$(cat /proc/1/comm) host=$(hostname) owner=$(stat -c %u:%g /etc/passwd)"\n' +
            "touch /root/written && echo written\n",
          "step_script",
        );
        assert.equal(run.code, 0, run.stderr);
        const init = busybox ? "init" : "systemd";
        assert.match(run.stdout, new RegExp(`pid1=${init} host=${name} owner=0:0\\nwritten`));
        assert.equal((await second.cleanup()).code, 0);
        await second.remove();

        // A third job leaves the template as it was (it is only read).
        const third = await Job.create({ jobId: uniqueJobId(), env, variables });
        assert.equal((await third.prepare()).code, 0);
        const [kept] = (await containersOf(host)).filter((i) => i.name === template.name);
        assert.equal(kept?.status, "Stopped");
        assert.equal(
          kept?.config["user.lxd-driver.template"],
          after.config["user.lxd-driver.template"],
        );
        await third.cleanup();
        await third.remove();
      } finally {
        await removeHost(host);
        await Deno.remove(settings);
      }
    },
  });
}

Deno.test({
  name: "[instance] template = false launches no template",
  ignore,
  async fn() {
    const host = `tpl-off-${crypto.randomUUID().slice(0, 8)}`;
    const settings = await settingsFile(`template = false\n[lxd]\nhost_id = "${host}"\n`);
    try {
      const job = await Job.create({
        jobId: uniqueJobId(),
        env: { LXD_DRIVER_CONFIG: settings, LXD_DRIVER_DEBUG: "1" },
      });
      const prepare = await job.prepare();
      assert.equal(prepare.code, 0, prepare.stderr);
      assert.doesNotMatch(prepare.stderr, /template/);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      assert.deepEqual((await containersOf(host)).map((i) => i.name), [
        expectedName(job.options.jobId),
      ]);
      await job.cleanup();
      await job.remove();
    } finally {
      await removeHost(host);
      await Deno.remove(settings);
    }
  },
});
