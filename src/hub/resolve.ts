import { readFile, mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { downloadFileToCacheDir, getHFHubCachePath, getRepoFolderName } from "@huggingface/hub";
import { UserError } from "../errors.ts";
import { exists } from "../util/fs.ts";

/**
 * Artifacts (model snapshots, SAE files, corpora) come from the Hugging Face hub into the standard cache
 * (HF_HUB_CACHE, or HF_HOME/hub, or ~/.cache/huggingface/hub), so that transformers and other tools find them
 * too. A file already in the cache is used without touching the network; the sidecar only ever gets local paths.
 */
export interface HubOptions {
  cacheDir?: string;
  /** Another endpoint (a mirror, or the tests' local hub). */
  hubUrl?: string;
  /** Never contact the hub: a missing file is an error. Also set by HF_HUB_OFFLINE=1. */
  offline?: boolean;
  /** Called before each download with the repo and file. */
  onDownload?: (repo: string, path: string) => void;
  /** The config key that names the artifact (`sae.path`), put first in errors so the user knows which one failed. */
  key?: string;
}

export type RepoType = "model" | "dataset";

const COMMIT = /^[0-9a-f]{40}$/;

function repoFolder(cacheDir: string, repo: string, type: RepoType): string {
  return join(cacheDir, getRepoFolderName({ name: repo, type }));
}

/** The cached snapshot folder of a revision, if the cache knows the revision. */
async function cachedSnapshot(cacheDir: string, repo: string, type: RepoType, revision: string): Promise<string | null> {
  const folder = repoFolder(cacheDir, repo, type);
  if (COMMIT.test(revision)) return join(folder, "snapshots", revision);
  const ref = join(folder, "refs", revision);
  if (!(await exists(ref))) return null;
  return join(folder, "snapshots", (await readFile(ref, "utf8")).trim());
}

/**
 * Makes sure `files` of `repo` at `revision` are in the cache and returns the snapshot folder holding them.
 */
export async function resolveHubFiles(
  repo: string,
  files: readonly string[],
  options: HubOptions & { revision?: string; type?: RepoType } = {},
): Promise<string> {
  const revision = options.revision ?? "main";
  const type = options.type ?? "model";
  const cacheDir = options.cacheDir ?? getHFHubCachePath();
  const offline = options.offline ?? process.env.HF_HUB_OFFLINE === "1";
  // HF_ENDPOINT is the variable huggingface_hub reads for a mirror; honour it the same way.
  const hubUrl = options.hubUrl ?? process.env.HF_ENDPOINT;
  // Hub repos are "model" or "dataset" repos; an SAE lives in a model repo, so say which key it came from.
  const what = `${options.key ? `${options.key}: ` : ""}${type} repo ${repo}@${revision}`;

  const snapshot = await cachedSnapshot(cacheDir, repo, type, revision);
  const missing: string[] = [];
  for (const file of files) if (!snapshot || !(await exists(join(snapshot, file)))) missing.push(file);
  if (missing.length === 0 && snapshot) return snapshot;
  if (offline) {
    throw new UserError(
      `${what}: ${missing.join(", ")} not in the Hugging Face cache (${cacheDir}) and offline mode is on; ` +
        `download it where the hub is reachable (the same command does it), or point HF_HUB_CACHE at a cache that has it`,
    );
  }
  let downloadedSnapshot: string | null = null;
  for (const file of missing) {
    options.onDownload?.(repo, file);
    let pointer: string;
    try {
      pointer = await downloadFileToCacheDir({
        repo: { name: repo, type },
        path: file,
        revision,
        cacheDir,
        ...(hubUrl ? { hubUrl } : {}),
        // The token is read here and handed to the library only: it never reaches a log or a file of ours.
        ...(process.env.HF_TOKEN ? { accessToken: process.env.HF_TOKEN } : {}),
      });
    } catch (error) {
      throw new UserError(`${what}: could not download ${file}: ${(error as Error).message}`, { cause: error });
    }
    downloadedSnapshot = pointer.slice(0, pointer.length - file.length - 1);
  }
  const result = downloadedSnapshot ?? snapshot!;
  // The library does not record which commit a branch name resolved to; do it, so the next lookup is offline.
  if (!COMMIT.test(revision)) {
    const ref = join(repoFolder(cacheDir, repo, type), "refs", revision);
    await mkdir(dirname(ref), { recursive: true });
    await writeFile(ref, result.split("/").pop()!);
  }
  return result;
}

/**
 * A model snapshot for transformers: config, tokenizer, and the weights (every shard the index names).
 */
export async function resolveModelSnapshot(repo: string, options: HubOptions & { revision?: string } = {}): Promise<string> {
  const base = ["config.json", "tokenizer.json", "tokenizer_config.json"];
  const snapshot = await resolveHubFiles(repo, base, options);
  if (await exists(join(snapshot, "model.safetensors"))) return snapshot;
  let index: string;
  try {
    index = await resolveHubFiles(repo, ["model.safetensors.index.json"], options);
  } catch {
    return resolveHubFiles(repo, [...base, "model.safetensors"], options);
  }
  const map = JSON.parse(await readFile(join(index, "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> };
  const shards = [...new Set(Object.values(map.weight_map))].sort();
  return resolveHubFiles(repo, [...base, "model.safetensors.index.json", ...shards], options);
}

/** A reference to a hub artifact in a config: `hf://REPO[/PATH]` or `hf://datasets/REPO[/PATH]` with `@REV`. */
export interface HubRef {
  type: RepoType;
  repo: string;
  path: string;
  revision: string;
}

export function parseHubRef(ref: string): HubRef | null {
  const m = /^hf:\/\/(datasets\/)?([^/@]+\/[^/@]+)(?:@([^/]+))?(?:\/(.+))?$/.exec(ref);
  if (!m) return null;
  return { type: m[1] ? "dataset" : "model", repo: m[2]!, revision: m[3] ?? "main", path: m[4] ?? "" };
}
