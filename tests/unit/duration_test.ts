import assert from "node:assert/strict";
import { formatDuration, parseDuration } from "../../lib/duration.ts";

Deno.test("parseDuration() parses each unit and combinations", () => {
  const cases: [string, number][] = [
    ["0s", 0],
    ["90s", 90_000],
    ["30m", 1_800_000],
    ["6h", 21_600_000],
    ["1h30m", 5_400_000],
    ["500ms", 500],
    ["2d", 172_800_000],
    ["1m500ms", 60_500],
    [" 5m ", 300_000],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text), ms, text);
});

Deno.test("parseDuration() rejects what is not a duration", () => {
  for (
    const text of ["", " ", "5", "m", "-1s", "1.5h", "5 m", "abc", "5x", "s5", "1h 30m", "5M"]
  ) {
    assert.equal(parseDuration(text), undefined, JSON.stringify(text));
  }
});

Deno.test("parseDuration() rejects durations too large to be exact", () => {
  assert.equal(parseDuration("99999999999999999999d"), undefined);
});

Deno.test("formatDuration() shows milliseconds below a second, else seconds", () => {
  assert.equal(formatDuration(0), "0ms");
  assert.equal(formatDuration(250), "250ms");
  assert.equal(formatDuration(12.4), "12ms");
  assert.equal(formatDuration(1000), "1.0s");
  assert.equal(formatDuration(1500), "1.5s");
  assert.equal(formatDuration(120_000), "120.0s");
});
