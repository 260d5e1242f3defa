/**
 * Where the driver's instances live: the LXD (or Incus) client to run, the
 * remote (a standalone server or a cluster; none for the local daemon), the
 * LXD project, and optionally the cluster member to place instances on.
 * Pure functions, shared by the LXD client and the run stage's light exec.
 */
import { findExecutable } from "./find_executable.ts";

export interface LxdTarget {
  readonly cli: "lxc" | "incus";
  /** A remote configured in the client; empty for its default. */
  readonly remote: string;
  /** The LXD project; empty for the default. */
  readonly project: string;
  /** The cluster member new instances go to; empty lets LXD place them. */
  readonly member: string;
}

/** The instance's reference for CLI commands: `REMOTE:NAME` or `NAME`. */
export function instanceRef(target: LxdTarget, name: string): string {
  return target.remote ? `${target.remote}:${name}` : name;
}

/** Global arguments every CLI command but `query` gets (`query` refuses `--project`). */
export function globalArgs(target: LxdTarget): string[] {
  return target.project ? ["--project", target.project] : [];
}

/** An API path for `query`: on the remote, in the project. */
export function apiPath(target: LxdTarget, path: string): string {
  const withProject = target.project
    ? `${path}${path.includes("?") ? "&" : "?"}project=${encodeURIComponent(target.project)}`
    : path;
  return target.remote ? `${target.remote}:${withProject}` : withProject;
}

/** The first of `lxc` and `incus` found on PATH (lxc preferred), for `[lxd] cli` left unset. */
export function detectCli(path: string | undefined): "lxc" | "incus" {
  return findExecutable("lxc", path) === undefined && findExecutable("incus", path) !== undefined
    ? "incus"
    : "lxc";
}

/** The target the settings name. */
export function targetOf(lxd: {
  readonly cli: "lxc" | "incus";
  readonly remote: string;
  readonly project: string;
  readonly target: string;
}): LxdTarget {
  return { cli: lxd.cli, remote: lxd.remote, project: lxd.project, member: lxd.target };
}
