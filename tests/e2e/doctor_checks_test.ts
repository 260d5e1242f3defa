/**
 * End-to-end: doctor's checks of the host files the settings name ([cache]
 * host_dir, [helper] gitlab_runner and ca_file), run as the real driver
 * against the real LXD, so that the only FAIL is the one a test provokes.
 */
import assert from "node:assert/strict";
import { Job, type StageResult } from "../runner.ts";
import { lxdAvailable, pathWithoutGitlabRunner, settingsFile, uniqueJobId } from "../lxd.ts";

const ignore = !(await lxdAvailable());
const LINE = /^(OK {3}|WARN |FAIL |SKIP )\S[^\n]*?: \S[^\n]*$/;
const CACHE_FIX =
  "create it and make it writable for the user that runs the driver, or correct [cache] host_dir";
const HELPER_FIX =
  "install gitlab-runner there (chmod +x), or correct or remove [helper] gitlab_runner";

/** Runs `doctor` with a settings file holding `extra`, in a runner-like environment. */
async function doctor(extra: string, env: Record<string, string> = {}): Promise<StageResult> {
  const settings = await settingsFile(extra);
  const job = await Job.create({ jobId: uniqueJobId(), env });
  try {
    return await job.exec(["--config", settings, "doctor"]);
  } finally {
    await job.remove();
    await Deno.remove(settings);
  }
}

/** doctor's lines by check name, after checking that every line has the documented shape. */
function checks(result: StageResult): Map<string, string> {
  const byCheck = new Map<string, string>();
  for (const line of result.stdout.trimEnd().split("\n")) {
    assert.match(line, LINE, `doctor line: ${line}`);
    byCheck.set(line.slice(5, line.indexOf(": ", 5)), line);
  }
  return byCheck;
}

/** Asserts that `check` is the one FAIL, and doctor exits 1 for it; returns its line. */
function onlyFailure(result: StageResult, check: string): string {
  const output = result.stdout + result.stderr;
  assert.equal(result.code, 1, output);
  const lines = checks(result);
  const failed = [...lines.entries()].filter(([, line]) => line.startsWith("FAIL "));
  assert.deepEqual(failed.map(([name]) => name), [check], output);
  assert.match(result.stderr, /^doctor: 1 failed, \d+ warning\(s\), \d+ OK$/m);
  return lines.get(check)!;
}

/** Asserts that doctor found no problem; returns the line of `check`. */
function passed(result: StageResult, check: string): string {
  assert.equal(result.code, 0, result.stdout + result.stderr);
  const line = checks(result).get(check);
  assert.ok(line, `no ${check} line in:\n${result.stdout}`);
  return line;
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lxd-driver-doctor-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/**
 * A directory this user cannot create files in: read-only for others,
 * immutable for root (whom permissions do not stop).
 */
async function withUnwritableDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "lxd-driver-doctor-ro-" });
  const root = Deno.uid() === 0;
  const chattr = (flag: string) => new Deno.Command("chattr", { args: [flag, dir] }).output();
  try {
    if (root) assert.equal((await chattr("+i")).code, 0, "chattr +i works here");
    else await Deno.chmod(dir, 0o555);
    await fn(dir);
  } finally {
    if (root) await chattr("-i");
    else await Deno.chmod(dir, 0o755);
    await Deno.remove(dir, { recursive: true });
  }
}

/** The first certificates of the host's CA bundle, as PEM. */
async function hostCertificates(count: number): Promise<string> {
  const bundle = await Deno.readTextFile("/etc/ssl/certs/ca-certificates.crt");
  const pems = bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g);
  assert.ok(pems && pems.length >= count, "the host has a CA bundle to borrow from");
  return pems.slice(0, count).join("");
}

Deno.test({
  name: "doctor FAILs a [cache] host_dir that is not writable, and exits 1",
  ignore,
  async fn() {
    await withUnwritableDir(async (dir) => {
      assert.match(
        onlyFailure(await doctor(`[cache]\nhost_dir = "${dir}"\n`), "cache"),
        new RegExp(
          `^FAIL cache: ${escape(dir)} \\(\\[cache\\] host_dir\\) is not writable: \\S.* — fix: ${
            escape(CACHE_FIX)
          }$`,
        ),
      );
      const below = `${dir}/cache`;
      assert.match(
        onlyFailure(await doctor(`[cache]\nhost_dir = "${below}"\n`), "cache"),
        new RegExp(
          `^FAIL cache: ${escape(below)} \\(\\[cache\\] host_dir\\) does not exist and cannot be ` +
            `created: ${escape(dir)} is not writable: \\S.* — fix: ${escape(CACHE_FIX)}$`,
        ),
      );
    });
  },
});

Deno.test({
  name: "doctor FAILs a [cache] host_dir that is a file or lies below one",
  ignore,
  async fn() {
    await withTempDir(async (dir) => {
      const file = `${dir}/a-file`;
      await Deno.writeTextFile(file, "");
      assert.equal(
        onlyFailure(await doctor(`[cache]\nhost_dir = "${file}"\n`), "cache"),
        `FAIL cache: ${file} ([cache] host_dir) is not a directory — fix: ${CACHE_FIX}`,
      );
      assert.equal(
        onlyFailure(await doctor(`[cache]\nhost_dir = "${file}/cache"\n`), "cache"),
        `FAIL cache: ${file}/cache ([cache] host_dir) cannot be created: ${file} is not a directory — fix: ${CACHE_FIX}`,
      );
    });
  },
});

Deno.test({
  name: "doctor passes a writable or creatable [cache] host_dir and creates nothing",
  ignore,
  async fn() {
    await withTempDir(async (dir) => {
      assert.equal(
        passed(await doctor(`[cache]\nhost_dir = "${dir}"\nper_slot = true\n`), "cache"),
        `OK   cache: ${dir} is writable, one directory per concurrent slot`,
      );
      const missing = `${dir}/not/yet`;
      assert.equal(
        passed(await doctor(`[cache]\nhost_dir = "${missing}"\n`), "cache"),
        `OK   cache: ${missing} does not exist yet and can be created (${dir} is writable)`,
      );
      assert.deepEqual([...Deno.readDirSync(dir)], [], "doctor left no file behind");
    });
  },
});

Deno.test({
  name: "doctor FAILs a [cache] host_dir the driver may not use, in words about the setting",
  ignore,
  async fn() {
    const result = await doctor(`[cache]\nhost_dir = "/proc/lxd-driver-cache"\n`);
    assert.equal(result.code, 1, result.stdout + result.stderr);
    const line = onlyFailure(result, "cache");
    assert.match(line, /is not a path the driver may use/);
    assert.doesNotMatch(line, /--allow|flag/, "no Deno flag to change");
  },
});

Deno.test("doctor reports a relative [cache] host_dir as invalid settings and exits 1", async () => {
  const result = await doctor(`[cache]\nhost_dir = "var/cache/lxd-driver"\n`);
  assert.equal(result.code, 1, result.stdout + result.stderr);
  assert.equal(result.stderr, "");
  assert.match(
    result.stdout,
    /^FAIL settings: invalid settings: \S+\.toml:\d+: \[cache\] host_dir: expected an absolute path — fix: correct the settings file where the message says, or name another one with --config FILE\n$/,
  );
});

Deno.test({
  name: "doctor FAILs a [helper] gitlab_runner that is missing, not executable or not a file",
  ignore,
  async fn() {
    await withTempDir(async (dir) => {
      const plain = `${dir}/gitlab-runner`;
      await Deno.writeTextFile(plain, "#!/bin/sh\n");
      await Deno.chmod(plain, 0o644);
      for (
        const [path, problem] of [
          [`${dir}/missing/gitlab-runner`, "does not exist"],
          [plain, "is not executable"],
          [dir, "is not a file"],
        ]
      ) {
        assert.equal(
          onlyFailure(await doctor(`[helper]\ngitlab_runner = "${path}"\n`), "helper"),
          `FAIL helper: ${path} ([helper] gitlab_runner) ${problem} — fix: ${HELPER_FIX}`,
        );
      }
      await Deno.chmod(plain, 0o755);
      assert.equal(
        passed(await doctor(`[helper]\ngitlab_runner = "${plain}"\n`), "helper"),
        `OK   helper: ${plain} ([helper] gitlab_runner)`,
      );
    });
  },
});

Deno.test({
  name: "doctor names the gitlab-runner it finds on PATH, and WARNs when there is none",
  ignore,
  async fn() {
    const path = await pathWithoutGitlabRunner();
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/gitlab-runner`, "#!/bin/sh\n", { mode: 0o755 });
      await Deno.chmod(`${dir}/gitlab-runner`, 0o755);
      assert.equal(
        passed(await doctor("", { PATH: `${dir}:${path}` }), "helper"),
        `OK   helper: ${dir}/gitlab-runner (gitlab-runner on PATH)`,
      );
    });
    assert.equal(
      passed(await doctor("", { PATH: path }), "helper"),
      "WARN helper: no [helper] gitlab_runner and no gitlab-runner on PATH: cache and artifacts " +
        "will be disabled in images without gitlab-runner — fix: install gitlab-runner on this " +
        "host, or set [helper] gitlab_runner to its path",
    );
  },
});

Deno.test({
  name: "doctor FAILs a [helper] ca_file that cannot be read or holds no certificate",
  ignore,
  async fn() {
    await withTempDir(async (dir) => {
      const missing = `${dir}/missing.pem`;
      assert.match(
        onlyFailure(await doctor(`[helper]\nca_file = "${missing}"\n`), "ca_file"),
        new RegExp(
          `^FAIL ca_file: ${
            escape(missing)
          } \\(\\[helper\\] ca_file\\) cannot be read: \\S.* — fix: make it readable for the user that runs the driver, or correct \\[helper\\] ca_file$`,
        ),
      );
      const notPem = `${dir}/not.pem`;
      await Deno.writeTextFile(notPem, "this is no certificate\n");
      assert.equal(
        onlyFailure(await doctor(`[helper]\nca_file = "${notPem}"\n`), "ca_file"),
        `FAIL ca_file: ${notPem} ([helper] ca_file) holds no "-----BEGIN CERTIFICATE-----" — fix: point [helper] ca_file at a PEM file of CA certificates`,
      );
      const bundle = `${dir}/bundle.pem`;
      await Deno.writeTextFile(bundle, await hostCertificates(2));
      assert.equal(
        passed(await doctor(`[helper]\nca_file = "${bundle}"\n`), "ca_file"),
        `OK   ca_file: ${bundle} (2 certificates)`,
      );
    });
  },
});

Deno.test({
  name: "doctor reports every broken host file at once",
  ignore,
  async fn() {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/a-file`, "");
      const result = await doctor(
        `[helper]\ngitlab_runner = "${dir}/gitlab-runner"\nca_file = "${dir}/ca.pem"\n` +
          `[cache]\nhost_dir = "${dir}/a-file"\n`,
      );
      assert.equal(result.code, 1, result.stdout + result.stderr);
      const lines = checks(result);
      for (const check of ["helper", "ca_file", "cache"]) {
        assert.match(lines.get(check)!, /^FAIL /, check);
      }
      assert.match(lines.get("lxd")!, /^OK {3}/);
      assert.match(result.stderr, /^doctor: 3 failed, \d+ warning\(s\), \d+ OK$/m);
    });
  },
});
