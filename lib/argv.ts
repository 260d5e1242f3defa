/**
 * The driver's command line: `[--config FILE] [--older-than AGE] [-h|--help]
 * COMMAND [ARGS]`, options anywhere, `--` ending them. Hand-written because
 * importing `node:util` for `parseArgs` costs about 6 ms per start, and the
 * runner starts the driver about ten times per job.
 */
import { UsageError } from "./errors.ts";

export interface ParsedArgs {
  readonly positionals: string[];
  readonly config: string | undefined;
  readonly olderThan: string | undefined;
  readonly help: boolean;
}

const VALUE_OPTIONS = { "--config": "config", "--older-than": "olderThan" } as const;

export function parseArgv(argv: readonly string[]): ParsedArgs {
  const positionals: string[] = [];
  const values: { config?: string; olderThan?: string } = {};
  let help = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--") {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg === "-h" || arg === "--help") {
      help = true;
      continue;
    }
    if (!arg.startsWith("-") || arg === "-") {
      positionals.push(arg);
      continue;
    }
    const [name, inline] = arg.includes("=")
      ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
      : [arg, undefined];
    const key = VALUE_OPTIONS[name as keyof typeof VALUE_OPTIONS];
    if (key === undefined) {
      throw new UsageError(`unknown option ${JSON.stringify(name)}; see lxd-driver --help`);
    }
    const value = inline ?? argv[++i];
    if (value === undefined) throw new UsageError(`${name} needs a value`);
    if (values[key] !== undefined) throw new UsageError(`${name} given twice`);
    values[key] = value;
  }
  return { positionals, config: values.config, olderThan: values.olderThan, help };
}
