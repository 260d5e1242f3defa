import assert from "node:assert/strict";
import { BuildFailure, SystemFailure } from "../../lib/errors.ts";
import { LxdError } from "../../lib/lxd.ts";
import { prepare } from "../../stages/prepare.ts";
import {
  harness,
  IMAGE_NOT_FOUND,
  INSTANCE_NOT_FOUND,
  jobEnv,
  LXD_DOWN,
  NAME,
  OK,
  payloadFile,
  SECRET,
} from "./fake_lxc.ts";

const DELETE = ["delete", "--force", "--", NAME];

/** The `user.lxd-driver.created=` value of a launch argv, checked to lie within [from, to]. */
function createdLabel(argv: readonly string[], from: Date, to: Date): string {
  const label = argv.find((arg) => arg.startsWith("user.lxd-driver.created="));
  assert.ok(label, `no created label in ${JSON.stringify(argv)}`);
  const value = label.slice("user.lxd-driver.created=".length);
  assert.match(value, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  const time = Date.parse(value);
  assert.ok(time >= from.getTime() && time <= to.getTime(), value);
  return label;
}

/** The labels part of the launch argv for job 42 of project 7 on runner 3. */
function labelArgs(created: string): string[] {
  return [
    "--config",
    "user.lxd-driver.managed=true",
    "--config",
    "user.lxd-driver.runner-id=3",
    "--config",
    "user.lxd-driver.project-id=7",
    "--config",
    "user.lxd-driver.job-id=42",
    "--config",
    created,
  ];
}

/** Checks the readiness exec's argv: `sh -c SCRIPT lxd-driver-ready BUILDS CACHE` after `--`. */
function readyCall(argv: readonly string[] | undefined, builds: string, cache: string): void {
  assert.ok(argv);
  const script = argv[6];
  assert.equal(typeof script, "string");
  assert.ok(script!.includes('mkdir -p -- "$1" "$2"'), script);
  assert.ok(script!.includes("systemctl is-system-running"), script);
  assert.deepEqual(argv, [
    "exec",
    "--force-noninteractive",
    "--",
    NAME,
    "sh",
    "-c",
    script,
    "lxd-driver-ready",
    builds,
    cache,
  ]);
}

Deno.test("prepare() deletes, launches the default image and waits until ready", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload), script: [INSTANCE_NOT_FOUND, OK, OK] });
  const from = new Date();
  await prepare(h.ctx, h.lxd);
  const to = new Date();

  assert.equal(h.lxc.calls.length, 3, JSON.stringify(h.lxc.calls));
  assert.deepEqual(h.lxc.calls[0], DELETE);
  const created = createdLabel(h.lxc.calls[1]!, from, to);
  assert.deepEqual(h.lxc.calls[1], [
    "launch",
    "--profile",
    "default",
    ...labelArgs(created),
    "--",
    "images:debian/12",
    NAME,
  ]);
  readyCall(h.lxc.calls[2], "/builds", "/cache");

  assert.equal(h.lines[0], `Launching container ${NAME} from image images:debian/12`);
  assert.match(h.lines[1]!, new RegExp(`^Container ${NAME} is ready \\(`));
  assert.equal(h.lines.length, 2, h.lines.join("\n"));
  assert.deepEqual(h.written, []);
});

Deno.test("prepare() passes profiles, storage pool, ephemeral and the job's image", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload, { CUSTOM_ENV_CI_JOB_IMAGE: "lxd-driver-test/bookworm" }),
    settings: `
[image]
allowed = ["lxd-driver-test/*"]
[instance]
profiles = ["default", "ci"]
storage_pool = "fast"
ephemeral = true
[job]
builds_dir = "/srv/builds"
cache_dir = "/srv/cache"
`,
    script: [INSTANCE_NOT_FOUND, OK, OK],
  });
  const from = new Date();
  await prepare(h.ctx, h.lxd);
  const to = new Date();

  assert.equal(h.lxc.calls.length, 3);
  assert.deepEqual(h.lxc.calls[0], DELETE);
  const created = createdLabel(h.lxc.calls[1]!, from, to);
  assert.deepEqual(h.lxc.calls[1], [
    "launch",
    "--profile",
    "default",
    "--profile",
    "ci",
    "--storage",
    "fast",
    "--ephemeral",
    ...labelArgs(created),
    "--",
    "lxd-driver-test/bookworm",
    NAME,
  ]);
  readyCall(h.lxc.calls[2], "/srv/builds", "/srv/cache");
});

Deno.test("prepare() launches with --no-profiles when no profile is configured", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    settings: "[instance]\nprofiles = []\n",
    script: [INSTANCE_NOT_FOUND, OK, OK],
  });
  const from = new Date();
  await prepare(h.ctx, h.lxd);
  const created = createdLabel(h.lxc.calls[1]!, from, new Date());
  assert.deepEqual(h.lxc.calls[1], [
    "launch",
    "--no-profiles",
    ...labelArgs(created),
    "--",
    "images:debian/12",
    NAME,
  ]);
});

Deno.test("prepare() runs the configured cli", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    settings: '[lxd]\ncli = "incus"\n',
    script: [INSTANCE_NOT_FOUND, OK, OK],
  });
  await prepare(h.ctx, h.lxd);
  assert.equal(h.lxc.calls.length, 3);
  assert.deepEqual(h.lxc.calls[0], DELETE);
  assert.deepEqual(h.lxc.otherCliCalls, []);
});

Deno.test("prepare() rejects a disallowed image without any lxc call", async () => {
  await using payload = await payloadFile();
  for (const image of ["--privileged", "-c", "evil/x", "$(id)", "a b", "../x"]) {
    const h = harness({
      env: jobEnv(payload, { CUSTOM_ENV_CI_JOB_IMAGE: image }),
      settings: '[image]\nallowed = ["lxd-driver-test/*"]\n',
      script: [OK, OK, OK],
    });
    await assert.rejects(prepare(h.ctx, h.lxd), BuildFailure, image);
    assert.deepEqual(h.lxc.calls, [], image);
  }
});

Deno.test("prepare() warns when it deletes a leftover container", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload), script: [OK, OK, OK] });
  await prepare(h.ctx, h.lxd);
  assert.equal(h.lxc.calls.length, 3);
  assert.ok(
    h.lines.includes(`WARNING: deleted a leftover container named ${NAME}`),
    h.lines.join("\n"),
  );
});

Deno.test("prepare() deletes the container and reports a system failure when launch fails", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    script: [
      INSTANCE_NOT_FOUND,
      { code: 1, stderr: "Error: Failed instance creation: No space left on device\n" },
      INSTANCE_NOT_FOUND,
    ],
  });
  await assert.rejects(prepare(h.ctx, h.lxd), (error: unknown) => {
    assert.ok(error instanceof SystemFailure);
    assert.ok(error instanceof LxdError);
    assert.match(error.message, /No space left on device/);
    return true;
  });
  assert.equal(h.lxc.calls.length, 3);
  assert.deepEqual(h.lxc.calls[0], DELETE);
  assert.equal(h.lxc.calls[1]![0], "launch");
  assert.deepEqual(h.lxc.calls[2], DELETE);
});

Deno.test("prepare() reports the launch error even when the delete after it fails", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    script: [INSTANCE_NOT_FOUND, { code: 1, stderr: "Error: boom\n" }, LXD_DOWN],
  });
  await assert.rejects(prepare(h.ctx, h.lxd), (error: unknown) => {
    assert.ok(error instanceof LxdError);
    assert.match(error.message, /^launch --profile failed: boom$/);
    return true;
  });
  assert.equal(h.lxc.calls.length, 3);
  assert.ok(
    h.lines.some((line) => line.startsWith(`WARNING: could not delete container ${NAME}: `)),
    h.lines.join("\n"),
  );
});

Deno.test("prepare() makes a missing job-requested image a build failure", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload, { CUSTOM_ENV_CI_JOB_IMAGE: "lxd-driver-test/missing" }),
    settings: '[image]\nallowed = ["lxd-driver-test/*"]\n',
    script: [INSTANCE_NOT_FOUND, IMAGE_NOT_FOUND, INSTANCE_NOT_FOUND],
  });
  await assert.rejects(prepare(h.ctx, h.lxd), (error: unknown) => {
    assert.ok(error instanceof BuildFailure);
    assert.ok(error.message.includes('"lxd-driver-test/missing"'), error.message);
    return true;
  });
  assert.deepEqual(h.lxc.calls.map((argv) => argv[0]), ["delete", "launch", "delete"]);
  assert.deepEqual(h.lxc.calls[2], DELETE);
});

Deno.test("prepare() makes a missing default image a system failure", async () => {
  await using payload = await payloadFile();
  for (const requested of [undefined, "images:debian/12"]) {
    const env = requested === undefined
      ? jobEnv(payload)
      : jobEnv(payload, { CUSTOM_ENV_CI_JOB_IMAGE: requested });
    const h = harness({ env, script: [INSTANCE_NOT_FOUND, IMAGE_NOT_FOUND, INSTANCE_NOT_FOUND] });
    await assert.rejects(prepare(h.ctx, h.lxd), (error: unknown) => {
      assert.ok(error instanceof SystemFailure, String(requested));
      assert.ok(!(error instanceof BuildFailure));
      return true;
    });
    assert.deepEqual(h.lxc.calls.map((argv) => argv[0]), ["delete", "launch", "delete"]);
  }
});

Deno.test("prepare() deletes the container when it does not become ready", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    script: [
      INSTANCE_NOT_FOUND,
      OK,
      { code: 1, stderr: "Error: Instance is not running\n" },
      OK,
    ],
  });
  await assert.rejects(prepare(h.ctx, h.lxd), (error: unknown) => {
    assert.ok(error instanceof SystemFailure);
    assert.ok(!(error instanceof LxdError));
    assert.ok(error.message.includes(NAME), error.message);
    assert.ok(error.message.includes("ready_timeout"), error.message);
    assert.match(error.message, /Instance is not running/);
    return true;
  });
  assert.deepEqual(h.lxc.calls.map((argv) => argv[0]), ["delete", "launch", "exec", "delete"]);
  assert.deepEqual(h.lxc.calls[3], DELETE);
});

Deno.test("prepare() gives up on readiness after ready_timeout", async () => {
  await using payload = await payloadFile();
  const h = harness({
    env: jobEnv(payload),
    settings: '[instance]\nready_timeout = "200ms"\n',
    script: [INSTANCE_NOT_FOUND, OK, { hang: true }, OK],
  });
  const started = performance.now();
  await assert.rejects(prepare(h.ctx, h.lxd), (error: unknown) => {
    assert.ok(error instanceof SystemFailure);
    assert.match(error.message, /did not become ready within 200ms \(\[instance\] ready_timeout\)/);
    return true;
  });
  assert.ok(performance.now() - started < 5_000);
  assert.deepEqual(h.lxc.calls.map((argv) => argv[0]), ["delete", "launch", "exec", "delete"]);
});

Deno.test("prepare() fails without launching when LXD is unreachable", async () => {
  await using payload = await payloadFile();
  const h = harness({ env: jobEnv(payload), script: [LXD_DOWN] });
  await assert.rejects(prepare(h.ctx, h.lxd), (error: unknown) => {
    assert.ok(error instanceof LxdError);
    assert.equal(error.unreachable, true);
    assert.match(error.message, /LXD is not reachable/);
    return true;
  });
  assert.deepEqual(h.lxc.calls, [DELETE]);
});

Deno.test("prepare() fails without any lxc call when JOB_RESPONSE_FILE is unset", async () => {
  const h = harness({ script: [OK, OK, OK] });
  await assert.rejects(prepare(h.ctx, h.lxd), SystemFailure);
  assert.deepEqual(h.lxc.calls, []);
});

Deno.test("prepare() never logs a job variable's value, even with debug on", async () => {
  await using payload = await payloadFile();
  const scripts = [
    [INSTANCE_NOT_FOUND, OK, OK],
    [OK, OK, OK],
    [INSTANCE_NOT_FOUND, { code: 1, stderr: "Error: boom\n" }, LXD_DOWN],
    [INSTANCE_NOT_FOUND, OK, { code: 1, stderr: "Error: nope\n" }, LXD_DOWN],
  ];
  for (const script of scripts) {
    const h = harness({
      env: jobEnv(payload, { CUSTOM_ENV_SECRET: SECRET, CUSTOM_ENV_CI_JOB_TOKEN: SECRET }),
      debug: true,
      script,
    });
    await prepare(h.ctx, h.lxd).catch(() => {});
    assert.ok(h.lines.some((line) => line.startsWith("[lxd-driver debug] ")), "debug is on");
    for (const line of h.lines) assert.ok(!line.includes(SECRET), line);
    for (const argv of h.lxc.calls) assert.ok(!argv.join(" ").includes(SECRET));
  }
});
