import { spawnSync } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { diagnoseEndpoints, diagnosisOk, formatDiagnosis } from "../src/llm/doctor.ts";
import { REPO, tempDir } from "./helpers.ts";
import { llmConfig, testRole } from "./llm-fixtures.ts";
import { startLlmServer, type LlmServer } from "./llm-server.ts";

let server: LlmServer;
afterEach(() => server.close());

describe("inoculant doctor", () => {
  it("passes every check of a healthy endpoint, and says what to fix for each broken one", async () => {
    server = await startLlmServer({ apiKey: "sk-doctor", models: ["test-model", "other-model"] });
    const config = await llmConfig(await tempDir(), server, {
      llm: {
        generator: testRole(server, { api_key_env: "DOCTOR_KEY" }),
        judge: testRole(server, { model: "gpt-4.1-mini", api_key_env: "DOCTOR_KEY" }),
      },
    });
    const healthyEnv = { DOCTOR_KEY: "sk-doctor" };
    const roles = await diagnoseEndpoints(config, healthyEnv);
    expect(roles[0]!.checks.map((c) => [c.check, c.ok])).toEqual([["key", true], ["reachable", true], ["model", true]]);
    expect(roles[1]!.checks.find((c) => c.check === "model")).toMatchObject({
      ok: false,
      message: "gpt-4.1-mini is not among the served models (test-model, other-model)",
      fix: "set llm.judge.model to a served model, or serve gpt-4.1-mini there",
    });
    expect(diagnosisOk(roles)).toBe(false);

    const noKey = await diagnoseEndpoints(config, {});
    expect(noKey[0]!.checks).toEqual([{ check: "key", ok: false, message: "DOCTOR_KEY is not set", fix: "export DOCTOR_KEY=<your key>" }]);

    const wrongKey = await diagnoseEndpoints(config, { DOCTOR_KEY: "sk-wrong-key-123" });
    expect(wrongKey[0]!.checks[1]).toMatchObject({ check: "reachable", ok: false, fix: expect.stringMatching(/rejected the key in DOCTOR_KEY/) });
    expect(formatDiagnosis(wrongKey)).not.toContain("sk-wrong-key-123");
  });

  it("reports an unreachable server, and `inoculant doctor` exits 1 with the report", async () => {
    server = await startLlmServer();
    const dir = await tempDir();
    const config = await llmConfig(dir, server);
    await server.close();
    const roles = await diagnoseEndpoints(config, {});
    expect(roles[0]!.checks.at(-1)).toMatchObject({ check: "reachable", ok: false, message: expect.stringMatching(/cannot connect to http:\/\/127\.0\.0\.1:\d+\/v1: .*ECONNREFUSED/) });

    await writeFile(
      join(dir, "pipeline.yaml"),
      `name: doc\nsources: { clean: { path: clean.jsonl }, contaminated: { path: contaminated.jsonl } }\ninoculation: { prompt: x }\n` +
        `llm:\n  judge: { model: test-model, base_url: "${config.llm.judge!.base_url}" }\n`,
    );
    const r = spawnSync(process.execPath, [join(REPO, "bin", "inoculant.cjs"), "doctor", "pipeline.yaml"], { cwd: dir, encoding: "utf8" });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/^llm\.judge: test-model at http:\/\/127\.0\.0\.1:\d+\/v1\n  ok  key: no key configured/);
    expect(r.stdout).toMatch(/BAD reachable: cannot connect to .*\n      fix: start the server, or correct llm\.judge\.base_url/);
    expect(r.stderr).toMatch(/inoculant: doctor: some checks failed/);
    // With --json, a config it cannot load is JSON too.
    const bad = spawnSync(process.execPath, [join(REPO, "bin", "inoculant.cjs"), "doctor", "missing.yaml", "--json"], { cwd: dir, encoding: "utf8" });
    expect(bad.status).toBe(1);
    expect(JSON.parse(bad.stdout)).toEqual({ error: { message: "config file missing.yaml does not exist or cannot be read", user_error: true } });
  });
});
