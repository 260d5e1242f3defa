/**
 * runner-config: prints the part of gitlab-runner's config.toml that points
 * the runner at this driver, ready to paste into the runner's `[[runners]]`
 * entry.
 *
 * The driver's own path: a binary made by `deno compile` is
 * `Deno.execPath()` itself (`Deno.build.standalone` says which case this
 * is). Run from source, `Deno.execPath()` is deno, so the block runs
 * `deno run -q -P=driver /abs/mod.ts` instead, with a comment saying so.
 */
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Context } from "../lib/context.ts";

/** The stages gitlab-runner's custom executor starts, each with `<stage>_exec` and `<stage>_args`. */
export const STAGES = ["config", "prepare", "run", "cleanup"] as const;

/** How gitlab-runner starts this driver: a program and the arguments before the driver's own. */
export interface Invocation {
  readonly exec: string;
  readonly args: readonly string[];
  /** Comment lines for the block explaining the invocation. */
  readonly notes: readonly string[];
}

/** This process's own invocation: the compiled binary, or deno running mod.ts. */
export function selfInvocation(): Invocation {
  // Not in workers, where it is undefined in some Deno versions; this runs on the main thread.
  if (Deno.build.standalone === true) return { exec: Deno.execPath(), args: [], notes: [] };
  const modTs = fileURLToPath(new URL("../mod.ts", import.meta.url));
  return {
    exec: Deno.execPath(),
    args: ["run", "-q", "-P=driver", modTs],
    notes: [
      "lxd-driver runs from source here, so this starts deno with mod.ts (the same as",
      "`deno run -q -P=driver mod.ts`); with the compiled binary (make build install),",
      "run its runner-config instead to get its own path.",
    ],
  };
}

/** The `[[runners]]` block for `invocation`, passing `--config configFile` when given. */
export function renderRunnerConfig(invocation: Invocation, configFile?: string): string {
  const toml = (value: string) => JSON.stringify(value); // a JSON string is a TOML basic string
  const before = [
    ...invocation.args,
    ...(configFile === undefined ? [] : ["--config", configFile]),
  ];
  const lines = [
    "[[runners]]",
    "  # ... name, url, token (and the rest) as `gitlab-runner register` wrote them ...",
    ...invocation.notes.map((note) => `  # ${note}`),
    `  executor = "custom"`,
    "  [runners.custom]",
  ];
  for (const stage of STAGES) {
    lines.push(
      `    ${stage}_exec = ${toml(invocation.exec)}`,
      `    ${stage}_args = [${[...before, stage].map(toml).join(", ")}]`,
    );
  }
  return lines.join("\n") + "\n";
}

/**
 * Prints the block for this driver. `configFlag` is `--config`'s value;
 * without it, `$LXD_DRIVER_CONFIG` (which the runner's environment may not
 * have) is passed on the same way. Either is made absolute, since the runner
 * starts the driver in another directory.
 */
export async function runnerConfig(ctx: Context, configFlag: string | undefined): Promise<void> {
  const chosen = configFlag ?? ctx.env("LXD_DRIVER_CONFIG");
  const configFile = chosen ? resolve(chosen) : undefined;
  await ctx.write(renderRunnerConfig(selfInvocation(), configFile));
}
