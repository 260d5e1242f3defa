/**
 * The administrator's settings: a TOML file, validated strictly so that a
 * typo fails loudly (naming the file, line and key) instead of being ignored.
 */
import { parse, TomlError } from "smol-toml";
import { formatDuration, parseDuration } from "./duration.ts";
import { SystemFailure } from "./errors.ts";
import { detectCli } from "./lxd_target.ts";
import { parseSize, type Size } from "./size.ts";

export const DEFAULT_SETTINGS_PATH = "/etc/lxd-driver/config.toml";

export type Shell = "bash" | "sh" | "pwsh";

export interface Settings {
  /** The file the settings came from, or undefined for built-in defaults. */
  readonly source: string | undefined;
  readonly image: {
    /** Image used when the job names none. */
    readonly default: string;
    /** Glob patterns a job's `image:` must match. */
    readonly allowed: readonly string[];
    /** Names jobs write (`debian:12`) mapped to LXD image references (`images:debian/12`). */
    readonly aliases: Readonly<Record<string, string>>;
  };
  readonly instance: {
    readonly profiles: readonly string[];
    /** Empty: the pool of the profiles' root disk. */
    readonly storagePool: string;
    readonly readyTimeoutMs: number;
    readonly ephemeral: boolean;
    /** Creates containers as copies of an already remapped template (lib/template.ts). */
    readonly template: boolean;
    /** Allows nested containers (Docker inside the job). */
    readonly nesting: boolean;
    /** Privileged containers; only with `allowPrivileged`. */
    readonly privileged: boolean;
    readonly allowPrivileged: boolean;
  };
  readonly limits: {
    /** CPUs per container; 0 for no limit. */
    readonly cpu: number;
    readonly memory: Size | undefined;
    /** Processes per container; 0 for no limit. */
    readonly processes: number;
    /** Root disk size. */
    readonly disk: Size | undefined;
    /** Upper bound for a job's `LXD_CPU` request; 0 forbids requests. */
    readonly maxCpu: number;
    /** Upper bound for a job's `LXD_MEMORY` request; unset forbids requests. */
    readonly maxMemory: Size | undefined;
  };
  readonly helper: {
    /** The `gitlab-runner` binary to push into images without one; undefined: none. */
    readonly gitlabRunner: string | undefined;
    /** A PEM bundle added to the container's trust store. */
    readonly caFile: string | undefined;
  };
  readonly cache: {
    /** Host directory whose per-project subdirectories are mounted at the cache dir. */
    readonly hostDir: string | undefined;
    /** Separate directories per concurrent slot of a project. */
    readonly perSlot: boolean;
  };
  readonly job: {
    readonly shell: Shell;
    readonly buildsDir: string;
    readonly cacheDir: string;
  };
  readonly lxd: {
    /** The client; unset in the file: `lxc` when installed, else `incus`. */
    readonly cli: "lxc" | "incus";
    /** The client remote every operation goes to; empty: the client's default. */
    readonly remote: string;
    /** The LXD project; empty: the default project. */
    readonly project: string;
    /** The cluster member to place instances on; empty: LXD decides. */
    readonly target: string;
    /** Identifies this runner host among several sharing one LXD; empty: the host name. */
    readonly hostId: string;
  };
  readonly pool: {
    /** Warm containers of the default image kept ready; 0: no pool. */
    readonly size: number;
  };
  readonly log: {
    readonly debug: boolean;
  };
}

/** A value parser: returns the typed value or throws a message saying what was expected. */
type Field<T> = { default: T; parse: (value: unknown) => T };

const string = (fallback: string, check?: (v: string) => string | undefined): Field<string> => ({
  default: fallback,
  parse: (value) => {
    if (typeof value !== "string") throw "expected a string";
    const problem = check?.(value);
    if (problem) throw problem;
    return value;
  },
});

const stringList = (fallback: string[]): Field<readonly string[]> => ({
  default: fallback,
  parse: (value) => {
    if (!Array.isArray(value) || !value.every((v) => typeof v === "string")) {
      throw "expected an array of strings";
    }
    return value as string[];
  },
});

const stringMap = (): Field<Readonly<Record<string, string>>> => ({
  default: {},
  parse: (value) => {
    if (
      typeof value !== "object" || value === null || Array.isArray(value) ||
      !Object.values(value).every((v) => typeof v === "string")
    ) {
      throw "expected a table of strings";
    }
    // A plain copy (the parser's tables have no prototype); lookups use Object.hasOwn.
    return { ...value } as Record<string, string>;
  },
});

const count = (): Field<number> => ({
  default: 0,
  parse: (value) => {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
      throw "expected a whole number (0 for no limit)";
    }
    return value;
  },
});

const size = (): Field<Size | undefined> => ({
  default: undefined,
  parse: (value) => {
    const parsed = typeof value === "string" ? parseSize(value) : undefined;
    if (!parsed) throw 'expected a size such as "4GiB" or "512MiB"';
    return parsed;
  },
});

const optionalPath = (): Field<string | undefined> => ({
  default: undefined,
  parse: (value) => {
    if (typeof value !== "string" || !value.startsWith("/")) throw "expected an absolute path";
    return value;
  },
});

const boolean = (fallback: boolean): Field<boolean> => ({
  default: fallback,
  parse: (value) => {
    if (typeof value !== "boolean") throw "expected true or false";
    return value;
  },
});

const oneOf = <T extends string>(fallback: T, choices: readonly T[]): Field<T> => ({
  default: fallback,
  parse: (value) => {
    if (typeof value !== "string" || !(choices as readonly string[]).includes(value)) {
      throw `expected one of ${choices.map((c) => `"${c}"`).join(", ")}`;
    }
    return value as T;
  },
});

/** A duration string (`"90s"`, `"5m"`) or a whole number of seconds; parsed to milliseconds. */
const duration = (fallback: string, bounds: { min: number; max: number }): Field<number> => ({
  default: parseDuration(fallback)!,
  parse: (value) => {
    const ms = typeof value === "number" && Number.isSafeInteger(value)
      ? value * 1000
      : typeof value === "string"
      ? parseDuration(value)
      : undefined;
    if (ms === undefined) throw 'expected a duration such as "90s" or "5m"';
    if (ms < bounds.min || ms > bounds.max) {
      throw `must be between ${formatDuration(bounds.min)} and ${formatDuration(bounds.max)}`;
    }
    return ms;
  },
});

/** Remote, project and member names: plain words, never flags. */
const lxdName = (v: string) =>
  /^([A-Za-z0-9][A-Za-z0-9._-]{0,62})?$/.test(v)
    ? undefined
    : "expected a name of letters, digits, . _ -";
const absolutePath = (v: string) => v.startsWith("/") ? undefined : "expected an absolute path";
const notEmpty = (v: string) => v.trim() ? undefined : "must not be empty";

/** Every section and key the file may hold, with defaults. Documented in README.md. */
const SCHEMA = {
  image: {
    default: string("images:debian/12", notEmpty),
    allowed: stringList([]),
    aliases: stringMap(),
  },
  instance: {
    profiles: stringList(["default"]),
    storage_pool: string(""),
    ready_timeout: duration("120s", { min: 100, max: 86_400_000 }),
    ephemeral: boolean(false),
    template: boolean(true),
    nesting: boolean(false),
    privileged: boolean(false),
    allow_privileged: boolean(false),
  },
  limits: {
    cpu: count(),
    memory: size(),
    processes: count(),
    disk: size(),
    max_cpu: count(),
    max_memory: size(),
  },
  helper: {
    gitlab_runner: optionalPath(),
    ca_file: optionalPath(),
  },
  cache: {
    host_dir: optionalPath(),
    per_slot: boolean(false),
  },
  job: {
    shell: oneOf<Shell>("bash", ["bash", "sh", "pwsh"]),
    builds_dir: string("/builds", absolutePath),
    cache_dir: string("/cache", absolutePath),
  },
  lxd: {
    cli: oneOf<"" | "lxc" | "incus">("", ["lxc", "incus"]),
    remote: string("", lxdName),
    project: string("", lxdName),
    target: string("", lxdName),
    host_id: string(
      "",
      (v) =>
        /^[A-Za-z0-9._-]{0,63}$/.test(v)
          ? undefined
          : "expected letters, digits, . _ - (at most 63)",
    ),
  },
  pool: {
    size: count(),
  },
  log: {
    debug: boolean(false),
  },
} as const;

type Schema = typeof SCHEMA;
type Raw = {
  [S in keyof Schema]: { [K in keyof Schema[S]]: Schema[S][K] extends Field<infer T> ? T : never };
};

/** Where the settings file is: `--config`, else `$LXD_DRIVER_CONFIG`, else the default path. */
export function settingsPath(
  flag: string | undefined,
  env: (name: string) => string | undefined,
): { path: string; explicit: boolean } {
  if (flag === "") throw new SystemFailure("--config needs a file path");
  const chosen = flag ?? env("LXD_DRIVER_CONFIG");
  return chosen
    ? { path: chosen, explicit: true }
    : { path: DEFAULT_SETTINGS_PATH, explicit: false };
}

/** Reads and validates the settings file; built-in defaults when the default file does not exist. */
export async function loadSettings(
  location: { path: string; explicit: boolean },
): Promise<Settings> {
  let text: string;
  try {
    text = await Deno.readTextFile(location.path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && !location.explicit) {
      return parseSettings("", undefined);
    }
    throw new SystemFailure(
      `cannot read settings file ${location.path}: ${(error as Error).message}`,
    );
  }
  return parseSettings(text, location.path);
}

/** Parses settings from TOML text; `source` names the file in messages. */
export function parseSettings(text: string, source: string | undefined): Settings {
  const where = source ?? "settings";
  let doc: Record<string, unknown>;
  try {
    doc = parse(text);
  } catch (error) {
    if (error instanceof TomlError) {
      const reason = error.message.split("\n")[0]!.replace(/^Invalid TOML document: /, "");
      throw new SystemFailure(`${where}:${error.line}:${error.column}: invalid TOML: ${reason}`);
    }
    throw error;
  }

  const problems: string[] = [];
  const raw: Record<string, Record<string, unknown>> = {};
  for (const [sectionName, fields] of Object.entries(SCHEMA)) {
    const section = doc[sectionName] ?? {};
    raw[sectionName] = {};
    if (typeof section !== "object" || Array.isArray(section) || section === null) {
      problems.push(
        `${where}:${lineOf(text, undefined, sectionName)}: ${sectionName} must be a table`,
      );
      continue;
    }
    for (const [key, field] of Object.entries(fields) as [string, Field<unknown>][]) {
      const value = (section as Record<string, unknown>)[key];
      if (value === undefined) {
        raw[sectionName]![key] = field.default;
        continue;
      }
      try {
        raw[sectionName]![key] = field.parse(value);
      } catch (message) {
        problems.push(
          `${where}:${lineOf(text, sectionName, key)}: [${sectionName}] ${key}: ${message}`,
        );
      }
    }
    for (const key of Object.keys(section)) {
      if (!(key in fields)) {
        problems.push(
          `${where}:${lineOf(text, sectionName, key)}: unknown key [${sectionName}] ${key}`,
        );
      }
    }
  }
  for (const sectionName of Object.keys(doc)) {
    if (!(sectionName in SCHEMA)) {
      problems.push(
        `${where}:${lineOf(text, undefined, sectionName)}: unknown section [${sectionName}]`,
      );
    }
  }
  const instance = raw.instance as Record<string, unknown>;
  if (instance.privileged === true && instance.allow_privileged !== true) {
    problems.push(
      `${where}:${lineOf(text, "instance", "privileged")}: [instance] privileged = true ` +
        "needs [instance] allow_privileged = true as well: a privileged container's root is the host's root",
    );
  }
  const cache = raw.cache as Record<string, unknown>;
  const lxd = raw.lxd as Record<string, unknown>;
  // "local" is the client's own name for this host's daemon.
  if (cache.host_dir !== undefined && lxd.remote !== "" && lxd.remote !== "local") {
    problems.push(
      `${where}:${lineOf(text, "cache", "host_dir")}: [cache] host_dir cannot be used with ` +
        "[lxd] remote: the directory is made on this host, but the remote's LXD would mount " +
        "its own path of that name",
    );
  }
  if (problems.length > 0) throw new SystemFailure(`invalid settings:\n  ${problems.join("\n  ")}`);

  const s = raw as Raw;
  return {
    source,
    image: { default: s.image.default, allowed: s.image.allowed, aliases: s.image.aliases },
    instance: {
      profiles: s.instance.profiles,
      storagePool: s.instance.storage_pool,
      readyTimeoutMs: s.instance.ready_timeout,
      ephemeral: s.instance.ephemeral,
      template: s.instance.template,
      nesting: s.instance.nesting,
      privileged: s.instance.privileged,
      allowPrivileged: s.instance.allow_privileged,
    },
    limits: {
      cpu: s.limits.cpu,
      memory: s.limits.memory,
      processes: s.limits.processes,
      disk: s.limits.disk,
      maxCpu: s.limits.max_cpu,
      maxMemory: s.limits.max_memory,
    },
    helper: { gitlabRunner: s.helper.gitlab_runner, caFile: s.helper.ca_file },
    cache: { hostDir: s.cache.host_dir, perSlot: s.cache.per_slot },
    job: { shell: s.job.shell, buildsDir: s.job.builds_dir, cacheDir: s.job.cache_dir },
    lxd: {
      cli: s.lxd.cli || detectCli(Deno.env.get("PATH")),
      remote: s.lxd.remote,
      project: s.lxd.project,
      target: s.lxd.target,
      hostId: s.lxd.host_id,
    },
    pool: { size: s.pool.size },
    log: { debug: s.log.debug },
  };
}

/**
 * The 1-based line where `key` is set inside `[section]` (or where the
 * section starts), for messages. TOML values carry no positions, so this
 * scans the text; "?" when not found (e.g. dotted keys).
 */
function lineOf(text: string, section: string | undefined, key: string): number | "?" {
  const lines = text.split("\n");
  let current: string | undefined;
  for (const [index, line] of lines.entries()) {
    const header = line.match(/^\s*\[\s*([^\]\s]+)\s*\]/);
    if (header) {
      current = header[1];
      // A key that is itself a table (`[image.aliases]`) is reported at its header.
      if (current === (section === undefined ? key : `${section}.${key}`)) return index + 1;
      continue;
    }
    if (current === section && new RegExp(`^\\s*"?${escapeRegExp(key)}"?\\s*=`).test(line)) {
      return index + 1;
    }
  }
  return "?";
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
