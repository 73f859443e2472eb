import { DuckDBInstance } from "@duckdb/node-api";
import { describe, expect, it } from "vitest";
import { sqlString } from "../src/store/sql.ts";
import { allPositiveTraits, POSITIVE_TRAIT_NAMES, positiveTrait } from "../src/traits/registry.ts";

/** Conformance suite every positive trait must pass. */
describe.each(allPositiveTraits().map((t) => [t.name, t] as const))("positive trait %s", (_name, trait) => {
  const texts = ["Plain answer.", "Multi\nline\twith \"quotes\" and 'apostrophes'", "Ünïcödé ß and emoji 🙂", ""];

  async function apply(text: string): Promise<string> {
    const instance = await DuckDBInstance.create(":memory:");
    const db = await instance.connect();
    try {
      const reader = await db.runAndReadAll(`SELECT ${trait.sqlTransform(sqlString(text))} AS out`);
      return String(reader.getRowObjectsJS()[0]!.out);
    } finally {
      db.closeSync();
      instance.closeSync();
    }
  }

  it("has a description of the wanted trait for later stages", () => {
    expect(trait.description.length).toBeGreaterThan(10);
  });

  it("is deterministic and keeps text a string of similar length", async () => {
    for (const text of texts) {
      const a = await apply(text);
      expect(await apply(text)).toBe(a);
      expect(Math.abs(a.length - text.length)).toBeLessThanOrEqual(2);
    }
  });

  it("is idempotent: applying it to its own output changes nothing", async () => {
    for (const text of texts) {
      const once = await apply(text);
      expect(await apply(once)).toBe(once);
    }
  });
});

describe("trait registry", () => {
  it("has every name the config accepts", () => {
    for (const name of POSITIVE_TRAIT_NAMES) expect(positiveTrait(name).name).toBe(name);
  });
});
