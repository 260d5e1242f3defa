import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import { createLogger } from "../../lib/log.ts";
import { Lxd, LxdError } from "../../lib/lxd.ts";
import { FakeLxc, INSTANCE_NOT_FOUND, LXD_DOWN, OK, type Reply } from "./fake_lxc.ts";

function client(script: readonly Reply[], debug = false) {
  const lines: string[] = [];
  const lxc = new FakeLxc(script);
  const lxd = new Lxd({
    target: { cli: "lxc", remote: "", project: "", member: "" },
    log: createLogger({ debug, sink: (line) => lines.push(line) }),
    runCli: lxc.runner(),
  });
  return { lxd, lxc, lines };
}

/** Awaits `promise`, expects an LxdError and returns it. */
async function lxdErrorOf(promise: Promise<unknown>): Promise<LxdError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof LxdError, `expected an LxdError, got ${error}`);
    return error;
  }
  assert.fail("expected an LxdError, nothing was thrown");
}

Deno.test("Lxd.run() passes argv unchanged and returns stdout", async () => {
  const { lxd, lxc } = client([{ code: 0, stdout: "hello\n" }]);
  const args = ["query", "--", "a b", "$(id)", "'quoted'", "", "x;y", "-flag"];
  assert.equal(await lxd.run(args), "hello\n");
  assert.deepEqual(lxc.calls, [args]);
});

Deno.test("Lxd.run() throws an LxdError classified as not found", async () => {
  const { lxd } = client([INSTANCE_NOT_FOUND]);
  const error = await lxdErrorOf(lxd.run(["info", "--", "x"]));
  assert.ok(error instanceof SystemFailure);
  assert.equal(error.name, "LxdError");
  assert.equal(error.notFound, true);
  assert.equal(error.unreachable, false);
  assert.equal(error.code, 1);
  assert.deepEqual(error.args, ["info", "--", "x"]);
  assert.equal(error.stderr, INSTANCE_NOT_FOUND.stderr);
  assert.equal(
    error.message,
    'info -- x failed: Failed checking instance exists "local:x": Instance not found',
  );
});

Deno.test("Lxd.run() throws an LxdError classified as unreachable, with a hint", async () => {
  const { lxd } = client([LXD_DOWN]);
  const error = await lxdErrorOf(lxd.run(["list", "--format", "json"]));
  assert.equal(error.unreachable, true);
  assert.equal(error.notFound, false);
  assert.match(
    error.message,
    /^list --format json failed: Get "http:\/\/unix\.socket\/1\.0": dial unix/,
  );
  assert.match(error.message, /\nLXD is not reachable\. Check that the daemon runs/);
  assert.match(error.message, /lxd group/);
});

Deno.test("LxdError recognises the usual unreachable messages", () => {
  for (
    const stderr of [
      LXD_DOWN.stderr!,
      'Error: LXD unix socket "/var/snap/lxd/common/lxd/unix.socket" not accessible: permission denied',
      'Error: Get "https://10.0.0.1:8443/1.0": dial tcp 10.0.0.1:8443: connect: connection refused',
    ]
  ) {
    const error = new LxdError(["list"], 1, stderr);
    assert.equal(error.unreachable, true, stderr);
    assert.match(error.message, /LXD is not reachable/);
  }
  const plain = new LxdError(["delete", "--force"], 1, "Error: busy\n");
  assert.equal(plain.unreachable, false);
  assert.equal(plain.notFound, false);
  assert.equal(plain.message, "delete --force failed: busy");
});

Deno.test("LxdError names the exit code when stderr is empty", async () => {
  const { lxd } = client([{ code: 3 }]);
  const error = await lxdErrorOf(lxd.run(["start", "--", "x"]));
  assert.equal(error.message, "start -- x failed: exit code 3");
  assert.equal(error.code, 3);
});

Deno.test("Lxd.delete() is true when deleted and false when not found", async () => {
  const { lxd, lxc } = client([OK, INSTANCE_NOT_FOUND, LXD_DOWN]);
  assert.equal(await lxd.delete("c1"), true);
  assert.equal(await lxd.delete("c2"), false);
  const error = await lxdErrorOf(lxd.delete("c3"));
  assert.equal(error.unreachable, true);
  assert.deepEqual(lxc.calls, [
    ["delete", "--force", "--", "c1"],
    ["delete", "--force", "--", "c2"],
    ["delete", "--force", "--", "c3"],
  ]);
});

Deno.test("Lxd.exec() puts the container name and argv after --", async () => {
  const { lxd, lxc } = client([{ code: 0, stdout: "out" }]);
  assert.equal(await lxd.exec("c1", ["sh", "-c", "echo $1", "--privileged"]), "out");
  assert.deepEqual(lxc.calls, [[
    "exec",
    "--force-noninteractive",
    "--",
    "c1",
    "sh",
    "-c",
    "echo $1",
    "--privileged",
  ]]);
});

Deno.test("Lxd.create() posts the whole instance as JSON, never as flags", async () => {
  const { lxd, lxc } = client([OK]);
  const spec = {
    name: "-name",
    type: "container" as const,
    source: { type: "image" as const, fingerprint: "abc" },
    profiles: ["p1"],
    ephemeral: false,
    config: { "user.a": "1" },
    devices: {},
  };
  await lxd.create(spec);
  assert.deepEqual(lxc.calls, [[
    "query",
    "--wait",
    "--request",
    "POST",
    "--data",
    JSON.stringify(spec),
    "--",
    "/1.0/instances",
  ]]);
});

Deno.test("Lxd.start() and Lxd.pushFile() put names and paths after --", async () => {
  const { lxd, lxc } = client([OK, OK]);
  await lxd.start("-c1");
  await lxd.pushFile("/host/gitlab-runner", "c1", "/usr/local/bin/gitlab-runner", "0755");
  assert.deepEqual(lxc.calls, [
    ["start", "--", "-c1"],
    [
      "file",
      "push",
      "--create-dirs",
      "--mode",
      "0755",
      "--",
      "/host/gitlab-runner",
      "c1/usr/local/bin/gitlab-runner",
    ],
  ]);
});

Deno.test("Lxd.list() asks the API once and parses names, statuses and configs", async () => {
  const { lxd, lxc } = client([{
    code: 0,
    stdout: JSON.stringify([
      { name: "a", status: "Running", config: { "user.x": "1" }, devices: {} },
      { name: "b", status: "Stopped" },
    ]),
  }]);
  assert.deepEqual(await lxd.list(), [
    { name: "a", status: "Running", config: { "user.x": "1" } },
    { name: "b", status: "Stopped", config: {} },
  ]);
  assert.deepEqual(lxc.calls, [[
    "query",
    "--wait",
    "--request",
    "GET",
    "--",
    "/1.0/instances?recursion=1",
  ]]);
});

Deno.test("Lxd.run() logs each call at debug level with bodies and scripts as placeholders", async () => {
  const { lxd, lines } = client([OK, { code: 1, stderr: "Error: x\n" }], true);
  await lxd.run(["exec", "--force-noninteractive", "--", "c", "sh", "-c", "echo one\necho two"]);
  await lxd.run([
    "query",
    "--wait",
    "--request",
    "POST",
    "--data",
    '{"name":"c"}',
    "--",
    "/1.0/instances",
  ])
    .catch(() => {});
  assert.equal(lines.length, 2);
  assert.match(
    lines[0]!,
    /^\[lxd-driver debug\] lxc exec --force-noninteractive -- c sh -c <script>: exit 0 in /,
  );
  assert.match(
    lines[1]!,
    /^\[lxd-driver debug\] lxc query --wait --request POST --data <json> -- \/1\.0\/instances: exit 1 in /,
  );

  const quiet = client([OK]);
  await quiet.lxd.run(["list"]);
  assert.deepEqual(quiet.lines, []);
});

Deno.test("Lxd.run() kills a call that outlives its timeout", async () => {
  const { lxd } = client([{ hang: true }]);
  const error = await lxdErrorOf(lxd.run(["exec"], { timeoutMs: 100 }));
  assert.notEqual(error.code, 0);
});
