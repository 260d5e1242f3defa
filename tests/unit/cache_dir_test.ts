import assert from "node:assert/strict";
import {
  cacheSourceFor,
  chownToContainerRoot,
  containerRoot,
  ensureCacheDir,
} from "../../lib/cache_dir.ts";
import { SystemFailure } from "../../lib/errors.ts";
import type { JobIdentity } from "../../lib/job.ts";
import { parseSettings } from "../../lib/settings.ts";

const ID: JobIdentity = { jobId: "42", projectId: "7", runnerId: "3", concurrentProjectId: "1" };

/** LXD's idmap for an unprivileged container whose root is host uid and gid 1000000. */
const IDMAP = JSON.stringify([
  { Isuid: true, Isgid: false, Hostid: 1000000, Nsid: 0, Maprange: 1000000000 },
  { Isuid: false, Isgid: true, Hostid: 1000000, Nsid: 0, Maprange: 1000000000 },
]);

function settingsWith(cache: string) {
  return parseSettings(`[cache]\n${cache}\n`, "t.toml");
}

/** A temporary directory, removed when disposed. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "lxd-driver-cache-test-" });
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("cacheSourceFor() is undefined when [cache] host_dir is unset", () => {
  assert.equal(cacheSourceFor(parseSettings("", "t.toml"), ID), undefined);
  assert.equal(cacheSourceFor(settingsWith("per_slot = true"), ID), undefined);
});

Deno.test("cacheSourceFor() gives each project its directory under host_dir", () => {
  assert.equal(cacheSourceFor(settingsWith('host_dir = "/var/cache/ci"'), ID), "/var/cache/ci/7");
  assert.equal(
    cacheSourceFor(settingsWith('host_dir = "/var/cache/ci"'), { ...ID, jobId: "43" }),
    "/var/cache/ci/7",
  );
});

Deno.test("cacheSourceFor() gives each concurrent slot its directory with per_slot", () => {
  const settings = settingsWith('host_dir = "/var/cache/ci"\nper_slot = true');
  assert.equal(cacheSourceFor(settings, ID), "/var/cache/ci/7-slot-1");
  assert.equal(
    cacheSourceFor(settings, { ...ID, concurrentProjectId: "0" }),
    "/var/cache/ci/7-slot-0",
  );
});

Deno.test("cacheSourceFor() drops trailing slashes of host_dir", () => {
  assert.equal(cacheSourceFor(settingsWith('host_dir = "/var/cache/ci/"'), ID), "/var/cache/ci/7");
  assert.equal(
    cacheSourceFor(settingsWith('host_dir = "/var/cache/ci///"\nper_slot = true'), ID),
    "/var/cache/ci/7-slot-1",
  );
  assert.equal(cacheSourceFor(settingsWith('host_dir = "/"'), ID), "/7");
});

Deno.test("ensureCacheDir() creates host_dir and the job's directory with their modes", async () => {
  await using dir = await tempDir();
  const umask = Deno.umask();
  const path = `${dir.path}/host/7`;
  await ensureCacheDir(path);
  const root = await Deno.lstat(`${dir.path}/host`);
  const leaf = await Deno.lstat(path);
  assert.ok(root.isDirectory && leaf.isDirectory);
  assert.equal(root.mode! & 0o777, 0o711 & ~umask);
  assert.equal(leaf.mode! & 0o777, 0o755 & ~umask);
});

Deno.test("ensureCacheDir() keeps an existing directory and its contents", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/7`;
  await Deno.mkdir(path, { mode: 0o700 });
  await Deno.writeTextFile(`${path}/cached`, "x");
  await ensureCacheDir(path);
  await ensureCacheDir(path);
  assert.equal(await Deno.readTextFile(`${path}/cached`), "x");
  assert.equal((await Deno.lstat(path)).mode! & 0o777, 0o700);
});

Deno.test("ensureCacheDir() refuses a symlink at the path, even one to a directory", async () => {
  await using dir = await tempDir();
  await Deno.mkdir(`${dir.path}/elsewhere`);
  await Deno.mkdir(`${dir.path}/host`);
  for (const [name, target] of [["7", `${dir.path}/elsewhere`], ["8", `${dir.path}/missing`]]) {
    const path = `${dir.path}/host/${name}`;
    await Deno.symlink(target!, path);
    await assert.rejects(ensureCacheDir(path), (error: unknown) => {
      assert.ok(error instanceof SystemFailure);
      assert.equal(error.message, `cache directory ${path} is not a plain directory; remove it`);
      return true;
    });
    assert.ok((await Deno.lstat(path)).isSymlink);
  }
  await assert.rejects(Deno.lstat(`${dir.path}/missing`), Deno.errors.NotFound);
});

Deno.test("ensureCacheDir() refuses a file at the path", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/7`;
  await Deno.writeTextFile(path, "");
  await assert.rejects(
    ensureCacheDir(path),
    new SystemFailure(`cache directory ${path} is not a plain directory; remove it`),
  );
});

Deno.test("containerRoot() reads the container's root from volatile.idmap.next", () => {
  assert.deepEqual(containerRoot({ "volatile.idmap.next": IDMAP }), { uid: 1000000, gid: 1000000 });
  const split = JSON.stringify([
    { Isuid: true, Isgid: false, Hostid: 100000, Nsid: 0, Maprange: 65536 },
    { Isuid: false, Isgid: true, Hostid: 200000, Nsid: 0, Maprange: 65536 },
  ]);
  assert.deepEqual(containerRoot({ "volatile.idmap.next": split }), { uid: 100000, gid: 200000 });
});

Deno.test("containerRoot() prefers volatile.idmap.next over volatile.idmap.current", () => {
  const current = JSON.stringify([
    { Isuid: true, Isgid: true, Hostid: 300000, Nsid: 0, Maprange: 65536 },
  ]);
  assert.deepEqual(containerRoot({ "volatile.idmap.current": current }), {
    uid: 300000,
    gid: 300000,
  });
  assert.deepEqual(
    containerRoot({ "volatile.idmap.current": current, "volatile.idmap.next": IDMAP }),
    { uid: 1000000, gid: 1000000 },
  );
});

Deno.test("containerRoot() uses the entry that maps the container's uid 0", () => {
  const map = JSON.stringify([
    { Isuid: true, Isgid: true, Hostid: 5000, Nsid: 1000, Maprange: 1 },
    { Isuid: true, Isgid: true, Hostid: 1000000, Nsid: 0, Maprange: 1000 },
  ]);
  assert.deepEqual(containerRoot({ "volatile.idmap.next": map }), { uid: 1000000, gid: 1000000 });
});

Deno.test("containerRoot() is the host's root for a privileged container or without an idmap", () => {
  assert.deepEqual(
    containerRoot({ "security.privileged": "true", "volatile.idmap.next": IDMAP }),
    { uid: 0, gid: 0 },
  );
  assert.deepEqual(containerRoot({}), { uid: 0, gid: 0 });
  assert.deepEqual(containerRoot({ "volatile.idmap.next": "" }), { uid: 0, gid: 0 });
  assert.deepEqual(containerRoot({ "volatile.idmap.next": "[]" }), { uid: 0, gid: 0 });
});

Deno.test({
  name: "chownToContainerRoot() gives the directory to the container's root",
  ignore: Deno.uid() !== 0,
  fn: async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/7`;
    await Deno.mkdir(path);
    await chownToContainerRoot(path, { "volatile.idmap.next": IDMAP });
    let info = await Deno.stat(path);
    assert.deepEqual([info.uid, info.gid], [1000000, 1000000]);
    await chownToContainerRoot(path, { "volatile.idmap.next": IDMAP });
    await chownToContainerRoot(path, { "security.privileged": "true" });
    info = await Deno.stat(path);
    assert.deepEqual([info.uid, info.gid], [0, 0]);
  },
});
