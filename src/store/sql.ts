/** SQL literal helpers. Values never reach SQL text any other way. */

export function sqlString(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

export function sqlIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function sqlStringList(values: readonly string[]): string {
  return `[${values.map(sqlString).join(", ")}]::VARCHAR[]`;
}

/**
 * A reproducible pseudo-random key from the seed and a row id: md5 is stable across DuckDB versions and
 * platforms, unlike hash() or random().
 */
export function seededKeySql(seed: number, salt: string, rowIdExpr: string): string {
  return `md5_number(${sqlString(`${seed}:${salt}:`)} || ${rowIdExpr})`;
}
