/** Sizes as LXD writes them: `512MiB`, `4GiB`, `20GB`, `1073741824`. */

const UNITS: Record<string, number> = {
  "": 1,
  B: 1,
  kB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KiB: 2 ** 10,
  MiB: 2 ** 20,
  GiB: 2 ** 30,
  TiB: 2 ** 40,
};

const SIZE = /^(\d+)(B|kB|MB|GB|TB|KiB|MiB|GiB|TiB)?$/;

export interface Size {
  /** As written, which LXD accepts as it is. */
  readonly text: string;
  readonly bytes: number;
}

/** Parses a size; undefined when it is not one LXD would take. */
export function parseSize(text: string): Size | undefined {
  const match = text.trim().match(SIZE);
  if (!match) return undefined;
  const bytes = Number(match[1]) * UNITS[match[2] ?? ""]!;
  return Number.isSafeInteger(bytes) && bytes > 0 ? { text: text.trim(), bytes } : undefined;
}
