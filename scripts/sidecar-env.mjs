#!/usr/bin/env node
// Creates (or reuses) the sidecar's virtual environment and runs its tests.
//   node scripts/sidecar-env.mjs install   create sae/.venv and pip-install sae/ with its test extras
//   node scripts/sidecar-env.mjs test      the same, then ruff (lint and format), mypy --strict and pytest
//   node scripts/sidecar-env.mjs python    print the environment's interpreter path
// The environment is reinstalled only when sae/pyproject.toml changes (a stamp file records its hash).
// INOCULANT_PYTHON picks the interpreter that creates the environment (default: python3).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const sae = join(root, "sae");
const venv = process.env.INOCULANT_SIDECAR_VENV ?? join(sae, ".venv");
const python = join(venv, "bin", "python");
const stamp = join(venv, ".inoculant-stamp");

function run(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { stdio: "inherit", ...opts });
  if (r.status !== 0) {
    console.error(`sidecar-env: ${cmd} ${args.join(" ")} failed (exit ${r.status ?? r.signal})`);
    process.exit(r.status ?? 1);
  }
}

function install() {
  const pyproject = join(sae, "pyproject.toml");
  if (!existsSync(pyproject)) {
    console.error("sidecar-env: sae/pyproject.toml is missing");
    process.exit(1);
  }
  const want = createHash("sha256").update(readFileSync(pyproject)).digest("hex");
  if (existsSync(python) && existsSync(stamp) && readFileSync(stamp, "utf8") === want) return;
  const base = process.env.INOCULANT_PYTHON ?? "python3";
  console.error(`sidecar-env: creating ${venv} (torch and transformers: a few minutes the first time)`);
  if (!existsSync(python)) run(base, ["-m", "venv", venv]);
  run(python, ["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--progress-bar", "off", "-e", `${sae}[test]`]);
  writeFileSync(stamp, want);
}

const command = process.argv[2];
if (command === "install") {
  install();
} else if (command === "test") {
  install();
  // Static checks first: they take seconds, and a type error explains a failing test better than the test does.
  for (const args of [["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]]) {
    const r = spawnSync(python, ["-m", ...args], { stdio: "inherit", cwd: sae });
    if (r.status !== 0) {
      console.error(`sidecar-env: ${args.join(" ")} failed; \`${python} -m ruff format .\` in sae/ fixes formatting`);
      process.exit(r.status ?? 1);
    }
  }
  const r = spawnSync(python, ["-m", "pytest", "-q", join(sae, "tests")], { stdio: "inherit", cwd: sae });
  process.exit(r.status ?? 1);
} else if (command === "python") {
  process.stdout.write(`${python}\n`);
} else {
  console.error("usage: sidecar-env.mjs install | test | python");
  process.exit(2);
}
