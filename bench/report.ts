/**
 * report: wall time of `writeReport` (analysis/report/index.ts, what `phasemap report DIR` runs) on a
 * synthetic results DIR, and the size of the index.html it writes.
 *
 * The DIR is built the way a finished sweep leaves it (not timed): sweep.json from the real resolver
 * (`parseSpecText` + `resolveSweep`: lr × batch size × {vanilla, rba} × seeds of helmholtz2d 4 × 32),
 * trials.parquet by `writeTrialsParquet`, and each trial's rows by the collector's writer
 * (`MetricsStore.writePart`, orchestrator/parquet-store.ts) as 5 parts of 100 rows. Every trial logs
 * 500 rows (steps 0, 20, …, 9,980) with every §5 column on every 5th row (steps divisible by 100 and
 * the last one): SNR falling from ~10 to ~0.05 and, at a trial-dependent step (or never), jumping up
 * to ~3; rel_l2 and the loss decreasing; lists of depth + 1 (snr_layers) and depth values. A few
 * vanilla trials at the largest lr blow up in their last rows, some at the smallest lr never leave
 * fitting. Their t_diffusion, t_equilibrium and final_phase in trials.parquet are what the phase
 * detector (analysis/phases.ts `detectPhases`) reads from the generated series, as the orchestrator does.
 */
import { writeFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { detectPhases } from '../analysis/phases.js';
import { writeReport, type ReportResult } from '../analysis/report/index.js';
import { MetricsStore, writeTrialsParquet } from '../orchestrator/parquet-store.js';
import { parseSpecText, resolveSweep } from '../orchestrator/spec.js';
import type { MetricRow } from '../schemas/metrics.js';
import { SWEEP_FILE, type TrialRecord } from '../schemas/parquet.js';
import { figure, tempDir, type Figure } from './lib.js';
import type { BenchOptions } from './train.js';

const LOG_EVERY = 20;
const ROWS = 500;
/** steps − 1 = the last logged row (k % log_every == 0): exactly ROWS rows, the last one a logged step. */
const STEPS = (ROWS - 1) * LOG_EVERY + 1;
/** Diagnostics (and rel_l2) every 5th row, and on the last step. */
const DIAG_EVERY = 5 * LOG_EVERY;
const ROWS_PER_PART = 100;
/** Trials written at once while building the DIR (the writes are fsync-bound). */
const GEN_CONCURRENCY = 32;
/** A 1,000-trial report whose first run is slower than this is measured once (more runs would only add minutes). */
const SLOW_S = 60;
const DEPTH = 4;
const LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2];
const BATCHES: Array<number | 'full'> = [256, 512, 1024, 2048, 'full'];

function spec(name: string, lrs: number[], batches: Array<number | 'full'>, seeds: number): string {
  return `name: ${name}
description: synthetic sweep of the report benchmark (bench/report.ts)
problem: {name: helmholtz2d, a1: 1, a2: 4, k: 1, n_collocation: 4096, n_boundary: 256}
model: {width: 32, depth: ${DEPTH}}
train: {steps: ${STEPS}, log_every: ${LOG_EVERY}, eval_every: ${DIAG_EVERY}, lr_decay: {rate: 0.9, every: 2000}}
diagnostics: {every: ${DIAG_EVERY}, snr_batches: 16}
grid:
  train.lr: [${lrs.join(', ')}]
  train.batch_size: [${batches.join(', ')}]
  strategy:
    - {name: vanilla}
    - {name: rba, eta: 0.001, gamma: 0.999}
  seed: [${Array.from({ length: seeds }, (_x, i) => i).join(', ')}]
`;
}

/** mulberry32: a small seeded PRNG (the DIR is the same every run). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The logged rows of one trial (module header). */
function trialRows(i: number, lrIdx: number, rba: boolean, lr0: number): MetricRow[] {
  const r = prng(0x9e3779b9 ^ (i * 7919 + 17));
  const noise = (a: number) => (r() * 2 - 1) * a;
  const u = r();
  const diverges = !rba && lrIdx === LRS.length - 1 && u < 0.5;
  const fitting = !diverges && lrIdx === 0 && u < 0.4;
  // SNR points (log10): from ~1 down to ~−1.3 by point `fall`, then a jump to ~0.5 at point `jump`
  // (beyond the last point: the trial stays in diffusion).
  const fall = 8 + Math.floor(r() * 15);
  const jump = Math.floor(25 + r() * 100 - (rba ? 15 : 0));
  const floor = fitting ? 0.3 : -1.3;
  const divergeAt = diverges ? ROWS - 12 - Math.floor(r() * 8) : Infinity; // row index of the blow-up
  const rel0 = 0.8 + r() * 0.4;
  const relRate = 1.5 + r() * 1.5 + (rba ? 0.5 : 0);
  const loss0 = 20 + r() * 20;
  const lambdaBase = rba ? 1 + r() * 4 : 1;
  const rows: MetricRow[] = new Array(ROWS);
  let minLoss = Infinity;
  for (let k = 0; k < ROWS; k++) {
    const step = k * LOG_EVERY;
    const frac = step / STEPS;
    let loss = loss0 * (1 + step / 50) ** -(0.9 + 0.3 * frac) * 10 ** noise(0.08);
    if (k >= divergeAt) loss = minLoss * 10 ** (5 + r());
    minLoss = Math.min(minLoss, loss);
    const lb = 0.2 + 0.2 * r();
    const row: MetricRow = {
      step, lr: lr0 * 0.9 ** Math.floor(step / 2000), loss, loss_residual: loss * (1 - lb), loss_boundary: loss * lb,
      wall_seconds: step * (0.012 + 0.002 * r()), rel_l2: null, snr: null, snr_layers: null, grad_order: null, snr_adam: null,
      res_homogeneity: null, saturation_layers: null, entropy_layers: null, lambda_mean: null, lambda_max: null,
    };
    if (step % DIAG_EVERY === 0 || k === ROWS - 1) {
      const p = step / DIAG_EVERY;
      let s: number;
      if (p < fall) s = 1 + (floor - 1) * (p / fall);
      else if (p < jump) s = floor;
      else s = floor + (0.5 - floor) * Math.min(1, (p - jump + 1) / 3);
      s += noise(0.15);
      if (k >= divergeAt) s = 2 + noise(0.5);
      const snr = 10 ** s;
      const rel = k >= divergeAt ? 1 + r() * 9 : rel0 * 10 ** (-relRate * frac ** 0.6 - (p >= jump ? 0.5 * Math.min(1, (p - jump) / 20) : 0) + noise(0.05));
      row.rel_l2 = rel;
      row.snr = snr;
      row.snr_layers = Array.from({ length: DEPTH + 1 }, (_x, l) => snr * (0.5 + l * 0.3) * 10 ** noise(0.2));
      row.grad_order = Math.min(1, snr / (1 + snr)) * (0.9 + 0.1 * r());
      row.snr_adam = step === 0 ? null : 0.05 + 0.5 * (snr / (1 + snr)) + 0.05 * r();
      row.res_homogeneity = 0.4 + 0.5 * (1 - Math.exp(-3 * frac)) + noise(0.03);
      row.saturation_layers = Array.from({ length: DEPTH }, (_x, l) => Math.min(100, Math.max(0, 5 + 40 * frac * (l + 1) / DEPTH + noise(3))));
      row.entropy_layers = Array.from({ length: DEPTH }, (_x, l) => 11.5 - 2 * frac - 0.5 * l + noise(0.2));
      row.lambda_mean = rba ? lambdaBase * (1 + frac) : 1;
      row.lambda_max = rba ? lambdaBase * (1 + frac) * (5 + 20 * frac + r()) : 1;
    }
    rows[k] = row;
  }
  return rows;
}

/** Runs `fn` over 0..n−1 with at most `limit` calls in flight. */
async function pool(n: number, limit: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, n) }, async () => {
    while (next < n) await fn(next++);
  }));
}

/** Writes the synthetic DIR (module header); returns the rows written. */
export async function makeReportDir(dir: string, name: string, lrs: number[], batches: Array<number | 'full'>, seeds: number): Promise<{ trials: number; rows: number; phases: Record<string, number> }> {
  const sweep = resolveSweep(parseSpecText(spec(name, lrs, batches, seeds), name), name);
  const file = { name: sweep.name, description: sweep.description, spec: sweep.spec, analysis: sweep.analysis, trials: sweep.trials.map((t) => ({ trial_id: t.trial_id, config: t.config, grid_values: t.grid_values })) };
  await rm(dir, { recursive: true, force: true });
  const store = new MetricsStore(dir);
  const records: TrialRecord[] = new Array(sweep.trials.length);
  const started = Date.parse('2026-01-01T00:00:00Z');
  let rowsWritten = 0;
  await pool(sweep.trials.length, GEN_CONCURRENCY, async (i) => {
    const t = sweep.trials[i]!;
    const c = t.config;
    const rows = trialRows(i, LRS.indexOf(c.train.lr), c.strategy.name === 'rba', c.train.lr);
    for (let p = 0; p < rows.length; p += ROWS_PER_PART) {
      const w = await store.writePart(t.trial_id, 1, rows.slice(p, p + ROWS_PER_PART));
      rowsWritten += w.rows;
    }
    const ph = detectPhases({ step: rows.map((x) => x.step), snr: rows.map((x) => x.snr), loss: rows.map((x) => x.loss) }, sweep.analysis);
    const last = rows[rows.length - 1]!;
    records[i] = {
      trial_id: t.trial_id, sweep: sweep.name, config: c, status: 'done', attempts: 1,
      started_at: new Date(started + i * 1000), finished_at: new Date(started + i * 1000 + last.wall_seconds * 1000), wall_seconds: last.wall_seconds,
      final_loss: last.loss, final_rel_l2: last.rel_l2, diverged: ph.final_phase === 'diverged', host: 'bench', device: 'cpu', backend: 'wasm',
      worker: 'bench-worker', slot: `cpu${i % 2}`, visible_devices: null, resumed_from_attempt: null, resumed_from_step: null, fused: 1, error: null,
      t_diffusion: ph.t_diffusion, t_equilibrium: ph.t_equilibrium, final_phase: ph.final_phase,
    };
  });
  await writeTrialsParquet(dir, records);
  await writeFile(join(dir, SWEEP_FILE), `${JSON.stringify(file, null, 2)}\n`);
  const phases: Record<string, number> = {};
  for (const r of records) phases[r.final_phase!] = (phases[r.final_phase!] ?? 0) + 1;
  return { trials: records.length, rows: rowsWritten, phases };
}

interface Run {
  total: number;
  read: number;
  figures: number;
  page: number;
  htmlBytes: number;
  files: number;
  points: ReportResult["data"]["points"];
  /** Seconds of each figure's SVG rendering, when writeReport reports it (ms.svg). */
  svg: Record<string, number> | null;
}

const r2 = (x: number) => +x.toFixed(2);

async function timeReport(dir: string): Promise<Run> {
  const r: ReportResult = await writeReport(dir);
  const htmlBytes = (await stat(r.index)).size;
  const svg = (r.ms as { svg?: Record<string, number> }).svg ?? null;
  return {
    total: r.ms.total / 1000, read: r.ms.read / 1000, figures: r.ms.figures / 1000, page: (r.ms.total - r.ms.read - r.ms.figures) / 1000,
    htmlBytes, files: r.files.length, points: r.data.points,
    svg: svg ? Object.fromEntries(Object.entries(svg).map(([k, v]) => [k, r2(v / 1000)])) : null,
  };
}


export async function benchReport(o: BenchOptions): Promise<Figure[]> {
  const work = await tempDir('report');
  const seedsLarge = o.quick ? 2 : 20;
  const largeRuns = o.quick ? 1 : Math.min(o.runs, 3);
  const smallRuns = o.quick ? o.runs : 3;
  try {
    const smallDir = join(work, 'small');
    const largeDir = join(work, 'large');
    let t0 = performance.now();
    const small = await makeReportDir(smallDir, 'reportsmall', LRS, ['full'], 1);
    const smallGen = (performance.now() - t0) / 1000;
    t0 = performance.now();
    const large = await makeReportDir(largeDir, 'reportlarge', LRS, BATCHES, seedsLarge);
    const largeGen = (performance.now() - t0) / 1000;
    o.log(`report: synthetic DIRs written (${small.trials} trials in ${smallGen.toFixed(1)} s, ${large.trials} trials × ${ROWS} rows in ${largeGen.toFixed(1)} s; phases ${JSON.stringify(large.phases)})`);

    // Warm-up: the first writeReport of the process also pays for JIT and the first DuckDB instance.
    o.log(`report: warm-up (${small.trials} trials)`);
    const warm = await timeReport(smallDir);
    const smallRunsOut: Run[] = [];
    for (let r = 1; r <= smallRuns; r++) {
      o.log(`report: ${small.trials} trials, run ${r}/${smallRuns}`);
      smallRunsOut.push(await timeReport(smallDir));
    }
    const largeRunsOut: Run[] = [];
    for (let r = 1; r <= largeRuns; r++) {
      o.log(`report: ${large.trials} trials × ${ROWS} rows, run ${r}/${largeRuns}`);
      const run = await timeReport(largeDir);
      o.log(`report: ${run.total.toFixed(1)} s (read ${run.read.toFixed(1)}, figures ${run.figures.toFixed(1)}, page ${run.page.toFixed(1)}), index.html ${(run.htmlBytes / 1e6).toFixed(1)} MB`);
      largeRunsOut.push(run);
      if (r === 1 && run.total > SLOW_S) {
        o.log(`report: over ${SLOW_S} s, one run only`);
        break;
      }
    }
    const breakdown = (runs: Run[]) => ({
      read_s: runs.map((x) => r2(x.read)), figures_s: runs.map((x) => r2(x.figures)), page_s: runs.map((x) => r2(x.page)),
      index_html_bytes: runs.map((x) => x.htmlBytes), figure_files: runs[0]?.files, points_per_trial: runs[0]?.points,
      ...(runs[0]?.svg ? { svg_s_first_run: runs[0].svg } : {}),
    });
    const base = {
      problem: 'helmholtz2d a1=1 a2=4', network: `${DEPTH}x32`, rows_per_trial: ROWS, log_every: LOG_EVERY, diagnostics_every_rows: DIAG_EVERY / LOG_EVERY,
      parts_per_trial: ROWS / ROWS_PER_PART, writer: 'MetricsStore.writePart (orchestrator/parquet-store.ts)', png: true,
    };
    const largeConfig = { ...base, trials: large.trials, grid: `lr ${LRS.length} × batch_size ${BATCHES.length} × strategy 2 × seed ${seedsLarge}`, rows: large.rows, final_phases: large.phases, generate_s: r2(largeGen), ...breakdown(largeRunsOut) };
    const smallConfig = { ...base, trials: small.trials, grid: `lr ${LRS.length} × strategy 2 (batch full, seed 0)`, rows: small.rows, final_phases: small.phases, generate_s: r2(smallGen), warmup_s: r2(warm.total), ...breakdown(smallRunsOut) };
    const method = 'wall s of writeReport(DIR) (analysis/report: read sweep.json, trials.parquet and the metrics parts with DuckDB, render every figure to SVG and PNG, write index.html) in this process, after a warm-up report of the 10-trial DIR; building the synthetic DIR is not timed';
    const largeName = o.quick ? `report ${large.trials} trials × ${ROWS} rows` : 'report 1,000 trials × 500 rows';
    return [
      figure({
        bench: 'report', figure: largeName, unit: 's', samples: largeRunsOut.map((x) => x.total),
        target: o.quick ? null : { op: '<=', value: 20, text: '≤ 20' }, config: largeConfig, method,
      }),
      figure({
        bench: 'report', figure: `${largeName}, index.html`, unit: 'MB', samples: largeRunsOut.map((x) => x.htmlBytes / 1e6),
        target: o.quick ? null : { op: '<=', value: 15, text: '≤ 15' }, config: { trials: large.trials, rows: large.rows },
        method: 'size of the index.html writeReport wrote (one self-contained page: figures, payload, scripts), in 10^6 bytes',
      }),
      figure({
        bench: 'report', figure: `report ${small.trials} trials × ${ROWS} rows`, unit: 's', samples: smallRunsOut.map((x) => x.total),
        target: { op: '<=', value: 3, text: '≤ 3' }, config: smallConfig, method,
      }),
    ];
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}
