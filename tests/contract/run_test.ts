/**
 * Contract: the client calls the run stage makes, argument by argument, and
 * how each way a stage can end becomes the driver's result: success, a build
 * failure with the script's exit code, a system failure, or a cancel.
 */
import assert from "node:assert/strict";
import { BuildFailure, SystemFailure } from "../../lib/errors.ts";
import { createLogger } from "../../lib/log.ts";
import { globalArgs, instanceRef, type LxdTarget } from "../../lib/lxd_target.ts";
import {
  execStage,
  type StageExecOptions,
  STATUS_PROBE,
  STATUS_READER,
  STOPPER,
  WRAPPER,
} from "../../lib/stage_exec.ts";
import { run } from "../../stages/run.ts";
import { type Call, CancelTrigger, FakeClient, type Reply, scriptFile } from "./fake_client.ts";
import { harness, jobEnv, NAME, payloadFile, SECRET } from "./fake_lxc.ts";

const SCRIPT = `#!/usr/bin/env bash\nexport MY_SECRET='${SECRET}'\necho "$MY_SECRET" | wc -c\n`;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const REMOTE_PROJECT = `[lxd]\ncli = "lxc"\nremote = "cluster"\nproject = "ci"\n`;

/** `exec` of `argv` in the job's container, as the driver must build it for `target`. */
function execArgv(target: LxdTarget, argv: readonly string[]): string[] {
  return [
    ...globalArgs(target),
    "exec",
    "--force-noninteractive",
    "--",
    instanceRef(target, NAME),
    ...argv,
  ];
}

interface StageRun {
  readonly client: FakeClient;
  readonly cancel: CancelTrigger;
  readonly lines: string[];
  /** What run() threw, or undefined when it succeeded. */
  readonly error: unknown;
  /** The exec call's stage id. */
  readonly stageId: string;
}

/** Runs the stage `step_script` of SCRIPT against a fake client answering with `answer`. */
async function runStage(
  answer: (call: Call, client: FakeClient, cancel: CancelTrigger) => Reply,
  options: { settings?: string; debug?: boolean; text?: string } = {},
): Promise<StageRun> {
  await using payload = await payloadFile();
  await using script = await scriptFile(options.text ?? SCRIPT);
  const cancel = new CancelTrigger();
  const client: FakeClient = new FakeClient((call) => answer(call, client, cancel));
  const { ctx, lines } = harness({
    env: jobEnv(payload, { CUSTOM_ENV_MY_SECRET: SECRET }),
    settings: options.settings ?? `[lxd]\ncli = "lxc"\n`,
    debug: options.debug ?? false,
  });
  let error: unknown;
  try {
    await run(ctx, script.path, "step_script", {
      command: client.command,
      cancelRequests: cancel.listen,
    });
  } catch (e) {
    error = e;
  }
  assert.equal(cancel.listening, 0, "the stage stopped listening for cancels");
  return { client, cancel, lines, error, stageId: client.callsOf("exec")[0]?.stageId ?? "" };
}

/** Answers the exec with `exec` and the status reader with `recorded`. */
function failing(exec: Reply, recorded: Reply) {
  return (call: Call): Reply => call.kind === "exec" ? exec : recorded;
}

function assertBuildFailure(error: unknown, code: number, message: string): void {
  assert.ok(error instanceof BuildFailure, `expected a BuildFailure, got ${error}`);
  assert.equal(error.jobExitCode, code);
  assert.equal(error.message, message);
}

// --- argv -----------------------------------------------------------------------

Deno.test("run streams the script to the shell under the wrapper, on the remote and project", async () => {
  const { client, error, stageId } = await runStage(() => ({}), { settings: REMOTE_PROJECT });
  assert.equal(error, undefined);
  assert.match(stageId, UUID);
  const target: LxdTarget = { cli: "lxc", remote: "cluster", project: "ci", member: "" };
  assert.deepEqual(client.calls.map((call) => [call.cli, call.args]), [
    ["lxc", execArgv(target, ["sh", "-c", WRAPPER, "lxd-driver", stageId, "bash"])],
  ]);
  assert.deepEqual(
    client.calls[0]!.args.slice(0, 6),
    ["--project", "ci", "exec", "--force-noninteractive", "--", `cluster:${NAME}`],
  );
  const { stdin, stdout, stderr, detached } = client.calls[0]!.options;
  assert.deepEqual({ stdin, stdout, stderr, detached }, {
    stdin: "piped",
    stdout: "inherit",
    stderr: "inherit",
    detached: true,
  });
  assert.equal(client.stdin, SCRIPT, "the script reaches the shell byte for byte");
});

Deno.test("run uses the configured client and shell, with no prefix for the default remote", async () => {
  const { client, error, stageId } = await runStage(() => ({}), {
    settings: `[lxd]\ncli = "incus"\n[job]\nshell = "pwsh"\n`,
  });
  assert.equal(error, undefined);
  assert.deepEqual(client.calls.map((call) => [call.cli, call.args]), [[
    "incus",
    [
      "exec",
      "--force-noninteractive",
      "--",
      NAME,
      "sh",
      "-c",
      WRAPPER,
      "lxd-driver",
      stageId,
      "pwsh",
      "-NoProfile",
      "-NonInteractive",
      "-Command",
      "-",
    ],
  ]]);
});

Deno.test("each run gets a stage id of its own", async () => {
  const first = await runStage(() => ({}));
  const second = await runStage(() => ({}));
  assert.notEqual(first.stageId, second.stageId);
});

// --- how a stage ends -----------------------------------------------------------------

Deno.test("run succeeds without another client call or any output when the client exits 0", async () => {
  const { client, error, lines } = await runStage(() => ({}));
  assert.equal(error, undefined);
  assert.equal(client.calls.length, 1);
  assert.deepEqual(lines, []);
});

Deno.test("run reports a script's exit status N as a build failure with job exit code N", async () => {
  for (const code of [1, 3, 42, 137, 255]) {
    const { client, error, stageId } = await runStage(
      failing({ code }, { stdout: `${code}\n` }),
      { settings: REMOTE_PROJECT },
    );
    assertBuildFailure(error, code, `stage step_script failed with exit code ${code}`);
    const target: LxdTarget = { cli: "lxc", remote: "cluster", project: "ci", member: "" };
    const reader = client.calls[1]!;
    assert.deepEqual(
      client.calls.map((call) => call.kind),
      ["exec", "reader"],
    );
    assert.deepEqual(
      reader.args,
      execArgv(target, ["sh", "-c", STATUS_READER, "lxd-driver", stageId]),
    );
    assert.deepEqual(
      [reader.options.stdin, reader.options.stdout, reader.options.stderr],
      ["null", "piped", "null"],
    );
  }
});

Deno.test("run takes the recorded status over the client's exit code", async () => {
  const { error } = await runStage(failing({ code: 255 }, { stdout: "7\n" }));
  assertBuildFailure(error, 7, "stage step_script failed with exit code 7");
});

Deno.test("run is a system failure when the client fails and no status was recorded", async () => {
  const noRecord: Reply[] = [
    { stdout: "" }, // the shell never finished
    { code: 1, stdout: "" }, // the container is gone
    { unstartable: true },
    { stdout: "not a status\n" },
  ];
  for (const recorded of noRecord) {
    const { error } = await runStage(failing({ code: 1 }, recorded));
    assert.ok(error instanceof SystemFailure, `expected a SystemFailure, got ${error}`);
    assert.match(
      error.message,
      new RegExp(
        `^the script did not run to completion in container ${NAME}: lxc exec exited with 1;`,
      ),
    );
  }
});

Deno.test("run succeeds with a warning when the client fails but the script's recorded status is 0", async () => {
  const { error, lines } = await runStage(failing({ code: 255 }, { stdout: "0\n" }));
  assert.equal(error, undefined);
  assert.deepEqual(lines, ["WARNING: lxc exec exited with 255, but the script succeeded"]);
});

Deno.test("run is a system failure, without calling the client, when the script cannot be read", async () => {
  await using payload = await payloadFile();
  const client = new FakeClient();
  const { ctx } = harness({ env: jobEnv(payload) });
  const missing = `${await Deno.makeTempDir()}/no-such-script`;
  await assert.rejects(
    run(ctx, missing, "step_script", { command: client.command }),
    (error: unknown) =>
      error instanceof SystemFailure && error.message.startsWith("cannot read the job script"),
  );
  assert.deepEqual(client.calls, []);
  await Deno.remove(missing.slice(0, missing.lastIndexOf("/")));
});

// --- cancel ---------------------------------------------------------------------

/** The exec runs until the stopper ends it with `code`; the reader answers `recorded`. */
function cancelledBy(code: number, recorded: Reply) {
  return (call: Call, client: FakeClient, cancel: CancelTrigger): Reply => {
    switch (call.kind) {
      case "exec":
        // The runner's SIGTERM arrives while the stage runs.
        setTimeout(() => cancel.fire(), 0);
        return { hang: true };
      case "stopper":
        client.finish(code);
        return {};
      default:
        return recorded;
    }
  };
}

Deno.test("cancel runs the stopper with the stage's id and reports the stage cancelled", async () => {
  const { client, error, lines, stageId } = await runStage(
    cancelledBy(143, { stdout: "143\n" }),
    { settings: REMOTE_PROJECT },
  );
  assertBuildFailure(error, 143, "stage step_script was cancelled (exit code 143)");
  assert.deepEqual(client.calls.map((call) => call.kind), ["exec", "stopper", "reader"]);
  const target: LxdTarget = { cli: "lxc", remote: "cluster", project: "ci", member: "" };
  const stopper = client.calls[1]!;
  assert.deepEqual(
    stopper.args,
    execArgv(target, ["sh", "-c", STOPPER, "lxd-driver", stageId, "30"]),
  );
  assert.deepEqual(
    [stopper.options.stdin, stopper.options.stdout, stopper.options.stderr],
    ["null", "null", "null"],
  );
  assert.deepEqual(client.kills, [], "the client ended by itself once the stage was stopped");
  assert.deepEqual(lines, ["Cancel received: stopping the job's processes in the container"]);
});

/** execStage's options for the job's container, on the local daemon. */
function stageOptions(
  client: FakeClient,
  scriptPath: string,
  extra: Partial<StageExecOptions> = {},
): StageExecOptions {
  return {
    target: { cli: "lxc", remote: "", project: "", member: "" },
    container: NAME,
    shell: ["bash"],
    scriptPath,
    log: createLogger({ sink: () => {} }),
    command: client.command,
    ...extra,
  };
}

Deno.test("execStage reports a cancelled stage with no recorded status as SIGTERM's 143", async () => {
  await using script = await scriptFile(SCRIPT);
  const cancel = new CancelTrigger();
  const client: FakeClient = new FakeClient((call) =>
    cancelledBy(1, { stdout: "" })(call, client, cancel)
  );
  const outcome = await execStage(
    stageOptions(client, script.path, { cancelRequests: cancel.listen }),
  );
  assert.deepEqual(outcome, { exitCode: 143, cancelled: true });
});

Deno.test("execStage runs the stopper once however often cancel arrives, with the grace in tenths", async () => {
  for (const [killGraceMs, tenths] of [[500, "5"], [10, "1"], [12_340, "123"]] as const) {
    await using script = await scriptFile(SCRIPT);
    const cancel = new CancelTrigger();
    const client: FakeClient = new FakeClient((call) => {
      if (call.kind === "exec") {
        setTimeout(() => {
          cancel.fire();
          cancel.fire();
        }, 0);
        return { hang: true };
      }
      if (call.kind === "stopper") setTimeout(() => client.finish(143), 0);
      return { stdout: "143\n" };
    });
    const outcome = await execStage(
      stageOptions(client, script.path, { cancelRequests: cancel.listen, killGraceMs }),
    );
    assert.deepEqual(outcome, { exitCode: 143, cancelled: true });
    const stoppers = client.callsOf("stopper");
    assert.equal(stoppers.length, 1);
    assert.equal(stoppers[0]!.args.at(-1), tenths);
  }
});

// --- a client that outlives its script --------------------------------------------

Deno.test("execStage stops a client that outlives the script's recorded status and uses it", async () => {
  await using script = await scriptFile(SCRIPT);
  const warnings: string[] = [];
  let probes = 0;
  const client = new FakeClient((call) => {
    switch (call.kind) {
      case "exec":
        return { hang: true };
      case "probe":
        // The first probe finds the shell still running, the second its record.
        return { code: ++probes === 1 ? 1 : 0 };
      default:
        return { stdout: "3\n" };
    }
  });
  const outcome = await execStage(stageOptions(client, script.path, {
    watchIntervalMs: 5,
    log: createLogger({ sink: (line) => warnings.push(line) }),
  }));
  assert.deepEqual(outcome, { exitCode: 3, cancelled: false });
  assert.deepEqual(client.kills, ["SIGKILL"]);
  assert.deepEqual(client.calls.map((call) => call.kind), ["exec", "probe", "probe", "reader"]);
  const probe = client.calls[1]!;
  assert.deepEqual(
    probe.args,
    ["exec", "--force-noninteractive", "--", NAME, "sh", "-c", STATUS_PROBE, "lxd-driver"]
      .concat(probe.stageId),
  );
  assert.equal(probe.stageId, client.calls[0]!.stageId);
  assert.deepEqual(
    [probe.options.stdin, probe.options.stdout, probe.options.stderr],
    ["null", "null", "null"],
  );
  assert.deepEqual(warnings, [
    "WARNING: lxc exec did not return after the script ended; no longer waiting for it",
  ]);
});

// --- debug logging ----------------------------------------------------------------

/** The debug line of an exec of the wrapper script `args` (script shown as <script>). */
function debugLine(args: string): RegExp {
  return new RegExp(
    `^\\[lxd-driver debug\\] lxc exec --force-noninteractive -- ${NAME} sh -c <script> lxd-driver ${args}: exit \\d+ in \\d+ms$`,
  );
}

Deno.test("with debug on, run logs each exec and its duration, and no script or value", async () => {
  const success = await runStage(() => ({}), { debug: true });
  assert.equal(success.error, undefined);
  const execLines = success.lines.filter((line) => line.includes(" exec "));
  assert.equal(execLines.length, 1, success.lines.join("\n"));
  assert.match(execLines[0]!, debugLine(`${success.stageId} bash`));
  assert.match(execLines[0]!, /: exit 0 in/);

  const failure = await runStage(failing({ code: 2 }, { stdout: "2\n" }), { debug: true });
  assert.deepEqual(
    failure.lines.filter((line) => line.includes(" exec ")).map((line) =>
      line.replace(/ in \d+ms$/, "")
    ),
    [
      `[lxd-driver debug] lxc exec --force-noninteractive -- ${NAME} sh -c <script> lxd-driver ${failure.stageId} bash: exit 2`,
      `[lxd-driver debug] lxc exec --force-noninteractive -- ${NAME} sh -c <script> lxd-driver ${failure.stageId}: exit 0`,
    ],
  );

  const cancelled = await runStage(cancelledBy(143, { stdout: "143\n" }), { debug: true });
  assert.ok(
    cancelled.lines.some((line) => debugLine(`${cancelled.stageId} 30`).test(line)),
    cancelled.lines.join("\n"),
  );

  for (const { lines } of [success, failure, cancelled]) {
    const all = lines.join("\n");
    assert.ok(!all.includes(SECRET), all);
    for (const script of [WRAPPER, STOPPER, STATUS_READER]) {
      assert.ok(!all.includes(script.split("\n")[0]!), all);
    }
  }
});

Deno.test("with debug on, the watchdog's probe is logged", async () => {
  await using script = await scriptFile(SCRIPT);
  const lines: string[] = [];
  const client = new FakeClient((call) => {
    if (call.kind === "exec") return { hang: true };
    if (call.kind === "probe") client.finish(0);
    return { code: 1 };
  });
  await execStage(stageOptions(client, script.path, {
    watchIntervalMs: 5,
    log: createLogger({ debug: true, sink: (line) => lines.push(line) }),
  }));
  const stageId = client.calls[0]!.stageId;
  assert.ok(lines.some((line) => debugLine(`${stageId}`).test(line)), lines.join("\n"));
  assert.ok(!lines.join("\n").includes(STATUS_PROBE));
});

Deno.test("a client that cannot start the status reader is logged as not started", async () => {
  const { lines, stageId } = await runStage(failing({ code: 1 }, { unstartable: true }), {
    debug: true,
  });
  assert.ok(
    lines.some((line) =>
      line.startsWith(
        `[lxd-driver debug] lxc exec --force-noninteractive -- ${NAME} sh -c <script> lxd-driver ${stageId}: not started (`,
      )
    ),
    lines.join("\n"),
  );
});
