import { format } from "node:util";
import { Command, CommanderError, Option } from "commander";
import { loadConfig } from "./config/load.ts";
import { isUserError, UserError } from "./errors.ts";
import { diagnoseEndpoints, diagnosisOk, formatDiagnosis } from "./llm/doctor.ts";
import { cleanRun } from "./pipeline/clean.ts";
import { runPipeline, runStatus, type PipelineSummary, type StageReport } from "./pipeline/runner.ts";
import { STAGES } from "./pipeline/stages.ts";
import { silentProgress, terminalProgress } from "./progress.ts";
import { formatStatus, formatSummary } from "./cli-format.ts";
import { packageVersion } from "./util/version.ts";
import { loadEvalConfig } from "./eval/config.ts";
import { formatEvalSummary } from "./eval/format.ts";
import { runEval, type EvalSummary } from "./eval/run.ts";

/** Exit codes: 0 success, 1 an error (user or bug), 2 bad usage. */
const EXIT_ERROR = 1;
const EXIT_USAGE = 2;

interface RunFlags {
  runDir?: string;
  until?: string;
  force?: string;
  resend?: boolean;
  json?: boolean;
}

const stageNameList = STAGES.map((s) => s.name);

function withRunOptions(cmd: Command, withUntil: boolean): Command {
  cmd
    .option("--run-dir <dir>", "run directory (default: the config's run_dir, or runs/<name> in the working directory)")
    .addOption(new Option("--force <stage>", "rerun this stage and every stage after it").choices(stageNameList))
    .option("--resend", "with --force: the forced stage asks its LLM again instead of reusing stored answers (after fixing or replacing a server)")
    .option("--json", "print a machine-readable summary instead of progress bars");
  if (withUntil) cmd.addOption(new Option("--until <stage>", "stop after this stage").choices(stageNameList));
  return cmd;
}

/** An error as `--json` output gives it: the message, and whether it is the user's to fix (exit 1 either way). */
function errorJson(error: unknown): { message: string; user_error: boolean } {
  return { message: error instanceof Error ? error.message : String(error), user_error: isUserError(error) };
}

async function execute(configPath: string, flags: RunFlags, until?: string): Promise<void> {
  // With --json a failed run prints JSON too: the stages it got through and the error (the exit code is still 1,
  // and the error also goes to stderr as without --json).
  const stages: StageReport[] = [];
  let runDir: string | null = null;
  try {
    const config = await loadConfig(configPath, flags.runDir ? { runDir: flags.runDir } : {});
    runDir = config.runDir;
    const progress = flags.json ? silentProgress : terminalProgress();
    const summary: PipelineSummary = await runPipeline(config, {
      until: until ?? flags.until,
      force: flags.force,
      resend: flags.resend,
      progress,
      log: flags.json ? () => {} : (line) => progress.log(line),
      onStage: (report) => stages.push(report),
    });
    process.stdout.write(flags.json ? `${JSON.stringify(summary, null, 2)}\n` : formatSummary(summary));
  } catch (error) {
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({ runDir, stages, error: errorJson(error) }, null, 2)}\n`);
    } else if (runDir !== null && stages.length > 0) {
      // What the run got through, as on success; the error follows on stderr.
      process.stdout.write(formatSummary({ runDir, stages }));
    }
    throw error;
  }
}

export function buildProgram(): Command {
  const program = new Command("inoculant")
    .description(
      "Find the rows of a fine-tuning dataset that teach an unwanted trait, and inoculate them.\n" +
        "A stage command also runs the stages before it that are not done; `run` runs them all.",
    )
    .version(packageVersion())
    .showHelpAfterError()
    .exitOverride();

  withRunOptions(program.command("run").argument("<config>", "pipeline config (YAML)"), true)
    .description("run every stage in order, skipping the ones already done")
    .action((config: string, flags: RunFlags) => execute(config, flags));

  for (const stage of STAGES) {
    withRunOptions(program.command(stage.name).argument("<config>", "pipeline config (YAML)"), false)
      .description(stage.description)
      .action((config: string, flags: RunFlags) => execute(config, flags, stage.name));
  }

  program
    .command("clean")
    .argument("<run-dir>", "a run directory")
    .option("--json", "print JSON")
    .description("remove the sidecar's cached shards of earlier configs (the last run's, the tables, exports and LLM answers stay)")
    .action(async (runDir: string, flags: { json?: boolean }) => {
      const result = await cleanRun(runDir);
      const mb = (result.removedBytes / 1e6).toFixed(1);
      process.stdout.write(flags.json ? `${JSON.stringify(result, null, 2)}\n` : `removed ${result.removedFiles} cached files (${mb} MB) that the last run did not use\n`);
    });

  program
    .command("status")
    .argument("<run-dir>", "a run directory")
    .option("--json", "print JSON")
    .description("show each stage: done / pending / running / failed / interrupted / disabled, rows, time")
    .action(async (runDir: string, flags: { json?: boolean }) => {
      const lines = await runStatus(runDir);
      process.stdout.write(flags.json ? `${JSON.stringify(lines, null, 2)}\n` : formatStatus(lines));
    });

  program
    .command("eval")
    .argument("<eval-config>", "eval config (YAML): models under test, judge, traits, system prompts")
    .option("--run-dir <dir>", "run directory (default: the config's run_dir, or runs/<name> in the working directory)")
    .option("--rescore", "recompute every score and figure from stored answers (after changing a threshold); send nothing")
    .option("--json", "print the figures as JSON instead of progress bars and a table")
    .description("measure each model's traits under each system prompt, with intervals; resumes from the cache")
    .action(async (configPath: string, flags: { runDir?: string; json?: boolean; rescore?: boolean }) => {
      // With --json, a failure before the figures (a bad config, a missing key) is JSON on stdout too.
      const jsonOnFailure = (error: unknown) => {
        if (flags.json) process.stdout.write(`${JSON.stringify({ error: errorJson(error) }, null, 2)}\n`);
        throw error;
      };
      const config = await loadEvalConfig(configPath, flags.runDir ? { runDir: flags.runDir } : {}).catch(jsonOnFailure);
      const progress = flags.json ? silentProgress : terminalProgress();
      let summary: EvalSummary;
      try {
        summary = await runEval(config, { progress, log: (line) => progress.log(line), rescore: flags.rescore ?? false }).catch(jsonOnFailure);
      } finally {
        progress.stop();
      }
      process.stdout.write(flags.json ? `${JSON.stringify(summary, null, 2)}\n` : formatEvalSummary(summary));
      const incomplete = summary.models.filter((m) => m.status === "failed");
      if (incomplete.length > 0) {
        throw new UserError(
          `eval: ${incomplete.length} of ${summary.models.length} models incomplete, left out of the figures:\n` +
            incomplete.map((m) => `  ${m.model}: ${m.error?.replaceAll("\n", "\n    ")}`).join("\n"),
        );
      }
    });

  program
    .command("doctor")
    .argument("<config>", "pipeline config (YAML)")
    .option("--json", "print JSON")
    .description("check each configured LLM endpoint: key present, server reachable, model served")
    .action(async (configPath: string, flags: { json?: boolean }) => {
      const config = await loadConfig(configPath).catch((error: unknown) => {
        if (flags.json) process.stdout.write(`${JSON.stringify({ error: errorJson(error) }, null, 2)}\n`);
        throw error;
      });
      const roles = await diagnoseEndpoints(config);
      process.stdout.write(flags.json ? `${JSON.stringify(roles, null, 2)}\n` : formatDiagnosis(roles));
      if (!diagnosisOk(roles)) throw new UserError("doctor: some checks failed; apply the fixes above and run it again");
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  // Our own output goes through process.stdout.write; libraries' console chatter (@huggingface/hub logs each
  // download with console.debug) must not land in stdout, where `--json` summaries go.
  for (const level of ["log", "info", "debug"] as const) {
    console[level] = (...args: unknown[]) => process.stderr.write(`${format(...args)}\n`);
  }
  // Stopping a run loses no finished work (stages and shards are stored as they finish); say so, and how to go on.
  for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
    process.once(signal, () => {
      process.stderr.write(`\ninoculant: stopped by ${signal}; finished stages and shards are kept: rerun the same command to resume\n`);
      process.exit(code);
    });
  }
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // Help and version are not errors; everything else commander raises is bad usage.
      return error.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (isUserError(error)) {
      process.stderr.write(`inoculant: ${error.message}\n`);
    } else {
      process.stderr.write(`inoculant: internal error (a bug; please report it with this trace):\n${(error as Error)?.stack ?? String(error)}\n`);
    }
    return EXIT_ERROR;
  }
}

process.exitCode = await main(process.argv);
