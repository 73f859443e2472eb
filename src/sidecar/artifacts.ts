import { isAbsolute, join } from "node:path";
import { UserError } from "../errors.ts";
import { parseHubRef, resolveHubFiles, resolveModelSnapshot } from "../hub/resolve.ts";
import { exists } from "../util/fs.ts";
import type { StageContext } from "../pipeline/stage.ts";

/** The model as the sidecar wants it: a local snapshot (HF backend) or a user's Python file (custom backend). */
export interface ModelSource {
  /** A Hugging Face repo id or an `hf://` reference. */
  id: string;
  revision?: string | undefined;
  /** A local snapshot folder: used instead of downloading `id`. */
  path?: string | undefined;
  /** A Python file defining `load_backend(options)`, for models transformers cannot load (and for tests). */
  python_file?: string | undefined;
  python_options?: Record<string, unknown> | undefined;
  dtype: "auto" | "bfloat16" | "float16" | "float32";
}

export async function sidecarModelParams(model: ModelSource, onDownload?: (repo: string, file: string) => void): Promise<Record<string, unknown>> {
  if (model.python_file) {
    if (!(await exists(model.python_file))) throw new UserError(`model.python_file: ${model.python_file} does not exist`);
    return { backend: "python", file: model.python_file, options: model.python_options ?? {} };
  }
  if (model.path) {
    if (!(await exists(join(model.path, "config.json")))) {
      throw new UserError(`model.path: ${model.path} has no config.json; give a Hugging Face model snapshot folder`);
    }
    return { backend: "hf", path: model.path, dtype: model.dtype };
  }
  const ref = parseHubRef(model.id);
  const repo = ref ? ref.repo : model.id;
  const snapshot = await resolveModelSnapshot(repo, { key: "model.id", revision: model.revision ?? ref?.revision, ...(onDownload ? { onDownload } : {}) });
  return { backend: "hf", path: snapshot, dtype: model.dtype };
}

export interface SaeSource {
  format: "dictionary_learning" | "saelens";
  encode: "threshold" | "relu";
  /** A local folder, or `hf://REPO[@REV]/FOLDER` (downloaded into the Hugging Face cache). */
  path: string;
}

const SAE_FILES: Record<SaeSource["format"], string[]> = {
  dictionary_learning: ["ae.pt", "config.json"],
  saelens: ["cfg.json", "sae_weights.safetensors"],
};

export async function sidecarSaeParams(sae: SaeSource, onDownload?: (repo: string, file: string) => void): Promise<Record<string, unknown>> {
  const ref = parseHubRef(sae.path);
  let folder: string;
  if (ref) {
    const files = SAE_FILES[sae.format].map((f) => (ref.path ? `${ref.path}/${f}` : f));
    const snapshot = await resolveHubFiles(ref.repo, files, { key: "sae.path", revision: ref.revision, ...(onDownload ? { onDownload } : {}) });
    folder = ref.path ? join(snapshot, ref.path) : snapshot;
  } else {
    folder = sae.path;
    if (!isAbsolute(folder)) throw new Error(`sae.path should have been resolved to an absolute path: ${folder}`);
    for (const f of SAE_FILES[sae.format]) {
      if (!(await exists(join(folder, f)))) {
        throw new UserError(`sae.path: ${folder} has no ${f}; a ${sae.format} SAE folder holds ${SAE_FILES[sae.format].join(" and ")} (or set sae.format)`);
      }
    }
  }
  return { format: sae.format, path: folder, encode: sae.encode };
}

/** Logs each download into the Hugging Face cache as a stage line. */
export function downloadLogger(ctx: StageContext): (repo: string, file: string) => void {
  return (repo, file) => ctx.log(`downloading ${repo}/${file} into the Hugging Face cache`);
}

/** The parameters every sidecar job shares: the model, the SAE, the device, the hooked block, the system prompt. */
export async function sidecarJobBase(ctx: StageContext): Promise<Record<string, unknown>> {
  const { config } = ctx;
  const sae = config.sae!;
  const onDownload = downloadLogger(ctx);
  return {
    model: await sidecarModelParams(config.model, onDownload),
    sae: await sidecarSaeParams(sae, onDownload),
    device: config.sidecar.device,
    block: sae.block ?? null,
    system_prompt: config.model.default_system_prompt,
  };
}
