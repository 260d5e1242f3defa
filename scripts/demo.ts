/**
 * `make demo`: one sample CI job through every stage, driven the way
 * gitlab-runner drives lxd-driver, in a real LXD container. Prints the job
 * log as GitLab would show it.
 */
import { getSourcesBody, sourceBundle } from "../tests/git_fixture.ts";
import { Job, runnerScript, type RunOptions } from "../tests/runner.ts";

const IMAGE = Deno.env.get("DEMO_IMAGE") ?? "lxd-driver-test/bookworm";
const encoder = new TextEncoder();

function say(line: string, colour = "1;32"): void {
  Deno.stdout.writeSync(encoder.encode(`\x1b[${colour}m${line}\x1b[0m\n`));
}

// The job log is everything the driver prints, stdout and stderr, as it comes.
const live: RunOptions = {
  onStdout: (chunk) => Deno.stdout.writeSync(chunk),
  onStderr: (chunk) => Deno.stdout.writeSync(chunk),
};

const settings = await Deno.makeTempFile({ prefix: "lxd-driver-demo-", suffix: ".toml" });
await Deno.writeTextFile(
  settings,
  `[image]\ndefault = "${IMAGE}"\nallowed = ["lxd-driver-test/*"]\n`,
);
const job = await Job.create({
  jobId: 1000 + Math.floor(Math.random() * 1000),
  projectId: 42,
  env: { LXD_DRIVER_CONFIG: settings },
  variables: { CI_JOB_IMAGE: IMAGE, GREETING: "hello from a CI variable" },
});
const vars = { CI_PROJECT_DIR: "/builds/demo/project", GREETING: "hello from a CI variable" };
const bundle = await sourceBundle({
  "README.md": "# demo project\n",
  "build.sh": '#!/bin/sh\necho "building on $(uname -sr)"\nls -l\n',
});

const stages: [string, string, string][] = [
  ["prepare_script", "Preparing environment", `echo "Running on $(hostname)..."`],
  ["get_sources", "Getting source from Git repository", getSourcesBody(bundle)],
  [
    "step_script",
    'Executing "step_script" stage of the job script',
    `cd "$CI_PROJECT_DIR"\necho '$ sh build.sh'\nsh build.sh\necho '$ echo "$GREETING"'\necho "$GREETING"`,
  ],
  ["after_script", "Running after_script", `echo '$ echo done'\necho done`],
  ["cleanup_file_variables", "Cleaning up project directory and file based variables", "true"],
];

let failed: string | undefined;
try {
  say(`Preparing the "custom" executor`);
  const config = await job.config();
  if (config.code !== 0) throw new Error(`config failed:\n${config.stderr}`);
  const answer = JSON.parse(config.stdout);
  say(`Using Custom executor with driver ${answer.driver.name} ${answer.driver.version}...`);
  const prepare = await job.prepare(live);
  if (prepare.code !== 0) throw new Error(`prepare failed with exit code ${prepare.code}`);
  for (const [stage, title, body] of stages) {
    say(title);
    const result = await job.run(runnerScript(body, vars), stage, live);
    if (result.code !== 0) {
      failed = `exit status ${result.exitCodeFile?.trim() ?? result.code}`;
      break;
    }
  }
} catch (error) {
  failed = `(system failure): ${(error as Error).message}`;
} finally {
  const cleanup = await job.cleanup();
  say(`[runner log] cleanup: exit ${cleanup.code}: ${cleanup.stderr.trim()}`, "2");
  await job.remove();
  await Deno.remove(settings);
}
if (failed) {
  say(`Job failed: ${failed}`, "1;31");
  Deno.exit(1);
}
say("Job succeeded");
