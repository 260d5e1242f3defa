import assert from "node:assert/strict";
import { findGitlabRunner, parseProbe } from "../../lib/prerequisites.ts";
import { parseSettings } from "../../lib/settings.ts";

const NO_HELPER = parseSettings("", "t.toml");

/** A temporary directory, removed when disposed. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "lxd-driver-prereq-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("parseProbe() reads the tools of the probe's `has NAME` lines", () => {
  assert.deepEqual(
    parseProbe("has bash\nhas git\nhas gitlab-runner\n"),
    new Set(["bash", "git", "gitlab-runner"]),
  );
  assert.deepEqual(parseProbe("has sh\r\nhas git\r\n"), new Set(["sh", "git"]));
  assert.deepEqual(parseProbe("has update-ca-certificates"), new Set(["update-ca-certificates"]));
});

Deno.test("parseProbe() ignores every other line", () => {
  assert.deepEqual(parseProbe(""), new Set());
  assert.deepEqual(
    parseProbe("Welcome!\n has git\nhasgit\nHAS git\nhas bash\n\nsome motd has git\n"),
    new Set(["bash"]),
  );
});

Deno.test("findGitlabRunner() prefers the configured binary over PATH", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/gitlab-runner`, "#!/bin/sh\n", { mode: 0o755 });
  const settings = parseSettings('[helper]\ngitlab_runner = "/opt/gitlab-runner"\n', "t.toml");
  assert.equal(findGitlabRunner(settings, dir.path), "/opt/gitlab-runner");
  // Taken as configured, without checking the file: pushing it reports a missing one.
  assert.equal(findGitlabRunner(settings, undefined), "/opt/gitlab-runner");
});

Deno.test("findGitlabRunner() finds the first executable gitlab-runner on PATH", async () => {
  await using dir = await tempDir();
  const [empty, notExecutable, directory, first, second] = ["a", "b", "c", "d", "e"].map((name) =>
    `${dir.path}/${name}`
  ) as [string, string, string, string, string];
  for (const d of [empty, notExecutable, directory, first, second]) await Deno.mkdir(d);
  await Deno.writeTextFile(`${notExecutable}/gitlab-runner`, "#!/bin/sh\n", { mode: 0o644 });
  await Deno.chmod(`${notExecutable}/gitlab-runner`, 0o644);
  await Deno.mkdir(`${directory}/gitlab-runner`, { mode: 0o755 });
  for (const d of [first, second]) {
    await Deno.writeTextFile(`${d}/gitlab-runner`, "#!/bin/sh\n");
    await Deno.chmod(`${d}/gitlab-runner`, 0o755);
  }
  const path = [empty, "", notExecutable, directory, first, second].join(":");
  assert.equal(findGitlabRunner(NO_HELPER, path), `${first}/gitlab-runner`);
  assert.equal(
    findGitlabRunner(NO_HELPER, [notExecutable, second, first].join(":")),
    `${second}/gitlab-runner`,
  );
});

Deno.test("findGitlabRunner() follows a symlink to an executable file", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/bin`);
  await Deno.writeTextFile(`${dir.path}/real`, "#!/bin/sh\n");
  await Deno.chmod(`${dir.path}/real`, 0o700);
  await Deno.symlink(`${dir.path}/real`, `${dir.path}/bin/gitlab-runner`);
  assert.equal(
    findGitlabRunner(NO_HELPER, `${dir.path}/bin`),
    `${dir.path}/bin/gitlab-runner`,
  );
});

Deno.test("findGitlabRunner() is undefined when PATH has no executable gitlab-runner", async () => {
  await using dir = await tempDir();
  await Deno.writeTextFile(`${dir.path}/gitlab-runner`, "#!/bin/sh\n");
  await Deno.chmod(`${dir.path}/gitlab-runner`, 0o644);
  assert.equal(findGitlabRunner(NO_HELPER, dir.path), undefined);
  assert.equal(findGitlabRunner(NO_HELPER, `${dir.path}/nonexistent`), undefined);
  assert.equal(findGitlabRunner(NO_HELPER, ""), undefined);
  assert.equal(findGitlabRunner(NO_HELPER, ":::"), undefined);
  assert.equal(findGitlabRunner(NO_HELPER, undefined), undefined);
});
