import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
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

const DEFAULTS: Settings = {
  source: undefined,
  image: { default: "images:debian/12", allowed: [] },
  instance: { profiles: ["default"], storagePool: "", readyTimeoutMs: 120_000, ephemeral: false },
  job: { shell: "bash", buildsDir: "/builds", cacheDir: "/cache" },
  lxd: { cli: "lxc" },
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

[instance]
profiles = ["default", "ci"]
storage_pool = "fast"
ready_timeout = "5m"
ephemeral = true

[job]
shell = "sh"
builds_dir = "/srv/builds"
cache_dir = "/srv/cache"

[lxd]
cli = "incus"

[log]
debug = true
`;
  assert.deepEqual(parseSettings(text, "full.toml"), {
    source: "full.toml",
    image: {
      default: "lxd-driver-test/bookworm",
      allowed: ["lxd-driver-test/*", "images:debian/*"],
    },
    instance: {
      profiles: ["default", "ci"],
      storagePool: "fast",
      readyTimeoutMs: 300_000,
      ephemeral: true,
    },
    job: { shell: "sh", buildsDir: "/srv/builds", cacheDir: "/srv/cache" },
    lxd: { cli: "incus" },
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
