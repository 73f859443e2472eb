import { AuthenticationError, PermissionDeniedError } from "openai";
import { LLM_ROLE_NAMES, type LlmRoleName } from "../config/llm-schema.ts";
import type { ResolvedConfig } from "../config/load.ts";
import { isUserError } from "../errors.ts";
import { describeError, LlmEndpoint } from "./endpoint.ts";
import { plural } from "../util/plural.ts";

const DOCTOR_TIMEOUT_S = 10;

/** One check of one role; `fix` says what to do when it failed. */
export interface DoctorCheck {
  check: "key" | "reachable" | "model";
  ok: boolean;
  message: string;
  fix?: string;
}

export interface RoleDiagnosis {
  role: LlmRoleName;
  model: string;
  base_url: string;
  checks: DoctorCheck[];
}

/**
 * Checks every configured role: its key is in the environment (when it names one), its endpoint answers
 * `GET /models`, and the configured model is among those listed. Never prints or returns the key.
 */
export async function diagnoseEndpoints(config: ResolvedConfig, env: NodeJS.ProcessEnv = process.env): Promise<RoleDiagnosis[]> {
  const out: RoleDiagnosis[] = [];
  for (const role of LLM_ROLE_NAMES) {
    const rc = config.llm[role];
    if (!rc) continue;
    const checks: DoctorCheck[] = [];
    out.push({ role, model: rc.model, base_url: rc.base_url, checks });

    if (rc.api_key_env === undefined) {
      const openai = new URL(rc.base_url).hostname.endsWith("openai.com");
      checks.push(
        openai
          ? {
              check: "key",
              ok: false,
              message: "no key configured, and OpenAI needs one",
              fix: `set llm.${role}.api_key_env: OPENAI_API_KEY and export that variable`,
            }
          : { check: "key", ok: true, message: "no key configured (fine for a local server without one)" },
      );
    }
    let endpoint: LlmEndpoint;
    try {
      // A hung server should not hold the doctor for the full request timeout.
      endpoint = new LlmEndpoint(role, { ...rc, timeout_s: Math.min(rc.timeout_s, DOCTOR_TIMEOUT_S) }, env);
      if (rc.api_key_env !== undefined) checks.push({ check: "key", ok: true, message: `${rc.api_key_env} is set` });
    } catch (error) {
      if (!isUserError(error)) throw error;
      checks.push({ check: "key", ok: false, message: `${rc.api_key_env} is not set`, fix: `export ${rc.api_key_env}=<your key>` });
      continue;
    }

    let models: string[];
    try {
      models = await endpoint.listModels();
      checks.push({ check: "reachable", ok: true, message: `${rc.base_url} answers (${plural(models.length, "model")})` });
    } catch (error) {
      const auth = error instanceof AuthenticationError || error instanceof PermissionDeniedError;
      checks.push({
        check: "reachable",
        ok: false,
        message: endpoint.redact(describeError(error, role, rc)),
        fix: !auth
          ? `start the server, or correct llm.${role}.base_url (it should end in /v1 for most servers)`
          : rc.api_key_env
            ? `the server rejected the key in ${rc.api_key_env}: export a valid key`
            : `the server wants a key: set llm.${role}.api_key_env to the variable that holds it`,
      });
      continue;
    }
    if (models.includes(rc.model)) checks.push({ check: "model", ok: true, message: `${rc.model} is served` });
    else {
      const served = models.slice(0, 10).join(", ") + (models.length > 10 ? ", …" : "");
      checks.push({
        check: "model",
        ok: false,
        message: `${rc.model} is not among the served models${models.length > 0 ? ` (${served})` : ""}`,
        fix: `set llm.${role}.model to a served model, or serve ${rc.model} there`,
      });
    }
  }
  return out;
}

/** The report `inoculant doctor` prints: one line per check, with the fix under each failed one. */
export function formatDiagnosis(roles: readonly RoleDiagnosis[]): string {
  if (roles.length === 0) return "no LLM roles configured (add llm.generator and/or llm.judge)\n";
  const lines: string[] = [];
  for (const r of roles) {
    lines.push(`llm.${r.role}: ${r.model} at ${r.base_url}`);
    for (const c of r.checks) {
      lines.push(`  ${c.ok ? "ok " : "BAD"} ${c.check}: ${c.message}`);
      if (!c.ok && c.fix) lines.push(`      fix: ${c.fix}`);
    }
  }
  return `${lines.join("\n")}\n`;
}

export function diagnosisOk(roles: readonly RoleDiagnosis[]): boolean {
  return roles.every((r) => r.checks.every((c) => c.ok));
}
