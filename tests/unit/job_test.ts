import assert from "node:assert/strict";
import { SystemFailure } from "../../lib/errors.ts";
import {
  containerName,
  identityFromPayload,
  type JobIdentity,
  MAX_NAME_LENGTH,
  readJobIdentity,
} from "../../lib/job.ts";

const envOf = (vars: Record<string, string>) => (name: string) => vars[name];
const PAYLOAD = { id: 42, job_info: { project_id: 7 } };
const NAME_SHAPE = /^[a-z][a-z0-9-]*[a-z0-9]$/i;

Deno.test("identityFromPayload() takes the job and project ids from the payload, not the env", () => {
  const env = envOf({
    CUSTOM_ENV_CI_JOB_ID: "999",
    CUSTOM_ENV_CI_PROJECT_ID: "888",
    CUSTOM_ENV_CI_RUNNER_ID: "3",
    CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID: "1",
  });
  assert.deepEqual(identityFromPayload(PAYLOAD, env), {
    jobId: "42",
    projectId: "7",
    runnerId: "3",
    concurrentProjectId: "1",
  });
});

Deno.test("identityFromPayload() accepts ids given as digit strings and drops leading zeros", () => {
  const identity = identityFromPayload({ id: "0042", job_info: { project_id: "7" } }, envOf({}));
  assert.equal(identity.jobId, "42");
  assert.equal(identity.projectId, "7");
});

Deno.test("identityFromPayload() reduces runner and slot ids to digits, else 0", () => {
  for (const junk of ["1; rm -rf /", "$(id)", "-1", "1.5", "", " 3", "abc", "1".repeat(21)]) {
    const identity = identityFromPayload(
      PAYLOAD,
      envOf({ CUSTOM_ENV_CI_RUNNER_ID: junk, CUSTOM_ENV_CI_CONCURRENT_PROJECT_ID: junk }),
    );
    assert.equal(identity.runnerId, "0", JSON.stringify(junk));
    assert.equal(identity.concurrentProjectId, "0", JSON.stringify(junk));
  }
  const unset = identityFromPayload(PAYLOAD, envOf({}));
  assert.equal(unset.runnerId, "0");
  assert.equal(unset.concurrentProjectId, "0");
});

Deno.test("identityFromPayload() rejects a payload without numeric ids", () => {
  const bad: unknown[] = [
    null,
    undefined,
    "42",
    {},
    { id: 42 },
    { job_info: { project_id: 7 } },
    { id: "abc", job_info: { project_id: 7 } },
    { id: 42, job_info: { project_id: "7; rm -rf /" } },
    { id: -42, job_info: { project_id: 7 } },
    { id: 4.2, job_info: { project_id: 7 } },
    { id: "", job_info: { project_id: 7 } },
    { id: [42], job_info: { project_id: 7 } },
  ];
  for (const payload of bad) {
    assert.throws(
      () => identityFromPayload(payload, envOf({ CUSTOM_ENV_CI_JOB_ID: "42" })),
      SystemFailure,
      JSON.stringify(payload),
    );
  }
});

Deno.test("containerName() uses the short form when it fits", async () => {
  const id: JobIdentity = { jobId: "42", projectId: "7", runnerId: "3", concurrentProjectId: "1" };
  assert.equal(await containerName(id), "runner-3-project-7-concurrent-1-job-42");
});

Deno.test("containerName() keeps huge ids within LXD's name rules", async () => {
  const huge: JobIdentity = {
    jobId: "12345678901234567890",
    projectId: "22345678901234567890",
    runnerId: "32345678901234567890",
    concurrentProjectId: "42345678901234567890",
  };
  const name = await containerName(huge);
  assert.ok(name.length <= MAX_NAME_LENGTH, name);
  assert.equal(MAX_NAME_LENGTH, 63);
  assert.match(name, NAME_SHAPE);
  assert.ok(name.includes(huge.jobId), name);
  assert.equal(await containerName({ ...huge }), name, "deterministic");

  const names = new Set([name]);
  for (const key of ["jobId", "projectId", "runnerId", "concurrentProjectId"] as const) {
    const other = await containerName({ ...huge, [key]: huge[key].replace(/0$/, "1") });
    assert.match(other, NAME_SHAPE);
    assert.ok(other.length <= MAX_NAME_LENGTH);
    names.add(other);
  }
  assert.equal(names.size, 5, "a different id gives a different name");
});

Deno.test("containerName() differs when any id differs in the short form", async () => {
  const base: JobIdentity = { jobId: "1", projectId: "2", runnerId: "3", concurrentProjectId: "4" };
  const names = new Set<string>([await containerName(base)]);
  for (const key of ["jobId", "projectId", "runnerId", "concurrentProjectId"] as const) {
    names.add(await containerName({ ...base, [key]: "9" }));
  }
  assert.equal(names.size, 5);
});

Deno.test("readJobIdentity() reads JOB_RESPONSE_FILE", async () => {
  const file = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(file, JSON.stringify({ ...PAYLOAD, token: "secret" }));
    const identity = await readJobIdentity(
      envOf({ JOB_RESPONSE_FILE: file, CUSTOM_ENV_CI_RUNNER_ID: "5" }),
    );
    assert.deepEqual(identity, {
      jobId: "42",
      projectId: "7",
      runnerId: "5",
      concurrentProjectId: "0",
    });
  } finally {
    await Deno.remove(file);
  }
});

Deno.test("readJobIdentity() fails when JOB_RESPONSE_FILE is unset", async () => {
  await assert.rejects(readJobIdentity(envOf({})), (error: unknown) => {
    assert.ok(error instanceof SystemFailure);
    assert.match(error.message, /JOB_RESPONSE_FILE is not set/);
    return true;
  });
});

Deno.test("readJobIdentity() fails on a missing or unparsable payload file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(
      readJobIdentity(envOf({ JOB_RESPONSE_FILE: `${dir}/none.json` })),
      SystemFailure,
    );
    await Deno.writeTextFile(`${dir}/bad.json`, "{not json");
    await assert.rejects(readJobIdentity(envOf({ JOB_RESPONSE_FILE: `${dir}/bad.json` })), (
      error: unknown,
    ) => {
      assert.ok(error instanceof SystemFailure);
      assert.ok(error.message.includes(`${dir}/bad.json`), error.message);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
