/** The driver's name and version, as printed by `version` and reported to the runner. */
import meta from "../deno.json" with { type: "json" };

export const DRIVER_NAME = "lxd-driver";
export const VERSION: string = meta.version;
