/**
 * The phase diagram of a sweep: DuckDB SQL over DIR/trials.parquet → DIR/phase_diagram.parquet,
 * one row per (facet, x, y) cell, and a terminal table per facet (rows y, columns x).
 */
import { existsSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import Table from 'cli-table3';
import { TRIAL_COLUMNS, TRIALS_FILE } from '../schemas/parquet.js';

export const DIAGRAM_FILE = 'phase_diagram.parquet';
const PHASES = ['diverged', 'fitting', 'diffusion', 'equilibrium'] as const;

export interface DiagramAxes {
  /** trials.parquet column on the horizontal axis (default lr). */
  x: string;
  /** trials.parquet column on the vertical axis (default batch_size). */
  y: string;
  /** trials.parquet column that splits the diagram into one table per value (default strategy); null = none. */
  facet: string | null;
}

/** One cell of the diagram (a row of phase_diagram.parquet, whose axis columns carry their trials.parquet names). */
export interface DiagramCell {
  /** Value of the facet column (null without a facet). */
  facet: unknown;
  /** Value of the x column. */
  x: unknown;
  /** Value of the y column. */
  y: unknown;
  /** Done trials in the cell. */
  trials: number;
  share_diverged: number;
  share_fitting: number;
  share_diffusion: number;
  share_equilibrium: number;
  /** Median step of the DE transition over the cell's trials that reached it (null if none). */
  median_t_equilibrium: number | null;
  median_final_rel_l2: number | null;
  best_final_rel_l2: number | null;
}

function column(flag: string, name: string): string {
  const known = TRIAL_COLUMNS.map((c) => c.name);
  if (!known.includes(name)) throw new Error(`${flag}: got ${JSON.stringify(name)}, expected a trials.parquet column: ${known.join(', ')}`);
  return `"${name}"`;
}

const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;
const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/**
 * Aggregates DIR/trials.parquet (done trials only) per (facet, x, y) cell and writes
 * DIR/phase_diagram.parquet (columns: the facet column (if any), the x and y columns under their
 * trials.parquet names, trials, share_<phase> for diverged, fitting,
 * diffusion, equilibrium — shares of the cell's trials in [0, 1] —, median_t_equilibrium (steps),
 * median_final_rel_l2, best_final_rel_l2). Replaced atomically.
 * @throws Error naming the flag when an axis is not a trials.parquet column, or when DIR has no trials.parquet.
 */
export async function buildDiagram(dir: string, axes: DiagramAxes): Promise<DiagramCell[]> {
  const x = column('--x', axes.x);
  const y = column('--y', axes.y);
  const facet = axes.facet ? column('--facet', axes.facet) : null;
  const named = [axes.x, axes.y, ...(axes.facet ? [axes.facet] : [])];
  if (new Set(named).size !== named.length) throw new Error(`--x, --y, --facet: got ${named.join(', ')}, expected three different columns`);
  const trials = join(dir, TRIALS_FILE);
  if (!existsSync(trials)) throw new Error(`${dir}: no ${TRIALS_FILE} (run a sweep with --out ${dir} first)`);
  const out = join(dir, DIAGRAM_FILE);
  const tmp = `${out}.tmp-${process.pid}`;
  const shares = PHASES.map((p) => `avg(CASE WHEN final_phase = '${p}' THEN 1.0 ELSE 0.0 END) AS share_${p}`).join(',\n      ');
  const select = `
    SELECT ${facet ? `${facet}, ` : ''}${x}, ${y}, count(*)::INTEGER AS trials,
      ${shares},
      median(t_equilibrium)::DOUBLE AS median_t_equilibrium,
      median(final_rel_l2) AS median_final_rel_l2,
      min(final_rel_l2) AS best_final_rel_l2
    FROM read_parquet(${sqlString(trials)}) WHERE status = 'done'
    GROUP BY ALL ORDER BY ${facet ? `${facet}, ` : ''}${y}, ${x}`;
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    await conn.run(`COPY (${select}) TO ${sqlString(tmp)} (FORMAT parquet, COMPRESSION zstd)`);
    await rename(tmp, out);
    const rows = (await conn.runAndReadAll(`SELECT * FROM read_parquet(${sqlString(out)})`)).getRowObjects();
    return rows.map((r) => ({
      facet: axes.facet ? r[axes.facet] : null, x: r[axes.x], y: r[axes.y], trials: Number(r.trials),
      share_diverged: Number(r.share_diverged), share_fitting: Number(r.share_fitting),
      share_diffusion: Number(r.share_diffusion), share_equilibrium: Number(r.share_equilibrium),
      median_t_equilibrium: num(r.median_t_equilibrium), median_final_rel_l2: num(r.median_final_rel_l2), best_final_rel_l2: num(r.best_final_rel_l2),
    }));
  } finally {
    conn.closeSync();
  }
}

const fmt = (v: number | null, digits = 2) => (v === null || !Number.isFinite(v) ? '-' : v.toExponential(digits - 1));

/** The dominant phase of a cell with its share, e.g. `DE 3/4`. */
function dominant(c: DiagramCell): string {
  const short = { diverged: 'div', fitting: 'fit', diffusion: 'diff', equilibrium: 'DE' } as const;
  // Ties go to the first in PHASES order, so a cell split between diverged and anything shows diverged.
  let best: (typeof PHASES)[number] = PHASES[0];
  for (const p of PHASES) if (c[`share_${p}`] > c[`share_${best}`]) best = p;
  return `${short[best]} ${Math.round(c[`share_${best}`] * c.trials)}/${c.trials}`;
}

/**
 * Renders the diagram as one table per facet value: rows = y values, columns = x values; a cell
 * shows its dominant phase (count of trials), the median step of DE and the median final rel_l2.
 */
export function renderDiagram(cells: DiagramCell[], axes: DiagramAxes): string {
  const facets = [...new Set(cells.map((c) => String(c.facet)))];
  const parts: string[] = [];
  for (const f of facets) {
    const fc = cells.filter((c) => String(c.facet) === f);
    const xs = [...new Set(fc.map((c) => String(c.x)))];
    const ys = [...new Set(fc.map((c) => String(c.y)))];
    const table = new Table({ head: [`${axes.y} \\ ${axes.x}`, ...xs], style: { head: [], border: [] } });
    for (const y of ys) {
      table.push([
        y,
        ...xs.map((x) => {
          const c = fc.find((k) => String(k.x) === x && String(k.y) === y);
          return c ? `${dominant(c)}\nt_DE ${c.median_t_equilibrium ?? '-'}\nrel_l2 ${fmt(c.median_final_rel_l2)}` : '';
        }),
      ]);
    }
    parts.push(`${axes.facet ? `${axes.facet} = ${f}\n` : ''}${table.toString()}`);
  }
  return parts.length ? `${parts.join('\n\n')}\n` : '(no done trials)\n';
}
