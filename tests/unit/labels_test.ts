import assert from "node:assert/strict";
import {
  CREATED,
  createdAt,
  hostIdentity,
  isManaged,
  LABEL_PREFIX,
  labelsFor,
  madeBy,
  MANAGED,
} from "../../lib/labels.ts";

const ID = { jobId: "42", projectId: "7", runnerId: "3", concurrentProjectId: "1" };

Deno.test("labelsFor() gives the driver's user.* keys and values", () => {
  const now = new Date("2024-05-06T07:08:09.010Z");
  assert.deepEqual(labelsFor(ID, "runner-host-1", now), {
    "user.lxd-driver.managed": "true",
    "user.lxd-driver.host": "runner-host-1",
    "user.lxd-driver.runner-id": "3",
    "user.lxd-driver.project-id": "7",
    "user.lxd-driver.job-id": "42",
    "user.lxd-driver.created": "2024-05-06T07:08:09.010Z",
  });
  assert.equal(LABEL_PREFIX, "user.lxd-driver.");
  assert.equal(MANAGED, "user.lxd-driver.managed");
  assert.equal(CREATED, "user.lxd-driver.created");
});

Deno.test("isManaged() is true only for managed=true", () => {
  assert.equal(isManaged({ [MANAGED]: "true" }), true);
  assert.equal(isManaged({}), false);
  assert.equal(isManaged({ [MANAGED]: "false" }), false);
  assert.equal(isManaged({ [MANAGED]: "TRUE" }), false);
  assert.equal(isManaged({ [MANAGED]: "1" }), false);
  assert.equal(isManaged({ "user.managed": "true" }), false);
});

Deno.test("createdAt() reads the created label", () => {
  const now = new Date("2024-05-06T07:08:09.010Z");
  assert.deepEqual(createdAt(labelsFor(ID, "h", now)), now);
});

Deno.test("createdAt() is undefined when the label is missing or invalid", () => {
  assert.equal(createdAt({}), undefined);
  assert.equal(createdAt({ [MANAGED]: "true" }), undefined);
  assert.equal(createdAt({ [CREATED]: "" }), undefined);
  assert.equal(createdAt({ [CREATED]: "yesterday" }), undefined);
  assert.equal(createdAt({ [CREATED]: "2024-13-45T99:00:00Z" }), undefined);
});

Deno.test("madeBy() matches only the given runner host", () => {
  assert.equal(madeBy(labelsFor(ID, "a", new Date()), "a"), true);
  assert.equal(madeBy(labelsFor(ID, "a", new Date()), "b"), false);
  assert.equal(madeBy({ [MANAGED]: "true" }, "a"), false);
});

Deno.test("hostIdentity() is the configured id, else the host name", () => {
  assert.equal(hostIdentity("runner-7"), "runner-7");
  assert.equal(hostIdentity(""), Deno.hostname());
});
