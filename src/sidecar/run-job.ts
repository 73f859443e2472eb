import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tableToIPC, type Table } from "apache-arrow";
import * as parquet from "parquet-wasm";
import type { StageContext } from "../pipeline/stage.ts";
import { SidecarClient } from "./client.ts";

export interface SidecarJob {
  job: "diff" | "harvest";
  params: Record<string, unknown>;
  payload?: Table;
  /** Where result shards go; emptied first (the sidecar's own cache makes a rerun cheap). */
  shardDir: string;
  python?: string | undefined;
  idleTimeoutMs?: number;
}

export interface SidecarJobResult {
  summary: Record<string, unknown>;
  /** Shard files written per result name, in arrival order. */
  shards: Record<string, string[]>;
  hello: Record<string, unknown>;
  /** Removes the shard files, once the stage has written its tables from them (they would only be copies). */
  discard(): Promise<void>;
}

const writerProperties = () => new parquet.WriterPropertiesBuilder().setCompression(parquet.Compression.ZSTD).build();

/**
 * Starts the sidecar, runs one job with a progress bar, and writes every result batch as a Parquet shard the
 * moment it arrives (Arrow in, Parquet out, no per-row work in JS). The sidecar is always shut down.
 */
export async function runSidecarJob(ctx: StageContext, spec: SidecarJob): Promise<SidecarJobResult> {
  await rm(spec.shardDir, { recursive: true, force: true });
  await mkdir(spec.shardDir, { recursive: true });
  const client = await SidecarClient.start({ python: spec.python, idleTimeoutMs: spec.idleTimeoutMs });
  const shards: Record<string, string[]> = {};
  const bars = new Map<string, ReturnType<StageContext["progress"]["task"]>>();
  try {
    ctx.log(`sidecar: ${String(client.hello?.device)} ${String(client.hello?.dtype)}, torch ${String(client.hello?.torch)}`);
    const summary = await client.runJob(spec.job, `${spec.job}-1`, spec.params, spec.payload, {
      onProgress: (h) => {
        const phase = String(h.phase);
        let bar = bars.get(phase);
        if (!bar) {
          bar = ctx.progress.task(`${spec.job}: ${phase}`, Number(h.total) || 1, String(h.unit ?? ""));
          bars.set(phase, bar);
        }
        bar.update(Number(h.done), Number(h.total) || undefined);
      },
      onResult: async (name, table) => {
        const list = (shards[name] ??= []);
        const file = join(spec.shardDir, `${name}-${String(list.length).padStart(5, "0")}.parquet`);
        const bytes = parquet.writeParquet(parquet.Table.fromIPCStream(tableToIPC(table, "stream")), writerProperties());
        await writeFile(file, bytes);
        list.push(file);
      },
    });
    for (const bar of bars.values()) bar.finish();
    return { summary, shards, hello: client.hello ?? {}, discard: () => rm(spec.shardDir, { recursive: true, force: true }) };
  } finally {
    await client.close().catch(() => client.kill());
  }
}
