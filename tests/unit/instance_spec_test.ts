import assert from "node:assert/strict";
import { type InstanceSpec, instanceSpec, type SpecInput } from "../../lib/instance_spec.ts";
import { parseSettings } from "../../lib/settings.ts";
import { parseSize } from "../../lib/size.ts";

const FP = "3a571b1bc788866612add97632643d945ceef0ba9f4dc0e54acfe8d92ab67337";
const NAME = "runner-3-project-7-concurrent-1-job-42";
const LABELS = {
  "user.lxd-driver.managed": "true",
  "user.lxd-driver.job-id": "42",
};

/** The spec for settings `toml`, with `input` replacing parts of the default input. */
function specFor(toml: string, input: Partial<Omit<SpecInput, "settings">> = {}): InstanceSpec {
  return instanceSpec({
    name: NAME,
    fingerprint: FP,
    settings: parseSettings(toml, "t.toml"),
    labels: LABELS,
    requests: { cpu: undefined, memory: undefined },
    rootPool: undefined,
    cacheSource: undefined,
    ...input,
  });
}

/** The spec of default settings, with `config` added to the labels and `devices`. */
function expected(
  config: Record<string, string> = {},
  devices: Record<string, Record<string, string>> = {},
  rest: Partial<InstanceSpec> = {},
): InstanceSpec {
  return {
    name: NAME,
    type: "container",
    source: { type: "image", fingerprint: FP },
    profiles: ["default"],
    ephemeral: false,
    config: { ...LABELS, ...config },
    devices,
    ...rest,
  };
}

Deno.test("instanceSpec() creates a container from the fingerprint with only the labels by default", () => {
  assert.deepEqual(specFor(""), expected());
});

Deno.test("instanceSpec() passes profiles and ephemeral", () => {
  assert.deepEqual(
    specFor('[instance]\nprofiles = ["default", "ci"]\nephemeral = true\n'),
    expected({}, {}, { profiles: ["default", "ci"], ephemeral: true }),
  );
  assert.deepEqual(specFor("[instance]\nprofiles = []\n"), expected({}, {}, { profiles: [] }));
});

Deno.test("instanceSpec() sets limits.cpu, limits.memory and limits.processes from [limits]", () => {
  assert.deepEqual(
    specFor('[limits]\ncpu = 2\nmemory = "4GiB"\nprocesses = 1000\n'),
    expected({ "limits.cpu": "2", "limits.memory": "4GiB", "limits.processes": "1000" }),
  );
  // 0 means no limit: no key at all.
  assert.deepEqual(specFor("[limits]\ncpu = 0\nprocesses = 0\n"), expected());
});

Deno.test("instanceSpec() lets the job's requests override the default limits", () => {
  const toml = '[limits]\ncpu = 2\nmemory = "4GiB"\nmax_cpu = 8\nmax_memory = "16GiB"\n';
  assert.deepEqual(
    specFor(toml, { requests: { cpu: 6, memory: parseSize("12GiB") } }),
    expected({ "limits.cpu": "6", "limits.memory": "12GiB" }),
  );
  assert.deepEqual(
    specFor(toml, { requests: { cpu: 1, memory: undefined } }),
    expected({ "limits.cpu": "1", "limits.memory": "4GiB" }),
  );
  assert.deepEqual(
    specFor(toml, { requests: { cpu: undefined, memory: parseSize("1GiB") } }),
    expected({ "limits.cpu": "2", "limits.memory": "1GiB" }),
  );
  // Requests apply even when the runner sets no default limit.
  assert.deepEqual(
    specFor("", { requests: { cpu: 3, memory: parseSize("512MiB") } }),
    expected({ "limits.cpu": "3", "limits.memory": "512MiB" }),
  );
});

Deno.test("instanceSpec() sets security.nesting only with [instance] nesting", () => {
  assert.deepEqual(
    specFor("[instance]\nnesting = true\n"),
    expected({ "security.nesting": "true" }),
  );
  assert.deepEqual(specFor("[instance]\nnesting = false\n"), expected());
});

Deno.test("instanceSpec() sets security.privileged only with privileged and allow_privileged", () => {
  assert.deepEqual(
    specFor("[instance]\nprivileged = true\nallow_privileged = true\n"),
    expected({ "security.privileged": "true" }),
  );
  assert.deepEqual(specFor("[instance]\nallow_privileged = true\n"), expected());
  // Settings refuse privileged alone; a Settings value built by hand still gets no key.
  const settings = parseSettings("", "t.toml");
  const handMade = {
    ...settings,
    instance: { ...settings.instance, privileged: true, allowPrivileged: false },
  };
  const spec = instanceSpec({
    name: NAME,
    fingerprint: FP,
    settings: handMade,
    labels: LABELS,
    requests: { cpu: undefined, memory: undefined },
    rootPool: undefined,
    cacheSource: undefined,
  });
  assert.ok(!("security.privileged" in spec.config), JSON.stringify(spec.config));
  assert.deepEqual(spec, expected());
});

Deno.test("instanceSpec() adds a root disk in the storage pool", () => {
  assert.deepEqual(
    specFor('[instance]\nstorage_pool = "fast"\n'),
    expected({}, { root: { type: "disk", path: "/", pool: "fast" } }),
  );
});

Deno.test("instanceSpec() sizes the root disk in the storage pool or the profiles' pool", () => {
  assert.deepEqual(
    specFor('[instance]\nstorage_pool = "fast"\n[limits]\ndisk = "20GiB"\n'),
    expected({}, { root: { type: "disk", path: "/", pool: "fast", size: "20GiB" } }),
  );
  assert.deepEqual(
    specFor('[limits]\ndisk = "20GiB"\n', { rootPool: "default" }),
    expected({}, { root: { type: "disk", path: "/", pool: "default", size: "20GiB" } }),
  );
  // storage_pool wins over the profiles' pool.
  assert.deepEqual(
    specFor('[instance]\nstorage_pool = "fast"\n[limits]\ndisk = "20GiB"\n', {
      rootPool: "default",
    }),
    expected({}, { root: { type: "disk", path: "/", pool: "fast", size: "20GiB" } }),
  );
  // No pool known: LXD picks it.
  assert.deepEqual(
    specFor('[limits]\ndisk = "20GiB"\n'),
    expected({}, { root: { type: "disk", path: "/", size: "20GiB" } }),
  );
});

Deno.test("instanceSpec() ignores the profiles' pool when no disk size is set", () => {
  assert.deepEqual(specFor("", { rootPool: "default" }), expected());
});

Deno.test("instanceSpec() mounts the host cache directory at the cache dir", () => {
  assert.deepEqual(
    specFor("", { cacheSource: "/var/cache/lxd-driver/7" }),
    expected({}, {
      "lxd-driver-cache": { type: "disk", source: "/var/cache/lxd-driver/7", path: "/cache" },
    }),
  );
  assert.deepEqual(
    specFor('[job]\ncache_dir = "/srv/cache"\n', { cacheSource: "/c/7-slot-1" }),
    expected({}, {
      "lxd-driver-cache": { type: "disk", source: "/c/7-slot-1", path: "/srv/cache" },
    }),
  );
});

Deno.test("instanceSpec() combines every setting in one request", () => {
  const toml = `
[instance]
profiles = ["ci"]
storage_pool = "fast"
ephemeral = true
nesting = true
privileged = true
allow_privileged = true
[limits]
cpu = 2
memory = "2GiB"
processes = 500
disk = "10GB"
max_cpu = 4
`;
  assert.deepEqual(
    specFor(toml, {
      requests: { cpu: 4, memory: undefined },
      cacheSource: "/c/7",
    }),
    expected(
      {
        "limits.cpu": "4",
        "limits.memory": "2GiB",
        "limits.processes": "500",
        "security.nesting": "true",
        "security.privileged": "true",
      },
      {
        root: { type: "disk", path: "/", pool: "fast", size: "10GB" },
        "lxd-driver-cache": { type: "disk", source: "/c/7", path: "/cache" },
      },
      { profiles: ["ci"], ephemeral: true },
    ),
  );
});

Deno.test("instanceSpec() takes the labels as they are, without keeping a reference", () => {
  const labels: Record<string, string> = { ...LABELS };
  const spec = specFor("[limits]\ncpu = 1\n", { labels });
  labels["user.lxd-driver.job-id"] = "changed";
  assert.equal(spec.config["user.lxd-driver.job-id"], "42");
  assert.deepEqual(labels, { ...LABELS, "user.lxd-driver.job-id": "changed" });
});
