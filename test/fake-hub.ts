import { createHash } from "node:crypto";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * A local stand-in for the Hugging Face hub: the two endpoints @huggingface/hub's downloadFileToCacheDir uses
 * (POST paths-info, and GET resolve with Range). Counts requests so tests can prove a cached file costs none.
 */
export interface FakeHub {
  url: string;
  commit: string;
  requests: string[];
  close(): Promise<void>;
}

export async function startFakeHub(repos: Record<string, Record<string, string | Buffer>>): Promise<FakeHub> {
  const commit = createHash("sha1").update(JSON.stringify(Object.keys(repos))).digest("hex");
  const requests: string[] = [];
  const server: Server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    const url = new URL(req.url ?? "/", "http://x");
    const info = /^\/api\/(models|datasets)\/(.+?)\/paths-info\/([^/]+)$/.exec(url.pathname);
    if (info && req.method === "POST") {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const files = repos[decodeURIComponent(info[2]!)] ?? {};
        const paths = (JSON.parse(body) as { paths: string[] }).paths;
        const out = paths
          .filter((p) => p in files)
          .map((p) => {
            const data = Buffer.from(files[p]!);
            return { type: "file", path: p, size: data.length, oid: createHash("sha1").update(data).digest("hex"), lastCommit: { id: commit, title: "x", date: "2026-01-01" } };
          });
        res.writeHead(200, { "Content-Type": "application/json" }).end(JSON.stringify(out));
      });
      return;
    }
    const resolve = /^\/(?:datasets\/)?([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    const data = resolve ? repos[resolve[1]!]?.[decodeURIComponent(resolve[3]!)] : undefined;
    if (data === undefined) {
      res.writeHead(404, { "X-Error-Code": "EntryNotFound" }).end("not found");
      return;
    }
    const bytes = Buffer.from(data);
    const range = /bytes=(\d+)-(\d*)/.exec(String(req.headers.range ?? ""));
    const headers = { ETag: `"${createHash("sha1").update(bytes).digest("hex")}"`, "X-Repo-Commit": commit, "Accept-Ranges": "bytes" };
    if (range) {
      const start = Number(range[1]);
      const end = range[2] ? Math.min(Number(range[2]), bytes.length - 1) : bytes.length - 1;
      res.writeHead(206, { ...headers, "Content-Range": `bytes ${start}-${end}/${bytes.length}`, "Content-Length": end - start + 1 }).end(bytes.subarray(start, end + 1));
    } else {
      res.writeHead(200, { ...headers, "Content-Length": bytes.length }).end(bytes);
    }
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, commit, requests, close: () => new Promise((r) => server.close(() => r())) };
}
