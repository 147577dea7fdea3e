/**
 * The phase diagram of a sweep: DuckDB SQL over DIR/trials.parquet → DIR/phase_diagram.parquet,
 * one row per (facet, x, y) cell, and a terminal table per facet (rows y, columns x).
 */
import { existsSync } from 'node:fs';
import { rename } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import Table from 'cli-table3';
import { TRIAL_COLUMNS, TRIALS_FILE } from '../schemas/parquet.js';

export const DIAGRAM_FILE = 'phase_diagram.parquet';
/** The five final phases (docs/phases.md), in the order ties are broken (diverged first). */
export const PHASES = ['diverged', 'fitting', 'steady', 'diffusion', 'equilibrium'] as const;
export type Phase = (typeof PHASES)[number];
/** Short names of the phases in the terminal diagram. */
export const PHASE_SHORT: Readonly<Record<Phase, string>> = { diverged: 'div', fitting: 'fit', steady: 'std', diffusion: 'diff', equilibrium: 'DE' };

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
  share_steady: number;
  share_diffusion: number;
  share_equilibrium: number;
  /** Median step of the DE transition over the cell's trials that reached it (null if none). */
  median_t_equilibrium: number | null;
  /** Earliest and latest DE step over the cell's trials that reached it (the seeds' spread; null if none). */
  min_t_equilibrium: number | null;
  max_t_equilibrium: number | null;
  median_final_rel_l2: number | null;
  best_final_rel_l2: number | null;
  /** Largest final rel. L2 of the cell (with best_final_rel_l2, the seeds' spread). */
  worst_final_rel_l2: number | null;
  /** True when the y column is batch_size and every trial of the cell trained on full batches: its y value is shown as `full`. */
  y_full: boolean;
  /** The same for the x column. */
  x_full: boolean;
  /** The same for the facet column. */
  facet_full: boolean;
}

function column(flag: string, name: string): string {
  const known = TRIAL_COLUMNS.map((c) => c.name);
  if (!known.includes(name)) throw new Error(`${flag}: got ${JSON.stringify(name)}, expected a trials.parquet column: ${known.join(', ')}`);
  return `"${name}"`;
}

const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;
const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** The axis columns quoted for SQL, checked against TRIAL_COLUMNS. @throws Error naming the flag. */
function axisColumns(axes: DiagramAxes): { x: string; y: string; facet: string | null } {
  const x = column('--x', axes.x);
  const y = column('--y', axes.y);
  const facet = axes.facet ? column('--facet', axes.facet) : null;
  const named = [axes.x, axes.y, ...(axes.facet ? [axes.facet] : [])];
  if (new Set(named).size !== named.length) throw new Error(`--x, --y, --facet: got ${named.join(', ')}, expected three different columns`);
  return { x, y, facet };
}

/** SELECT of the diagram's cells over a trials.parquet file (done trials only), ordered by facet, y, x. */
function diagramSelect(trials: string, axes: DiagramAxes): string {
  const { x, y, facet } = axisColumns(axes);
  const shares = PHASES.map((p) => `avg(CASE WHEN final_phase = '${p}' THEN 1.0 ELSE 0.0 END) AS share_${p}`).join(',\n      ');
  return `
    SELECT ${facet ? `${facet}, ` : ''}${x}, ${y}, count(*)::INTEGER AS trials,
      ${shares},
      median(t_equilibrium)::DOUBLE AS median_t_equilibrium,
      min(t_equilibrium)::DOUBLE AS min_t_equilibrium,
      max(t_equilibrium)::DOUBLE AS max_t_equilibrium,
      median(final_rel_l2) AS median_final_rel_l2,
      min(final_rel_l2) AS best_final_rel_l2,
      max(final_rel_l2) AS worst_final_rel_l2
    FROM read_parquet(${sqlString(trials)}) WHERE status = 'done'
    GROUP BY ALL ORDER BY ${facet ? `${facet}, ` : ''}${y}, ${x}`;
}

/**
 * The cells of the diagram of DIR/trials.parquet, read on an open DuckDB connection (nothing written).
 * @throws Error naming the flag when an axis is not a trials.parquet column, or when DIR has no trials.parquet.
 */
export async function queryDiagram(conn: DuckDBConnection, dir: string, axes: DiagramAxes, from?: string): Promise<DiagramCell[]> {
  const trials = join(dir, TRIALS_FILE);
  if (!existsSync(trials)) throw new Error(`${dir}: no ${TRIALS_FILE} (run a sweep with --out ${dir} first)`);
  const source = from ?? `(${diagramSelect(trials, axes)})`;
  // A batch_size axis value is shown as `full` when every done trial of its cell trained on full batches.
  const named = [axes.x, axes.y, axes.facet].filter((c): c is string => c !== null);
  const full = (axis: string | null) =>
    axis === 'batch_size'
      ? `(SELECT bool_and(batch_full) FROM read_parquet(${sqlString(trials)}) t WHERE t.status = 'done' AND ${named.map((c) => `t."${c}" IS NOT DISTINCT FROM d."${c}"`).join(' AND ')})`
      : 'false';
  const rows = (await conn.runAndReadAll(`SELECT d.*, ${full(axes.x)} AS __x_full, ${full(axes.y)} AS __y_full, ${full(axes.facet)} AS __facet_full FROM ${source} d`)).getRowObjects();
  return rows.map((r) => ({
    facet: axes.facet ? r[axes.facet] : null, x: r[axes.x], y: r[axes.y], trials: Number(r.trials),
    share_diverged: Number(r.share_diverged), share_fitting: Number(r.share_fitting), share_steady: Number(r.share_steady),
    share_diffusion: Number(r.share_diffusion), share_equilibrium: Number(r.share_equilibrium),
    median_t_equilibrium: num(r.median_t_equilibrium), min_t_equilibrium: num(r.min_t_equilibrium), max_t_equilibrium: num(r.max_t_equilibrium),
    median_final_rel_l2: num(r.median_final_rel_l2), best_final_rel_l2: num(r.best_final_rel_l2), worst_final_rel_l2: num(r.worst_final_rel_l2),
    x_full: r.__x_full === true, y_full: r.__y_full === true, facet_full: r.__facet_full === true,
  }));
}

/**
 * Aggregates DIR/trials.parquet (done trials only) per (facet, x, y) cell and writes
 * DIR/phase_diagram.parquet (columns: the facet column (if any), the x and y columns under their
 * trials.parquet names, trials, share_<phase> for diverged, fitting,
 * steady, diffusion, equilibrium — shares of the cell's trials in [0, 1] —, median_t_equilibrium,
 * min_t_equilibrium, max_t_equilibrium (steps), median_final_rel_l2, best_final_rel_l2, worst_final_rel_l2). Replaced atomically.
 * @throws Error naming the flag when an axis is not a trials.parquet column, or when DIR has no trials.parquet.
 */
export async function buildDiagram(dir: string, axes: DiagramAxes): Promise<DiagramCell[]> {
  axisColumns(axes);
  const trials = join(dir, TRIALS_FILE);
  if (!existsSync(trials)) throw new Error(`${dir}: no ${TRIALS_FILE} (run a sweep with --out ${dir} first)`);
  const out = join(dir, DIAGRAM_FILE);
  const tmp = `${out}.tmp-${process.pid}`;
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    await conn.run(`COPY (${diagramSelect(trials, axes)}) TO ${sqlString(tmp)} (FORMAT parquet, COMPRESSION zstd)`);
    await rename(tmp, out);
    return await queryDiagram(conn, dir, axes, `read_parquet(${sqlString(out)})`);
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}

const fmt = (v: number | null, digits = 2) => (v === null || !Number.isFinite(v) ? '-' : v.toExponential(digits - 1));

/** The dominant phase of a cell: the largest share; ties go to the first in PHASES order, so a cell split between diverged and anything is diverged. */
export function dominantPhase(c: DiagramCell): { phase: Phase; count: number } {
  let best: Phase = PHASES[0];
  for (const p of PHASES) if (c[`share_${p}`] > c[`share_${best}`]) best = p;
  return { phase: best, count: Math.round(c[`share_${best}`] * c.trials) };
}

/** The dominant phase of a cell with its count of trials (seeds), e.g. `DE 3/4`. */
function dominant(c: DiagramCell): string {
  const d = dominantPhase(c);
  return `${PHASE_SHORT[d.phase]} ${d.count}/${c.trials}`;
}

/** The cell's DE step: the median, with the seeds' range when they differ, e.g. `2800 (2500–3300)`. */
export function deRange(c: Pick<DiagramCell, 'median_t_equilibrium' | 'min_t_equilibrium' | 'max_t_equilibrium'>): string {
  if (c.median_t_equilibrium === null) return '-';
  return c.min_t_equilibrium !== null && c.max_t_equilibrium !== null && c.min_t_equilibrium !== c.max_t_equilibrium
    ? `${c.median_t_equilibrium} (${c.min_t_equilibrium}–${c.max_t_equilibrium})`
    : String(c.median_t_equilibrium);
}

/** An axis value as the diagram shows it: `full` for a full batch, numbers short (1e-3, 0.01, 128). */
export function axisLabel(v: unknown, full = false): string {
  if (full) return 'full';
  if (typeof v === 'number' && Number.isFinite(v) && v !== 0 && (Math.abs(v) < 1e-2 || Math.abs(v) >= 1e5)) return v.toExponential().replace(/\.?0+e/, 'e').replace('e+', 'e');
  return String(v);
}

/**
 * Labels for the distinct values of one axis: numbers rounded to the fewest significant digits, 3 to
 * 12, that keep them distinct (a logspace lr of 1.58489319246e-4 reads 1.58e-4); other values as
 * `axisLabel`. Keyed by String(value).
 */
export function axisLabels(values: readonly unknown[], fullOf: (v: unknown) => boolean): Map<string, string> {
  const nums = values.filter((v): v is number => typeof v === 'number' && Number.isFinite(v) && !Number.isInteger(v));
  let digits = 3;
  while (digits < 12 && new Set(nums.map((v) => v.toPrecision(digits))).size < new Set(nums).size) digits++;
  return new Map(values.map((v) => [String(v), typeof v === 'number' && nums.includes(v) && !fullOf(v) ? axisLabel(Number(v.toPrecision(digits))) : axisLabel(v, fullOf(v))]));
}

/**
 * The distinct values of an axis (by String(value)), ascending when all are numbers (refinement adds
 * values between the grid's, in rows that others lack), else in the order first seen.
 */
function axisValues(values: readonly unknown[]): unknown[] {
  const distinct = [...new Map(values.map((v) => [String(v), v])).values()];
  if (distinct.every((v) => typeof v === 'number')) (distinct as number[]).sort((a, b) => a - b);
  return distinct;
}

/** The one-line legend under the terminal diagram. */
export const DIAGRAM_LEGEND =
  'cell: dominant final phase (div = diverged, fit = fitting, std = steady, diff = diffusion, DE = diffusion equilibrium) with its count of the cell\'s trials (seeds), median DE step (the seeds\' range), median final rel. L2';

/**
 * Renders the diagram as one table per facet value: rows = y values, columns = x values; a cell
 * shows its dominant phase (count of trials), the median step of DE and the median final rel_l2.
 */
export function renderDiagram(cells: DiagramCell[], axes: DiagramAxes): string {
  const facets = [...new Set(cells.map((c) => String(c.facet)))];
  const parts: string[] = [];
  for (const f of facets) {
    const fc = cells.filter((c) => String(c.facet) === f);
    const xValues = axisValues(fc.map((c) => c.x));
    const yValues = axisValues(fc.map((c) => c.y));
    const xs = xValues.map(String);
    const ys = yValues.map(String);
    const xFull = (v: unknown) => fc.every((k) => String(k.x) !== String(v) || k.x_full);
    const yFull = (v: unknown) => fc.every((k) => String(k.y) !== String(v) || k.y_full);
    const xLabels = axisLabels(xValues, xFull);
    const yLabels = axisLabels(yValues, yFull);
    const xLabel = (x: string) => xLabels.get(x)!;
    const yLabel = (y: string) => yLabels.get(y)!;
    const table = new Table({ head: [`${axes.y} \\ ${axes.x}`, ...xs.map(xLabel)], style: { head: [], border: [] } });
    for (const y of ys) {
      table.push([
        yLabel(y),
        ...xs.map((x) => {
          const c = fc.find((k) => String(k.x) === x && String(k.y) === y);
          return c ? `${dominant(c)}\nt_DE ${deRange(c)}\nrel_l2 ${fmt(c.median_final_rel_l2)}` : '';
        }),
      ]);
    }
    parts.push(`${axes.facet ? `${axes.facet} = ${axisLabel(fc[0]!.facet, fc.every((k) => k.facet_full))}\n` : ''}${table.toString()}`);
  }
  return parts.length ? `${parts.join('\n\n')}\n${DIAGRAM_LEGEND}\n` : '(no done trials)\n';
}

/** An axis name in boundary lines (`batch_size` → `batch`). */
const axisName = (column: string) => (column === 'batch_size' ? 'batch' : column);

/** A boundary coordinate: 2 significant digits (`6.3e-4`, `0.25`, `128`), or `full`. */
const boundaryValue = (v: unknown, full: boolean) => (full ? 'full' : axisLabel(typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(2)) : v));

/**
 * The phase boundaries of the diagram: per facet, every pair of neighbouring cells (consecutive
 * along x at equal y, or along y at equal x) whose dominant phases differ, one line each, e.g.
 * `vanilla, batch full: diffusion → equilibrium between lr 6.3e-4 and 7.9e-4`. '' when there are none.
 */
export function renderBoundaries(cells: DiagramCell[], axes: DiagramAxes): string {
  const lines: string[] = [];
  const facets = [...new Set(cells.map((c) => String(c.facet)))];
  for (const f of facets) {
    const fc = cells.filter((c) => String(c.facet) === f);
    const prefix = axes.facet ? `${axisLabel(fc[0]!.facet, fc[0]!.facet_full)}, ` : '';
    for (const [along, across] of [['x', 'y'], ['y', 'x']] as const) {
      const name = { x: axes.x, y: axes.y };
      const lineValues = [...new Set(fc.map((c) => String(c[across])))];
      for (const lv of lineValues) {
        const line = fc.filter((c) => String(c[across]) === lv).sort((a, b) => Number(a[along]) - Number(b[along]));
        for (let i = 1; i < line.length; i++) {
          const a = line[i - 1]!;
          const b = line[i]!;
          const pa = dominantPhase(a).phase;
          const pb = dominantPhase(b).phase;
          if (pa === pb) continue;
          const full = (c: DiagramCell, axis: 'x' | 'y') => (axis === 'x' ? c.x_full : c.y_full);
          lines.push(
            `${prefix}${axisName(name[across])} ${boundaryValue(a[across], full(a, across))}: ${pa} → ${pb} between ${axisName(name[along])} ${boundaryValue(a[along], full(a, along))} and ${boundaryValue(b[along], full(b, along))}`,
          );
        }
      }
    }
  }
  return lines.length ? `phase boundaries (neighbouring cells whose dominant phases differ):\n${lines.map((l) => `  ${l}`).join('\n')}\n` : '';
}
