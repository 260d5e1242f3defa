/**
 * Resources a job may ask for with the job variables `LXD_CPU` and
 * `LXD_MEMORY`, within the administrator's `[limits] max_cpu` and
 * `max_memory`. The values are job-controlled, so they are validated here
 * and never echoed in messages.
 */
import type { Env } from "./context.ts";
import { BuildFailure } from "./errors.ts";
import type { Settings } from "./settings.ts";
import { parseSize, type Size } from "./size.ts";

/** Below this a container cannot even start its init; LXD's refusal would look like a system failure. */
const MIN_MEMORY_BYTES = 64 * 2 ** 20;

export interface JobRequests {
  readonly cpu: number | undefined;
  readonly memory: Size | undefined;
}

/** Reads and checks the job's requests; throws BuildFailure with the reason. */
export function readJobRequests(env: Env, limits: Settings["limits"]): JobRequests {
  return {
    cpu: cpuRequest(env("CUSTOM_ENV_LXD_CPU"), limits.maxCpu),
    memory: memoryRequest(env("CUSTOM_ENV_LXD_MEMORY"), limits.maxMemory),
  };
}

function cpuRequest(value: string | undefined, max: number): number | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  if (max === 0) {
    throw new BuildFailure(
      "LXD_CPU is set, but this runner does not allow CPU requests ([limits] max_cpu)",
    );
  }
  const trimmed = value.trim();
  const cpu = /^\d{1,4}$/.test(trimmed) ? Number(trimmed) : NaN;
  if (!(cpu >= 1)) {
    throw new BuildFailure(`LXD_CPU must be a whole number of CPUs from 1 to ${max}`);
  }
  if (cpu > max) {
    throw new BuildFailure(`LXD_CPU asks for more than this runner's maximum of ${max} CPUs`);
  }
  return cpu;
}

function memoryRequest(value: string | undefined, max: Size | undefined): Size | undefined {
  if (value === undefined || value.trim() === "") return undefined;
  if (max === undefined) {
    throw new BuildFailure(
      "LXD_MEMORY is set, but this runner does not allow memory requests ([limits] max_memory)",
    );
  }
  const memory = parseSize(value);
  if (!memory) {
    throw new BuildFailure(
      `LXD_MEMORY must be a size such as "2GiB" or "512MiB", at most ${max.text}`,
    );
  }
  if (memory.bytes < MIN_MEMORY_BYTES) {
    throw new BuildFailure("LXD_MEMORY must be at least 64MiB");
  }
  if (memory.bytes > max.bytes) {
    throw new BuildFailure(`LXD_MEMORY asks for more than this runner's maximum of ${max.text}`);
  }
  return memory;
}
