import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Table } from "apache-arrow";
import { UserError } from "../errors.ts";
import { encodeFrame, FrameDecoder, type Frame, type Header } from "./protocol.ts";

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** The interpreter of the environment `npm run setup:sidecar` creates (see scripts/sidecar-env.mjs). */
export function defaultSidecarPython(): string {
  const venv = process.env.INOCULANT_SIDECAR_VENV ?? join(REPO_ROOT, "sae", ".venv");
  return join(venv, "bin", "python");
}

export interface SidecarOptions {
  python?: string;
  /** Fail a job when the sidecar says nothing (no progress, no result) for this long. */
  idleTimeoutMs?: number;
  env?: Record<string, string>;
}

export interface JobHandlers {
  onProgress?: (header: Header) => void;
  onResult?: (name: string, table: Table, header: Header) => void | Promise<void>;
}

/** The sidecar failed: carries the last lines it wrote on stderr, which usually say why. */
export class SidecarError extends UserError {
  constructor(message: string, readonly stderrTail: string) {
    super(stderrTail ? `${message}\n--- sidecar stderr (last lines) ---\n${stderrTail}` : message);
  }
}

const STDERR_TAIL_CHARS = 4000;

/**
 * A running sidecar process. Jobs run one at a time; results stream to `onResult` as they arrive, so a stage can
 * persist each shard before the next one is computed.
 */
export class SidecarClient {
  private readonly decoder = new FrameDecoder();
  private stderr = "";
  private waiting: { resolve: (f: Frame) => void; reject: (e: Error) => void } | null = null;
  private queue: Frame[] = [];
  private failure: Error | null = null;
  hello: Header | null = null;

  private constructor(private readonly child: ChildProcessWithoutNullStreams, private readonly idleTimeoutMs: number) {
    child.stdout.on("data", (chunk: Buffer) => {
      try {
        for (const frame of this.decoder.push(chunk)) this.deliver(frame);
      } catch (error) {
        this.fail(error as Error);
        child.kill("SIGKILL");
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString("utf8")).slice(-STDERR_TAIL_CHARS);
    });
    child.on("error", (error) => this.fail(new SidecarError(`could not start the sidecar: ${error.message}`, "")));
    child.on("exit", (code, signal) => {
      this.fail(new SidecarError(`the sidecar exited (${signal ? `signal ${signal}` : `code ${code}`}) before finishing`, this.stderrTail()));
    });
    // A broken pipe on stdin shows up as an exit too; without a listener it would crash the process.
    child.stdin.on("error", () => {});
  }

  static async start(options: SidecarOptions = {}): Promise<SidecarClient> {
    const python = options.python ?? defaultSidecarPython();
    if (!existsSync(python)) {
      throw new UserError(`the sidecar's Python (${python}) does not exist; run \`npm run setup:sidecar\`, or set sidecar.python`);
    }
    const child = spawn(python, ["-m", "inoculant_sae"], {
      stdio: ["pipe", "pipe", "pipe"],
      env: { ...process.env, PYTHONUNBUFFERED: "1", ...options.env },
    });
    const client = new SidecarClient(child, options.idleTimeoutMs ?? 600_000);
    const hello = await client.next(120_000).catch((error: Error) => {
      // Not even a hello: the wrong Python (no inoculant_sae, or not a Python at all), rarely a broken install.
      child.kill("SIGKILL");
      throw new SidecarError(
        `${error.message.split("\n")[0]}: ${python} did not start the sidecar; run \`npm run setup:sidecar\`, or point ` +
          `sidecar.python at a Python with the sidecar installed (sae/.venv/bin/python)`,
        client.stderrTail(),
      );
    });
    if (hello.header.type !== "hello") {
      throw new SidecarError(`expected a hello from the sidecar, got ${hello.header.type}`, client.stderrTail());
    }
    client.hello = hello.header;
    return client;
  }

  /** Runs one job; resolves with its summary, rejects with the sidecar's error. */
  async runJob(job: string, id: string, params: unknown, payload: Table | undefined, handlers: JobHandlers = {}): Promise<Record<string, unknown>> {
    this.child.stdin.write(encodeFrame({ type: "job", job, id, params }, payload));
    for (;;) {
      const { header, payload: table } = await this.next(this.idleTimeoutMs);
      if (header.id !== undefined && header.id !== null && header.id !== id) continue;
      switch (header.type) {
        case "progress":
          handlers.onProgress?.(header);
          break;
        case "result":
          if (!table) throw new SidecarError(`result ${String(header.name)} came without data`, this.stderrTail());
          await handlers.onResult?.(String(header.name), table, header);
          break;
        case "done":
          return (header.summary as Record<string, unknown>) ?? {};
        case "error": {
          const message = `sidecar ${job} job failed: ${String(header.message)}`;
          // A user error (bad config or input) reads as one message; a bug carries the Python traceback.
          throw header.kind === "user" ? new UserError(message) : new SidecarError(message, String(header.traceback ?? this.stderrTail()));
        }
        default:
          break;
      }
    }
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
    this.child.stdin.end(encodeFrame({ type: "shutdown" }));
    const timer = setTimeout(() => this.child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  kill(): void {
    this.child.kill("SIGKILL");
  }

  stderrTail(): string {
    return this.stderr.split("\n").slice(-30).join("\n").trim();
  }

  private deliver(frame: Frame): void {
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w.resolve(frame);
    } else {
      this.queue.push(frame);
    }
  }

  private fail(error: Error): void {
    if (this.failure) return;
    this.failure = error;
    if (this.waiting) {
      const w = this.waiting;
      this.waiting = null;
      w.reject(error);
    }
  }

  private next(timeoutMs: number): Promise<Frame> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Frame>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = null;
        this.child.kill("SIGKILL");
        reject(new SidecarError(`the sidecar said nothing for ${Math.round(timeoutMs / 1000)} s and was stopped (hung?)`, this.stderrTail()));
      }, timeoutMs);
      this.waiting = {
        resolve: (f) => {
          clearTimeout(timer);
          resolve(f);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }
}

