import { readFileSync } from "node:fs";

/** inoculant's version, read from package.json at run time so that it never drifts from the package's. */
export function packageVersion(): string {
  return (JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string }).version;
}
