/**
 * config: tells the runner where builds and caches live inside the container
 * and which runner host it runs via. Its stdout is parsed as JSON, so this
 * prints exactly one object there and nothing else.
 */
import type { Context } from "../lib/context.ts";
import { DRIVER_NAME, VERSION } from "../lib/version.ts";

export async function config(ctx: Context): Promise<void> {
  const answer = {
    builds_dir: ctx.settings.job.buildsDir,
    cache_dir: ctx.settings.job.cacheDir,
    // Every job has a container of its own, so the path needs no runner or slot prefix.
    builds_dir_is_shared: false,
    // Shown as "Running on <container> via <hostname>": the runner host.
    hostname: Deno.hostname(),
    driver: { name: DRIVER_NAME, version: VERSION },
    shell: ctx.settings.job.shell,
  };
  await ctx.write(JSON.stringify(answer));
}
