/**
 * run: executes one stage's script in the job's container. Every stage name
 * is run the same way; new ones appear between runner versions.
 */
import type { Context } from "../lib/context.ts";
import { BuildFailure } from "../lib/errors.ts";
import { jobContainer } from "../lib/job_container.ts";
import { targetOf } from "../lib/lxd_target.ts";
import { shellCommand } from "../lib/shell.ts";
import { execStage, type StageIo } from "../lib/stage_exec.ts";

/** Runs the stage; `io` replaces the real LXD client and signals (for tests). */
export async function run(
  ctx: Context,
  scriptPath: string,
  stageName: string,
  io: StageIo = {},
): Promise<void> {
  const container = await jobContainer(ctx.env);
  ctx.log.debug(`stage ${stageName} in container ${container}`);
  const outcome = await execStage({
    ...io,
    target: targetOf(ctx.settings.lxd),
    container,
    shell: shellCommand(ctx.settings.job.shell),
    scriptPath,
    log: ctx.log,
  });
  if (outcome.exitCode !== 0) {
    throw new BuildFailure(
      outcome.cancelled
        ? `stage ${stageName} was cancelled (exit code ${outcome.exitCode})`
        : `stage ${stageName} failed with exit code ${outcome.exitCode}`,
      outcome.exitCode,
    );
  }
}
