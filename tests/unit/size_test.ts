import assert from "node:assert/strict";
import { parseSize } from "../../lib/size.ts";

Deno.test("parseSize() reads plain bytes and every unit LXD takes", () => {
  const cases: [string, number][] = [
    ["1073741824", 2 ** 30],
    ["512B", 512],
    ["1kB", 1e3],
    ["20MB", 20e6],
    ["20GB", 20e9],
    ["2TB", 2e12],
    ["4KiB", 4 * 2 ** 10],
    ["512MiB", 512 * 2 ** 20],
    ["4GiB", 4 * 2 ** 30],
    ["1TiB", 2 ** 40],
  ];
  for (const [text, bytes] of cases) assert.deepEqual(parseSize(text), { text, bytes }, text);
});

Deno.test("parseSize() keeps the text as written, trimmed", () => {
  assert.deepEqual(parseSize("  2GiB\n"), { text: "2GiB", bytes: 2 * 2 ** 30 });
});

Deno.test("parseSize() rejects zero, fractions, spaces, signs and bare units", () => {
  for (
    const text of [
      "0",
      "0GiB",
      "1.5GiB",
      "4 GB",
      "-1",
      "+1",
      "GiB",
      "",
      " ",
      "1gib",
      "1KB",
      "1kiB",
      "1GiB;",
      "1e9",
      "0x10",
      "1,000",
    ]
  ) {
    assert.equal(parseSize(text), undefined, JSON.stringify(text));
  }
});

Deno.test("parseSize() rejects a size beyond what is exactly representable", () => {
  assert.equal(parseSize("9007199254740993"), undefined);
  assert.equal(parseSize("99999999TiB"), undefined);
  assert.deepEqual(parseSize("8191TiB"), { text: "8191TiB", bytes: 8191 * 2 ** 40 });
});
