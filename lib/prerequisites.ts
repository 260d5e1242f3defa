/**
 * What a job needs inside its container besides the image: the configured
 * shell and git (checked), a `gitlab-runner` binary for cache and artifacts
 * (pushed from the host when the image has none, so nothing is downloaded),
 * and the administrator's CA bundle for a GitLab behind a private CA.
 */
import { BuildFailure } from "./errors.ts";
import { findExecutable } from "./find_executable.ts";
import type { Logger } from "./log.ts";
import type { Lxd } from "./lxd.ts";
import type { Settings } from "./settings.ts";

/** Tools the readiness probe reports on, one `has NAME` line each. */
export const PROBED_TOOLS = ["git", "gitlab-runner", "update-ca-certificates"] as const;

/** Parses the probe's `has NAME` lines. */
export function parseProbe(output: string): Set<string> {
  return new Set(
    output.split("\n").flatMap((line) => line.startsWith("has ") ? [line.slice(4).trim()] : []),
  );
}

/** The host's `gitlab-runner` to push: the configured one, else the first on PATH. */
export function findGitlabRunner(settings: Settings, path: string | undefined): string | undefined {
  return settings.helper.gitlabRunner || findExecutable("gitlab-runner", path);
}

export interface PrerequisiteInput {
  readonly lxd: Lxd;
  readonly container: string;
  readonly settings: Settings;
  readonly log: Logger;
  /** The shell binary the job's scripts run with. */
  readonly shell: string;
  /** Tools the image already has, from the readiness probe. */
  readonly present: ReadonlySet<string>;
  readonly hostGitlabRunner: string | undefined;
}

/** Checks the image and installs what it lacks; a missing shell or git is the job's problem. */
export async function installPrerequisites(input: PrerequisiteInput): Promise<void> {
  const { lxd, container, settings, log, present } = input;
  const missing = [input.shell, "git"].filter((tool) => !present.has(tool));
  if (missing.length > 0) {
    throw new BuildFailure(
      `the job's image has no ${missing.join(" and no ")}, which jobs on this runner need ` +
        `(shell ${JSON.stringify(input.shell)} from [job] shell; git to get the sources)`,
    );
  }
  if (!present.has("gitlab-runner")) {
    if (input.hostGitlabRunner) {
      await lxd.pushFile(input.hostGitlabRunner, container, "/usr/local/bin/gitlab-runner", "0755");
      log.info("Added gitlab-runner to the container for cache and artifacts");
    } else {
      log.warn(
        "the image has no gitlab-runner and none is configured ([helper] gitlab_runner): " +
          "cache and artifacts are disabled for this job",
      );
    }
  }
  if (settings.helper.caFile) {
    await lxd.pushFile(
      settings.helper.caFile,
      container,
      "/usr/local/share/ca-certificates/lxd-driver-ca.crt",
      "0644",
    );
    // Debian, Ubuntu and Alpine (with ca-certificates) rebuild the bundle; elsewhere append to it.
    await lxd.exec(container, [
      "sh",
      "-c",
      "if command -v update-ca-certificates >/dev/null 2>&1; then update-ca-certificates >/dev/null; " +
      'else mkdir -p /etc/ssl/certs && cat "$1" >> /etc/ssl/certs/ca-certificates.crt; fi',
      "lxd-driver-ca",
      "/usr/local/share/ca-certificates/lxd-driver-ca.crt",
    ]);
    log.info("Added the runner's CA certificates to the container's trust store");
  }
}
