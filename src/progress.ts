import cliProgress from "cli-progress";

/** A unit of work shown to the user; `percent` for work measured in percent, `update` for counted items. */
export interface ProgressTask {
  update(done: number, total?: number): void;
  percent(p: number): void;
  finish(): void;
}

export interface Progress {
  task(label: string, total?: number, unit?: string): ProgressTask;
  /** A line for the user on stderr, above the bars while they are drawn (written into them it would garble both). */
  log(line: string): void;
  stop(): void;
}

const silentTask: ProgressTask = { update() {}, percent() {}, finish() {} };

const toStderr = (line: string) => {
  process.stderr.write(`${line}\n`);
};

/** For tests and `--json`: nothing is drawn. */
export const silentProgress: Progress = { task: () => silentTask, log: toStderr, stop() {} };

/** Bars on stderr when it is a terminal; nothing otherwise (logs and CI stay clean). */
export function terminalProgress(): Progress {
  if (!process.stderr.isTTY) return silentProgress;
  const multi = new cliProgress.MultiBar(
    {
      format: " {label} |{bar}| {percentage}% {value}/{total} {unit} | {duration_formatted} | eta {eta_formatted}",
      hideCursor: true,
      clearOnComplete: false,
      stream: process.stderr,
    },
    cliProgress.Presets.shades_classic,
  );
  return {
    task(label, total = 100, unit = "%") {
      const bar = multi.create(total, 0, { label: label.padEnd(22), unit });
      return {
        update: (done, newTotal) => {
          if (newTotal !== undefined) bar.setTotal(newTotal);
          bar.update(done);
        },
        percent: (p) => bar.update(Math.min(total, Math.round((p / 100) * total))),
        finish: () => {
          bar.update(bar.getTotal());
          bar.stop();
        },
      };
    },
    log: (line) => {
      // The bars buffer a logged line until they next redraw, and drop it when stopped: redraw now.
      if (!multi.isActive) return toStderr(line);
      multi.log(`${line}\n`);
      multi.update();
    },
    stop: () => multi.stop(),
  };
}
