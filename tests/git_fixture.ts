/**
 * Sources without network: a one-commit repository packed as a git bundle,
 * and the get_sources body that clones it into the project directory.
 */

async function git(repo: string, ...args: string[]): Promise<void> {
  const out = await new Deno.Command("git", {
    args: [
      "-C",
      repo,
      "-c",
      "user.name=lxd-driver",
      "-c",
      "user.email=ci@example.invalid",
      ...args,
    ],
    stdin: "null",
  }).output();
  if (!out.success) {
    throw new Error(`git ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** A bundle of a repository holding `files`, base64-encoded. */
export async function sourceBundle(files: Record<string, string>): Promise<string> {
  const repo = await Deno.makeTempDir({ prefix: "lxd-driver-repo-" });
  try {
    await git(repo, "init", "-q", "-b", "main");
    for (const [path, content] of Object.entries(files)) {
      await Deno.writeTextFile(`${repo}/${path}`, content);
    }
    await git(repo, "add", ".");
    await git(repo, "commit", "-q", "-m", "first commit");
    await git(repo, "bundle", "create", "-q", `${repo}/src.bundle`, "main");
    const bytes = await Deno.readFile(`${repo}/src.bundle`);
    return btoa(Array.from(bytes, (b) => String.fromCharCode(b)).join(""));
  } finally {
    await Deno.remove(repo, { recursive: true });
  }
}

/** A get_sources body that clones the bundle into `$CI_PROJECT_DIR`, as the runner's fetch would. */
export function getSourcesBody(bundle: string): string {
  return `base64 -d > /tmp/src.bundle <<'EOF'\n${bundle}\nEOF\n` +
    `git clone -q -b main /tmp/src.bundle "$CI_PROJECT_DIR" && rm /tmp/src.bundle\n` +
    `cd "$CI_PROJECT_DIR" && git log --oneline`;
}
