/** The command that reads a job script of the configured shell from stdin. */
import type { Shell } from "./settings.ts";

export function shellCommand(shell: Shell): readonly string[] {
  switch (shell) {
    case "bash":
      return ["bash"];
    case "sh":
      return ["sh"];
    case "pwsh":
      return ["pwsh", "-NoProfile", "-NonInteractive", "-Command", "-"];
  }
}
