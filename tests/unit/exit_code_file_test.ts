import assert from "node:assert/strict";
import { recordJobExitCode } from "../../lib/exit_code_file.ts";

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

Deno.test("recordJobExitCode() writes the code and a newline", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/exit_code`;
    const env = (name: string) => name === "BUILD_EXIT_CODE_FILE" ? path : undefined;
    await recordJobExitCode(env, 7);
    assert.equal(await Deno.readTextFile(path), "7\n");
    await recordJobExitCode(env, 137);
    assert.equal(await Deno.readTextFile(path), "137\n", "overwrites, does not append");
  });
});

Deno.test("recordJobExitCode() removes the file when the code is undefined", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/exit_code`;
    const env = (name: string) => name === "BUILD_EXIT_CODE_FILE" ? path : undefined;
    await Deno.writeTextFile(path, "3\n");
    await recordJobExitCode(env, undefined);
    assert.equal(await exists(path), false);
  });
});

Deno.test("recordJobExitCode() does not fail when there is no file to remove", async () => {
  await withDir(async (dir) => {
    const path = `${dir}/exit_code`;
    await recordJobExitCode(
      (name) => name === "BUILD_EXIT_CODE_FILE" ? path : undefined,
      undefined,
    );
    assert.equal(await exists(path), false);
  });
});

Deno.test("recordJobExitCode() does nothing when BUILD_EXIT_CODE_FILE is unset", async () => {
  await withDir(async (dir) => {
    await recordJobExitCode(() => undefined, 7);
    await recordJobExitCode((name) => name === "BUILD_EXIT_CODE_FILE" ? "" : undefined, 7);
    await recordJobExitCode(() => undefined, undefined);
    assert.deepEqual(await Array.fromAsync(Deno.readDir(dir)), []);
  });
});
