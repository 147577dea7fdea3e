/**
 * `phasemap query DIR [SQL]`: DuckDB over a results DIR with three views —
 *
 * - `trials`: DIR/trials.parquet, one row per trial;
 * - `metrics`: the logged rows of each trial's **completed attempt** only (the attempt trials.parquet
 *   names: `trials.attempts`), one row per (trial, logged step) — what a researcher wants by default;
 * - `metrics_all`: every attempt's rows, interrupted ones included (`attempt` tells them apart).
 *
 * Without SQL it lists the views and their columns.
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import Table from 'cli-table3';
import { METRICS_DIR, TRIALS_FILE } from '../schemas/parquet.js';

export type QueryFormat = 'table' | 'csv' | 'json';

const sql = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** True when DIR holds at least one metrics part. */
async function hasParts(dir: string): Promise<boolean> {
  const root = join(dir, METRICS_DIR);
  if (!existsSync(root)) return false;
  for (const t of await readdir(root)) for (const a of await readdir(join(root, t)).catch(() => [])) if ((await readdir(join(root, t, a)).catch(() => [])).some((f) => f.endsWith('.parquet'))) return true;
  return false;
}

/**
 * Opens an in-memory DuckDB with the views `trials`, `metrics` and `metrics_all` over DIR (module
 * header). Before any metrics part exists, the metrics views are empty with the columns of trials'
 * ids only.
 * @throws Error naming DIR when it has no trials.parquet.
 */
export async function openResults(dir: string): Promise<{ conn: DuckDBConnection; close: () => void }> {
  const trials = join(dir, TRIALS_FILE);
  if (!existsSync(trials)) throw new Error(`${dir}: no ${TRIALS_FILE} (is it a phasemap results DIR? run a sweep with --out ${dir} first)`);
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  await conn.run(`CREATE VIEW trials AS SELECT * FROM read_parquet(${sql(trials)})`);
  if (await hasParts(dir)) {
    const glob = join(dir, METRICS_DIR, '*', '*', '*.parquet');
    await conn.run(`CREATE VIEW metrics_all AS SELECT * FROM read_parquet(${sql(glob)}, hive_partitioning = true, union_by_name = true)`);
  } else await conn.run(`CREATE VIEW metrics_all AS SELECT NULL::VARCHAR AS trial_id, NULL::BIGINT AS attempt, NULL::INTEGER AS step WHERE false`);
  await conn.run(`CREATE VIEW metrics AS SELECT m.* FROM metrics_all m JOIN trials t ON m.trial_id = t.trial_id AND m.attempt = t.attempts`);
  return {
    conn,
    close: () => {
      conn.closeSync();
      db.closeSync();
    },
  };
}

/** A value as text for the table and CSV outputs (lists as [a, b], null as empty). */
function text(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (Array.isArray(v)) return `[${v.map(text).join(', ')}]`;
  if (v instanceof Date) return v.toISOString();
  return String(v);
}

const csvField = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);

/** JSON-safe values: BIGINT as a number when exact, else as a string. */
function jsonValue(v: unknown): unknown {
  if (typeof v === 'bigint') return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
  if (Array.isArray(v)) return v.map(jsonValue);
  return v;
}

/**
 * Runs `query` (or, without one, describes the views) on DIR and returns it formatted.
 * @param format `table` (aligned, for the terminal), `csv` (header + rows) or `json` (an array of objects).
 * @throws Error naming DIR, or DuckDB's error for bad SQL.
 */
export async function runQuery(dir: string, query: string | undefined, format: QueryFormat = 'table'): Promise<string> {
  const { conn, close } = await openResults(dir);
  try {
    const q = query ?? `SELECT table_name AS view, column_name AS "column", data_type AS type FROM information_schema.columns WHERE table_name IN ('trials', 'metrics', 'metrics_all') ORDER BY array_position(['trials', 'metrics', 'metrics_all'], table_name), ordinal_position`;
    const reader = await conn.runAndReadAll(q);
    const names = reader.columnNames();
    const rows = reader.getRowsJS() as unknown[][];
    if (format === 'json') return `${JSON.stringify(rows.map((r) => Object.fromEntries(names.map((n, i) => [n, jsonValue(r[i])]))))}\n`;
    if (format === 'csv') return [names, ...rows.map((r) => r.map(text))].map((r) => r.map(csvField).join(',')).join('\n') + '\n';
    const table = new Table({ head: names, style: { head: [], border: [] }, chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' } });
    for (const r of rows) table.push(r.map(text));
    return `${table.toString()}\n(${rows.length} row${rows.length === 1 ? '' : 's'})\n`;
  } finally {
    close();
  }
}
