/**
 * End-to-end: how a job's `image:` becomes its container's image, through
 * the runner imitation against real LXD: `[image.aliases]` and the
 * allow-list, launching from the logged fingerprint, an unknown remote, and
 * downloads from the loopback image server (scripts/setup-image-server.sh).
 *
 * Two tests put a wrapper named like the client first on the driver's PATH,
 * to act at an exact point of prepare (just before the container is created,
 * or when a download starts); it then runs the real client unchanged.
 */
import assert from "node:assert/strict";
import { Job, runnerScript, type StageResult } from "../runner.ts";
import {
  BOOKWORM,
  BUSYBOX,
  exists,
  expectedName,
  instanceConfig,
  lxc,
  lxdAvailable,
  settingsText,
  TEST_CLI,
  uniqueJobId,
} from "../lxd.ts";

const REMOTE = "lxd-driver-images";
const REMOTE_BUSYBOX = `${REMOTE}:test/busybox`;
const BUILD_FAILURE = 11;
const SYSTEM_FAILURE = 12;

/** Whether the image server serves its busybox image. In CI its absence is an error. */
async function imageServerAvailable(): Promise<boolean> {
  const info = await lxc("image", "info", "--", REMOTE_BUSYBOX);
  if (info.code === 0) return true;
  const problem = `${TEST_CLI} image info ${REMOTE_BUSYBOX} failed ` +
    `(run scripts/setup-image-server.sh): ${info.stderr.trim()}`;
  if (Deno.env.get("CI") === "true") {
    throw new Error(`image download tests need the loopback image server: ${problem}`);
  }
  // deno-lint-ignore no-console -- the only way a local run learns why these tests were skipped
  console.warn(`skipping image download tests: ${problem}`);
  return false;
}

const ignore = !(await lxdAvailable());

/**
 * On Incus the image server is Incus's own store: its images are always
 * local already, and making one absent means deleting the served image. The
 * download tests run with lxc (as in tests/e2e/images_test.ts).
 */
const ignoreDownloads = ignore || TEST_CLI === "incus" || !(await imageServerAvailable());
if (!ignore && TEST_CLI === "incus") {
  // deno-lint-ignore no-console -- says why the download tests are skipped on this run
  console.warn(
    `skipping the image download tests on Incus: ${REMOTE} is Incus's own image store (they run with lxc)`,
  );
}

interface ImageSettings {
  readonly default?: string;
  readonly allowed: readonly string[];
  readonly aliases?: Readonly<Record<string, string>>;
}

/** A settings file with this `[image]` table; jobs use sh, as busybox has no bash. */
async function imageSettings(image: ImageSettings): Promise<string> {
  const aliases = Object.entries(image.aliases ?? {})
    .map(([name, target]) => `${JSON.stringify(name)} = ${JSON.stringify(target)}`);
  const base = settingsText(
    `\n[job]\nshell = "sh"\n` +
      (aliases.length ? `\n[image.aliases]\n${aliases.join("\n")}\n` : ""),
  );
  assert.match(base, /^default = .*\nallowed = .*$/m, "settingsText still opens with [image]");
  let text = base.replace(/^allowed = .*$/m, `allowed = ${JSON.stringify(image.allowed)}`);
  if (image.default) {
    text = text.replace(/^default = .*$/m, `default = ${JSON.stringify(image.default)}`);
  }
  const path = await Deno.makeTempFile({ prefix: "lxd-driver-settings-", suffix: ".toml" });
  await Deno.writeTextFile(path, text);
  return path;
}

/** A job writing `image:` (or none), on these settings; PATH as given, else the runner's. */
function imageJob(settings: string, image?: string, path?: string): Promise<Job> {
  return Job.create({
    jobId: uniqueJobId(),
    env: { LXD_DRIVER_CONFIG: settings, ...(path ? { PATH: path } : {}) },
    buildFailureExitCode: BUILD_FAILURE,
    systemFailureExitCode: SYSTEM_FAILURE,
    variables: { GIT_STRATEGY: "none", ...(image ? { CI_JOB_IMAGE: image } : {}) },
  });
}

async function finish(job: Job): Promise<void> {
  const cleanup = await job.cleanup();
  assert.equal(cleanup.code, 0, cleanup.stderr);
  assert.equal(await exists(expectedName(job.options.jobId)), false, "cleanup deleted it");
  await job.remove();
}

/** The fingerprint a local alias targets now. */
async function aliasTarget(alias: string): Promise<string> {
  const result = await lxc("query", "--", `/1.0/images/aliases/${encodeURIComponent(alias)}`);
  assert.equal(result.code, 0, `${alias}: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { target: string }).target;
}

async function remoteFingerprint(reference: string): Promise<string> {
  const info = await lxc("image", "info", "--", reference);
  const fingerprint = info.stdout.match(/^Fingerprint: ([0-9a-f]{64})$/m)?.[1];
  assert.ok(fingerprint, `no fingerprint for ${reference}: ${info.stdout}${info.stderr}`);
  return fingerprint;
}

/** Removes the image from the local store, so the next use must download it. */
async function forget(fingerprint: string): Promise<void> {
  if ((await lxc("query", "--", `/1.0/images/${fingerprint}`)).code !== 0) return;
  const result = await lxc("image", "delete", "--", fingerprint);
  assert.equal(result.code, 0, result.stderr);
}

/**
 * Checks that prepare logged `image` (and `reference` when it differs) with
 * the fingerprint `fingerprint`, and that the job's container was created
 * from exactly that image.
 */
async function assertRunsOn(
  job: Job,
  prepare: StageResult,
  image: string,
  reference: string,
  fingerprint: string,
): Promise<void> {
  assert.equal(prepare.code, 0, prepare.stderr);
  const shown = reference === image ? image : `${image} (${reference})`;
  const line = prepare.stderr.split("\n").find((l) => l.startsWith(`Using image ${shown}, `));
  assert.ok(line, `no "Using image ${shown}" line in:\n${prepare.stderr}`);
  const logged = line.match(/, fingerprint ([0-9a-f]{12})\b/)?.[1];
  assert.equal(logged, fingerprint.slice(0, 12), line);
  const config = await instanceConfig(expectedName(job.options.jobId));
  assert.equal(config["volatile.base_image"], fingerprint, "the container runs the logged image");
}

/** Asserts a refusal of `image` by the allow-list, before anything was created. */
async function assertRefused(settings: string, image: string): Promise<void> {
  const job = await imageJob(settings, image);
  try {
    const prepare = await job.prepare();
    assert.equal(prepare.code, BUILD_FAILURE, `${image}: ${prepare.stderr}`);
    assert.equal(prepare.stderr.trim().split("\n").length, 1, prepare.stderr);
    assert.ok(prepare.stderr.includes(`image ${JSON.stringify(image)} is not allowed`));
    assert.equal(await exists(expectedName(job.options.jobId)), false, "nothing was created");
  } finally {
    await finish(job);
  }
}

/**
 * A directory holding a wrapper named like the client that runs the shell
 * `hook` (with the call's argv as "$@" and $REAL the real client) first, and
 * the PATH that puts it first.
 */
async function clientWrapper(hook: string): Promise<{ dir: string; path: string }> {
  const path = Deno.env.get("PATH") ?? "";
  let real: string | undefined;
  for (const dir of path.split(":").filter((d) => d !== "")) {
    if ((await Deno.stat(`${dir}/${TEST_CLI}`).catch(() => undefined))?.isFile) {
      real = `${dir}/${TEST_CLI}`;
      break;
    }
  }
  assert.ok(real, `${TEST_CLI} is not on PATH`);
  const dir = await Deno.makeTempDir({ prefix: "lxd-driver-wrapper-" });
  await Deno.writeTextFile(
    `${dir}/${TEST_CLI}`,
    `#!/bin/sh\nREAL='${real}'\nDIR='${dir}'\n${hook}\nexec "$REAL" "$@"\n`,
    { mode: 0o755 },
  );
  return { dir, path: `${dir}:${path}` };
}

Deno.test({
  name: "[image.aliases] checks the name the job writes and runs the alias target's fingerprint",
  ignore,
  async fn() {
    const settings = await imageSettings({
      allowed: ["debian:*"],
      aliases: { "debian:12": BUSYBOX },
    });
    const fingerprint = await aliasTarget(BUSYBOX);
    const job = await imageJob(settings, "debian:12");
    try {
      await assertRunsOn(job, await job.prepare(), "debian:12", BUSYBOX, fingerprint);
      const run = await job.run(runnerScript("echo job ran on $(hostname)"), "step_script");
      assert.equal(run.code, 0, run.stdout + run.stderr);
      assert.match(run.stdout, new RegExp(`job ran on ${expectedName(job.options.jobId)}`));
    } finally {
      await finish(job);
    }
    // Only "debian:*" is allowed: writing the alias target itself is refused.
    await assertRefused(settings, BUSYBOX);
    await Deno.remove(settings);
  },
});

Deno.test({
  name: "[image.aliases] does not let a job reach an allowed target through a name not allowed",
  ignore,
  async fn() {
    const settings = await imageSettings({
      allowed: ["lxd-driver-test/*"],
      aliases: { "debian:12": BUSYBOX },
    });
    await assertRefused(settings, "debian:12");
    const job = await imageJob(settings, BUSYBOX);
    try {
      await assertRunsOn(job, await job.prepare(), BUSYBOX, BUSYBOX, await aliasTarget(BUSYBOX));
    } finally {
      await finish(job);
    }
    await Deno.remove(settings);
  },
});

Deno.test({
  name: "prepare launches the fingerprint it logged even when the alias moves before the launch",
  ignore,
  async fn() {
    const alias = `lxd-driver-test/e2e-moving-${crypto.randomUUID().slice(0, 8)}`;
    const [before, after] = [await aliasTarget(BUSYBOX), await aliasTarget(BOOKWORM)];
    const created = await lxc("image", "alias", "create", "--", alias, before);
    assert.equal(created.code, 0, created.stderr);
    try {
      // Just before the driver creates the container, the alias is pointed at another image.
      const wrapper = await clientWrapper(`for last; do :; done
if [ "$1" = query ] && [ "$last" = /1.0/instances ] && [ ! -e "$DIR/moved" ]; then
  for arg; do
    if [ "$arg" = POST ]; then
      "$REAL" image alias delete -- '${alias}' >&2 &&
        "$REAL" image alias create -- '${alias}' '${after}' >&2 && : >"$DIR/moved"
    fi
  done
fi`);
      const settings = await imageSettings({ allowed: ["lxd-driver-test/*"] });
      const job = await imageJob(settings, alias, wrapper.path);
      try {
        await assertRunsOn(job, await job.prepare(), alias, alias, before);
        assert.equal(await aliasTarget(alias), after, "the alias did move before the launch");
      } finally {
        await finish(job);
        await Deno.remove(wrapper.dir, { recursive: true });
        await Deno.remove(settings);
      }
    } finally {
      await lxc("image", "alias", "delete", "--", alias);
    }
  },
});

Deno.test({
  name: "an allowed image on a remote this runner does not have is a one-line build failure",
  ignore,
  async fn() {
    const remotes = JSON.parse((await lxc("remote", "list", "--format", "json")).stdout) as Record<
      string,
      unknown
    >;
    assert.ok(!("debian" in remotes), `the ${TEST_CLI} client must have no remote "debian"`);
    const settings = await imageSettings({ allowed: ["debian:*"] });
    const job = await imageJob(settings, "debian:11");
    try {
      const prepare = await job.prepare();
      assert.equal(prepare.code, BUILD_FAILURE, prepare.stderr);
      assert.equal(prepare.exitCodeFile, undefined, "no script ran, no exit code to report");
      const lines = prepare.stderr.trim().split("\n");
      assert.equal(lines.length, 1, prepare.stderr);
      assert.match(lines[0]!, /^ERROR: image "debian:11" does not exist on this runner/);
      assert.equal(await exists(expectedName(job.options.jobId)), false, "nothing was created");
    } finally {
      await finish(job);
      await Deno.remove(settings);
    }
  },
});

Deno.test({
  name: "a default image on a remote this runner does not have stays a system failure",
  ignore,
  async fn() {
    const settings = await imageSettings({ default: "debian:11", allowed: [] });
    const job = await imageJob(settings);
    try {
      const prepare = await job.prepare();
      assert.equal(prepare.code, SYSTEM_FAILURE, prepare.stderr);
      assert.match(prepare.stderr, /image "debian:11" not found: this runner has no image remote/);
    } finally {
      await finish(job);
      await Deno.remove(settings);
    }
  },
});

Deno.test({
  name: "prepare downloads a remote image the local store lacks, saying so in the job log, once",
  ignore: ignoreDownloads,
  async fn() {
    const fingerprint = await remoteFingerprint(REMOTE_BUSYBOX);
    assert.notEqual(fingerprint, await aliasTarget(BUSYBOX), "a copy the other tests do not use");
    await forget(fingerprint);
    const settings = await imageSettings({
      allowed: ["busybox:*"],
      aliases: { "busybox:served": REMOTE_BUSYBOX },
    });
    try {
      const first = await imageJob(settings, "busybox:served");
      try {
        const prepare = await first.prepare();
        await assertRunsOn(first, prepare, "busybox:served", REMOTE_BUSYBOX, fingerprint);
        assert.ok(
          prepare.stderr.includes(
            `Downloading image ${REMOTE_BUSYBOX} (fingerprint ${
              fingerprint.slice(0, 12)
            }, 1.00MB) into the local image store\n`,
          ),
          prepare.stderr,
        );
        assert.match(
          prepare.stderr,
          new RegExp(`^Downloaded image ${REMOTE_BUSYBOX} in \\S+$`, "m"),
        );
        assert.match(
          prepare.stderr,
          /: BusyBox test image served by the lxd-driver image server$/m,
        );
        const run = await first.run(runnerScript("echo on the served image"), "step_script");
        assert.equal(run.code, 0, run.stdout + run.stderr);
      } finally {
        await finish(first);
      }

      const second = await imageJob(settings, "busybox:served");
      try {
        const prepare = await second.prepare();
        await assertRunsOn(second, prepare, "busybox:served", REMOTE_BUSYBOX, fingerprint);
        assert.doesNotMatch(prepare.stderr, /Download/, "already local: nothing downloaded");
      } finally {
        await finish(second);
      }
    } finally {
      await forget(fingerprint);
      await Deno.remove(settings);
    }
  },
});

Deno.test({
  name: "two jobs needing the same new remote image at once both download it and both run",
  ignore: ignoreDownloads,
  async fn() {
    const fingerprint = await remoteFingerprint(REMOTE_BUSYBOX);
    await forget(fingerprint);
    // Each copy waits until both jobs are copying, and long enough for a progress line.
    const wrapper = await clientWrapper(`if [ "$1 $2" = "image copy" ]; then
  : >"$DIR/copying.$$"
  i=0
  while [ "$i" -lt 35 ] || { [ "$(ls "$DIR" | grep -c '^copying\\.')" -lt 2 ] && [ "$i" -lt 150 ]; }; do
    sleep 0.1
    i=$((i + 1))
  done
fi`);
    const settings = await imageSettings({ allowed: [`${REMOTE}:*`] });
    const jobs = [
      await imageJob(settings, REMOTE_BUSYBOX, wrapper.path),
      await imageJob(settings, REMOTE_BUSYBOX, wrapper.path),
    ];
    try {
      const prepares = await Promise.all(jobs.map((job) => job.prepare()));
      for (const [i, job] of jobs.entries()) {
        const { stderr } = prepares[i]!;
        await assertRunsOn(job, prepares[i]!, REMOTE_BUSYBOX, REMOTE_BUSYBOX, fingerprint);
        assert.match(stderr, /into the local image store$/m, `job ${i} downloaded:\n${stderr}`);
        // The heartbeat while the copy runs (held back by the wrapper) reaches the job log.
        assert.match(
          stderr,
          new RegExp(`^Downloading image ${REMOTE_BUSYBOX}: .*\\d\\S* elapsed$`, "m"),
          stderr,
        );
        assert.match(stderr, new RegExp(`^Downloaded image ${REMOTE_BUSYBOX} in \\S+$`, "m"));
      }
    } finally {
      for (const job of jobs) await finish(job);
      await forget(fingerprint);
      await Deno.remove(wrapper.dir, { recursive: true });
      await Deno.remove(settings);
    }
  },
});
