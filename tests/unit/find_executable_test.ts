import assert from "node:assert/strict";
import { findExecutable, notExecutable } from "../../lib/find_executable.ts";

async function dirWith(files: Record<string, number>): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "lxd-driver-path-test-" });
  for (const [name, mode] of Object.entries(files)) {
    await Deno.writeTextFile(`${path}/${name}`, "#!/bin/sh\n", { mode });
    await Deno.chmod(`${path}/${name}`, mode);
  }
  return { path, [Symbol.asyncDispose]: () => Deno.remove(path, { recursive: true }) };
}

Deno.test("findExecutable() takes the first executable file, skipping others of that name", async () => {
  await using plain = await dirWith({ tool: 0o644 });
  await using real = await dirWith({ tool: 0o755 });
  await using later = await dirWith({ tool: 0o755 });
  await Deno.mkdir(`${later.path}/sub/tool`, { recursive: true });
  const path = [plain.path, `${later.path}/sub`, real.path, later.path].join(":");
  assert.equal(findExecutable("tool", path), `${real.path}/tool`);
});

Deno.test("findExecutable() ignores relative and empty PATH entries", async () => {
  await using real = await dirWith({ tool: 0o755 });
  const cwd = Deno.cwd();
  Deno.chdir(real.path);
  try {
    assert.equal(findExecutable("tool", ".::tool"), undefined);
    assert.equal(findExecutable("tool", undefined), undefined);
  } finally {
    Deno.chdir(cwd);
  }
});

Deno.test("notExecutable() says why a path cannot be run", async () => {
  await using dir = await dirWith({ plain: 0o644, run: 0o700 });
  assert.equal(notExecutable(`${dir.path}/run`), undefined);
  assert.equal(notExecutable(`${dir.path}/plain`), "is not executable");
  assert.equal(notExecutable(dir.path), "is not a file");
  assert.equal(notExecutable(`${dir.path}/missing`), "does not exist");
});
