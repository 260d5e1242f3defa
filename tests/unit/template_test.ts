import assert from "node:assert/strict";
import { type InstanceSpec, instanceSpec, type SpecInput } from "../../lib/instance_spec.ts";
import { parseSettings } from "../../lib/settings.ts";
import { copyOf, TEMPLATE, templateFor } from "../../lib/template.ts";

const FP = "3a571b1bc788866612add97632643d945ceef0ba9f4dc0e54acfe8d92ab67337";
const HOST = "runner-host";

function jobSpec(toml = "", input: Partial<Omit<SpecInput, "settings">> = {}): InstanceSpec {
  return instanceSpec({
    name: "runner-3-project-7-concurrent-1-job-42",
    fingerprint: FP,
    settings: parseSettings(toml, "t.toml"),
    labels: { "user.lxd-driver.managed": "true", "user.lxd-driver.job-id": "42" },
    requests: { cpu: undefined, memory: undefined },
    rootPool: undefined,
    cacheSource: undefined,
    ...input,
  });
}

async function nameFor(spec: InstanceSpec, host = HOST): Promise<string> {
  const template = await templateFor(spec, host);
  assert.ok(template);
  return template.name;
}

Deno.test("templateFor() names the template after what a copy takes from it, not after the job", async () => {
  const base = await nameFor(jobSpec());
  assert.match(base, /^lxd-driver-template-[0-9a-f]{16}$/);
  // The job's own parts: labels, limits and requests, the cache mount.
  assert.equal(
    await nameFor(jobSpec('[limits]\ncpu = 2\nmemory = "1GiB"\n', {
      labels: { "user.lxd-driver.job-id": "43" },
      requests: { cpu: 1, memory: undefined },
      cacheSource: "/var/cache/lxd-driver/7",
    })),
    base,
  );
  // What the copy would inherit, or where it would live.
  const others = await Promise.all([
    nameFor(jobSpec("", { fingerprint: FP.replace("3a", "4b") })),
    nameFor(jobSpec('[instance]\nprofiles = ["default", "ci"]\n')),
    nameFor(jobSpec('[instance]\nstorage_pool = "fast"\n')),
    nameFor(jobSpec('[limits]\ndisk = "5GiB"\n', { rootPool: "default" })),
    nameFor(jobSpec("[instance]\nnesting = true\n")),
    nameFor(jobSpec(), "another-host"),
  ]);
  assert.equal(new Set([base, ...others]).size, others.length + 1, others.join(" "));
});

Deno.test("templateFor() describes a container that is remapped without booting, and is kept", async () => {
  const spec = jobSpec(
    '[instance]\nnesting = true\nephemeral = true\n[limits]\ncpu = 2\ndisk = "5GiB"\n',
    {
      rootPool: "default",
      cacheSource: "/var/cache/lxd-driver/7",
    },
  );
  const template = await templateFor(spec, HOST);
  assert.ok(template);
  assert.deepEqual(template.source, spec.source);
  assert.deepEqual(template.profiles, spec.profiles);
  assert.equal(template.ephemeral, false, "an ephemeral template would vanish when it stops");
  assert.deepEqual(template.devices, { root: spec.devices.root });
  const { [`user.lxd-driver.created`]: created, ...config } = template.config;
  assert.ok(created && !Number.isNaN(Date.parse(created)));
  assert.deepEqual(config, {
    "security.nesting": "true",
    "user.lxd-driver.managed": "true",
    "user.lxd-driver.host": HOST,
    [TEMPLATE]: "making",
    "raw.lxc": "lxc.init.cmd=/bin/true",
  });
});

Deno.test("templateFor() has no template for containers LXD does not remap to the shared map", async () => {
  assert.equal(
    await templateFor(
      jobSpec("[instance]\nprivileged = true\nallow_privileged = true\n"),
      HOST,
    ),
    undefined,
  );
  const spec = jobSpec();
  for (const key of ["security.idmap.isolated", "raw.idmap", "raw.lxc"]) {
    assert.equal(
      await templateFor({ ...spec, config: { ...spec.config, [key]: "x" } }, HOST),
      undefined,
    );
  }
  assert.equal(await templateFor(copyOf(spec, "t"), HOST), undefined);
});

Deno.test("copyOf() copies the instance only and empties the keys a copy would inherit from the template", () => {
  const spec = jobSpec("[limits]\ncpu = 2\n");
  assert.deepEqual(copyOf(spec, "lxd-driver-template-0123456789abcdef"), {
    ...spec,
    source: { type: "copy", source: "lxd-driver-template-0123456789abcdef", instance_only: true },
    config: { ...spec.config, [TEMPLATE]: "", "raw.lxc": "" },
  });
});
