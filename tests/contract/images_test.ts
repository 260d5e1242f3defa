/** Contract: what ensureLocalImage asks `lxc`, and what it makes of the answers. */
import assert from "node:assert/strict";
import { ensureLocalImage, ImageError, parseImageInfo } from "../../lib/images.ts";
import { createLogger, type Logger } from "../../lib/log.ts";
import { Lxd, LxdError, type RunCli } from "../../lib/lxd.ts";

const LOCAL = { cli: "lxc", remote: "", project: "", member: "" } as const;
import { FakeLxc, LXD_DOWN, type Reply } from "./fake_lxc.ts";

const FP = "3a571b1bc788866612add97632643d945ceef0ba9f4dc0e54acfe8d92ab67337";
const FP2 = "5686b3a43e176d685556a68a10d20e28019254e388d7faac10d7280901905f78";
/** What prepare.ts takes for "the job named an image that does not exist". */
const PREPARE_NOT_FOUND = /image not found|requested image couldn.t be found/i;

const IMAGE_NOT_FOUND: Reply = { code: 1, stderr: "Error: Image not found\n" };

function imageJson(fingerprint: string, description: string): Reply {
  return {
    stdout: JSON.stringify({
      fingerprint,
      properties: { description, os: "busybox" },
      aliases: [],
    }),
  };
}

/** `lxc image info REMOTE:NAME` as LXD 5.0.2 prints it. */
function imageInfo(fingerprint: string, description: string): Reply {
  return {
    stdout: `Fingerprint: ${fingerprint}
Size: 1.00MB
Architecture: x86_64
Type: container
Public: yes
Timestamps:
    Created: 2026/12/03 18:28 UTC
    Uploaded: 2026/12/03 18:45 UTC
    Expires: never
    Last used: never
Properties:
    description: ${description}
    os: busybox
    release: v1.35.0
Aliases:
    - test/busybox
Cached: no
Auto update: disabled
Profiles:
    - default
`,
  };
}

function logger(lines: string[]): Logger {
  return createLogger({ sink: (line) => lines.push(line) });
}

/** A client on the shared scripted fake (replies in call order). */
function scripted(script: readonly Reply[]) {
  const lines: string[] = [];
  const lxc = new FakeLxc(script);
  const log = logger(lines);
  const lxd = new Lxd({ target: LOCAL, log, runCli: lxc.runner() });
  return { lxd, lxc, log, lines };
}

/**
 * A client whose fake `lxc` answers by what is asked, for calls that overlap
 * (the copy runs while progress is polled).
 */
function routed(answer: (args: string[]) => Reply | Promise<Reply>) {
  const lines: string[] = [];
  const calls: string[][] = [];
  const log = logger(lines);
  const runCli: RunCli = async (cli, args) => {
    if (cli !== "lxc") {
      return { code: 127, stdout: "", stderr: "fake incus: not the configured cli\n" };
    }
    calls.push([...args]);
    const argv = [...args];
    const reply = await answer(argv);
    return { code: reply.code ?? 0, stdout: reply.stdout ?? "", stderr: reply.stderr ?? "" };
  };
  const lxd = new Lxd({ target: LOCAL, log, runCli });
  return { lxd, log, lines, calls };
}

async function imageErrorOf(promise: Promise<unknown>): Promise<ImageError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ImageError, `expected an ImageError, got ${error}`);
    return error;
  }
  assert.fail("expected an ImageError, nothing was thrown");
}

function operations(ops: { id: string; progress?: string }[]): Reply {
  return {
    stdout: JSON.stringify({
      running: ops.map((op) => ({
        id: op.id,
        class: "task",
        description: "Downloading image",
        status: "Running",
        metadata: op.progress === undefined ? null : { download_progress: op.progress },
      })),
      success: [{ id: "done", description: "Downloading image", status: "Success" }],
    }),
  };
}

function escape(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

function key(args: string[]): string {
  return args.join(" ");
}

// --- local store ---------------------------------------------------------------

Deno.test("a local alias resolves to its fingerprint and description in one call", async () => {
  const { lxd, lxc, log, lines } = scripted([imageInfo(FP, "BusyBox test image")]);
  const image = await ensureLocalImage(lxd, "lxd-driver-test/busybox", log);
  assert.deepEqual(image, { fingerprint: FP, description: "BusyBox test image" });
  assert.deepEqual(lxc.calls, [["image", "info", "--", "lxd-driver-test/busybox"]]);
  assert.deepEqual(lines, [], "nothing to tell the job log");
});

Deno.test("a local name is passed after --, so no character of it becomes a flag", async () => {
  const { lxd, lxc, log } = scripted([IMAGE_NOT_FOUND]);
  await imageErrorOf(ensureLocalImage(lxd, "--project=other", log));
  assert.deepEqual(lxc.calls, [["image", "info", "--", "--project=other"]]);
});

Deno.test("a fingerprint prefix resolves to the full fingerprint", async () => {
  const { lxd, lxc, log } = scripted([imageInfo(FP, "BusyBox")]);
  const image = await ensureLocalImage(lxd, "3a571b", log);
  assert.equal(image.fingerprint, FP);
  assert.deepEqual(lxc.calls, [["image", "info", "--", "3a571b"]]);
});

Deno.test("an image without a description gets an empty one", async () => {
  const { lxd, log } = scripted([{ stdout: `Fingerprint: ${FP}\nSize: 1.00MB\nProperties:\n` }]);
  assert.deepEqual(await ensureLocalImage(lxd, FP, log), { fingerprint: FP, description: "" });
});

Deno.test("an answer without a fingerprint is a failed lookup, not a missing image", async () => {
  const { lxd, log } = scripted([{ stdout: "something else\n" }]);
  const error = await imageErrorOf(ensureLocalImage(lxd, "lxd-driver-test/busybox", log));
  assert.equal(error.imageNotFound, false);
  assert.match(error.message, /no fingerprint in lxc's answer/);
});

Deno.test("a local name that is neither alias nor fingerprint: Image not found (LXD and Incus)", async () => {
  for (
    const stderr of ["Error: Image not found\n", 'Error: Image "lxd-driver-test/nope" not found\n']
  ) {
    const { lxd, lxc, log } = scripted([{ code: 1, stderr }]);
    const error = await imageErrorOf(ensureLocalImage(lxd, "lxd-driver-test/nope", log));
    assert.ok(error instanceof LxdError, "an LxdError, as prepare expects");
    assert.match(error.stderr, PREPARE_NOT_FOUND);
    assert.match(error.stderr, /not found/, "keeps LXD's words");
    assert.equal(error.imageNotFound, true);
    assert.match(error.message, /image "lxd-driver-test\/nope" not found/);
    assert.equal(lxc.calls.length, 1);
  }
});

Deno.test("LXD down while resolving locally: the plain LxdError, classified unreachable", async () => {
  const { lxd, log } = scripted([LXD_DOWN]);
  const error = await ensureLocalImage(lxd, "lxd-driver-test/busybox", log).then(
    () => assert.fail("expected a failure"),
    (e: unknown) => e,
  );
  assert.ok(error instanceof LxdError);
  assert.ok(!(error instanceof ImageError));
  assert.equal(error.unreachable, true);
  assert.doesNotMatch(error.stderr, PREPARE_NOT_FOUND);
});

// --- remotes: lookup -----------------------------------------------------------------

Deno.test("a remote image already in the local store is not downloaded again", async () => {
  const { lxd, lxc, log, lines } = scripted([
    imageInfo(FP2, "BusyBox test image served by the image server"),
    imageJson(FP2, "BusyBox test image served by the image server"),
  ]);
  const image = await ensureLocalImage(lxd, "lxd-driver-images:test/busybox", log);
  assert.deepEqual(image, {
    fingerprint: FP2,
    description: "BusyBox test image served by the image server",
  });
  assert.deepEqual(lxc.calls, [
    ["image", "info", "--", "lxd-driver-images:test/busybox"],
    ["query", "--", `/1.0/images/${FP2}`],
  ]);
  assert.deepEqual(lines, []);
});

Deno.test("a name the remote does not have: Image not found, with LXD's words", async () => {
  const { lxd, log } = scripted([{ code: 1, stderr: 'Error: Image "nope" not found\n' }]);
  const error = await imageErrorOf(ensureLocalImage(lxd, "lxd-driver-images:nope", log));
  assert.match(error.stderr, PREPARE_NOT_FOUND);
  assert.match(error.stderr, /Image "nope" not found/);
  assert.match(error.message, /remote "lxd-driver-images" has no image or alias "nope"/);
  assert.equal(error.imageNotFound, true);
});

Deno.test("simplestreams' wording for a missing image is recognised too", async () => {
  const { lxd, log } = scripted([
    { code: 1, stderr: "Error: The requested image couldn't be found\n" },
  ]);
  const error = await imageErrorOf(ensureLocalImage(lxd, "images:debian/99", log));
  assert.equal(error.imageNotFound, true);
});

Deno.test("an unreachable image server is a failed lookup, not a missing image or a down LXD", async () => {
  const stderr =
    'Error: Get "https://127.0.0.1:8443/1.0": dial tcp 127.0.0.1:8443: connect: connection refused\n';
  const { lxd, log } = scripted([{ code: 1, stderr }]);
  const error = await imageErrorOf(ensureLocalImage(lxd, "lxd-driver-images:test/busybox", log));
  assert.equal(error.imageNotFound, false);
  assert.doesNotMatch(error.stderr, PREPARE_NOT_FOUND);
  assert.equal(error.unreachable, false, "the local LXD is fine");
  assert.equal(error.stderr, stderr, "stderr is LXD's, unchanged");
  assert.match(error.message, /looking up image "lxd-driver-images:test\/busybox" on remote/);
  assert.match(error.message, /connection refused/);
  assert.doesNotMatch(error.message, /LXD is not reachable/);
});

Deno.test("an unknown remote is a missing image that names the image and the remote", async () => {
  for (
    const stderr of [
      'Error: The remote "debian" doesn\'t exist\n',
      'Error: The remote "debian" does not exist\n',
    ]
  ) {
    const { lxd, lxc, log } = scripted([{ code: 1, stderr }]);
    const error = await imageErrorOf(ensureLocalImage(lxd, "debian:11", log));
    assert.equal(error.imageNotFound, true, stderr);
    assert.match(error.stderr, PREPARE_NOT_FOUND, "prepare makes it the job's fault");
    assert.ok(error.stderr.includes(stderr.trim().replace(/^Error: /, "")), "keeps LXD's words");
    assert.equal(error.unreachable, false);
    assert.match(
      error.message,
      /^image "debian:11" not found: this runner has no image remote "debian" \(The remote "debian" /,
    );
    assert.equal(error.message.split("\n").length, 1);
    assert.deepEqual(lxc.calls, [["image", "info", "--", "debian:11"]]);
  }
});

Deno.test("a remote named in another error is not taken for an unknown remote", async () => {
  const stderr = 'Error: Failed remote image download: Get "https://h/1.0": EOF\n';
  const { lxd, log } = scripted([{ code: 1, stderr }]);
  const error = await imageErrorOf(ensureLocalImage(lxd, "mirror:debian/12", log));
  assert.equal(error.imageNotFound, false);
  assert.doesNotMatch(error.stderr, PREPARE_NOT_FOUND);
});

Deno.test("a remote lookup that hangs times out with a message saying so", async () => {
  const { lxd, log } = scripted([{ hang: true }]);
  const error = await imageErrorOf(
    ensureLocalImage(lxd, "slow:img", log, { lookupTimeoutMs: 100 }),
  );
  assert.match(error.message, /no answer within 100ms/);
});

Deno.test("parseImageInfo reads lxc's and incus's `image info`", () => {
  const lxd = parseImageInfo(imageInfo(FP, "Debian bookworm amd64 (20260101_05:24)").stdout!);
  assert.deepEqual(lxd, {
    fingerprint: FP,
    size: "1.00MB",
    description: "Debian bookworm amd64 (20260101_05:24)",
  });
  // Incus lists properties in another order and sizes in MiB.
  const incus = parseImageInfo(
    `Fingerprint: ${FP}\nSize: 1.00MiB\nProperties:\n    os: busybox\n    description: x y\nAliases:\n`,
  );
  assert.deepEqual(incus, { fingerprint: FP, size: "1.00MiB", description: "x y" });
  assert.equal(parseImageInfo("Error: nothing\n"), undefined);
  assert.deepEqual(parseImageInfo(`Fingerprint: ${FP}\n`), {
    fingerprint: FP,
    size: "",
    description: "",
  });
});

// --- remotes: download -------------------------------------------------------------

interface DownloadFake {
  /** Replies to the n-th progress poll (after the snapshot taken before the copy). */
  readonly polls: readonly Reply[];
  /** The copy ends after this many polls, with this reply. */
  readonly copyAfterPolls: number;
  readonly copy?: Reply;
  /** Whether the image is in the local store after the copy. */
  readonly storedAfterCopy?: boolean;
  readonly defaultRemote?: string;
}

function downloadFake(fake: DownloadFake) {
  let stored = false;
  let polls = 0;
  let copyDone: () => void = () => {};
  const copied = new Promise<void>((resolve) => (copyDone = resolve));
  const client = routed(async (args) => {
    switch (key(args)) {
      case "image info -- myremote:test/busybox":
        return imageInfo(FP2, "remote description");
      case `query -- /1.0/images/${FP2}`:
        return stored ? imageJson(FP2, "local description") : IMAGE_NOT_FOUND;
      case "remote get-default":
        return { stdout: `${fake.defaultRemote ?? "local"}\n` };
      case "query -- /1.0/operations?recursion=1": {
        // The first call is the snapshot of downloads already running.
        const n = polls++;
        if (n === 0) return operations([{ id: "someone-elses", progress: "99% (1.00MB/s)" }]);
        if (n >= fake.copyAfterPolls) copyDone();
        return fake.polls[n - 1] ?? operations([]);
      }
      case `image copy -- myremote:${FP2} ${fake.defaultRemote ?? "local"}:`:
        if (fake.copyAfterPolls > 0) await copied;
        stored = fake.storedAfterCopy ?? true;
        return fake.copy ?? { stdout: "Image copied successfully!\n" };
      default:
        return { code: 99, stderr: `fake lxc: unexpected call ${key(args)}\n` };
    }
  });
  return client;
}

Deno.test("a new remote image is copied by fingerprint, with a progress line per interval", async () => {
  const progress = (text: string) =>
    operations([{ id: "someone-elses", progress: "99% (1.00MB/s)" }, {
      id: "ours",
      progress: text,
    }]);
  const { lxd, log, lines, calls } = downloadFake({
    polls: [progress("10% (5.00MB/s)"), progress("55% (6.10MB/s)"), progress("100% (6.20MB/s)")],
    copyAfterPolls: 3,
  });
  const image = await ensureLocalImage(lxd, "myremote:test/busybox", log, {
    progressIntervalMs: 5,
  });
  assert.deepEqual(image, { fingerprint: FP2, description: "local description" });

  assert.equal(
    lines[0],
    "Downloading image myremote:test/busybox (fingerprint 5686b3a43e17, 1.00MB) into the local image store",
  );
  const progressLines = lines.slice(1, -1);
  assert.equal(progressLines.length, 3, lines.join("\n"));
  for (const [i, text] of ["10% (5.00MB/s)", "55% (6.10MB/s)", "100% (6.20MB/s)"].entries()) {
    assert.match(
      progressLines[i]!,
      new RegExp(`^Downloading image myremote:test/busybox: ${escape(text)}, \\S+ elapsed$`),
    );
  }
  assert.ok(!lines.some((l) => l.includes("99%")), "a download running before ours is not ours");
  assert.match(lines.at(-1)!, /^Downloaded image myremote:test\/busybox in \S+$/);

  const copy = calls.find((c) => c[0] === "image" && c[1] === "copy");
  assert.deepEqual(copy, ["image", "copy", "--", `myremote:${FP2}`, "local:"]);
  assert.ok(!calls.some((c) => c.includes("alias")), "no alias is created");
});

Deno.test("the copy goes to the client's default remote, where the driver launches", async () => {
  const { lxd, log, calls } = downloadFake({
    polls: [],
    copyAfterPolls: 0,
    defaultRemote: "cluster",
  });
  await ensureLocalImage(lxd, "myremote:test/busybox", log, { progressIntervalMs: 1000 });
  assert.ok(calls.some((c) => key(c) === `image copy -- myremote:${FP2} cluster:`));
});

Deno.test("without progress from LXD, a heartbeat line still shows the download is alive", async () => {
  const { lxd, log, lines } = downloadFake({
    polls: [{ code: 1, stderr: "Error: boom\n" }, operations([{ id: "ours" }])],
    copyAfterPolls: 2,
  });
  await ensureLocalImage(lxd, "myremote:test/busybox", log, { progressIntervalMs: 5 });
  const progressLines = lines.slice(1, -1);
  assert.equal(progressLines.length, 2, lines.join("\n"));
  for (const line of progressLines) {
    assert.match(line, /^Downloading image myremote:test\/busybox: in progress, \S+ elapsed$/);
  }
});

Deno.test("several new downloads at once: every one's progress is shown", async () => {
  const { lxd, log, lines } = downloadFake({
    polls: [operations([{ id: "a", progress: "10% (1.00MB/s)" }, {
      id: "b",
      progress: "70% (2.00MB/s)",
    }])],
    copyAfterPolls: 1,
  });
  await ensureLocalImage(lxd, "myremote:test/busybox", log, { progressIntervalMs: 5 });
  assert.match(
    lines[1]!,
    /: 10% \(1\.00MB\/s\); 70% \(2\.00MB\/s\) \(2 image downloads running\), \S+ elapsed$/,
  );
});

Deno.test("a copy refused because a concurrent pull stored the image first still succeeds", async () => {
  const { lxd, log, lines } = downloadFake({
    polls: [],
    copyAfterPolls: 0,
    copy: { code: 1, stderr: "Error: Image with same fingerprint already exists\n" },
    storedAfterCopy: true,
  });
  const image = await ensureLocalImage(lxd, "myremote:test/busybox", log);
  assert.equal(image.fingerprint, FP2);
  assert.match(lines.at(-1)!, /^Downloaded image myremote:test\/busybox in /);
});

Deno.test("a failed copy keeps LXD's message and is not a missing image", async () => {
  const stderr =
    'Error: Failed getting image: Get "https://127.0.0.1:8443/1.0/images/5686b3": EOF\n';
  const { lxd, log } = downloadFake({
    polls: [],
    copyAfterPolls: 0,
    copy: { code: 1, stderr },
    storedAfterCopy: false,
  });
  const error = await imageErrorOf(ensureLocalImage(lxd, "myremote:test/busybox", log));
  assert.equal(error.stderr, stderr);
  assert.equal(error.imageNotFound, false);
  assert.equal(error.unreachable, false);
  assert.match(
    error.message,
    /^downloading image "myremote:test\/busybox" \(fingerprint 5686b3a43e17\) from remote "myremote" failed: Failed getting image: .*EOF$/,
  );
});

Deno.test("an image missing after a successful copy is reported, not returned", async () => {
  const { lxd, log } = downloadFake({ polls: [], copyAfterPolls: 0, storedAfterCopy: false });
  const error = await imageErrorOf(ensureLocalImage(lxd, "myremote:test/busybox", log));
  assert.match(error.message, /not in the local image store after downloading it/);
});
