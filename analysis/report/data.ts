/**
 * What a report shows, read from a results DIR: the sweep (sweep.json), every trial (trials.parquet),
 * the diagram's cells (analysis/diagram.ts) and the logged series of each done trial's completed
 * attempt (DIR/metrics, read with DuckDB), thinned for display.
 *
 * **Display thinning** (the data on disk are never thinned): a trial's series with more than P
 * logged points keeps P of them: its first and last point, the points at its t_diffusion and
 * t_equilibrium, and, in each of P/2 − 2 buckets of equal width in log10(step + 1) (the figures' x
 * axis is log), the points with the lowest and the highest value of the series' first column (so
 * spikes and dips stay visible). P = clamp(⌊40,000 / (done trials × lines per trial)⌋, 8, 150) (a
 * panel is at most 200 px wide: 150 points per line is finer than its pixels), the
 * lines per trial of the table's figures being 2 for SNR (dots and line), 1 for rel_l2, 3 for the
 * loss parts and depth + 1 for the diagnostics (one per weight matrix): ~40,000 points per figure.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api';
import { METRICS_DIR, SWEEP_FILE, TRIAL_COLUMNS, TRIALS_FILE, type TrialRecord } from '../../schemas/parquet.js';
import type { AnalysisConfig, TrialConfig } from '../../schemas/sweep.js';
import { axisLabel, dominantPhase, queryDiagram, type DiagramAxes, type DiagramCell, type Phase } from '../diagram.js';
import { DEFAULT_PHASE_PARAMS, snrPoints } from '../phases.js';

/** One trial as the report shows it. */
export interface ReportTrial {
  trial_id: string;
  status: string;
  /** The attempt that finished (its metrics are the ones shown). */
  attempts: number;
  /** Grid values from sweep.json (dotted path → value); {} for a trial not in the grid. */
  grid: Record<string, unknown>;
  seed: number | null;
  strategy: string | null;
  problem: string | null;
  /** Index into ReportData.cells of the diagram cell the trial belongs to; -1 when not done (not in the diagram). */
  cell: number;
  final_phase: Phase | null;
  t_diffusion: number | null;
  t_equilibrium: number | null;
  final_loss: number | null;
  final_rel_l2: number | null;
  wall_seconds: number | null;
  host: string | null;
  device: string | null;
  backend: string | null;
  fused: number | null;
  error: string | null;
  /** True when its config has diagnostics (an SNR series). */
  diagnostics: boolean;
  /** The refinement round that added it (sweep.json's `refine_round`); null for a grid trial. */
  refine_round: number | null;
  /** Its values of the diagram's facet (null without one), x and y columns (a full batch as its size N). */
  at: { facet: unknown; x: unknown; y: unknown };
}

/** One diagram cell with its labels and its dominant phase. */
export interface ReportCell extends DiagramCell {
  xLabel: string;
  yLabel: string;
  facetLabel: string;
  /** Dominant final phase and how many of the cell's trials are in it. */
  phase: Phase;
  count: number;
  /** Row of small panels this cell's curves go in (facet and y), and its column (x). */
  row: string;
  col: string;
}

/**
 * Column-wise series of all shown trials, one entry per kept point: `t` the trial's index in
 * ReportData.trials, `step` the step, then one array per column (null where not logged).
 */
export interface SeriesTable {
  t: number[];
  step: number[];
  cols: Record<string, (number | null)[]>;
}

export interface ReportData {
  sweep: string;
  description: string | null;
  /** Problems of the sweep's trials, e.g. `helmholtz2d (a1 = 1, a2 = 4, k = 1)`. */
  problems: string[];
  axes: DiagramAxes;
  cells: ReportCell[];
  /** Row and column labels of the small-panel grid, in display order. */
  rows: string[];
  cols: string[];
  trials: ReportTrial[];
  counts: { total: number; done: number; failed: number; cancelled: number; running: number; queued: number };
  /** snr: raw log10 SNR of each logged point and the smoothed series the phase detector reads (null where a point was dropped as meaningless). */
  snr: SeriesTable;
  /** rel_l2 at its logged points. */
  error: SeriesTable;
  /** loss, loss_residual, loss_boundary. */
  loss: SeriesTable;
  /** grad_order, snr_adam, res_homogeneity, lambda_mean, lambda_max, and per layer snr_layers.<l>, saturation_layers.<l>, entropy_layers.<l>. */
  signals: SeriesTable;
  /** Largest N (collocation points) of the sweep's trials: log2 N bounds the entropy estimate. */
  maxCollocation: number;
  /** Layers of the per-layer signals: counts of weight matrices (snr_layers) and hidden layers (saturation, entropy). */
  layers: { snr: number; hidden: number };
  /** Display thinning: most points kept per trial and series, per table (module header). */
  points: { snr: number; error: number; loss: number; signals: number };
  analysis: Partial<AnalysisConfig>;
  /**
   * Every trial sweep.json plans (done or not, listed in trials.parquet or not): its values of the
   * diagram's facet, x and y columns (from its config; null where a column does not come from the
   * config) and its refinement round (null for a grid trial).
   */
  planned: Array<{ at: { facet: unknown; x: unknown; y: unknown }; refine_round: number | null }>;
}

export interface LoadOptions {
  axes?: DiagramAxes;
  /** Display thinning: points per trial and series (module header); default clamp(⌊40,000 / (done trials × lines per trial)⌋, 8, 150). */
  pointsPerTrial?: number;
}

interface SweepFile {
  name: string;
  description?: string;
  analysis?: AnalysisConfig;
  trials: Array<{ trial_id: string; config: TrialConfig; grid_values?: Record<string, unknown>; refine_round?: number }>;
}

const sql = (s: string) => `'${s.replace(/'/g, "''")}'`;
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const strOrNull = (v: unknown): string | null => (v === null || v === undefined ? null : String(v));
const key = (...v: unknown[]) => JSON.stringify(v.map((x) => (x === null || x === undefined ? null : String(x))));

function problemLabel(c: TrialConfig): string {
  const p = c.problem as unknown as Record<string, unknown>;
  // A problem module's parameters are its config keys besides the common fields (docs/problems.md).
  const common = new Set(['name', 'module', 'module_hash', 'n_collocation', 'n_boundary', 'w_bc', 'eval_grid', 'n_initial', 'w_ic']);
  const names = typeof p.module === 'string' ? Object.keys(p).filter((k) => !common.has(k)) : ['a1', 'a2', 'k', 'nu', 'd'];
  const params = names.filter((k) => typeof p[k] === 'number').map((k) => `${k} = ${p[k]}`);
  return `${c.problem.name}${params.length ? ` (${params.join(', ')})` : ''}`;
}

/** The value of a trials.parquet column computed from a trial's config alone (null when it needs more than the config). */
function configColumn(name: string | null, config: TrialConfig): unknown {
  const c = name === null ? undefined : TRIAL_COLUMNS.find((k) => k.name === name);
  if (!c) return null;
  try {
    return c.get({ config } as TrialRecord) ?? null;
  } catch {
    return null;
  }
}

/** Indices of the points to keep (module header): first, last, `must` and per log-step bucket the min and max of `v`. */
export function thinIndices(step: number[], v: (number | null)[], budget: number, must: Set<number>): number[] {
  const n = step.length;
  if (n <= budget) return [...Array(n).keys()];
  const keep = new Set<number>([0, n - 1]);
  for (let i = 0; i < n; i++) if (must.has(step[i]!)) keep.add(i);
  const buckets = Math.max(1, Math.floor(budget / 2) - 2);
  const lo = Math.log10(step[0]! + 1);
  const hi = Math.log10(step[n - 1]! + 1);
  const width = (hi - lo) / buckets || 1;
  const minI = new Array<number>(buckets).fill(-1);
  const maxI = new Array<number>(buckets).fill(-1);
  for (let i = 0; i < n; i++) {
    const b = Math.min(buckets - 1, Math.floor((Math.log10(step[i]! + 1) - lo) / width));
    const x = v[i];
    if (x === null || x === undefined || !Number.isFinite(x)) continue;
    if (minI[b]! < 0 || x < v[minI[b]!]!) minI[b] = i;
    if (maxI[b]! < 0 || x > v[maxI[b]!]!) maxI[b] = i;
  }
  for (let b = 0; b < buckets; b++) {
    if (minI[b]! >= 0) keep.add(minI[b]!);
    if (maxI[b]! >= 0) keep.add(maxI[b]!);
  }
  return [...keep].sort((a, b) => a - b);
}

function emptyTable(names: string[]): SeriesTable {
  return { t: [], step: [], cols: Object.fromEntries(names.map((n) => [n, []])) };
}

/** Four significant digits: the figures need no more, and the page stays small. */
const round = (v: number | null | undefined): number | null => (v === null || v === undefined || !Number.isFinite(v) ? null : Number(v.toPrecision(4)));

function push(table: SeriesTable, t: number, step: number[], cols: Record<string, (number | null)[]>, idx: number[]): void {
  for (const i of idx) {
    table.t.push(t);
    table.step.push(step[i]!);
    for (const [name, v] of Object.entries(cols)) table.cols[name]!.push(round(v[i]));
  }
}

/** Rows (trial, step) that hold a value of `col`, as index arrays into the trial's rows. */
function where(rows: number[], col: (number | null)[]): number[] {
  return rows.filter((i) => col[i] !== null && col[i] !== undefined);
}

/**
 * The columns of the metrics parts, read from one part of one shown trial (parts of one DIR share
 * their schema; a column that only some parts lack reads as null there); empty when there is none.
 */
async function metricColumns(conn: DuckDBConnection, dir: string, shown: ReportTrial[]): Promise<Set<string>> {
  for (const t of shown) {
    const folder = join(dir, METRICS_DIR, `trial_id=${t.trial_id}`, `attempt=${t.attempts}`);
    const part = existsSync(folder) ? (await readdir(folder)).find((f) => f.endsWith('.parquet')) : undefined;
    if (!part) continue;
    const desc = (await conn.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet(${sql(join(folder, part))})`)).getRowObjects();
    return new Set(desc.map((r) => String(r.column_name)));
  }
  return new Set();
}

/**
 * Reads what the report shows from DIR (module header).
 * @throws Error when DIR has no trials.parquet or sweep.json, or an axis is not a trials.parquet column (naming the flag).
 */
export async function loadReportData(dir: string, opts: LoadOptions = {}): Promise<ReportData> {
  const axes = opts.axes ?? { x: 'lr', y: 'batch_size', facet: 'strategy' };
  const sweepPath = join(dir, SWEEP_FILE);
  if (!existsSync(sweepPath)) throw new Error(`${dir}: no ${SWEEP_FILE} (is it a phasemap results DIR?)`);
  const file = JSON.parse(await readFile(sweepPath, 'utf8')) as SweepFile;
  const byId = new Map(file.trials.map((t) => [t.trial_id, t]));
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    const diagram = await queryDiagram(conn, dir, axes);
    const trialsPath = join(dir, TRIALS_FILE);
    const rows = (await conn.runAndReadAll(`SELECT * FROM read_parquet(${sql(trialsPath)}) ORDER BY trial_id`)).getRowObjectsJS();

    // Cells, their labels and the small-panel grid.
    const cellIndex = new Map<string, number>();
    const cells: ReportCell[] = diagram.map((c, i) => {
      cellIndex.set(key(c.facet, c.x, c.y), i);
      const d = dominantPhase(c);
      const xLabel = axisLabel(c.x, c.x_full);
      const yLabel = axisLabel(c.y, c.y_full);
      const facetLabel = axes.facet ? `${axes.facet} ${axisLabel(c.facet, c.facet_full)}` : '';
      return { ...c, xLabel, yLabel, facetLabel, phase: d.phase, count: d.count, row: `${facetLabel ? `${facetLabel} · ` : ''}${axes.y} ${yLabel}`, col: `${axes.x} ${xLabel}` };
    });
    // Rows: by facet, then y from the largest (full batch on top, as in the diagram figure); columns by x.
    const order = (v: unknown) => (typeof v === 'number' ? v : Number.NaN);
    const byNum = (a: unknown, b: unknown) => (Number.isNaN(order(a)) || Number.isNaN(order(b)) ? String(a).localeCompare(String(b)) : order(a) - order(b));
    const rowList = [...cells].sort((a, b) => String(a.facet).localeCompare(String(b.facet)) || byNum(b.y, a.y)).map((c) => c.row);
    const colList = [...cells].sort((a, b) => byNum(a.x, b.x)).map((c) => c.col);

    const trials: ReportTrial[] = rows.map((r) => {
      const cfg = byId.get(String(r.trial_id))?.config;
      const done = r.status === 'done';
      const cell = done ? (cellIndex.get(key(axes.facet ? r[axes.facet] : null, r[axes.x], r[axes.y])) ?? -1) : -1;
      return {
        trial_id: String(r.trial_id), status: String(r.status), attempts: Number(r.attempts),
        grid: byId.get(String(r.trial_id))?.grid_values ?? {},
        seed: numOrNull(r.seed), strategy: strOrNull(r.strategy), problem: cfg ? problemLabel(cfg) : strOrNull(r.problem),
        cell, final_phase: (r.final_phase as Phase | null) ?? null,
        t_diffusion: numOrNull(r.t_diffusion), t_equilibrium: numOrNull(r.t_equilibrium),
        final_loss: numOrNull(r.final_loss), final_rel_l2: numOrNull(r.final_rel_l2), wall_seconds: numOrNull(r.wall_seconds),
        host: strOrNull(r.host), device: strOrNull(r.device), backend: strOrNull(r.backend), fused: numOrNull(r.fused), error: strOrNull(r.error),
        diagnostics: Number(r.diagnostics_every ?? 0) > 0,
        refine_round: byId.get(String(r.trial_id))?.refine_round ?? null,
        at: { facet: axes.facet ? r[axes.facet] : null, x: r[axes.x], y: r[axes.y] },
      };
    });
    // Trials of sweep.json that trials.parquet does not list yet are queued.
    const listed = new Set(trials.map((t) => t.trial_id));
    const unlisted = file.trials.filter((t) => !listed.has(t.trial_id)).length;
    const count = (s: string) => trials.filter((t) => t.status === s).length;
    const counts = { total: trials.length + unlisted, done: count('done'), failed: count('failed'), cancelled: count('cancelled'), running: count('running'), queued: count('queued') + unlisted };

    const shown = trials.map((t, i) => [t, i] as const).filter(([t]) => t.cell >= 0);
    const analysis = { ...DEFAULT_PHASE_PARAMS, ...(file.analysis ?? {}) };
    const layerNames = (prefix: string, n: number) => Array.from({ length: n }, (_, l) => `${prefix}.${l}`);
    const depth = Math.max(0, ...trials.map((t) => byId.get(t.trial_id)?.config.model.depth ?? 0));
    const layers = { snr: depth + 1, hidden: depth };
    // Display thinning (module header): about 40,000 points per figure at most.
    const budget = (lines: number) => opts.pointsPerTrial ?? Math.max(8, Math.min(150, Math.floor(40_000 / (Math.max(1, shown.length) * lines))));
    const points = { snr: budget(2), error: budget(1), loss: budget(3), signals: budget(layers.snr) };
    const signalCols = ['grad_order', 'snr_adam', 'res_homogeneity', 'lambda_mean', 'lambda_max', ...layerNames('snr_layers', layers.snr), ...layerNames('saturation_layers', layers.hidden), ...layerNames('entropy_layers', layers.hidden)];
    const data: Pick<ReportData, 'snr' | 'error' | 'loss' | 'signals'> = {
      snr: emptyTable(['raw', 'smoothed']),
      error: emptyTable(['rel_l2']),
      loss: emptyTable(['loss', 'loss_residual', 'loss_boundary']),
      signals: emptyTable(signalCols),
    };

    const glob = join(dir, METRICS_DIR, '*', '*', '*.parquet');
    const have = await metricColumns(conn, dir, trials.filter((t) => t.cell >= 0));
    if (have.has('step')) {
      const pick = (c: string, as = c) => (have.has(c.replace(/\[\d+\]$/, '')) ? `m.${c} AS "${as}"` : `NULL::DOUBLE AS "${as}"`);
      const layerCols = ([['snr_layers', layers.snr], ['saturation_layers', layers.hidden], ['entropy_layers', layers.hidden]] as const).flatMap(([name, n]) =>
        Array.from({ length: n }, (_, l) => pick(`${name}[${l + 1}]`, `${name}.${l}`)),
      );
      // One scan of the parts: the completed attempts' rows, each with its trial's index in `trials`
      // (ordered by trial_id, as read above), the per-layer lists split into one column per layer.
      await conn.run(`
        CREATE TEMP TABLE shown AS
        SELECT t.ti, m.step, ${['loss', 'loss_residual', 'loss_boundary', 'rel_l2', 'snr', 'grad_order', 'snr_adam', 'res_homogeneity', 'lambda_mean', 'lambda_max'].map((c) => pick(c)).join(', ')}, ${layerCols.join(', ')}
        FROM read_parquet(${sql(glob)}, hive_partitioning = true, union_by_name = true) m
        JOIN (SELECT * FROM (SELECT trial_id, attempts, status, (row_number() OVER (ORDER BY trial_id) - 1)::INTEGER AS ti FROM read_parquet(${sql(trialsPath)})) WHERE status = 'done') t
          ON m.trial_id = t.trial_id AND m.attempt = t.attempts`);
      const read = async (cols: string, where: string) => {
        const c = (await conn.runAndReadAll(`SELECT ti, step, ${cols} FROM shown ${where} ORDER BY ti, step`)).getColumnsObjectJS() as Record<string, unknown[]>;
        const out: Record<string, (number | null)[]> = {};
        for (const [k, v] of Object.entries(c)) out[k] = v.map((x) => (x === null || x === undefined ? null : Number(x)));
        return { ti: out.ti as number[], step: out.step as number[], cols: out };
      };
      /** Calls `f` with each shown trial's index, record and row range [start, end) of `tis`. */
      const eachTrial = (tis: number[], f: (ti: number, tr: ReportTrial, rows: number[]) => void) => {
        for (let start = 0, end = 0; start < tis.length; start = end) {
          while (end < tis.length && tis[end] === tis[start]) end++;
          const tr = trials[tis[start]!];
          if (tr && tr.cell >= 0) f(tis[start]!, tr, Array.from({ length: end - start }, (_, k) => start + k));
        }
      };
      const mustKeep = (tr: ReportTrial) => new Set([tr.t_diffusion, tr.t_equilibrium].filter((s): s is number => s !== null));
      const thin = (step: number[], idx: number[], v: (number | null)[], budget: number, must: Set<number>) =>
        thinIndices(idx.map((i) => step[i]!), idx.map((i) => v[i]!), budget, must).map((k) => idx[k]!);

      // Every logged row: loss parts, rel_l2 and SNR (scalars only).
      const a = await read('loss, loss_residual, loss_boundary, rel_l2, snr', '');
      const A = a.cols;
      eachTrial(a.ti, (ti, tr, all) => {
        const must = mustKeep(tr);
        // SNR: the detector's own points (rule 1 drops meaningless leading ones) and smoothing.
        const snrRows = all.filter((i) => { const v = A.snr![i]; return v !== null && v !== undefined && Number.isFinite(v) && v > 0; });
        if (snrRows.length) {
          const pts = snrPoints({ step: all.map((i) => a.step[i]!), snr: all.map((i) => A.snr![i]!), loss: all.map((i) => A.loss![i] ?? 0) }, analysis);
          const smooth = new Map(pts.step.map((s, k) => [s, pts.smoothed[k]!]));
          const steps = snrRows.map((i) => a.step[i]!);
          const raw = snrRows.map((i) => Math.log10(A.snr![i]!));
          const keep = thinIndices(steps, raw, points.snr, must);
          push(data.snr, ti, steps, { raw, smoothed: steps.map((s) => smooth.get(s) ?? null) }, keep);
        }
        push(data.error, ti, a.step, { rel_l2: A.rel_l2! }, thin(a.step, where(all, A.rel_l2!), A.rel_l2!, points.error, must));
        push(data.loss, ti, a.step, { loss: A.loss!, loss_residual: A.loss_residual!, loss_boundary: A.loss_boundary! }, thin(a.step, all, A.loss!, points.loss, must));
      });

      // Rows with diagnostics: the other §5 signals, one column per layer.
      if (have.has('grad_order')) {
        const d = await read(signalCols.map((c) => `"${c}"`).join(', '), 'WHERE grad_order IS NOT NULL');
        eachTrial(d.ti, (ti, tr, rows) => {
          push(data.signals, ti, d.step, Object.fromEntries(signalCols.map((n) => [n, d.cols[n]!])), thin(d.step, rows, d.cols.grad_order!, points.signals, mustKeep(tr)));
        });
      }
    }
    const problems = [...new Set(file.trials.map((t) => problemLabel(t.config)))];
    return {
      sweep: file.name, description: file.description ?? null, problems, axes, cells,
      rows: [...new Set(rowList)], cols: [...new Set(colList)], trials, counts, ...data, layers, points, analysis,
      maxCollocation: Math.max(0, ...file.trials.map((t) => t.config.problem.n_collocation)),
      planned: file.trials.map((t) => ({ at: { facet: configColumn(axes.facet, t.config), x: configColumn(axes.x, t.config), y: configColumn(axes.y, t.config) }, refine_round: t.refine_round ?? null })),
    };
  } finally {
    conn.closeSync();
    db.closeSync();
  }
}
