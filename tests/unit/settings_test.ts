import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import { detectCli } from "../../lib/lxd_target.ts";
import {
  DEFAULT_SETTINGS_PATH,
  loadSettings,
  parseSettings,
  type Settings,
  settingsPath,
} from "../../lib/settings.ts";

const envOf = (vars: Record<string, string>) => (name: string) => vars[name];

/** Runs `fn`, expects a SystemFailure and returns its message. */
function failureOf(fn: () => unknown): string {
  try {
    fn();
  } catch (error) {
    assert.ok(error instanceof SystemFailure, `expected a SystemFailure, got ${error}`);
    return error.message;
  }
  assert.fail("expected a SystemFailure, nothing was thrown");
}

/**
 * The settings with `image.aliases` copied into a plain object: the TOML
 * parser gives tables a null prototype, which strict deep equality compares.
 */
function withPlainAliases(settings: Settings): Settings {
  return { ...settings, image: { ...settings.image, aliases: { ...settings.image.aliases } } };
}

const DEFAULTS: Settings = {
  source: undefined,
  image: { default: "images:debian/12", allowed: [], aliases: {} },
  instance: {
    profiles: ["default"],
    storagePool: "",
    readyTimeoutMs: 120_000,
    ephemeral: false,
    template: true,
    nesting: false,
    privileged: false,
    allowPrivileged: false,
  },
  limits: {
    cpu: 0,
    memory: undefined,
    processes: 0,
    disk: undefined,
    maxCpu: 0,
    maxMemory: undefined,
  },
  helper: { gitlabRunner: undefined, caFile: undefined },
  cache: { hostDir: undefined, perSlot: false },
  job: { shell: "bash", buildsDir: "/builds", cacheDir: "/cache" },
  // Unset in the file: the client found on PATH.
  lxd: { cli: detectCli(Deno.env.get("PATH")), remote: "", project: "", target: "", hostId: "" },
  pool: { size: 0 },
  log: { debug: false },
};

Deno.test("parseSettings() gives the documented defaults for an empty file", () => {
  assert.deepEqual(parseSettings("", undefined), DEFAULTS);
  assert.deepEqual(parseSettings("# only a comment\n", "/etc/x.toml"), {
    ...DEFAULTS,
    source: "/etc/x.toml",
  });
});

Deno.test("parseSettings() reads every key of a full file", () => {
  const text = `
[image]
default = "lxd-driver-test/bookworm"
allowed = ["lxd-driver-test/*", "images:debian/*"]

[image.aliases]
"debian:12" = "images:debian/12"
bookworm = "lxd-driver-test/bookworm"

[instance]
profiles = ["default", "ci"]
storage_pool = "fast"
ready_timeout = "5m"
ephemeral = true
template = false
nesting = true
privileged = true
allow_privileged = true

[limits]
cpu = 2
memory = "4GiB"
processes = 2000
disk = "20GB"
max_cpu = 8
max_memory = "16GiB"

[helper]
gitlab_runner = "/usr/local/bin/gitlab-runner"
ca_file = "/etc/lxd-driver/ca.pem"

[cache]
host_dir = "/var/cache/lxd-driver"
per_slot = true

[job]
shell = "sh"
builds_dir = "/srv/builds"
cache_dir = "/srv/cache"

[lxd]
cli = "incus"
remote = "local"
project = "ci"
target = "node-2"
host_id = "runner-host-2"

[pool]
size = 3

[log]
debug = true
`;
  assert.deepEqual(withPlainAliases(parseSettings(text, "full.toml")), {
    source: "full.toml",
    image: {
      default: "lxd-driver-test/bookworm",
      allowed: ["lxd-driver-test/*", "images:debian/*"],
      aliases: { "debian:12": "images:debian/12", bookworm: "lxd-driver-test/bookworm" },
    },
    instance: {
      profiles: ["default", "ci"],
      storagePool: "fast",
      readyTimeoutMs: 300_000,
      ephemeral: true,
      template: false,
      nesting: true,
      privileged: true,
      allowPrivileged: true,
    },
    limits: {
      cpu: 2,
      memory: { text: "4GiB", bytes: 4 * 2 ** 30 },
      processes: 2000,
      disk: { text: "20GB", bytes: 20e9 },
      maxCpu: 8,
      maxMemory: { text: "16GiB", bytes: 16 * 2 ** 30 },
    },
    helper: {
      gitlabRunner: "/usr/local/bin/gitlab-runner",
      caFile: "/etc/lxd-driver/ca.pem",
    },
    cache: { hostDir: "/var/cache/lxd-driver", perSlot: true },
    job: { shell: "sh", buildsDir: "/srv/builds", cacheDir: "/srv/cache" },
    lxd: {
      cli: "incus",
      remote: "local",
      project: "ci",
      target: "node-2",
      hostId: "runner-host-2",
    },
    pool: { size: 3 },
    log: { debug: true },
  });
});

Deno.test("parseSettings() takes ready_timeout as whole seconds or as a duration", () => {
  assert.equal(
    parseSettings("[instance]\nready_timeout = 90\n", "a").instance.readyTimeoutMs,
    90_000,
  );
  assert.equal(
    parseSettings('[instance]\nready_timeout = "90s"\n', "a").instance.readyTimeoutMs,
    90_000,
  );
});

Deno.test("parseSettings() rejects a ready_timeout of zero or of more than a day", () => {
  for (const value of ["0", '"0s"', "-1", '"25d"', "2147484"]) {
    const message = failureOf(() =>
      parseSettings(`[instance]\nready_timeout = ${value}\n`, "t.toml")
    );
    assert.match(
      message,
      /t\.toml:2: \[instance\] ready_timeout: must be between 100ms and 86400\.0s/,
      value,
    );
  }
});

Deno.test("parseSettings() rejects a ready_timeout that is not a duration", () => {
  for (const value of ['"90"', "1.5", '"soon"', "true"]) {
    const message = failureOf(() =>
      parseSettings(`[instance]\nready_timeout = ${value}\n`, "t.toml")
    );
    assert.match(message, /t\.toml:2: \[instance\] ready_timeout: expected a duration/, value);
  }
});

Deno.test("parseSettings() names the file, line and column of invalid TOML", () => {
  const message = failureOf(() =>
    parseSettings('[image]\ndefault = "images:debian/12"\nallowed = [\n', "/etc/lxd-driver/c.toml")
  );
  assert.match(message, /^\/etc\/lxd-driver\/c\.toml:\d+:\d+: invalid TOML/);

  const second = failureOf(() => parseSettings('[image]\ndefault = "unterminated\n', "bad.toml"));
  assert.match(second, /^bad\.toml:2:\d+: invalid TOML: /);
});

Deno.test("parseSettings() names the section, key and line of a value of the wrong type", () => {
  const text = `[image]
default = "images:debian/12"

[instance]
profiles = "default"
`;
  const message = failureOf(() => parseSettings(text, "types.toml"));
  assert.match(message, /types\.toml:5: \[instance\] profiles: expected an array of strings/);

  const other = failureOf(() => parseSettings('[log]\ndebug = "yes"\n', "log.toml"));
  assert.match(other, /log\.toml:2: \[log\] debug: expected true or false/);
});

Deno.test("parseSettings() rejects an unknown key, naming it and its line", () => {
  const message = failureOf(() => parseSettings("[instance]\n\nephemerall = true\n", "k.toml"));
  assert.match(message, /k\.toml:3: unknown key \[instance\] ephemerall/);
});

Deno.test("parseSettings() rejects an unknown section, naming it and its line", () => {
  const message = failureOf(() =>
    parseSettings('[image]\ndefault = "x"\n\n[images]\nallowed = []\n', "s.toml")
  );
  assert.match(message, /s\.toml:4: unknown section \[images\]/);
});

Deno.test("parseSettings() reports several problems together", () => {
  const text = `[image]
allowed = "images:*"

[job]
shell = "zsh"
builds_dir = "builds"
cache_dir = "cache"

[extra]
x = 1
`;
  const message = failureOf(() => parseSettings(text, "many.toml"));
  assert.match(message, /^invalid settings:\n/);
  assert.match(message, /many\.toml:2: \[image\] allowed: expected an array of strings/);
  assert.match(message, /many\.toml:5: \[job\] shell: expected one of "bash", "sh", "pwsh"/);
  assert.match(message, /many\.toml:6: \[job\] builds_dir: expected an absolute path/);
  assert.match(message, /many\.toml:7: \[job\] cache_dir: expected an absolute path/);
  assert.match(message, /many\.toml:9: unknown section \[extra\]/);
  assert.equal(message.split("\n").length, 6, message);
});

Deno.test("parseSettings() rejects a relative builds_dir", () => {
  const message = failureOf(() => parseSettings('[job]\nbuilds_dir = "builds"\n', "b.toml"));
  assert.match(message, /b\.toml:2: \[job\] builds_dir: expected an absolute path/);
});

Deno.test("parseSettings() rejects a shell not in the list", () => {
  const message = failureOf(() => parseSettings('[job]\nshell = "zsh"\n', "sh.toml"));
  assert.match(message, /sh\.toml:2: \[job\] shell: expected one of "bash", "sh", "pwsh"/);
  assert.equal(parseSettings('[job]\nshell = "pwsh"\n', "sh.toml").job.shell, "pwsh");
});

Deno.test("parseSettings() rejects an empty default image and an unknown cli", () => {
  const message = failureOf(() =>
    parseSettings('[image]\ndefault = "  "\n[lxd]\ncli = "docker"\n', "e.toml")
  );
  assert.match(message, /e\.toml:2: \[image\] default: must not be empty/);
  assert.match(message, /e\.toml:4: \[lxd\] cli: expected one of "lxc", "incus"/);
});

Deno.test("parseSettings() rejects a section that is not a table", () => {
  const message = failureOf(() => parseSettings('image = "images:debian/12"\n', "t.toml"));
  assert.match(message, /image must be a table/);
});

Deno.test("loadSettings() gives the defaults when the default file does not exist", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const settings = await loadSettings({ path: `${dir}/config.toml`, explicit: false });
    assert.deepEqual(settings, DEFAULTS);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSettings() fails naming the path when an explicit file does not exist", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/missing.toml`;
  try {
    await assert.rejects(loadSettings({ path, explicit: true }), (error: unknown) => {
      assert.ok(error instanceof SystemFailure);
      assert.ok(error.message.includes(path), error.message);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadSettings() reads and validates a file, naming it in messages", async () => {
  const path = await Deno.makeTempFile({ suffix: ".toml" });
  try {
    await Deno.writeTextFile(path, '[job]\nshell = "sh"\n');
    const settings = await loadSettings({ path, explicit: true });
    assert.equal(settings.source, path);
    assert.equal(settings.job.shell, "sh");

    await Deno.writeTextFile(path, "[job]\nshel = 1\n");
    await assert.rejects(loadSettings({ path, explicit: false }), (error: unknown) => {
      assert.ok(error instanceof SystemFailure);
      assert.ok(error.message.includes(`${path}:2: unknown key [job] shel`), error.message);
      return true;
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("settingsPath() prefers the flag, then LXD_DRIVER_CONFIG, then the default path", () => {
  const env = envOf({ LXD_DRIVER_CONFIG: "/env/config.toml" });
  assert.deepEqual(settingsPath("/flag/config.toml", env), {
    path: "/flag/config.toml",
    explicit: true,
  });
  assert.deepEqual(settingsPath(undefined, env), { path: "/env/config.toml", explicit: true });
  assert.deepEqual(settingsPath(undefined, envOf({})), {
    path: DEFAULT_SETTINGS_PATH,
    explicit: false,
  });
  assert.equal(DEFAULT_SETTINGS_PATH, "/etc/lxd-driver/config.toml");
});

Deno.test("settingsPath() treats an empty LXD_DRIVER_CONFIG as unset", () => {
  assert.deepEqual(settingsPath(undefined, envOf({ LXD_DRIVER_CONFIG: "" })), {
    path: DEFAULT_SETTINGS_PATH,
    explicit: false,
  });
});

Deno.test("parseSettings() reads [image.aliases] as a table of names to image references", () => {
  const settings = parseSettings(
    '[image.aliases]\n"debian:12" = "images:debian/12"\n"alpine" = "images:alpine/3.20"\n',
    "a.toml",
  );
  assert.deepEqual({ ...settings.image.aliases }, {
    "debian:12": "images:debian/12",
    alpine: "images:alpine/3.20",
  });
  const inline = parseSettings(
    '[image]\naliases = { bookworm = "lxd-driver-test/bookworm" }\n',
    "a.toml",
  );
  assert.deepEqual({ ...inline.image.aliases }, { bookworm: "lxd-driver-test/bookworm" });
});

Deno.test("parseSettings() rejects an [image.aliases] value that is not a string", () => {
  for (const value of ["1", "true", '["images:debian/12"]', '{ x = "y" }']) {
    const message = failureOf(() =>
      parseSettings(`[image.aliases]\n"debian:12" = ${value}\n`, "al.toml")
    );
    assert.match(message, /^invalid settings:\n {2}al\.toml:/, value);
    assert.ok(
      message.includes("[image] aliases: expected a table of strings"),
      `${value}: ${message}`,
    );
  }
  const inline = failureOf(() => parseSettings("[image]\naliases = { a = 1 }\n", "al.toml"));
  assert.match(inline, /al\.toml:2: \[image\] aliases: expected a table of strings/);
  const notTable = failureOf(() => parseSettings('[image]\naliases = "x"\n', "al.toml"));
  assert.match(notTable, /al\.toml:2: \[image\] aliases: expected a table of strings/);
});

Deno.test("parseSettings() reads nesting, privileged and allow_privileged", () => {
  assert.deepEqual(
    parseSettings("[instance]\nnesting = true\n", "i.toml").instance,
    { ...DEFAULTS.instance, nesting: true },
  );
  assert.deepEqual(
    parseSettings("[instance]\nallow_privileged = true\n", "i.toml").instance,
    { ...DEFAULTS.instance, allowPrivileged: true },
  );
  assert.deepEqual(
    parseSettings("[instance]\nprivileged = true\nallow_privileged = true\n", "i.toml").instance,
    { ...DEFAULTS.instance, privileged: true, allowPrivileged: true },
  );
  const message = failureOf(() => parseSettings('[instance]\nnesting = "yes"\n', "i.toml"));
  assert.match(message, /i\.toml:2: \[instance\] nesting: expected true or false/);
});

Deno.test("parseSettings() refuses privileged without allow_privileged, naming its line", () => {
  for (const text of ["privileged = true\n", "privileged = true\nallow_privileged = false\n"]) {
    const message = failureOf(() =>
      parseSettings(`[image]\nallowed = []\n\n[instance]\n${text}`, "p.toml")
    );
    assert.equal(
      message,
      "invalid settings:\n  p.toml:5: [instance] privileged = true needs " +
        "[instance] allow_privileged = true as well: a privileged container's root is the host's root",
    );
  }
});

Deno.test("parseSettings() reads each [limits] key", () => {
  const limits = (text: string) => parseSettings(`[limits]\n${text}\n`, "l.toml").limits;
  assert.deepEqual(limits("cpu = 4"), { ...DEFAULTS.limits, cpu: 4 });
  assert.deepEqual(limits('memory = "512MiB"'), {
    ...DEFAULTS.limits,
    memory: { text: "512MiB", bytes: 512 * 2 ** 20 },
  });
  assert.deepEqual(limits("processes = 500"), { ...DEFAULTS.limits, processes: 500 });
  assert.deepEqual(limits('disk = "10GiB"'), {
    ...DEFAULTS.limits,
    disk: { text: "10GiB", bytes: 10 * 2 ** 30 },
  });
  assert.deepEqual(limits("max_cpu = 16"), { ...DEFAULTS.limits, maxCpu: 16 });
  assert.deepEqual(limits('max_memory = "8GB"'), {
    ...DEFAULTS.limits,
    maxMemory: { text: "8GB", bytes: 8e9 },
  });
  assert.deepEqual(limits("cpu = 0\nprocesses = 0\nmax_cpu = 0"), DEFAULTS.limits);
});

Deno.test("parseSettings() rejects a size that LXD would not take", () => {
  for (const key of ["memory", "disk", "max_memory"]) {
    for (const value of ['"4 GB"', '"1.5GiB"', '"0"', '"-1GiB"', '"GiB"', '""', "4096", "true"]) {
      const message = failureOf(() => parseSettings(`[limits]\n${key} = ${value}\n`, "s.toml"));
      assert.ok(
        message.includes(
          `s.toml:2: [limits] ${key}: expected a size such as "4GiB" or "512MiB"`,
        ),
        `${key} = ${value}: ${message}`,
      );
    }
  }
});

Deno.test("parseSettings() rejects a negative, fractional or non-numeric count", () => {
  for (const key of ["cpu", "processes", "max_cpu"]) {
    for (const value of ["-1", "1.5", '"2"', "true"]) {
      const message = failureOf(() => parseSettings(`[limits]\n${key} = ${value}\n`, "c.toml"));
      assert.ok(
        message.includes(`c.toml:2: [limits] ${key}: expected a whole number (0 for no limit)`),
        `${key} = ${value}: ${message}`,
      );
    }
  }
});

Deno.test("parseSettings() reads the [helper] and [cache] keys", () => {
  const settings = parseSettings(
    `[helper]
gitlab_runner = "/opt/gitlab-runner"
ca_file = "/etc/ssl/private-ca.pem"

[cache]
host_dir = "/srv/lxd-cache/"
per_slot = true
`,
    "h.toml",
  );
  assert.deepEqual(settings.helper, {
    gitlabRunner: "/opt/gitlab-runner",
    caFile: "/etc/ssl/private-ca.pem",
  });
  assert.deepEqual(settings.cache, { hostDir: "/srv/lxd-cache/", perSlot: true });
  assert.deepEqual(parseSettings('[cache]\nhost_dir = "/c"\n', "h.toml").cache, {
    hostDir: "/c",
    perSlot: false,
  });
});

Deno.test("parseSettings() rejects relative paths for the [helper] and [cache] keys", () => {
  const text = `[helper]
gitlab_runner = "gitlab-runner"
ca_file = "./ca.pem"

[cache]
host_dir = "cache"
per_slot = "yes"
`;
  const message = failureOf(() => parseSettings(text, "rel.toml"));
  assert.equal(
    message,
    "invalid settings:\n" +
      "  rel.toml:2: [helper] gitlab_runner: expected an absolute path\n" +
      "  rel.toml:3: [helper] ca_file: expected an absolute path\n" +
      "  rel.toml:6: [cache] host_dir: expected an absolute path\n" +
      "  rel.toml:7: [cache] per_slot: expected true or false",
  );
  const empty = failureOf(() => parseSettings('[helper]\nca_file = ""\n', "rel.toml"));
  assert.match(empty, /rel\.toml:2: \[helper\] ca_file: expected an absolute path/);
});

Deno.test("parseSettings() rejects an unknown key inside [limits]", () => {
  const message = failureOf(() =>
    parseSettings('[limits]\ncpu = 2\nmax_cpus = 4\nmemory_max = "1GiB"\n', "u.toml")
  );
  assert.equal(
    message,
    "invalid settings:\n  u.toml:3: unknown key [limits] max_cpus\n" +
      "  u.toml:4: unknown key [limits] memory_max",
  );
});

Deno.test("parseSettings() reads [lxd] host_id and [pool] size", () => {
  const settings = parseSettings('[lxd]\nhost_id = "ci-2.example_a"\n[pool]\nsize = 4\n', "h.toml");
  assert.deepEqual(settings.lxd, { ...DEFAULTS.lxd, hostId: "ci-2.example_a" });
  assert.deepEqual(settings.pool, { size: 4 });
  assert.equal(
    parseSettings(`[lxd]\nhost_id = "${"a".repeat(63)}"\n`, "h.toml").lxd.hostId.length,
    63,
  );
});

Deno.test("parseSettings() rejects a host_id with other characters or too long, and a negative pool size", () => {
  for (const value of ["a b", "x/y", "$(id)", "a".repeat(64)]) {
    const message = failureOf(() => parseSettings(`[lxd]\nhost_id = "${value}"\n`, "h.toml"));
    assert.match(
      message,
      /h\.toml:2: \[lxd\] host_id: expected letters, digits, \. _ - \(at most 63\)/,
      value,
    );
  }
  const message = failureOf(() => parseSettings("[pool]\nsize = -1\n", "h.toml"));
  assert.match(message, /h\.toml:2: \[pool\] size: expected a whole number \(0 for no limit\)/);
});

Deno.test("parseSettings() reads [lxd] remote, project and target", () => {
  const settings = parseSettings(
    '[lxd]\ncli = "lxc"\nremote = "cluster-1"\nproject = "ci_jobs"\ntarget = "node.2"\n',
    "x.toml",
  );
  assert.deepEqual(settings.lxd, {
    cli: "lxc",
    remote: "cluster-1",
    project: "ci_jobs",
    target: "node.2",
    hostId: "",
  });
});

Deno.test("parseSettings() rejects [lxd] remote, project and target names that could be flags", () => {
  for (const key of ["remote", "project", "target"]) {
    for (const value of ["-x", "--project", "a b", "a:b", "a/b", ".x", "a".repeat(64)]) {
      const message = failureOf(() => parseSettings(`[lxd]\n${key} = "${value}"\n`, "x.toml"));
      assert.ok(
        message.includes(`x.toml:2: [lxd] ${key}: expected a name of letters, digits, . _ -`),
        `${key} = ${value}: ${message}`,
      );
    }
  }
});

Deno.test("parseSettings() refuses [cache] host_dir with an [lxd] remote, naming both", () => {
  assert.throws(
    () =>
      parseSettings(`[cache]\nhost_dir = "/var/cache/ci"\n\n[lxd]\nremote = "cluster"\n`, "x.toml"),
    (error: unknown) =>
      error instanceof SystemFailure &&
      /x\.toml:2: \[cache\] host_dir cannot be used with \[lxd\] remote/.test(error.message),
  );
});
