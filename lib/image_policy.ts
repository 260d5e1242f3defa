/**
 * Which image a job gets. `CI_JOB_IMAGE` is written by whoever pushed the
 * commit, so it is accepted only when it is a plain image reference (it can
 * never be read as an `lxc` flag or shell syntax) and matches an allowed
 * pattern.
 */
import { BuildFailure } from "./errors.ts";

/**
 * A plain LXD image reference: `alias`, `remote:alias`, `images:debian/12`,
 * a fingerprint. Starts with a letter or digit (so never a flag), then only
 * characters with no meaning to a shell or to `lxc`.
 */
const PLAIN_IMAGE = /^[A-Za-z0-9][A-Za-z0-9._:/+@-]{0,254}$/;

export function isPlainImageReference(image: string): boolean {
  return PLAIN_IMAGE.test(image) && !image.includes("..");
}

/** True when `image` matches the glob `pattern`, where `*` matches any run of characters. */
export function matchesPattern(image: string, pattern: string): boolean {
  const source = pattern.split("*").map((part) => part.replace(/[.+?^${}()|[\]\\/]/g, "\\$&"))
    .join(".*");
  return new RegExp(`^${source}$`, "s").test(image);
}

export interface ImagePolicy {
  readonly default: string;
  readonly allowed: readonly string[];
}

/**
 * The image to launch: the default when the job names none, else the job's
 * image when it is plain and allowed (the default image itself is always
 * allowed). Anything else is the job's fault: a BuildFailure.
 */
export function chooseImage(requested: string | undefined, policy: ImagePolicy): string {
  const image = requested?.trim() ?? "";
  if (image === "") return policy.default;
  const shown = JSON.stringify(image.length > 200 ? image.slice(0, 200) + "…" : image);
  const allowed = policy.allowed.length > 0
    ? policy.allowed.map((p) => JSON.stringify(p)).join(", ")
    : "none (only the default image)";
  if (!isPlainImageReference(image)) {
    throw new BuildFailure(
      `image ${shown} is not a plain image reference (letters, digits and . _ : / + @ - only, ` +
        `starting with a letter or digit); allowed patterns: ${allowed}`,
    );
  }
  if (image === policy.default || policy.allowed.some((p) => matchesPattern(image, p))) {
    return image;
  }
  throw new BuildFailure(
    `image ${shown} is not allowed on this runner; allowed patterns: ${allowed}`,
  );
}
