/**
 * End-to-end: the administrator commands `doctor` and `runner-config`, run
 * as the real driver. The doctor checks that need LXD run against the real
 * one; the rest (and runner-config) need no LXD.
 */
import assert from "node:assert/strict";
import { parse } from "smol-toml";
import { Job, type StageResult } from "../runner.ts";
import { BOOKWORM, BUSYBOX, lxc, lxdAvailable, settingsFile, uniqueJobId } from "../lxd.ts";

const ignore = !(await lxdAvailable());
const STAGES = ["config", "prepare", "run", "cleanup"];
const LINE = /^(OK {3}|WARN |FAIL |SKIP )\S[^\n]*?: \S[^\n]*$/;

/** Runs the driver with `args` (no job needed, but the runner's environment all the same). */
async function driver(args: string[], env: Record<string, string> = {}): Promise<StageResult> {
  const job = await Job.create({ jobId: uniqueJobId(), env });
  try {
    return await job.exec(args);
  } finally {
    await job.remove();
  }
}

/** doctor's lines by check name, after checking that every stdout line has the documented shape. */
function checks(result: StageResult): Map<string, string> {
  const lines = result.stdout.trimEnd().split("\n");
  const byCheck = new Map<string, string>();
  for (const line of lines) {
    assert.match(line, LINE, `doctor line: ${line}`);
    byCheck.set(line.slice(5, line.indexOf(": ", 5)), line);
  }
  return byCheck;
}

async function tempSettings(text: string): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "lxd-driver-settings-", suffix: ".toml" });
  await Deno.writeTextFile(path, text);
  return path;
}

/** The pool of the default profile's root disk and its driver, as LXD reports them. */
async function rootPool(): Promise<{ name: string; driver: string }> {
  const profile = JSON.parse((await lxc("query", "/1.0/profiles/default")).stdout) as {
    devices: Record<string, { type?: string; path?: string; pool?: string }>;
  };
  const name = Object.values(profile.devices).find((d) => d.type === "disk" && d.path === "/")!
    .pool!;
  const pool = JSON.parse((await lxc("query", `/1.0/storage-pools/${name}`)).stdout) as {
    driver: string;
  };
  return { name, driver: pool.driver };
}

Deno.test({
  name: "doctor on this host: LXD, its storage pool and the test images are OK",
  ignore,
  async fn() {
    const settings = await settingsFile(`[image.aliases]\n"busybox" = "${BUSYBOX}"\n`);
    const result = await driver(["--config", settings, "doctor"]);
    const lines = checks(result);
    assert.ok(![...lines.values()].some((l) => l.startsWith("FAIL")), result.stdout);
    assert.equal(result.code, 0, result.stdout + result.stderr);
    assert.equal(lines.get("settings"), `OK   settings: loaded ${settings}`);

    const server = JSON.parse((await lxc("query", "/1.0")).stdout) as {
      environment: { server: string; server_version: string };
    };
    assert.match(
      lines.get("lxd")!,
      new RegExp(
        `^OK {3}lxd: ${server.environment.server} ${
          server.environment.server_version.replace(/\./g, "\\.")
        }\\b`,
      ),
    );

    const pool = await rootPool();
    const expected = `pool "${pool.name}" (${pool.driver}), the root disk of profile "default"`;
    if (pool.driver === "dir") {
      assert.match(lines.get("storage")!, /^WARN storage: .*dir driver, several times slower/);
    } else {
      assert.equal(lines.get("storage"), `OK   storage: ${expected}`);
    }

    for (const [check, image] of [["default image", BOOKWORM], ["image alias busybox", BUSYBOX]]) {
      const info = await lxc("image", "info", "--", image!);
      const fingerprint = info.stdout.match(/^Fingerprint: (\S+)/m)![1]!;
      assert.equal(
        lines.get(check!),
        `OK   ${check}: "${image}" is a local alias of image ${fingerprint.slice(0, 12)}`,
      );
    }
    for (const check of ["helper", "ca_file", "cache", "privileged"]) {
      assert.ok(lines.has(check), `${check} in:\n${result.stdout}`);
    }
    assert.equal(lines.get("privileged"), "OK   privileged: unprivileged containers");
    assert.match(result.stderr, /^doctor: 0 failed, \d+ warning\(s\), \d+ OK$/m);
    await Deno.remove(settings);
  },
});

Deno.test({
  name: "doctor fails, and exits 1, when the default image is not on this host",
  ignore,
  async fn() {
    const settings = await tempSettings(`[image]\ndefault = "lxd-driver-test/no-such-image"\n`);
    const result = await driver(["doctor", "--config", settings], {
      SYSTEM_FAILURE_EXIT_CODE: "42",
    });
    assert.equal(result.code, 1, result.stdout + result.stderr);
    const lines = checks(result);
    assert.match(
      lines.get("default image")!,
      /^FAIL default image: "lxd-driver-test\/no-such-image" is neither an image alias nor a fingerprint on this host's LXD — fix: /,
    );
    assert.match(lines.get("lxd")!, /^OK {3}/);
    assert.match(result.stderr, /^doctor: 1 failed,/m);
    await Deno.remove(settings);
  },
});

Deno.test("doctor with an invalid settings file prints one FAIL line and exits 1", async () => {
  const settings = await tempSettings(`[image]\ndefault = "x"\nnope = 1\n`);
  const result = await driver(["--config", settings, "doctor"]);
  assert.equal(result.code, 1, result.stderr);
  assert.equal(result.stdout.split("\n").length, 2, result.stdout);
  assert.match(
    result.stdout,
    new RegExp(
      `^FAIL settings: invalid settings: ${settings}:3: unknown key \\[image\\] nope — fix: `,
    ),
  );
  assert.equal(result.stderr, "");
  // Every other command still fails on it as a system failure.
  const config = await driver(["--config", settings, "config"]);
  assert.equal(config.code, 2);
  await Deno.remove(settings);
});

Deno.test("doctor without a reachable LXD fails the lxd check and skips what needs it", async () => {
  const settings = await tempSettings(`[image]\ndefault = "${BOOKWORM}"\n`);
  const nowhere = await Deno.makeTempDir({ prefix: "lxd-driver-no-lxd-" });
  // An LXD_DIR without a socket: lxc cannot reach any daemon.
  const result = await driver(["--config", settings, "doctor"], { LXD_DIR: nowhere });
  assert.equal(result.code, 1, result.stdout + result.stderr);
  const lines = checks(result);
  assert.match(lines.get("lxd")!, /^FAIL lxd: /);
  assert.match(result.stdout, /^SKIP storage, default image: skipped because they need LXD/m);
  assert.ok(!lines.has("default image"));
  assert.match(lines.get("privileged")!, /^OK {3}/);
  await Deno.remove(nowhere);
  await Deno.remove(settings);
});

interface RunnersConfig {
  runners: {
    executor: string;
    custom: Record<string, string | string[]>;
  }[];
}

function parseRunnerConfig(result: StageResult): RunnersConfig["runners"][number] {
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stderr, "");
  const parsed = parse(result.stdout) as unknown as RunnersConfig;
  assert.equal(parsed.runners.length, 1);
  const runner = parsed.runners[0]!;
  assert.equal(runner.executor, "custom");
  assert.deepEqual(
    Object.keys(runner.custom).sort(),
    STAGES.flatMap((s) => [`${s}_args`, `${s}_exec`]).sort(),
  );
  return runner;
}

Deno.test("runner-config prints a [[runners]] block whose *_args end with the stage names", async () => {
  const settings = await settingsFile();
  const result = await driver(["--config", settings, "runner-config"]);
  const runner = parseRunnerConfig(result);
  const bin = Deno.env.get("LXD_DRIVER_BIN");
  for (const stage of STAGES) {
    const exec = runner.custom[`${stage}_exec`] as string;
    const args = runner.custom[`${stage}_args`] as string[];
    assert.deepEqual(args.slice(-3), ["--config", settings, stage]);
    assert.ok(exec.startsWith("/"), exec);
    if (bin) {
      // A compiled binary names itself and nothing else.
      assert.equal(exec, await Deno.realPath(bin));
      assert.equal(args.length, 3);
    } else {
      assert.equal(exec, Deno.execPath());
      assert.deepEqual(args.slice(0, 3), ["run", "-q", "-P=driver"]);
      assert.match(args[3]!, /^\/.*\/mod\.ts$/);
      assert.match(result.stdout, /^ {2}# lxd-driver runs from source here/m);
    }
  }
  await Deno.remove(settings);
});

Deno.test("runner-config makes a relative --config absolute and passes $LXD_DRIVER_CONFIG on", async () => {
  const settings = await settingsFile();
  const job = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: "" } });
  await Deno.copyFile(settings, `${job.dir}/relative.toml`);
  const relative = parseRunnerConfig(
    await job.exec(["--config", "relative.toml", "runner-config"]),
  );
  assert.deepEqual((relative.custom.run_args as string[]).slice(-3), [
    "--config",
    `${await Deno.realPath(job.dir)}/relative.toml`,
    "run",
  ]);

  const none = parseRunnerConfig(await job.exec(["runner-config"]));
  assert.ok(!(none.custom.prepare_args as string[]).includes("--config"));
  assert.equal((none.custom.prepare_args as string[]).at(-1), "prepare");

  const fromEnv = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: settings } });
  const viaEnv = parseRunnerConfig(await fromEnv.exec(["runner-config"]));
  assert.deepEqual((viaEnv.custom.cleanup_args as string[]).slice(-3), [
    "--config",
    settings,
    "cleanup",
  ]);
  await job.remove();
  await fromEnv.remove();
  await Deno.remove(settings);
});

Deno.test("the command runner-config prints works: its config stage answers as the runner expects", async () => {
  const settings = await settingsFile();
  const job = await Job.create({ jobId: uniqueJobId(), env: { LXD_DRIVER_CONFIG: "" } });
  const runner = parseRunnerConfig(await job.exec(["--config", settings, "runner-config"]));
  const out = await new Deno.Command(runner.custom.config_exec as string, {
    args: runner.custom.config_args as string[],
    cwd: job.dir,
    env: job.environment(),
    clearEnv: true,
    stdin: "null",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, stderr);
  const answer = JSON.parse(new TextDecoder().decode(out.stdout));
  assert.equal(answer.driver.name, "lxd-driver");
  assert.equal(answer.builds_dir, "/builds");
  await job.remove();
  await Deno.remove(settings);
});

Deno.test("doctor and runner-config have --help naming their exit status and output", async () => {
  const doctor = await driver(["doctor", "--help"]);
  assert.equal(doctor.code, 0);
  assert.match(doctor.stdout, /Usage: lxd-driver \[--config FILE\] doctor/);
  assert.match(doctor.stdout, /Exits 0 when no check FAILed/);
  const runnerConfig = await driver(["runner-config", "--help"]);
  assert.equal(runnerConfig.code, 0);
  assert.match(runnerConfig.stdout, /Usage: lxd-driver \[--config FILE\] runner-config/);
  const main = await driver(["--help"]);
  assert.match(main.stdout, /^ {2}doctor {2,}/m);
  assert.match(main.stdout, /^ {2}runner-config {2,}/m);
});
