import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import { parseSettings } from "../../lib/settings.ts";
import {
  doctor,
  formatCheck,
  PROBLEMS_FOUND_EXIT_CODE,
  reportSettingsFailure,
} from "../../stages/doctor.ts";
import { harness, type HarnessOptions, IMAGE_NOT_FOUND, LXD_DOWN, type Reply } from "./fake_lxc.ts";

const FP = "aaaf0b4a65d824b883c38cd8963f725c8cd42fa7332f3975044d8a2339ef7661";
const FP2 = "3a571b1bc788866612add97632643d945ceef0ba9f4dc0e54acfe8d92ab67337";

function json(value: unknown): Reply {
  return { code: 0, stdout: JSON.stringify(value, null, "\t") + "\n" };
}

const SERVER = json({
  api_version: "1.0",
  auth: "trusted",
  environment: { server: "lxd", server_version: "5.0.2", server_name: "host1" },
});
const profile = (pool?: string) =>
  json({
    name: "p",
    devices: {
      eth0: { type: "nic", network: "lxdbr0" },
      ...(pool ? { root: { type: "disk", path: "/", pool } } : {}),
    },
  });
const pool = (driver: string, status = "Created") => json({ name: "x", driver, status });
const alias = (target: string) => json({ name: "a", target, type: "container" });
const IMAGE_INFO: Reply = {
  code: 0,
  stdout: `Fingerprint: ${FP2}\nSize: 1.00MB\nArchitecture: x86_64\n`,
};
const PROFILE_NOT_FOUND: Reply = { code: 1, stderr: "Error: Fetch profile: Profile not found\n" };
const POOL_NOT_FOUND: Reply = { code: 1, stderr: "Error: Storage pool not found\n" };
const ALIAS_NOT_FOUND: Reply = { code: 1, stderr: "Error: Image alias not found\n" };
const REMOTE_DOWN: Reply = {
  code: 1,
  stderr: 'Error: Failed getting image: Get "https://images.example/streams/v1/index.json": ' +
    "dial tcp: lookup images.example: no such host\n",
};

/** The calls of a healthy host with the default settings, in order. */
const HEALTHY = [SERVER, profile("fast"), pool("btrfs"), alias(FP)];
const CALLS = [
  ["query", "--", "/1.0"],
  ["query", "--", "/1.0/profiles/default"],
  ["query", "--", "/1.0/storage-pools/fast"],
  ["query", "--", "/1.0/images/aliases/lxd-driver-test%2Fbookworm"],
];
const BASE = `[image]\ndefault = "lxd-driver-test/bookworm"\n`;

async function runDoctor(options: HarnessOptions) {
  const h = harness(options);
  const failures = await doctor(h.ctx, h.lxd);
  const output = h.written.join("");
  // Every check is exactly one line, written on its own.
  for (const chunk of h.written) {
    assert.match(chunk, /^(OK {3}|WARN |FAIL |SKIP )\S[^\n]*?: [^\n]+\n$/, chunk);
    if (/^(WARN|FAIL)/.test(chunk)) assert.match(chunk, / — fix: \S/, chunk);
    else assert.ok(!chunk.includes(" — fix: "), chunk);
  }
  const line = (check: string) => {
    const found = h.written.filter((l) => l.slice(5).startsWith(`${check}: `));
    assert.equal(found.length, 1, `one ${check} line in:\n${output}`);
    return found[0]!.trimEnd();
  };
  return { h, failures, output, line };
}

async function tempFiles() {
  const dir = await Deno.makeTempDir({ prefix: "lxd-driver-doctor-" });
  const helper = `${dir}/gitlab-runner`;
  await Deno.writeTextFile(helper, "#!/bin/sh\n", { mode: 0o755 });
  const ca = `${dir}/ca.pem`;
  const pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  await Deno.writeTextFile(ca, pem + pem);
  const cache = `${dir}/cache`;
  await Deno.mkdir(cache);
  return {
    dir,
    helper,
    ca,
    cache,
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

Deno.test("doctor() on a healthy host prints one OK line per check and counts no failure", async () => {
  await using files = await tempFiles();
  const settings = `[image]
default = "lxd-driver-test/bookworm"
[image.aliases]
"debian:12" = "images:debian/12"
"busybox" = "local:lxd-driver-test/busybox"
[helper]
gitlab_runner = "${files.helper}"
ca_file = "${files.ca}"
[cache]
host_dir = "${files.cache}"
per_slot = true
[instance]
nesting = true
`;
  const { h, failures, output } = await runDoctor({
    settings,
    script: [...HEALTHY, IMAGE_INFO, alias(FP2)],
  });
  assert.equal(failures, 0);
  assert.equal(
    output,
    `OK   settings: loaded test.toml
OK   lxd: lxd 5.0.2 on host1, reached with lxc
OK   storage: pool "fast" (btrfs), the root disk of profile "default"
OK   default image: "lxd-driver-test/bookworm" is a local alias of image aaaf0b4a65d8
OK   image alias debian:12: "images:debian/12" is pullable from remote "images" (image 3a571b1bc788)
OK   image alias busybox: "local:lxd-driver-test/busybox" is a local alias of image 3a571b1bc788
OK   pool: off ([pool] size = 0)
OK   helper: ${files.helper} ([helper] gitlab_runner)
OK   ca_file: ${files.ca} (2 certificates)
OK   cache: ${files.cache} is writable, one directory per concurrent slot
OK   privileged: unprivileged containers; nesting is on, which is fairly safe in unprivileged containers
`,
  );
  assert.deepEqual(h.lxc.calls, [
    ...CALLS,
    ["image", "info", "--", "images:debian/12"],
    ["query", "--", "/1.0/images/aliases/lxd-driver-test%2Fbusybox"],
  ]);
  assert.deepEqual(h.lines, ["doctor: 0 failed, 0 warning(s), 11 OK"]);
  // The probe file doctor wrote to test the cache directory is gone again.
  assert.deepEqual(await Array.fromAsync(Deno.readDir(files.cache)), []);
});

Deno.test("doctor() with the built-in defaults names the missing default file", async () => {
  const h = harness({ script: HEALTHY });
  const ctx = { ...h.ctx, settings: parseSettings("", undefined) };
  await doctor(ctx, h.lxd);
  assert.equal(
    h.written[0],
    "OK   settings: built-in defaults; /etc/lxd-driver/config.toml not found\n",
  );
});

Deno.test("doctor() with LXD down fails its check with the hint and skips what needs LXD", async () => {
  const { h, failures, output, line } = await runDoctor({
    settings: `${BASE}[image.aliases]\n"x" = "images:x"\n`,
    script: [LXD_DOWN],
  });
  assert.equal(failures, 1);
  assert.deepEqual(h.lxc.calls, [["query", "--", "/1.0"]]);
  assert.match(line("lxd"), /^FAIL lxd: not reachable: query -- \/1\.0 failed: .*unix\.socket/);
  assert.match(line("lxd"), / — fix: Check that the daemon runs .*lxd group/);
  assert.match(
    output,
    /^SKIP storage, default image, image aliases: skipped because they need LXD/m,
  );
  // The checks that do not need LXD still ran.
  for (const check of ["settings", "helper", "ca_file", "cache", "privileged"]) line(check);
  assert.equal(h.written.length, 7);
});

Deno.test("doctor() when lxc itself cannot run fails the lxd check and skips the rest", async () => {
  const { failures, line, output } = await runDoctor({
    settings: BASE,
    script: [{ code: 127, stderr: "lxc: command not found\n" }],
  });
  assert.equal(failures, 1);
  assert.match(line("lxd"), /^FAIL lxd: cannot query LXD: .*command not found — fix: .*lxc query/);
  assert.match(output, /^SKIP storage, default image: /m);
});

Deno.test("doctor() warns about a dir storage pool but does not fail", async () => {
  const { failures, line } = await runDoctor({
    settings: BASE,
    script: [SERVER, profile("slow"), pool("dir"), alias(FP)],
  });
  assert.equal(failures, 0);
  assert.match(
    line("storage"),
    /^WARN storage: pool "slow" \(the root disk of profile "default"\) uses the dir driver, several times slower to launch than btrfs or zfs — fix: .*storage_pool/,
  );
});

Deno.test("doctor() takes [instance] storage_pool over the profiles' root disk", async () => {
  const { h, failures, line } = await runDoctor({
    settings: `${BASE}[instance]\nprofiles = ["default", "extra"]\nstorage_pool = "mine"\n`,
    script: [SERVER, profile(), profile(), pool("zfs"), alias(FP)],
  });
  assert.equal(failures, 0);
  assert.equal(line("storage"), `OK   storage: pool "mine" (zfs), from [instance] storage_pool`);
  assert.deepEqual(h.lxc.calls.slice(1, 4), [
    ["query", "--", "/1.0/profiles/default"],
    ["query", "--", "/1.0/profiles/extra"],
    ["query", "--", "/1.0/storage-pools/mine"],
  ]);
});

Deno.test("doctor() uses the root disk of the last profile that has one", async () => {
  const { line } = await runDoctor({
    settings: `${BASE}[instance]\nprofiles = ["a", "b", "c"]\n`,
    script: [SERVER, profile("first"), profile("second"), profile(), pool("btrfs"), alias(FP)],
  });
  assert.equal(
    line("storage"),
    `OK   storage: pool "second" (btrfs), the root disk of profile "b"`,
  );
});

Deno.test("doctor() fails the storage check for a missing profile, pool or root disk", async () => {
  const missingProfile = await runDoctor({
    settings: `${BASE}[instance]\nprofiles = ["default", "nope"]\n`,
    script: [SERVER, profile("fast"), PROFILE_NOT_FOUND, alias(FP)],
  });
  assert.equal(missingProfile.failures, 1);
  assert.match(
    missingProfile.line("storage"),
    /^FAIL storage: profile "nope" \(\[instance\] profiles\) does not exist — fix: create it \(lxc profile create nope\)/,
  );
  // The image checks still ran.
  assert.match(missingProfile.line("default image"), /^OK {3}/);

  const missingPool = await runDoctor({
    settings: `${BASE}[instance]\nstorage_pool = "gone"\n`,
    script: [SERVER, profile("fast"), POOL_NOT_FOUND, alias(FP)],
  });
  assert.equal(missingPool.failures, 1);
  assert.match(
    missingPool.line("storage"),
    /^FAIL storage: storage pool "gone" \(from \[instance\] storage_pool\) does not exist — fix: .*correct \[instance\] storage_pool$/,
  );

  const noRoot = await runDoctor({ settings: BASE, script: [SERVER, profile(), alias(FP)] });
  assert.equal(noRoot.failures, 1);
  assert.match(
    noRoot.line("storage"),
    /^FAIL storage: \[instance\] storage_pool is empty and no profile .* has a root disk — fix: .*lxc profile device add default root disk path=\/ pool=POOL/,
  );

  const unavailable = await runDoctor({
    settings: BASE,
    script: [SERVER, profile("fast"), pool("btrfs", "Unavailable"), alias(FP)],
  });
  assert.match(unavailable.line("storage"), /^FAIL storage: storage pool "fast" .* is Unavailable/);
});

Deno.test("doctor() fails when the default image is not on this host", async () => {
  const { h, failures, line } = await runDoctor({
    settings: `[image]\ndefault = "lxd-driver-test/nope"\n`,
    script: [SERVER, profile("fast"), pool("btrfs"), ALIAS_NOT_FOUND],
  });
  assert.equal(failures, 1);
  assert.match(
    line("default image"),
    /^FAIL default image: "lxd-driver-test\/nope" is neither an image alias nor a fingerprint on this host's LXD — fix: import it .* or change \[image\] default$/,
  );
  assert.equal(h.lxc.calls.length, 4, "no image info for a name that cannot be a fingerprint");
});

Deno.test("doctor() accepts a local fingerprint and fails an unknown one", async () => {
  const found = await runDoctor({
    settings: `[image]\ndefault = "3a571b1bc788"\n`,
    script: [SERVER, profile("fast"), pool("btrfs"), ALIAS_NOT_FOUND, IMAGE_INFO],
  });
  assert.equal(found.failures, 0);
  assert.equal(
    found.line("default image"),
    `OK   default image: "3a571b1bc788" is a local image (3a571b1bc788)`,
  );
  assert.deepEqual(found.h.lxc.calls.at(-1), ["image", "info", "--", "3a571b1bc788"]);

  const missing = await runDoctor({
    settings: `[image]\ndefault = "abcdef"\n`,
    script: [SERVER, profile("fast"), pool("btrfs"), ALIAS_NOT_FOUND, IMAGE_NOT_FOUND],
  });
  assert.equal(missing.failures, 1);
  assert.match(missing.line("default image"), /^FAIL default image: "abcdef" is neither/);
});

Deno.test("doctor() asks a remote about REMOTE:NAME and fails when it cannot answer", async () => {
  const { h, failures, line } = await runDoctor({
    settings: `[image]\ndefault = "images:debian/12"\n`,
    script: [SERVER, profile("fast"), pool("btrfs"), REMOTE_DOWN],
  });
  assert.equal(failures, 1);
  assert.deepEqual(h.lxc.calls.at(-1), ["image", "info", "--", "images:debian/12"]);
  assert.match(
    line("default image"),
    /^FAIL default image: "images:debian\/12" cannot be found on remote "images": image info -- images:debian\/12 failed: .*no such host — fix: check the remote/,
  );
});

Deno.test("doctor() checks every [image.aliases] target on a line of its own", async () => {
  const { failures, line } = await runDoctor({
    settings: `${BASE}[image.aliases]\n"good" = "lxd-driver-test/busybox"\n"bad" = "nope"\n`,
    script: [...HEALTHY, alias(FP2), ALIAS_NOT_FOUND],
  });
  assert.equal(failures, 1);
  assert.match(line("image alias good"), /^OK {3}image alias good: "lxd-driver-test\/busybox"/);
  assert.match(
    line("image alias bad"),
    /^FAIL image alias bad: "nope" is neither .* or change \[image\.aliases\] "bad"$/,
  );
});

Deno.test("doctor() warns about privileged containers", async () => {
  const { failures, line } = await runDoctor({
    settings: `${BASE}[instance]\nprivileged = true\nallow_privileged = true\n`,
    script: HEALTHY,
  });
  assert.equal(failures, 0);
  assert.match(
    line("privileged"),
    /^WARN privileged: privileged containers .*: jobs run as the host's root — fix: set \[instance\] privileged = false/,
  );
  const plain = await runDoctor({ settings: BASE, script: HEALTHY });
  assert.equal(plain.line("privileged"), "OK   privileged: unprivileged containers");
});

Deno.test("doctor() checks the helper: configured, on PATH, or missing", async () => {
  await using files = await tempFiles();
  const none = await runDoctor({ settings: BASE, script: HEALTHY });
  assert.equal(none.failures, 0);
  assert.match(
    none.line("helper"),
    /^WARN helper: .*cache and artifacts will be disabled in images without gitlab-runner — fix: /,
  );

  const onPath = await runDoctor({
    settings: BASE,
    script: HEALTHY,
    env: { PATH: `/nonexistent:relative:${files.dir}/` },
  });
  assert.equal(onPath.line("helper"), `OK   helper: ${files.helper} (gitlab-runner on PATH)`);

  const missing = await runDoctor({
    settings: `${BASE}[helper]\ngitlab_runner = "${files.dir}/nope"\n`,
    script: HEALTHY,
    env: { PATH: files.dir },
  });
  assert.equal(missing.failures, 1);
  assert.match(
    missing.line("helper"),
    /^FAIL helper: .*\/nope \(\[helper\] gitlab_runner\) does not exist — fix:/,
  );

  await Deno.chmod(files.helper, 0o644);
  const notExecutable = await runDoctor({
    settings: `${BASE}[helper]\ngitlab_runner = "${files.helper}"\n`,
    script: HEALTHY,
  });
  assert.match(notExecutable.line("helper"), /^FAIL helper: .* is not executable — fix:/);

  const directory = await runDoctor({
    settings: `${BASE}[helper]\ngitlab_runner = "${files.dir}"\n`,
    script: HEALTHY,
  });
  assert.match(directory.line("helper"), /^FAIL helper: .* is not a file — fix:/);
});

Deno.test("doctor() checks ca_file: readable and holding a certificate", async () => {
  await using files = await tempFiles();
  const unset = await runDoctor({ settings: BASE, script: HEALTHY });
  assert.equal(unset.line("ca_file"), "OK   ca_file: [helper] ca_file not set");

  await Deno.writeTextFile(`${files.dir}/key.pem`, "-----BEGIN PRIVATE KEY-----\n");
  const notPem = await runDoctor({
    settings: `${BASE}[helper]\nca_file = "${files.dir}/key.pem"\n`,
    script: HEALTHY,
  });
  assert.equal(notPem.failures, 1);
  assert.match(
    notPem.line("ca_file"),
    /^FAIL ca_file: .*key\.pem .* holds no "-----BEGIN CERTIFICATE-----"/,
  );

  const missing = await runDoctor({
    settings: `${BASE}[helper]\nca_file = "${files.dir}/nope.pem"\n`,
    script: HEALTHY,
  });
  assert.match(missing.line("ca_file"), /^FAIL ca_file: .*nope\.pem .* cannot be read: /);
});

Deno.test("doctor() checks the cache directory: writable, creatable, or not", async () => {
  await using files = await tempFiles();
  const creatable = await runDoctor({
    settings: `${BASE}[cache]\nhost_dir = "${files.cache}/new/deeper"\n`,
    script: HEALTHY,
  });
  assert.equal(creatable.failures, 0);
  assert.equal(
    creatable.line("cache"),
    `OK   cache: ${files.cache}/new/deeper does not exist yet and can be created (${files.cache} is writable)`,
  );
  await assert.rejects(Deno.stat(`${files.cache}/new`), Deno.errors.NotFound, "doctor created it");

  const underFile = await runDoctor({
    settings: `${BASE}[cache]\nhost_dir = "${files.ca}/sub"\n`,
    script: HEALTHY,
  });
  assert.equal(underFile.failures, 1);
  assert.match(
    underFile.line("cache"),
    /^FAIL cache: .*ca\.pem\/sub .* cannot be created: .* is not a directory — fix:/,
  );

  const aFile = await runDoctor({
    settings: `${BASE}[cache]\nhost_dir = "${files.ca}"\n`,
    script: HEALTHY,
  });
  assert.match(
    aFile.line("cache"),
    /^FAIL cache: .*ca\.pem \(\[cache\] host_dir\) is not a directory/,
  );
});

Deno.test("doctor() counts every FAIL, and a check that breaks does not stop the others", async () => {
  const { failures, line, h } = await runDoctor({
    settings: `[image]\ndefault = "nope"\n[helper]\nca_file = "/nonexistent/ca.pem"\n`,
    script: [SERVER, { code: 0, stdout: "not json\n" }, ALIAS_NOT_FOUND],
  });
  assert.equal(failures, 3);
  assert.match(line("storage"), /^FAIL storage: unexpected error: .*JSON/);
  assert.match(line("default image"), /^FAIL default image: /);
  assert.match(line("ca_file"), /^FAIL ca_file: /);
  assert.deepEqual(h.lines, ["doctor: 3 failed, 1 warning(s), 5 OK"]);
});

Deno.test("doctor() reports an LXD error it did not expect as that check's FAIL", async () => {
  const { failures, line } = await runDoctor({
    settings: BASE,
    script: [SERVER, { code: 1, stderr: "Error: permission denied\n" }, alias(FP)],
  });
  assert.equal(failures, 1);
  assert.equal(
    line("storage"),
    "FAIL storage: query -- /1.0/profiles/default failed: permission denied — fix: run `lxc query -- /1.0/profiles/default` by hand to see more",
  );
});

Deno.test("reportSettingsFailure() prints one FAIL line naming file, line and key", async () => {
  let error: unknown;
  try {
    parseSettings(`[image]\ndefault = 3\n[nope]\n`, "/etc/x.toml");
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof SystemFailure);
  const written: string[] = [];
  const code = await reportSettingsFailure((text) => {
    written.push(text);
    return Promise.resolve();
  }, error);
  assert.equal(code, PROBLEMS_FOUND_EXIT_CODE);
  assert.equal(code, 1);
  assert.equal(written.length, 1);
  assert.match(
    written[0]!,
    /^FAIL settings: invalid settings: \/etc\/x\.toml:2: \[image\] default: expected a string; \/etc\/x\.toml:3: unknown section \[nope\] — fix: correct the settings file/,
  );
  assert.equal(written[0]!.split("\n").length, 2, "exactly one line");

  await assert.rejects(
    reportSettingsFailure(() => Promise.resolve(), new TypeError("a bug")),
    TypeError,
  );
});

Deno.test("formatCheck() lines up the statuses and adds the fix only when given", () => {
  assert.equal(formatCheck({ status: "OK", check: "a", detail: "fine" }), "OK   a: fine");
  assert.equal(
    formatCheck({ status: "WARN", check: "b", detail: "meh\n  more", fix: "do x" }),
    "WARN b: meh; more — fix: do x",
  );
  assert.equal(
    formatCheck({ status: "FAIL", check: "c", detail: "x", fix: "y" }),
    "FAIL c: x — fix: y",
  );
});
