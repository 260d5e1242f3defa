import assert from "node:assert/strict";
import { parseSettings } from "../../lib/settings.ts";

const EXAMPLE = new URL("../../scripts/config.example.toml", import.meta.url);

Deno.test("the example settings file is valid and changes nothing", async () => {
  const text = await Deno.readTextFile(EXAMPLE);
  assert.deepEqual(
    { ...parseSettings(text, "example.toml"), source: undefined },
    parseSettings("", undefined),
  );
});

Deno.test("every key of the example is a real key", async () => {
  // Uncommented, the example names every key; settings reject unknown ones.
  const text = (await Deno.readTextFile(EXAMPLE)).replace(/^# ([a-z_]+ = .*)$/gm, "$1")
    .replace(/^# ("debian:12" = .*)$/m, "$1");
  const settings = parseSettings(
    text.replace("privileged = false\nallow_privileged", "privileged = false\nallow_privileged"),
    "all.toml",
  );
  assert.equal(settings.image.default, "images:debian/12");
  assert.equal(settings.limits.memory?.text, "4GiB");
  assert.equal(settings.image.aliases["debian:12"], "images:debian/12");
});
