/** What every command receives from mod.ts: its environment, settings and logger. */
import type { Logger } from "./log.ts";
import type { Settings } from "./settings.ts";

export type Env = (name: string) => string | undefined;

export interface Context {
  readonly env: Env;
  readonly settings: Settings;
  readonly log: Logger;
  /** Writes data (not messages) to stdout. */
  readonly write: (text: string) => Promise<void>;
}
