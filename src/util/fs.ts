import { readdirSync, statSync } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { dirname, basename, join } from "node:path";

/** Cheap identity of an input file: path, size and modification time (as make does; no full read). */
export async function fileFingerprint(path: string): Promise<{ path: string; bytes: number; mtime_ms: number }> {
  const s = await stat(path);
  return { path, bytes: s.size, mtime_ms: Math.trunc(s.mtimeMs) };
}

/**
 * The files directly in `folder` (symlinks followed, as in a Hugging Face snapshot), sorted; none when it is
 * missing. For fingerprinting a model or SAE folder by its files.
 */
export function folderFiles(folder: string): string[] {
  let names: string[];
  try {
    names = readdirSync(folder);
  } catch {
    return [];
  }
  return names
    .sort()
    .map((name) => join(folder, name))
    .filter((path) => statSync(path, { throwIfNoEntry: false })?.isFile() ?? false);
}

export async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

/** A temporary name beside `path`: renaming it over `path` is atomic on the same filesystem. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}`);
}

/**
 * Runs `write(tmp)` and renames tmp to `path` only when it finished, so a crash never leaves a half-written
 * file under the real name.
 */
export async function writeAtomically<T>(path: string, write: (tmpPath: string) => Promise<T>): Promise<T> {
  await mkdir(dirname(path), { recursive: true });
  const tmp = tempPathFor(path);
  try {
    const result = await write(tmp);
    await rename(tmp, path);
    return result;
  } catch (error) {
    await rm(tmp, { force: true });
    throw error;
  }
}
