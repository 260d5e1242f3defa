/**
 * End-to-end: ensureLocalImage against the real LXD and the loopback image
 * server (scripts/setup-image-server.sh: Incus serving test/busybox and
 * test/large as the lxc remote `lxd-driver-images`). With CI=true a missing
 * image server fails these tests instead of skipping them.
 */
import assert from "node:assert/strict";
import { ensureLocalImage, ImageError } from "../../lib/images.ts";
import { createLogger, type Logger } from "../../lib/log.ts";
import { Lxd } from "../../lib/lxd.ts";
import { BUSYBOX, lxc, lxdAvailable, TEST_CLI } from "../lxd.ts";

const REMOTE = "lxd-driver-images";
const REMOTE_BUSYBOX = `${REMOTE}:test/busybox`;
const REMOTE_LARGE = `${REMOTE}:test/large`;
/** What prepare.ts takes for "the job named an image that does not exist". */
const PREPARE_NOT_FOUND = /image not found|requested image couldn.t be found/i;

/** Whether the image server and its images are there. In CI their absence is an error. */
async function imageServerAvailable(): Promise<boolean> {
  let problem: string | undefined;
  for (const image of [REMOTE_BUSYBOX, REMOTE_LARGE]) {
    const info = await lxc("image", "info", "--", image);
    if (info.code !== 0) {
      problem =
        `lxc image info ${image} failed (run scripts/setup-image-server.sh): ${info.stderr.trim()}`;
      break;
    }
  }
  if (problem === undefined) return true;
  if (Deno.env.get("CI") === "true") {
    throw new Error(`image tests need the loopback image server: ${problem}`);
  }
  // deno-lint-ignore no-console -- the only way a local run learns why these tests were skipped
  console.warn(`skipping image tests: ${problem}`);
  return false;
}

const ignore = !(await lxdAvailable()) || !(await imageServerAvailable());

/**
 * The image server is Incus's own store, so on Incus there is nothing to
 * download: its images are always local already, and making one absent
 * means deleting the served image (copying it into another Incus project
 * instead turns the served original private). The download tests run with lxc.
 */
const ignoreDownloads = ignore || TEST_CLI === "incus";
if (!ignore && ignoreDownloads) {
  // deno-lint-ignore no-console -- says why three tests are skipped on this run
  console.warn(
    `skipping the image download tests on Incus: ${REMOTE} is Incus's own image store (they run with lxc)`,
  );
}

function client(): { lxd: Lxd; log: Logger; lines: string[] } {
  const lines: string[] = [];
  const log = createLogger({ sink: (line) => lines.push(line) });
  return {
    lxd: new Lxd({ target: { cli: TEST_CLI, remote: "", project: "", member: "" }, log }),
    log,
    lines,
  };
}

async function remoteFingerprint(reference: string): Promise<string> {
  const info = await lxc("image", "info", "--", reference);
  const fingerprint = info.stdout.match(/^Fingerprint: ([0-9a-f]{64})$/m)?.[1];
  assert.ok(fingerprint, `no fingerprint for ${reference}: ${info.stdout}${info.stderr}`);
  return fingerprint;
}

interface StoredImage {
  fingerprint: string;
  aliases: { name: string }[];
  auto_update: boolean;
  properties: Record<string, string>;
}

async function localImage(fingerprint: string): Promise<StoredImage | undefined> {
  const result = await lxc("query", "--", `/1.0/images/${fingerprint}`);
  return result.code === 0 ? JSON.parse(result.stdout) as StoredImage : undefined;
}

/** Removes the image from LXD's store, so the next use must download it. */
async function forget(fingerprint: string): Promise<void> {
  if (!(await localImage(fingerprint))) return;
  const result = await lxc("image", "delete", "--", fingerprint);
  assert.equal(result.code, 0, result.stderr);
}

Deno.test({
  name: "first use of a remote image downloads it, logging progress; the next use does not",
  ignore: ignoreDownloads,
  async fn() {
    const fingerprint = await remoteFingerprint(REMOTE_BUSYBOX);
    assert.notEqual(
      fingerprint,
      await remoteFingerprint(BUSYBOX),
      "the served image must not be one the other tests use",
    );
    await forget(fingerprint);

    const { lxd, log, lines } = client();
    const image = await ensureLocalImage(lxd, REMOTE_BUSYBOX, log);
    assert.equal(image.fingerprint, fingerprint);
    assert.match(image.description, /served by the lxd-driver image server/);
    assert.equal(
      lines[0],
      `Downloading image ${REMOTE_BUSYBOX} (fingerprint ${
        fingerprint.slice(0, 12)
      }, 1.00MB) into the local image store`,
    );
    assert.match(lines.at(-1)!, new RegExp(`^Downloaded image ${REMOTE_BUSYBOX} in \\S+$`));

    const stored = await localImage(fingerprint);
    assert.ok(stored, "the image is in LXD's store");
    assert.deepEqual(stored.aliases, [], "no alias was added to the local store");
    assert.equal(stored.auto_update, false);

    const again = client();
    assert.deepEqual(await ensureLocalImage(again.lxd, REMOTE_BUSYBOX, again.log), image);
    assert.deepEqual(again.lines, [], "nothing downloaded, nothing logged");
  },
});

Deno.test({
  name: "a download that takes a while logs its progress at every interval",
  ignore: ignoreDownloads,
  async fn() {
    const fingerprint = await remoteFingerprint(REMOTE_LARGE);
    await forget(fingerprint);
    const intervalMs = 200;
    const { lxd, log, lines } = client();
    const started = performance.now();
    try {
      const image = await ensureLocalImage(lxd, REMOTE_LARGE, log, {
        progressIntervalMs: intervalMs,
      });
      const elapsed = performance.now() - started;
      assert.equal(image.fingerprint, fingerprint);

      const progress = lines.filter((line) =>
        line.startsWith(`Downloading image ${REMOTE_LARGE}: `)
      );
      // A line every interval: never a silence that looks like a hang.
      assert.ok(
        progress.length >= Math.floor(elapsed / intervalMs) - 3,
        `${progress.length} progress lines in ${Math.round(elapsed)}ms:\n${lines.join("\n")}`,
      );
      // LXD reports a download's progress once a second; a download lasting
      // two seconds must have shown LXD's numbers (bytes or percent and speed).
      if (elapsed >= 2_000) {
        assert.ok(
          progress.some((line) => /: \d[\d.]*(%|[kMGT]i?B) \([\d.]+[kMGT]?i?B\/s\)/.test(line)),
          `no progress figures from LXD in:\n${lines.join("\n")}`,
        );
      }
      assert.match(lines.at(-1)!, /^Downloaded image /);
    } finally {
      await forget(fingerprint);
    }
  },
});

Deno.test({
  name: "two jobs needing the same new image at once both get it",
  ignore: ignoreDownloads,
  async fn() {
    const fingerprint = await remoteFingerprint(REMOTE_BUSYBOX);
    await forget(fingerprint);
    const [a, b] = [client(), client()];
    const images = await Promise.all([
      ensureLocalImage(a.lxd, REMOTE_BUSYBOX, a.log),
      ensureLocalImage(b.lxd, REMOTE_BUSYBOX, b.log),
    ]);
    assert.equal(images[0].fingerprint, fingerprint);
    assert.deepEqual(images[1], images[0]);
    assert.ok(await localImage(fingerprint));
    for (const { lines } of [a, b]) {
      assert.match(lines.at(-1)!, /^Downloaded image /, lines.join("\n"));
    }
  },
});

Deno.test({
  name: "a local alias, a fingerprint prefix and local:ALIAS resolve to what lxc image list shows",
  ignore,
  async fn() {
    const list = await lxc("image", "list", "--format", "json");
    const listed = (JSON.parse(list.stdout) as StoredImage[]).find((image) =>
      image.aliases.some((alias) => alias.name === BUSYBOX)
    );
    assert.ok(listed, `${BUSYBOX} is in lxc image list`);

    const { lxd, log, lines } = client();
    for (const reference of [BUSYBOX, listed.fingerprint.slice(0, 12), `local:${BUSYBOX}`]) {
      const image = await ensureLocalImage(lxd, reference, log);
      assert.deepEqual(image, {
        fingerprint: listed.fingerprint,
        description: listed.properties["description"] ?? "",
      }, reference);
    }
    assert.deepEqual(lines, []);
  },
});

Deno.test({
  name: "an image that exists neither locally nor on the remote: Image not found",
  ignore,
  async fn() {
    const { lxd, log } = client();
    for (const reference of ["lxd-driver-test/no-such-image", `${REMOTE}:test/no-such-image`]) {
      const error = await ensureLocalImage(lxd, reference, log).then(
        () => assert.fail(`${reference} was found`),
        (e: unknown) => e,
      );
      assert.ok(error instanceof ImageError, `${reference}: ${error}`);
      assert.equal(error.imageNotFound, true);
      assert.match(error.stderr, PREPARE_NOT_FOUND);
      assert.ok(error.message.includes(JSON.stringify(reference)), error.message);
    }
  },
});
