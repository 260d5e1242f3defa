import assert from "node:assert/strict";
import { BuildFailure } from "../../lib/errors.ts";
import { chooseImage, isPlainImageReference, matchesPattern } from "../../lib/image_policy.ts";

const FINGERPRINT = "a".repeat(32) + "0123456789abcdef0123456789abcdef";

Deno.test("isPlainImageReference() accepts plain references", () => {
  for (
    const image of [
      "images:debian/12",
      "lxd-driver-test/bookworm",
      "ubuntu:24.04",
      FINGERPRINT,
      "a",
      "x".repeat(255),
      "local:alpine/3.20/amd64",
      "user@remote:img+v1_2",
    ]
  ) {
    assert.equal(isPlainImageReference(image), true, image);
  }
});

Deno.test("isPlainImageReference() rejects flags, shell syntax and traversal", () => {
  for (
    const image of [
      "-c",
      "--privileged",
      "$(id)",
      "a b",
      "foo;rm",
      "`x`",
      "a\nb",
      "a\n",
      "../x",
      "a/../b",
      "",
      "x".repeat(256),
      ".hidden",
      "/abs",
      "a|b",
      "a&b",
      "a'b",
      'a"b',
    ]
  ) {
    assert.equal(isPlainImageReference(image), false, JSON.stringify(image));
  }
});

Deno.test("matchesPattern() lets * match any run of characters, including / and :", () => {
  assert.ok(matchesPattern("images:debian/12", "*"));
  assert.ok(matchesPattern("images:debian/12", "images:*"));
  assert.ok(matchesPattern("images:debian/12/cloud", "images:debian/*"));
  assert.ok(matchesPattern("lxd-driver-test/bookworm", "lxd-driver-test/*"));
  assert.ok(matchesPattern("remote:debian/12", "*debian*"));
  assert.ok(matchesPattern("images:debian/", "images:debian/*"));
  assert.ok(!matchesPattern("images:ubuntu/24.04", "images:debian/*"));
  assert.ok(!matchesPattern("evil/images:debian/12", "images:debian/*"), "anchored at the start");
  assert.ok(!matchesPattern("images:debian/12", "images:debian"), "anchored at the end");
});

Deno.test("matchesPattern() takes dots and regex metacharacters literally", () => {
  assert.ok(matchesPattern("ubuntu:24.04", "ubuntu:24.04"));
  assert.ok(!matchesPattern("ubuntu:24x04", "ubuntu:24.04"));
  assert.ok(!matchesPattern("aaa", "a+"));
  assert.ok(matchesPattern("a+", "a+"));
  assert.ok(!matchesPattern("ab", "a?b"));
  assert.ok(!matchesPattern("a", "(a|b)"));
  assert.ok(!matchesPattern("a", "[a]"));
  assert.ok(matchesPattern("[a]", "[a]"));
  assert.ok(!matchesPattern("x", "^x$"));
  assert.ok(!matchesPattern("anything", ".*"));
  assert.ok(matchesPattern("a\\b", "a\\b"));
});

const POLICY = { default: "images:debian/12", allowed: ["lxd-driver-test/*", "ubuntu:24.04"] };

Deno.test("chooseImage() gives the default image when the job names none", () => {
  for (const requested of [undefined, "", "  ", "\t"]) {
    assert.equal(chooseImage(requested, POLICY), "images:debian/12", JSON.stringify(requested));
  }
});

Deno.test("chooseImage() returns an allowed image", () => {
  assert.equal(chooseImage("lxd-driver-test/bookworm", POLICY), "lxd-driver-test/bookworm");
  assert.equal(chooseImage("ubuntu:24.04", POLICY), "ubuntu:24.04");
  assert.equal(chooseImage(" ubuntu:24.04 ", POLICY), "ubuntu:24.04");
});

Deno.test("chooseImage() always allows the default image", () => {
  const policy = { default: "images:debian/12", allowed: [] };
  assert.equal(chooseImage("images:debian/12", policy), "images:debian/12");
  assert.equal(chooseImage("images:debian/12", POLICY), "images:debian/12");
});

Deno.test("chooseImage() rejects an image not allowed, naming it and each pattern", () => {
  assert.throws(() => chooseImage("evil/x", POLICY), (error: unknown) => {
    assert.ok(error instanceof BuildFailure);
    assert.ok(error.message.includes('"evil/x"'), error.message);
    assert.ok(error.message.includes('"lxd-driver-test/*"'), error.message);
    assert.ok(error.message.includes('"ubuntu:24.04"'), error.message);
    assert.equal(error.jobExitCode, undefined);
    return true;
  });
  assert.throws(
    () => chooseImage("ubuntu:22.04", { default: "images:debian/12", allowed: [] }),
    (error: unknown) => {
      assert.ok(error instanceof BuildFailure);
      assert.match(error.message, /"ubuntu:22\.04" is not allowed/);
      assert.match(error.message, /only the default image/);
      return true;
    },
  );
});

Deno.test("chooseImage() rejects a reference that is not plain, even with allowed=['*']", () => {
  const open = { default: "images:debian/12", allowed: ["*"] };
  for (const image of ["--privileged", "-c", "$(id)", "a b", "foo;rm", "../x", "x".repeat(300)]) {
    assert.throws(() => chooseImage(image, open), (error: unknown) => {
      assert.ok(error instanceof BuildFailure, image);
      assert.match(error.message, /not a plain image reference/);
      assert.match(error.message, /allowed patterns: "\*"$/);
      assert.ok(error.message.length < 500, "long images are shortened in the message");
      return true;
    });
  }
});
