/**
 * Contract: the `lxc` calls prepare makes, in order and argument by argument
 * (the creation request's JSON body parsed and compared as an object), and
 * what it logs and throws for each answer.
 */
import assert from "node:assert/strict";
import { BuildFailure, SystemFailure } from "../../lib/errors.ts";
import type { InstanceSpec } from "../../lib/instance_spec.ts";
import { LxdError } from "../../lib/lxd.ts";
import { prepare } from "../../stages/prepare.ts";
import { templateFor } from "../../lib/template.ts";
import { poolStateDir } from "../../lib/pool_lock.ts";
import {
  type Harness,
  harness,
  type HarnessOptions,
  IMAGE_NOT_FOUND,
  INSTANCE_NOT_FOUND,
  jobEnv,
  LXD_DOWN,
  NAME,
  OK,
  payloadFile,
  type Reply,
  SECRET,
} from "./fake_lxc.ts";

// --- the image ------------------------------------------------------------------

const FP = "3a571b1bc788866612add97632643d945ceef0ba9f4dc0e54acfe8d92ab67337";
/** The local alias most tests use as the default image. */
const IMAGE = "lxd-driver-test/bookworm";
/** Settings whose default image is the local alias IMAGE; more sections may follow. */
const LOCAL_DEFAULT = `[image]\ndefault = "${IMAGE}"\n`;

/** ensureLocalImage's call for a local alias: one `image info`. */
function localLookup(alias = IMAGE): string[][] {
  return [["image", "info", "--", alias]];
}

const IMAGE_JSON: Reply = {
  stdout: JSON.stringify({
    fingerprint: FP,
    properties: { description: "Debian bookworm", os: "debian" },
    aliases: [{ name: IMAGE }],
  }),
};

/** LXD's answer for a local alias that exists. */
function found(alias = IMAGE): Reply[] {
  return [{
    stdout: `Fingerprint: ${FP}\nSize: 90.12MB\nProperties:\n    description: Debian bookworm\n` +
      `    os: debian\nAliases:\n    - ${alias}\n`,
  }];
}

const ALIAS_NOT_FOUND: Reply = { code: 1, stderr: "Error: Image alias not found\n" };

const USING_IMAGE = `Using image ${IMAGE}, fingerprint ${FP.slice(0, 12)}: Debian bookworm`;

// --- the calls after the image ------------------------------------------------------

const DELETE = ["delete", "--force", "--", NAME];
/** The creation request, its JSON body replaced by "<spec>" (see run()). */
const CREATE = ["query", "--wait", "--request", "POST", "--data", "<spec>", "--", "/1.0/instances"];
const INSTANCE_GET = ["query", "--wait", "--request", "GET", "--", `/1.0/instances/${NAME}`];
const START = ["start", "--", NAME];

/** The readiness exec, its script replaced by "<ready>" (see run()). */
function ready(shell = "bash", builds = "/builds", cache = "/cache"): string[] {
  return [
    "exec",
    "--force-noninteractive",
    "--",
    NAME,
    "sh",
    "-c",
    "<ready>",
    "lxd-driver-ready",
    builds,
    cache,
    shell,
    "git",
    "gitlab-runner",
    "update-ca-certificates",
  ];
}

/** A bookworm-like image with the runner's helper installed. */
const PROBE_ALL: Reply = { stdout: "has bash\nhas git\nhas gitlab-runner\nlxd-driver: ready\n" };
/** A bookworm-like image without gitlab-runner. */
const PROBE_NO_RUNNER: Reply = { stdout: "has bash\nhas git\nlxd-driver: ready\n" };

/** The calls of a prepare that goes well, from a local alias, without extras. */
function happyCalls(shell = "bash"): string[][] {
  return [...localLookup(), CREATE, START, ready(shell)];
}

/** The replies to happyCalls. */
function happyReplies(probe: Reply = PROBE_ALL): Reply[] {
  return [...found(), OK, OK, probe];
}

const PUSH_RUNNER_TO = `${NAME}/usr/local/bin/gitlab-runner`;
const CA_IN_CONTAINER = "/usr/local/share/ca-certificates/lxd-driver-ca.crt";

function pushRunner(hostPath: string): string[] {
  return ["file", "push", "--create-dirs", "--mode", "0755", "--", hostPath, PUSH_RUNNER_TO];
}

function pushCa(hostPath: string): string[] {
  return [
    "file",
    "push",
    "--create-dirs",
    "--mode",
    "0644",
    "--",
    hostPath,
    `${NAME}${CA_IN_CONTAINER}`,
  ];
}

/** The CA exec, its script replaced by "<ca>" (see run()). */
const CA_EXEC = [
  "exec",
  "--force-noninteractive",
  "--",
  NAME,
  "sh",
  "-c",
  "<ca>",
  "lxd-driver-ca",
  CA_IN_CONTAINER,
];

const NO_RUNNER_WARNING =
  "WARNING: the image has no gitlab-runner and none is configured ([helper] gitlab_runner): " +
  "cache and artifacts are disabled for this job";

// --- running prepare -----------------------------------------------------------------

interface Run {
  /** The calls, with the creation body, readiness script and CA script replaced by placeholders. */
  readonly calls: string[][];
  /** The parsed creation body, if prepare sent one. */
  readonly spec: InstanceSpec | undefined;
  /** The value of the created label, checked to be the time of the run. */
  readonly created: string | undefined;
  readonly error: unknown;
}

/**
 * Runs prepare and records what it did; checks the parts replaced by
 * placeholders. Nothing may be started detached unless `detached` is set.
 */
async function run(h: Harness, detached = false): Promise<Run> {
  const from = Date.now();
  let error: unknown;
  try {
    await prepare(h.ctx, h.lxd);
  } catch (e) {
    error = e;
  }
  const to = Date.now();
  let spec: InstanceSpec | undefined;
  const calls = h.lxc.calls.map((argv) => {
    const copy = [...argv];
    const data = copy.indexOf("--data");
    if (copy[0] === "query" && data >= 0 && /\/1\.0\/instances(\?|$)/.test(copy.at(-1)!)) {
      const body = JSON.parse(copy[data + 1]!) as InstanceSpec;
      // A creation repeated after deleting a leftover must send the same request.
      if (spec?.source.type === body.source.type) {
        assert.deepEqual(body, spec, "every creation request alike");
      }
      spec = body;
      copy[data + 1] = "<spec>";
    }
    const exec = copy.indexOf("exec");
    if (exec >= 0 && copy[exec + 4] === "sh" && copy[exec + 5] === "-c") {
      const at = exec + 6;
      const script = copy[at]!;
      if (copy[at + 1] === "lxd-driver-ready") {
        assert.ok(script.includes('mkdir -p -- "$1" "$2"'), script);
        assert.ok(script.includes("systemctl is-system-running"), script);
        assert.ok(script.includes('echo "has $tool"'), script);
        copy[at] = "<ready>";
      } else if (copy[at + 1] === "lxd-driver-ca") {
        assert.ok(script.includes("update-ca-certificates"), script);
        assert.ok(script.includes('cat "$1" >> /etc/ssl/certs/ca-certificates.crt'), script);
        copy[at] = "<ca>";
      }
    }
    return copy;
  });
  let created: string | undefined;
  if (spec) {
    created = spec.config["user.lxd-driver.created"];
    assert.ok(created, JSON.stringify(spec.config));
    assert.match(created, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const time = Date.parse(created);
    assert.ok(time >= from && time <= to, `${created} not within the run`);
  }
  assert.deepEqual(h.lxc.otherCliCalls, []);
  // Only a claim from the warm pool, or a template's launch, starts anything detached.
  if (!detached) assert.deepEqual(h.lxc.detachedCalls, []);
  return { calls, spec, created, error };
}

/** Runs prepare, which must succeed. */
async function succeeded(h: Harness, detached = false): Promise<Run> {
  const result = await run(h, detached);
  if (result.error !== undefined) throw result.error;
  return result;
}

/** Runs prepare, which must fail with an instance of `kind`. */
async function failed<T>(
  h: Harness,
  kind: abstract new (...args: never[]) => T,
): Promise<Run & { error: T }> {
  const result = await run(h);
  assert.ok(
    result.error instanceof kind,
    `expected a ${kind.name}, got ${result.error}\n${h.lines.join("\n")}`,
  );
  return result as Run & { error: T };
}

interface SpecParts {
  readonly config?: Record<string, string>;
  readonly devices?: Record<string, Record<string, string>>;
  readonly profiles?: string[];
  readonly ephemeral?: boolean;
  /** The host label: `[lxd] host_id`, by default the host name. */
  readonly host?: string;
}

/** The creation body for job 42 of project 7 on runner 3, labelled `created`. */
function expectedSpec(created: string | undefined, parts: SpecParts = {}): InstanceSpec {
  assert.ok(created);
  return {
    name: NAME,
    type: "container",
    source: { type: "image", fingerprint: FP },
    profiles: parts.profiles ?? ["default"],
    ephemeral: parts.ephemeral ?? false,
    config: {
      "user.lxd-driver.managed": "true",
      "user.lxd-driver.host": parts.host ?? Deno.hostname(),
      "user.lxd-driver.runner-id": "3",
      "user.lxd-driver.project-id": "7",
      "user.lxd-driver.job-id": "42",
      "user.lxd-driver.created": created,
      ...parts.config,
    },
    devices: parts.devices ?? {},
  };
}

/**
 * A harness for job 42 with `env` added to its environment. Templates
 * (`[instance] template`, on by default) are off unless `template` is set:
 * their calls are tested on their own, under "templates" below.
 */
async function jobHarness(
  options: Omit<HarnessOptions, "env"> & { env?: Record<string, string>; template?: boolean },
): Promise<Harness & AsyncDisposable> {
  const payload = await payloadFile();
  const h = harness({ ...options, env: jobEnv(payload, options.env ?? {}) });
  const { settings } = h.ctx;
  const ctx = {
    ...h.ctx,
    settings: {
      ...settings,
      instance: { ...settings.instance, template: options.template ?? false },
    },
  };
  return { ...h, ctx, [Symbol.asyncDispose]: () => payload[Symbol.asyncDispose]() };
}

/** A temporary directory, removed when disposed. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "lxd-driver-prepare-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

function assertReadyLine(line: string | undefined): void {
  assert.match(line ?? "", new RegExp(`^Container ${NAME} is ready \\(\\d+(ms|\\.\\ds)\\)$`));
}

// --- the happy paths --------------------------------------------------------------------

Deno.test("prepare() creates the container from the image's fingerprint, starts it and waits until ready", async () => {
  await using h = await jobHarness({ settings: LOCAL_DEFAULT, script: happyReplies() });
  const { calls, spec, created } = await succeeded(h);

  assert.deepEqual(calls, happyCalls());
  assert.deepEqual(spec, expectedSpec(created));
  assert.equal(h.lines.length, 3, h.lines.join("\n"));
  assert.equal(h.lines[0], USING_IMAGE);
  assert.equal(h.lines[1], `Creating container ${NAME}`);
  assertReadyLine(h.lines[2]);
  assert.deepEqual(h.written, []);
});

Deno.test("prepare() resolves the default remote image before creating the container", async () => {
  await using h = await jobHarness({
    script: [
      { stdout: `Fingerprint: ${FP}\nSize: 90.12MB\nProperties:\n    description: Debian 12\n` },
      IMAGE_JSON,
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls, spec, created } = await succeeded(h);

  assert.deepEqual(calls, [
    ["image", "info", "--", "images:debian/12"],
    ["query", "--", `/1.0/images/${FP}`],
    CREATE,
    START,
    ready(),
  ]);
  assert.deepEqual(spec, expectedSpec(created));
  assert.equal(
    h.lines[0],
    `Using image images:debian/12, fingerprint ${FP.slice(0, 12)}: Debian bookworm`,
  );
});

Deno.test("prepare() passes profiles, storage pool, ephemeral, the job's image, dirs and shell", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_CI_JOB_IMAGE: "lxd-driver-test/trixie" },
    settings: `
[image]
default = "${IMAGE}"
allowed = ["lxd-driver-test/*"]
[instance]
profiles = ["default", "ci"]
storage_pool = "fast"
ephemeral = true
[job]
shell = "sh"
builds_dir = "/srv/builds"
cache_dir = "/srv/cache"
`,
    script: [
      ...found("lxd-driver-test/trixie"),
      OK,
      OK,
      { stdout: "has sh\nhas git\nhas gitlab-runner\nlxd-driver: ready\n" },
    ],
  });
  const { calls, spec, created } = await succeeded(h);

  assert.deepEqual(calls, [
    ...localLookup("lxd-driver-test/trixie"),
    CREATE,
    START,
    ready("sh", "/srv/builds", "/srv/cache"),
  ]);
  assert.deepEqual(
    spec,
    expectedSpec(created, {
      profiles: ["default", "ci"],
      ephemeral: true,
      devices: { root: { type: "disk", path: "/", pool: "fast" } },
    }),
  );
  assert.equal(
    h.lines[0],
    `Using image lxd-driver-test/trixie, fingerprint ${FP.slice(0, 12)}: Debian bookworm`,
  );
});

Deno.test("prepare() creates the container without profiles when none is configured", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nprofiles = []\n`,
    script: happyReplies(),
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.deepEqual(spec, expectedSpec(created, { profiles: [] }));
});

Deno.test("prepare() labels the container with [lxd] host_id", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[lxd]\nhost_id = "runner-host-2"\n`,
    script: happyReplies(),
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.deepEqual(spec, expectedSpec(created, { host: "runner-host-2" }));
});

Deno.test("prepare() maps the job's image through [image.aliases], logging both names", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_CI_JOB_IMAGE: "debian:12" },
    settings: `
[image]
default = "${IMAGE}"
allowed = ["debian:*"]
[image.aliases]
"debian:12" = "${IMAGE}"
`,
    script: happyReplies(),
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.deepEqual(spec, expectedSpec(created));
  assert.equal(
    h.lines[0],
    `Using image debian:12 (${IMAGE}), fingerprint ${FP.slice(0, 12)}: Debian bookworm`,
  );
});

Deno.test("prepare() maps the default image through [image.aliases] too", async () => {
  await using h = await jobHarness({
    settings: `[image]\ndefault = "bookworm"\n[image.aliases]\nbookworm = "${IMAGE}"\n`,
    script: happyReplies(),
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.equal(
    h.lines[0],
    `Using image bookworm (${IMAGE}), fingerprint ${FP.slice(0, 12)}: Debian bookworm`,
  );
});

Deno.test("prepare() sets the [limits] in the container's config", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[limits]\ncpu = 2\nmemory = "4GiB"\nprocesses = 1000\n`,
    script: happyReplies(),
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.deepEqual(
    spec,
    expectedSpec(created, {
      config: { "limits.cpu": "2", "limits.memory": "4GiB", "limits.processes": "1000" },
    }),
  );
});

Deno.test("prepare() sets the job's LXD_CPU and LXD_MEMORY requests over the defaults", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_LXD_CPU: "4", CUSTOM_ENV_LXD_MEMORY: "8GiB" },
    settings: `${LOCAL_DEFAULT}[limits]
cpu = 2
memory = "2GiB"
processes = 500
max_cpu = 8
max_memory = "16GiB"
`,
    script: happyReplies(),
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.deepEqual(
    spec,
    expectedSpec(created, {
      config: { "limits.cpu": "4", "limits.memory": "8GiB", "limits.processes": "500" },
    }),
  );
});

Deno.test("prepare() allows nesting with [instance] nesting", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nnesting = true\n`,
    script: happyReplies(),
  });
  const { spec, created } = await succeeded(h);
  assert.deepEqual(spec, expectedSpec(created, { config: { "security.nesting": "true" } }));
});

Deno.test("prepare() creates a privileged container with privileged and allow_privileged", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nprivileged = true\nallow_privileged = true\n`,
    script: happyReplies(),
  });
  const { spec, created } = await succeeded(h);
  assert.deepEqual(spec, expectedSpec(created, { config: { "security.privileged": "true" } }));

  await using unprivileged = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nallow_privileged = true\n`,
    script: happyReplies(),
  });
  const other = await succeeded(unprivileged);
  assert.deepEqual(other.spec, expectedSpec(other.created));
});

Deno.test("prepare() sizes the root disk in the configured storage pool", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nstorage_pool = "fast"\n[limits]\ndisk = "20GiB"\n`,
    script: happyReplies(),
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, happyCalls(), "no profile lookup");
  assert.deepEqual(
    spec,
    expectedSpec(created, {
      devices: { root: { type: "disk", path: "/", pool: "fast", size: "20GiB" } },
    }),
  );
});

function profile(name: string, devices: Record<string, Record<string, string>>): Reply {
  return { stdout: JSON.stringify({ name, config: {}, devices }) };
}

const NIC = { type: "nic", network: "lxdbr0", name: "eth0" };

Deno.test("prepare() sizes the root disk in the pool of the profiles' root disk", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[limits]\ndisk = "20GiB"\n`,
    script: [
      ...found(),
      profile("default", { eth0: NIC, root: { type: "disk", path: "/", pool: "default" } }),
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, [
    ...localLookup(),
    ["query", "--wait", "--request", "GET", "--", "/1.0/profiles/default"],
    CREATE,
    START,
    ready(),
  ]);
  assert.deepEqual(
    spec,
    expectedSpec(created, {
      devices: { root: { type: "disk", path: "/", pool: "default", size: "20GiB" } },
    }),
  );
});

Deno.test("prepare() takes the root disk pool of the last profile that has one", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nprofiles = ["default", "ssd", "net"]\n` +
      `[limits]\ndisk = "10GB"\n`,
    script: [
      ...found(),
      profile("default", { eth0: NIC, root: { type: "disk", path: "/", pool: "default" } }),
      profile("ssd", { disk: { type: "disk", path: "/", pool: "ssd" } }),
      profile("net", { eth0: NIC, data: { type: "disk", path: "/data", pool: "big" } }),
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, [
    ...localLookup(),
    ["query", "--wait", "--request", "GET", "--", "/1.0/profiles/default"],
    ["query", "--wait", "--request", "GET", "--", "/1.0/profiles/ssd"],
    ["query", "--wait", "--request", "GET", "--", "/1.0/profiles/net"],
    CREATE,
    START,
    ready(),
  ]);
  assert.deepEqual(
    spec,
    expectedSpec(created, {
      profiles: ["default", "ssd", "net"],
      devices: { root: { type: "disk", path: "/", pool: "ssd", size: "10GB" } },
    }),
  );
});

Deno.test("prepare() leaves the pool to LXD when no profile has a root disk", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[limits]\ndisk = "20GiB"\n`,
    script: [...found(), profile("default", { eth0: NIC }), OK, OK, PROBE_ALL],
  });
  const { spec, created } = await succeeded(h);
  assert.deepEqual(
    spec,
    expectedSpec(created, { devices: { root: { type: "disk", path: "/", size: "20GiB" } } }),
  );
});

/** LXD's idmap for an unprivileged container whose root is host uid and gid 1000000. */
const IDMAP = JSON.stringify([
  { Isuid: true, Isgid: false, Hostid: 1000000, Nsid: 0, Maprange: 1000000000 },
  { Isuid: false, Isgid: true, Hostid: 1000000, Nsid: 0, Maprange: 1000000000 },
]);

const INSTANCE_JSON: Reply = {
  stdout: JSON.stringify({
    name: NAME,
    status: "Stopped",
    config: { "volatile.idmap.next": IDMAP, "user.lxd-driver.managed": "true" },
    devices: {},
  }),
};

Deno.test({
  name: "prepare() mounts the project's host cache directory, owned by the container's root",
  // Giving the directory to the container's root needs the host's root.
  ignore: Deno.uid() !== 0,
  fn: async () => {
    for (const perSlot of [false, true]) {
      await using dir = await tempDir();
      await using h = await jobHarness({
        settings:
          `${LOCAL_DEFAULT}[cache]\nhost_dir = "${dir.path}/cache/"\nper_slot = ${perSlot}\n`,
        script: [...found(), OK, INSTANCE_JSON, OK, PROBE_ALL],
      });
      const { calls, spec, created } = await succeeded(h);
      const source = `${dir.path}/cache/${perSlot ? "7-slot-1" : "7"}`;

      assert.deepEqual(calls, [...localLookup(), CREATE, INSTANCE_GET, START, ready()]);
      assert.deepEqual(
        spec,
        expectedSpec(created, {
          devices: { "lxd-driver-cache": { type: "disk", source, path: "/cache" } },
        }),
      );
      const info = await Deno.lstat(source);
      assert.ok(info.isDirectory);
      assert.deepEqual([info.uid, info.gid], [1000000, 1000000]);
      assert.equal((await Deno.lstat(`${dir.path}/cache`)).uid, 0, "host_dir stays root's");
    }
  },
});

Deno.test("prepare() refuses a cache directory that is a symlink, before creating anything", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/cache`);
  await Deno.symlink("/etc", `${dir.path}/cache/7`);
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[cache]\nhost_dir = "${dir.path}/cache"\n`,
    script: [...found(), OK, OK, OK, OK],
  });
  const { calls, error } = await failed(h, SystemFailure);
  assert.ok(!(error instanceof BuildFailure));
  assert.match(error.message, /is not a plain directory/);
  assert.deepEqual(calls, [...localLookup()]);
});

Deno.test("prepare() deletes the container when the cache directory cannot be given to its root", async () => {
  await using dir = await tempDir();
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[cache]\nhost_dir = "${dir.path}/cache"\n`,
    script: [
      ...found(),
      OK,
      { code: 1, stderr: "Error: Instance not found\n" },
      OK,
    ],
  });
  const { calls, error } = await failed(h, LxdError);
  assert.match(error.message, /Instance not found/);
  assert.deepEqual(calls, [...localLookup(), CREATE, INSTANCE_GET, DELETE]);
});

Deno.test("prepare() sends every call to the configured remote, project and cluster member", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[lxd]\nremote = "cluster"\nproject = "ci"\ntarget = "node-2"\n` +
      `[helper]\ngitlab_runner = "/opt/gitlab-runner"\n`,
    script: [...happyReplies(PROBE_NO_RUNNER), OK],
  });
  const { calls, spec, created } = await succeeded(h);
  const ref = `cluster:${NAME}`;
  assert.deepEqual(calls, [
    ["--project", "ci", "image", "info", "--", "cluster:lxd-driver-test/bookworm"],
    [
      "query",
      "--wait",
      "--request",
      "POST",
      "--data",
      "<spec>",
      "--",
      "cluster:/1.0/instances?target=node-2&project=ci",
    ],
    ["--project", "ci", "start", "--", ref],
    ["--project", "ci", ...ready().slice(0, 3), ref, ...ready().slice(4)],
    [
      "--project",
      "ci",
      ...pushRunner("/opt/gitlab-runner").slice(0, -1),
      `${ref}/usr/local/bin/gitlab-runner`,
    ],
  ]);
  // The container's own name carries no remote.
  assert.deepEqual(spec, expectedSpec(created));
});

// --- what the job may not do ------------------------------------------------------------

Deno.test("prepare() rejects a disallowed image without any lxc call", async () => {
  for (
    const image of ["--privileged", "-c", "evil/x", "$(id)", "a b", "../x", "images:debian/12"]
  ) {
    await using h = await jobHarness({
      env: { CUSTOM_ENV_CI_JOB_IMAGE: image },
      settings: `[image]\ndefault = "${IMAGE}"\nallowed = ["lxd-driver-test/*"]\n`,
      script: happyReplies(),
    });
    const { calls, error } = await failed(h, BuildFailure);
    assert.ok(error.message.includes(JSON.stringify(image)), error.message);
    assert.deepEqual(calls, [], image);
  }
});

Deno.test("prepare() checks the name the job wrote, not what [image.aliases] maps it to", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_CI_JOB_IMAGE: "debian:12" },
    settings: `
[image]
default = "${IMAGE}"
allowed = ["lxd-driver-test/*"]
[image.aliases]
"debian:12" = "lxd-driver-test/bookworm"
`,
    script: happyReplies(),
  });
  const { calls, error } = await failed(h, BuildFailure);
  assert.match(error.message, /image "debian:12" is not allowed on this runner/);
  assert.deepEqual(calls, []);
});

Deno.test("prepare() refuses a resource request over the limits without any lxc call", async () => {
  const cases: [Record<string, string>, string][] = [
    [{ CUSTOM_ENV_LXD_CPU: "9" }, "LXD_CPU asks for more than this runner's maximum of 8 CPUs"],
    [
      { CUSTOM_ENV_LXD_MEMORY: "32GiB" },
      "LXD_MEMORY asks for more than this runner's maximum of 16GiB",
    ],
    [{ CUSTOM_ENV_LXD_CPU: "1; x" }, "LXD_CPU must be a whole number of CPUs from 1 to 8"],
    [
      { CUSTOM_ENV_LXD_CPU: "2", CUSTOM_ENV_LXD_MEMORY: "lots" },
      'LXD_MEMORY must be a size such as "2GiB" or "512MiB", at most 16GiB',
    ],
  ];
  for (const [env, message] of cases) {
    await using h = await jobHarness({
      env,
      settings: `${LOCAL_DEFAULT}[limits]\nmax_cpu = 8\nmax_memory = "16GiB"\n`,
      script: happyReplies(),
    });
    const { calls, error } = await failed(h, BuildFailure);
    assert.equal(error.message, message);
    assert.deepEqual(calls, []);
  }
});

Deno.test("prepare() refuses a resource request when the runner allows none", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_LXD_CPU: "2" },
    settings: `${LOCAL_DEFAULT}[limits]\ncpu = 1\n`,
    script: happyReplies(),
  });
  const { calls, error } = await failed(h, BuildFailure);
  assert.match(error.message, /\[limits\] max_cpu/);
  assert.deepEqual(calls, []);
});

// --- images that do not exist -------------------------------------------------------------

Deno.test("prepare() makes a missing job-chosen image a build failure", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_CI_JOB_IMAGE: "lxd-driver-test/missing" },
    settings: `[image]\ndefault = "${IMAGE}"\nallowed = ["lxd-driver-test/*"]\n`,
    script: [ALIAS_NOT_FOUND, OK],
  });
  const { calls, error } = await failed(h, BuildFailure);
  assert.equal(
    error.message,
    `image "lxd-driver-test/missing" does not exist on this runner's LXD (lxd-driver-test/missing)`,
  );
  assert.deepEqual(calls, [localLookup("lxd-driver-test/missing")[0]]);
});

Deno.test("prepare() names the job's image and its mapping when the mapped image is missing", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_CI_JOB_IMAGE: "debian:13" },
    settings: `
[image]
default = "${IMAGE}"
allowed = ["debian:*"]
[image.aliases]
"debian:13" = "images:debian/13"
`,
    script: [IMAGE_NOT_FOUND, OK],
  });
  const { calls, error } = await failed(h, BuildFailure);
  assert.equal(
    error.message,
    `image "debian:13" does not exist on this runner's LXD (images:debian/13)`,
  );
  assert.deepEqual(calls, [["image", "info", "--", "images:debian/13"]]);
});

Deno.test("prepare() makes a missing default image a system failure", async () => {
  const cases: [string, Record<string, string>, Reply[], string[][]][] = [
    [LOCAL_DEFAULT, {}, [ALIAS_NOT_FOUND], [localLookup()[0]!]],
    [LOCAL_DEFAULT, { CUSTOM_ENV_CI_JOB_IMAGE: IMAGE }, [ALIAS_NOT_FOUND], [localLookup()[0]!]],
    ["", {}, [IMAGE_NOT_FOUND], [["image", "info", "--", "images:debian/12"]]],
    [
      "",
      { CUSTOM_ENV_CI_JOB_IMAGE: "images:debian/12" },
      [IMAGE_NOT_FOUND],
      [["image", "info", "--", "images:debian/12"]],
    ],
  ];
  for (const [settings, env, replies, lookup] of cases) {
    await using h = await jobHarness({ settings, env, script: [...replies] });
    const { calls, error } = await failed(h, SystemFailure);
    assert.ok(!(error instanceof BuildFailure), error.message);
    assert.match(error.message, /not found/i);
    assert.deepEqual(calls, [...lookup]);
  }
});

Deno.test("prepare() keeps an LXD outage during the image lookup a system failure", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_CI_JOB_IMAGE: "lxd-driver-test/trixie" },
    settings: `[image]\ndefault = "${IMAGE}"\nallowed = ["lxd-driver-test/*"]\n`,
    script: [LXD_DOWN],
  });
  const { calls, error } = await failed(h, LxdError);
  assert.ok(!(error instanceof BuildFailure));
  assert.equal(error.unreachable, true);
  assert.deepEqual(calls, [localLookup("lxd-driver-test/trixie")[0]]);
});

// --- failures after creation delete the container -----------------------------------------

Deno.test("prepare() deletes the container and reports the error when creation fails", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [
      ...found(),
      { code: 1, stderr: "Error: Failed creating instance record: No space left on device\n" },
      INSTANCE_NOT_FOUND,
    ],
  });
  const { calls, error } = await failed(h, LxdError);
  assert.ok(error instanceof SystemFailure);
  assert.match(error.message, /No space left on device/);
  assert.deepEqual(calls, [...localLookup(), CREATE, DELETE]);
  assert.ok(!h.lines.some((line) => line.startsWith("WARNING")), h.lines.join("\n"));
});

Deno.test("prepare() reports the creation error even when the delete after it fails", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [...found(), { code: 1, stderr: "Error: boom\n" }, LXD_DOWN],
  });
  const { calls, error } = await failed(h, LxdError);
  assert.match(error.message, /boom/);
  assert.deepEqual(calls, [...localLookup(), CREATE, DELETE]);
  assert.ok(
    h.lines.some((line) => line.startsWith(`WARNING: could not delete container ${NAME}: `)),
    h.lines.join("\n"),
  );
});

Deno.test("prepare() deletes the container when it does not start", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [
      ...found(),
      OK,
      { code: 1, stderr: "Error: Failed to run: forkstart\n" },
      OK,
    ],
  });
  const { calls, error } = await failed(h, LxdError);
  assert.match(error.message, /forkstart/);
  assert.deepEqual(calls, [...localLookup(), CREATE, START, DELETE]);
});

Deno.test("prepare() fails at once and deletes the container when the readiness script fails", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [
      ...found(),
      OK,
      OK,
      { code: 1, stderr: "mkdir: cannot create directory '/builds': Read-only file system\n" },
      OK,
    ],
  });
  const { calls, error } = await failed(h, SystemFailure);
  assert.ok(!(error instanceof LxdError));
  assert.ok(!(error instanceof BuildFailure));
  assert.match(
    error.message,
    new RegExp(`^container ${NAME} could not be made ready: .*Read-only file system$`),
  );
  assert.deepEqual(calls, [...happyCalls(), DELETE]);
});

Deno.test("prepare() does not retry readiness when the container is gone or LXD is down", async () => {
  for (
    const [reply, pattern] of [[INSTANCE_NOT_FOUND, /Instance not found/], [
      LXD_DOWN,
      /unix\.socket/,
    ]] as const
  ) {
    await using h = await jobHarness({
      settings: LOCAL_DEFAULT,
      script: [...happyReplies(reply), OK],
    });
    const { calls, error } = await failed(h, SystemFailure);
    assert.match(error.message, new RegExp(`^container ${NAME} could not be made ready: `));
    assert.match(error.message, pattern);
    assert.deepEqual(calls, [...happyCalls(), DELETE]);
  }
});

/** LXD refusing an exec while the container is still starting. */
const NOT_RUNNING: Reply = { code: 1, stderr: "Error: Instance is not running\n" };
const NO_PID: Reply = {
  code: 1,
  stderr: "Error: Failed to retrieve PID of executing child process\n",
};

Deno.test("prepare() retries readiness every 100ms while LXD refuses the exec", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [...found(), OK, OK, NOT_RUNNING, NO_PID, PROBE_ALL],
  });
  const started = performance.now();
  const { calls } = await succeeded(h);
  assert.ok(performance.now() - started >= 190, "two pauses of 100ms");
  assert.deepEqual(calls, [...localLookup(), CREATE, START, ready(), ready(), ready()]);
  assert.equal(h.lines.length, 3, h.lines.join("\n"));
  assertReadyLine(h.lines[2]);
});

Deno.test("prepare() gives up a refused readiness exec at ready_timeout, naming the last refusal", async () => {
  let execs = 0;
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nready_timeout = "300ms"\n`,
    script: [...found(), OK, OK, OK],
    respond: (argv) => argv[0] === "exec" ? (++execs === 1 ? NOT_RUNNING : NO_PID) : undefined,
  });
  const started = performance.now();
  const { calls, error } = await failed(h, SystemFailure);
  assert.ok(performance.now() - started < 5_000);
  assert.ok(execs >= 2, `${execs} execs`);
  assert.ok(!(error instanceof LxdError));
  assert.match(
    error.message,
    new RegExp(
      `^container ${NAME} did not become ready within 300ms \\(\\[instance\\] ready_timeout\\): ` +
        `.* failed: Failed to retrieve PID of executing child process$`,
    ),
  );
  assert.deepEqual(calls, [
    ...localLookup(),
    CREATE,
    START,
    ...Array.from({ length: execs }, () => ready()),
    DELETE,
  ]);
});

Deno.test("prepare() gives up on readiness after ready_timeout and deletes the container", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nready_timeout = "200ms"\n`,
    script: [...found(), OK, OK, { hang: true }, OK],
  });
  const started = performance.now();
  const { calls, error } = await failed(h, SystemFailure);
  assert.ok(performance.now() - started < 5_000);
  assert.match(
    error.message,
    new RegExp(
      `^container ${NAME} did not become ready within 200ms \\(\\[instance\\] ready_timeout\\): `,
    ),
  );
  assert.deepEqual(calls, [...happyCalls(), DELETE]);
});

// --- what the image needs -------------------------------------------------------------------

Deno.test("prepare() fails the build and deletes the container when the image has no git", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [...happyReplies({ stdout: "has bash\nhas gitlab-runner\nlxd-driver: ready\n" }), OK],
  });
  const { calls, error } = await failed(h, BuildFailure);
  assert.equal(
    error.message,
    `the job's image has no git, which jobs on this runner need ` +
      `(shell "bash" from [job] shell; git to get the sources)`,
  );
  assert.deepEqual(calls, [...happyCalls(), DELETE]);
});

Deno.test("prepare() names both the shell and git when the image has neither", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[job]\nshell = "pwsh"\n`,
    script: [...happyReplies({ stdout: "has gitlab-runner\nlxd-driver: ready\n" }), OK],
  });
  const { calls, error } = await failed(h, BuildFailure);
  assert.match(error.message, /^the job's image has no pwsh and no git, /);
  assert.deepEqual(calls, [...happyCalls("pwsh"), DELETE]);
});

Deno.test("prepare() needs no git when the job's GIT_STRATEGY is none", async () => {
  await using h = await jobHarness({
    env: { CUSTOM_ENV_GIT_STRATEGY: "none" },
    settings: LOCAL_DEFAULT,
    script: happyReplies({ stdout: "has bash\nhas gitlab-runner\nlxd-driver: ready\n" }),
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assertReadyLine(h.lines.at(-1));

  // The shell is still needed.
  await using noShell = await jobHarness({
    env: { CUSTOM_ENV_GIT_STRATEGY: "none" },
    settings: LOCAL_DEFAULT,
    script: [...happyReplies({ stdout: "has gitlab-runner\nlxd-driver: ready\n" }), OK],
  });
  const failure = await failed(noShell, BuildFailure);
  assert.match(failure.error.message, /^the job's image has no bash,/);
  assert.deepEqual(failure.calls, [...happyCalls(), DELETE]);
});

Deno.test("prepare() pushes the host's gitlab-runner from PATH when the image has none", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/empty`);
  await Deno.mkdir(`${dir.path}/bin`);
  await Deno.writeTextFile(`${dir.path}/bin/gitlab-runner`, "#!/bin/sh\n");
  await Deno.chmod(`${dir.path}/bin/gitlab-runner`, 0o755);
  await using h = await jobHarness({
    env: { PATH: `${dir.path}/empty:${dir.path}/bin` },
    settings: LOCAL_DEFAULT,
    script: [...happyReplies(PROBE_NO_RUNNER), OK],
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, [...happyCalls(), pushRunner(`${dir.path}/bin/gitlab-runner`)]);
  assert.equal(h.lines.length, 4, h.lines.join("\n"));
  assert.deepEqual(h.lines.slice(0, 3), [
    USING_IMAGE,
    `Creating container ${NAME}`,
    "Added gitlab-runner to the container for cache and artifacts",
  ]);
  assertReadyLine(h.lines[3]);
});

Deno.test("prepare() pushes the configured gitlab-runner, not the one on PATH", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/gitlab-runner`, "#!/bin/sh\n");
  await Deno.chmod(`${dir.path}/gitlab-runner`, 0o755);
  await using h = await jobHarness({
    env: { PATH: dir.path },
    settings: `${LOCAL_DEFAULT}[helper]\ngitlab_runner = "/opt/gitlab-runner/gitlab-runner"\n`,
    script: [...happyReplies(PROBE_NO_RUNNER), OK],
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, [...happyCalls(), pushRunner("/opt/gitlab-runner/gitlab-runner")]);
});

Deno.test("prepare() pushes nothing when the image has gitlab-runner", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/gitlab-runner`, "#!/bin/sh\n");
  await Deno.chmod(`${dir.path}/gitlab-runner`, 0o755);
  await using h = await jobHarness({
    env: { PATH: dir.path },
    settings: `${LOCAL_DEFAULT}[helper]\ngitlab_runner = "/opt/gitlab-runner"\n`,
    script: happyReplies(),
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.ok(!h.lines.some((line) => line.includes("gitlab-runner")), h.lines.join("\n"));
});

Deno.test("prepare() deletes the container when pushing gitlab-runner fails", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[helper]\ngitlab_runner = "/opt/gitlab-runner"\n`,
    script: [
      ...happyReplies(PROBE_NO_RUNNER),
      { code: 1, stderr: "Error: open /opt/gitlab-runner: no such file or directory\n" },
      OK,
    ],
  });
  const { calls, error } = await failed(h, LxdError);
  assert.match(error.message, /no such file or directory/);
  assert.deepEqual(calls, [...happyCalls(), pushRunner("/opt/gitlab-runner"), DELETE]);
});

Deno.test("prepare() warns once that cache and artifacts are disabled without any gitlab-runner", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/gitlab-runner`, "not executable\n");
  await Deno.chmod(`${dir.path}/gitlab-runner`, 0o644);
  for (const env of [{}, { PATH: dir.path }, { PATH: "" }]) {
    await using h = await jobHarness({
      env,
      settings: LOCAL_DEFAULT,
      script: happyReplies(PROBE_NO_RUNNER),
    });
    const { calls } = await succeeded(h);
    assert.deepEqual(calls, happyCalls());
    assert.equal(
      h.lines.filter((line) => line.includes("cache and artifacts are disabled")).length,
      1,
      h.lines.join("\n"),
    );
    assert.deepEqual(h.lines.slice(0, 3), [
      USING_IMAGE,
      `Creating container ${NAME}`,
      NO_RUNNER_WARNING,
    ]);
    assertReadyLine(h.lines[3]);
  }
});

Deno.test("prepare() adds the [helper] ca_file to the container's trust store", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[helper]\nca_file = "/etc/lxd-driver/ca.pem"\n`,
    script: [...happyReplies(), OK, OK],
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, [...happyCalls(), pushCa("/etc/lxd-driver/ca.pem"), CA_EXEC]);
  assert.equal(h.lines[2], "Added the runner's CA certificates to the container's trust store");
  assertReadyLine(h.lines[3]);
});

Deno.test("prepare() pushes gitlab-runner before the CA bundle", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[helper]\ngitlab_runner = "/opt/gitlab-runner"\n` +
      `ca_file = "/etc/lxd-driver/ca.pem"\n`,
    script: [...happyReplies(PROBE_NO_RUNNER), OK, OK, OK],
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, [
    ...happyCalls(),
    pushRunner("/opt/gitlab-runner"),
    pushCa("/etc/lxd-driver/ca.pem"),
    CA_EXEC,
  ]);
});

Deno.test("prepare() deletes the container when adding the CA bundle fails", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[helper]\nca_file = "/etc/lxd-driver/ca.pem"\n`,
    script: [...happyReplies(), OK, { code: 1, stderr: "cat: write error\n" }, OK],
  });
  const { calls, error } = await failed(h, SystemFailure);
  assert.match(error.message, /write error/);
  assert.deepEqual(calls, [...happyCalls(), pushCa("/etc/lxd-driver/ca.pem"), CA_EXEC, DELETE]);
});

// --- leftovers, the cli, and what never happens ---------------------------------------------

/** The creation of an instance whose name is taken, in LXD's and in Incus's words. */
const ALREADY_EXISTS: readonly (readonly [string, Reply])[] = [
  ["lxc", {
    code: 1,
    stderr: "Error: Failed creating instance record: Add instance info to the database: " +
      'This "instances" entry already exists\n',
  }],
  ["incus", {
    code: 1,
    stderr: "Error: Failed creating instance record: Failed initialising instance: " +
      "Failed adding instance record: UNIQUE constraint failed: instances.project_id, instances.name\n",
  }],
];

Deno.test("prepare() deletes a leftover container of the job's name and creates it again, warning", async () => {
  for (const [cli, exists] of ALREADY_EXISTS) {
    await using h = await jobHarness({
      settings: `${LOCAL_DEFAULT}[lxd]\ncli = "${cli}"\n`,
      script: [...found(), exists, OK, OK, OK, PROBE_ALL],
    });
    const { calls, spec, created } = await succeeded(h);
    assert.deepEqual(calls, [...localLookup(), CREATE, DELETE, CREATE, START, ready()], cli);
    assert.deepEqual(spec, expectedSpec(created));
    assert.equal(h.lines.length, 4, h.lines.join("\n"));
    assert.deepEqual(h.lines.slice(0, 3), [
      USING_IMAGE,
      `Creating container ${NAME}`,
      `WARNING: deleted a leftover container named ${NAME}`,
    ]);
    assertReadyLine(h.lines[3]);
  }
});

Deno.test("prepare() deletes the container when creating it again after the leftover fails", async () => {
  const [, exists] = ALREADY_EXISTS[0]!;
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [...found(), exists, OK, { code: 1, stderr: "Error: boom\n" }, OK],
  });
  const { calls, error } = await failed(h, LxdError);
  assert.match(error.message, /boom/);
  assert.deepEqual(calls, [...localLookup(), CREATE, DELETE, CREATE, DELETE]);
});

Deno.test("prepare() replaces the container an earlier attempt of the job recorded with its own", async () => {
  await using dir = await tempDir();
  const record = `${dir.path}/lxd-driver-container`;
  await Deno.writeTextFile(record, "lxd-driver-pool-earlier\n");
  await using h = await jobHarness({
    env: { TMPDIR: dir.path },
    settings: LOCAL_DEFAULT,
    script: happyReplies(),
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
  assert.equal(await Deno.readTextFile(record), `${NAME}\n`);
});

Deno.test("prepare() leaves no record of a container it deleted after a failure", async () => {
  await using dir = await tempDir();
  const record = `${dir.path}/lxd-driver-container`;
  await using h = await jobHarness({
    env: { TMPDIR: dir.path },
    settings: LOCAL_DEFAULT,
    script: [...found(), { code: 1, stderr: "Error: boom\n" }, OK],
  });
  await failed(h, SystemFailure);
  await assert.rejects(Deno.lstat(record), Deno.errors.NotFound);
});

Deno.test("prepare() runs the configured cli", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[lxd]\ncli = "incus"\n`,
    script: happyReplies(),
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
});

Deno.test("prepare() fails without creating anything when LXD is unreachable", async () => {
  await using h = await jobHarness({ settings: LOCAL_DEFAULT, script: [LXD_DOWN] });
  const { calls, error } = await failed(h, LxdError);
  assert.equal(error.unreachable, true);
  assert.match(error.message, /LXD is not reachable/);
  assert.deepEqual(calls, [localLookup()[0]]);
});

Deno.test("prepare() fails without any lxc call when JOB_RESPONSE_FILE is unset", async () => {
  const h = harness({ settings: LOCAL_DEFAULT, script: happyReplies() });
  const { calls, error } = await failed(h, SystemFailure);
  assert.match(error.message, /JOB_RESPONSE_FILE/);
  assert.deepEqual(calls, []);
});

Deno.test("prepare() never logs a job variable's value, even with debug on", async () => {
  const secrets = {
    CUSTOM_ENV_SECRET: SECRET,
    CUSTOM_ENV_CI_JOB_TOKEN: SECRET,
    CUSTOM_ENV_CI_REGISTRY_PASSWORD: SECRET,
  };
  const limits = `[limits]\nmax_cpu = 4\nmax_memory = "4GiB"\n`;
  const cases: [Record<string, string>, string, Reply[]][] = [
    [{}, LOCAL_DEFAULT + limits, happyReplies()],
    [{}, LOCAL_DEFAULT + limits, [...found(), OK, OK, PROBE_NO_RUNNER]],
    [{}, LOCAL_DEFAULT + limits, [...found(), { code: 1 }, LXD_DOWN]],
    [{}, LOCAL_DEFAULT + limits, [...happyReplies({ code: 1, stderr: "sh: nope\n" }), LXD_DOWN]],
    [{}, LOCAL_DEFAULT + limits, [...found(), ALREADY_EXISTS[0]![1], OK, OK, OK, PROBE_ALL]],
    [{}, LOCAL_DEFAULT + limits, [
      ...happyReplies({ stdout: "has bash\nlxd-driver: ready\n" }),
      OK,
    ]],
    [{ CUSTOM_ENV_LXD_CPU: SECRET }, LOCAL_DEFAULT + limits, happyReplies()],
    [{ CUSTOM_ENV_LXD_MEMORY: SECRET }, LOCAL_DEFAULT + limits, happyReplies()],
    [{ CUSTOM_ENV_LXD_CPU: `9${SECRET}` }, LOCAL_DEFAULT, happyReplies()],
    [{ CUSTOM_ENV_LXD_MEMORY: `${SECRET}GiB` }, LOCAL_DEFAULT, happyReplies()],
    [{ CUSTOM_ENV_LXD_CPU: "2", CUSTOM_ENV_LXD_MEMORY: "1GiB" }, LOCAL_DEFAULT + limits, [
      ...happyReplies(),
    ]],
  ];
  for (const [env, settings, script] of cases) {
    await using h = await jobHarness({
      env: { ...secrets, ...env },
      settings,
      debug: true,
      script,
    });
    const { error } = await run(h);
    if (h.lxc.calls.length > 0) {
      assert.ok(h.lines.some((line) => line.startsWith("[lxd-driver debug] ")), "debug is on");
    }
    for (const line of h.lines) assert.ok(!line.includes(SECRET), line);
    if (error instanceof Error) assert.ok(!error.message.includes(SECRET), error.message);
    for (const argv of h.lxc.calls) assert.ok(!argv.join(" ").includes(SECRET), argv.join(" "));
  }
});

/** Readiness output that LXD cut short: no `lxd-driver: ready` line. */
const CUT: Reply = { stdout: "has bash\n" };

Deno.test("prepare() asks again when LXD cut the readiness output short", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    script: [...happyReplies(CUT), CUT, PROBE_ALL],
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, [...happyCalls(), ready(), ready()]);
  assertReadyLine(h.lines.at(-1));
});

Deno.test("prepare() gives up on readiness output cut short at ready_timeout, saying how often", async () => {
  let execs = 0;
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nready_timeout = "300ms"\n`,
    script: [...found(), OK, OK, OK],
    respond: (argv) => argv[0] === "exec" ? (execs++, CUT) : undefined,
  });
  const { calls, error } = await failed(h, SystemFailure);
  assert.ok(execs >= 2, `${execs} execs`);
  assert.equal(
    error.message,
    `container ${NAME} did not become ready within 300ms ([instance] ready_timeout): ` +
      `its output was cut short ${execs} time(s)`,
  );
  assert.deepEqual(calls.at(-1), DELETE);
});

// --- templates (lib/template.ts) ------------------------------------------------------------

/** The template of the containers expectedSpec() describes. */
async function expectedTemplate(host = Deno.hostname()): Promise<InstanceSpec> {
  const template = await templateFor(expectedSpec(new Date().toISOString(), { host }), host);
  assert.ok(template);
  return template;
}

async function templateGet(host?: string): Promise<string[]> {
  const { name } = await expectedTemplate(host);
  return ["query", "--wait", "--request", "GET", "--", `/1.0/instances/${name}`];
}

function templateReply(status: string, config: Record<string, string>, location = "none"): Reply {
  return {
    stdout: JSON.stringify({ name: "t", status, location, config, expanded_config: config }),
  };
}

const MAP = '[{"Isuid":true,"Isgid":false,"Hostid":100000,"Nsid":0,"Maprange":65536}]';

/** A template whose launch has started and stopped it, with LXD's record of its files' map. */
function launched(idmap: string): Record<string, string> {
  return {
    "user.lxd-driver.template": "making",
    "volatile.last_state.power": "RUNNING",
    "volatile.last_state.idmap": idmap,
  };
}

/** The calls of a prepare that marks the template `state`, then creates its container. */
async function finishingCalls(state: string): Promise<string[][]> {
  return [
    ...localLookup(),
    await templateGet(),
    await templatePatch(state),
    CREATE,
    START,
    ready(),
  ];
}

async function templatePatch(state: string): Promise<string[]> {
  const { name } = await expectedTemplate();
  const body = { config: { "user.lxd-driver.template": state, "raw.lxc": "" } };
  return [
    "query",
    "--wait",
    "--request",
    "PATCH",
    "--data",
    JSON.stringify(body),
    "--",
    `/1.0/instances/${name}`,
  ];
}

Deno.test("prepare() without a template creates from the image, then launches the template in the background", async () => {
  // A host of its own: the launch is recorded in the host's state directory, by template name.
  const host = `contract-${crypto.randomUUID().slice(0, 8)}`;
  const template = await expectedTemplate(host);
  const marker = `${poolStateDir()}/launched-${template.name}`;
  let detachedAtReadiness = -1;
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[lxd]\nhost_id = "${host}"\n`,
    template: true,
    script: [...found(), INSTANCE_NOT_FOUND, OK, OK, PROBE_ALL],
    respond: (argv) => {
      if (argv[0] === "exec") detachedAtReadiness = h.lxc.detachedCalls.length;
      return undefined;
    },
  });
  try {
    const { calls, spec, created } = await succeeded(h, true);
    assert.deepEqual(calls, [...localLookup(), await templateGet(host), CREATE, START, ready()]);
    assert.deepEqual(spec, expectedSpec(created, { host }));
    assert.equal(detachedAtReadiness, 0, "the template waits until the job's container is ready");
    assert.ok((await Deno.stat(marker)).isFile, "the launch is recorded");
    assertTemplateLaunch(h.lxc.detachedCalls, template);

    // A second job within two minutes does not launch it again (it may have failed).
    await using again = await jobHarness({
      settings: `${LOCAL_DEFAULT}[lxd]\nhost_id = "${host}"\n`,
      template: true,
      debug: true,
      script: [...found(), INSTANCE_NOT_FOUND, OK, OK, PROBE_ALL],
    });
    await succeeded(again);
    assert.ok(again.lines.some((l) => l.endsWith("was launched less than 2 minutes ago")));
  } finally {
    await Deno.remove(marker).catch(() => {});
  }
});

function assertTemplateLaunch(detached: string[][], template: InstanceSpec): void {
  const [launch, ...others] = detached;
  assert.deepEqual(others, []);
  assert.ok(launch);
  assert.deepEqual(launch.slice(0, 4), ["launch", "--quiet", "--profile", "default"]);
  assert.deepEqual(launch.slice(-3), ["--", FP, template.name]);
  const config = launch.flatMap((arg, i) => launch[i - 1] === "--config" ? [arg] : []);
  assert.ok(config.includes("raw.lxc=lxc.init.cmd=/bin/true"), config.join(" "));
  assert.ok(config.includes("user.lxd-driver.template=making"), config.join(" "));
  assert.ok(config.includes("user.lxd-driver.managed=true"), config.join(" "));
  assert.ok(!config.some((c) => c.startsWith("user.lxd-driver.job-id")), config.join(" "));
}

Deno.test("prepare() copies the container from a ready template, removing the template's own keys", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[limits]\ncpu = 2\n`,
    template: true,
    debug: true,
    script: [
      ...found(),
      templateReply("Stopped", { "user.lxd-driver.template": "ready" }),
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, [...localLookup(), await templateGet(), CREATE, START, ready()]);
  const { name } = await expectedTemplate();
  assert.deepEqual(spec, {
    ...expectedSpec(created, {
      config: { "limits.cpu": "2", "user.lxd-driver.template": "", "raw.lxc": "" },
    }),
    source: { type: "copy", source: name, instance_only: true },
  });
  assert.ok(h.lines.some((l) => l.endsWith(`as a copy of template ${name}`)), h.lines.join("\n"));
});

Deno.test("prepare() marks a template that LXD remapped and stopped ready, then copies from it", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    template: true,
    script: [
      ...found(),
      templateReply("Stopped", launched(MAP)),
      OK,
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls, spec } = await succeeded(h);
  assert.deepEqual(calls, await finishingCalls("ready"));
  assert.equal(spec?.source.type, "copy");
});

Deno.test("prepare() marks a template LXD did not remap unneeded and creates from the image", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    template: true,
    script: [
      ...found(),
      templateReply("Stopped", launched("[]")),
      OK,
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, await finishingCalls("unneeded"));
  assert.deepEqual(spec, expectedSpec(created));
});

Deno.test("prepare() neither uses nor launches again a template that is still being made or unneeded", async () => {
  for (
    const reply of [
      templateReply("Running", { "user.lxd-driver.template": "making" }),
      templateReply("Stopped", { "user.lxd-driver.template": "making" }),
      templateReply("Stopped", { "user.lxd-driver.template": "unneeded" }),
      templateReply("Running", { "user.lxd-driver.template": "ready" }),
    ]
  ) {
    await using h = await jobHarness({
      settings: LOCAL_DEFAULT,
      template: true,
      script: [...found(), reply, OK, OK, PROBE_ALL],
    });
    const { calls, spec, created } = await succeeded(h);
    assert.deepEqual(calls, [...localLookup(), await templateGet(), CREATE, START, ready()]);
    assert.deepEqual(spec, expectedSpec(created));
  }
});

Deno.test("prepare() gives up on a template never started two minutes after its launch", async () => {
  const created = new Date(Date.now() - 121_000).toISOString();
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    template: true,
    script: [
      ...found(),
      templateReply("Stopped", {
        "user.lxd-driver.template": "making",
        "user.lxd-driver.created": created,
      }),
      OK,
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, await finishingCalls("unneeded"));
});

Deno.test("prepare() creates from the image when the template vanished before the copy", async () => {
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    template: true,
    script: [
      ...found(),
      templateReply("Stopped", { "user.lxd-driver.template": "ready" }),
      { code: 1, stderr: "Error: Failed loading source instance: Instance not found\n" },
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, [...localLookup(), await templateGet(), CREATE, CREATE, START, ready()]);
  assert.deepEqual(spec, expectedSpec(created));
});

Deno.test("prepare() has no template for privileged containers", async () => {
  await using h = await jobHarness({
    settings: `${LOCAL_DEFAULT}[instance]\nprivileged = true\nallow_privileged = true\n`,
    template: true,
    script: happyReplies(),
  });
  const { calls } = await succeeded(h);
  assert.deepEqual(calls, happyCalls());
});

Deno.test("prepare() does not use a template in a cluster without [lxd] target", async () => {
  const made = launched(MAP);
  await using h = await jobHarness({
    settings: LOCAL_DEFAULT,
    template: true,
    script: [...found(), templateReply("Stopped", made, "node-3"), OK, OK, OK, PROBE_ALL],
  });
  const { calls, spec, created } = await succeeded(h);
  assert.deepEqual(calls, await finishingCalls("unneeded"));
  assert.deepEqual(spec, expectedSpec(created));

  await using readyElsewhere = await jobHarness({
    settings: LOCAL_DEFAULT,
    template: true,
    script: [
      ...found(),
      templateReply("Stopped", { "user.lxd-driver.template": "ready" }, "node-3"),
      OK,
      OK,
      PROBE_ALL,
    ],
  });
  assert.equal((await succeeded(readyElsewhere)).spec?.source.type, "image");
});
