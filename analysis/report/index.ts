/**
 * `phasemap report DIR`: the phase diagram and the training curves of a sweep as pictures.
 *
 * Writes, into `DIR/report/` (or another folder): `index.html` — one self-contained page that works
 * offline (page.ts) — and every figure beside it as `<name>.svg` and `<name>.png` (PNG at 2× the SVG's
 * size). Every file is written to a temporary name and renamed into place, `index.html` last, so a
 * reader (or a browser reloading the page) never sees half a file.
 *
 * Figures (figures.ts): `phase-diagram`, `phase-map` when the samples are irregular (refinement trials; phase-map.ts), `snr`, `rel-l2`, `loss`, `grad-order`, `snr-adam`,
 * `res-homogeneity`, `snr-layers`, `saturation`, `entropy`, and `lambda` when a trial re-weights
 * (rba, sa). Curves come from each done trial's completed attempt, thinned for display only (data.ts).
 */
import { mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { availableParallelism } from 'node:os';
import { TRIALS_FILE } from '../../schemas/parquet.js';
import { deRange, type DiagramAxes } from '../diagram.js';
import { pidAlive } from '../pid.js';
import { loadReportData, type ReportData } from './data.js';
import { writeAtomic, writeFigureFilesThreaded } from './figure-files.js';
import { figureDefs, trialFigureSpec, type Payload } from './figures.js';
import { renderPage } from './page.js';
import { phaseMapFigure } from './phase-map.js';

export const REPORT_DIR = 'report';

/**
 * Seconds between refreshes of a live report (and of its page's reloads): $PHASEMAP_REPORT_INTERVAL,
 * default 15. @throws Error naming the variable when it is not a number in [1, 3600].
 */
export function reportInterval(): number {
  const v = process.env.PHASEMAP_REPORT_INTERVAL;
  if (v === undefined || v === '') return 15;
  const n = Number(v);
  if (!(n >= 1 && n <= 3600)) throw new Error(`PHASEMAP_REPORT_INTERVAL: got ${JSON.stringify(v)}, expected seconds between 1 and 3600`);
  return n;
}

export interface ReportOptions {
  /** Folder the report is written to; default `DIR/report`. */
  out?: string;
  axes?: DiagramAxes;
  /** The sweep is still running: the page says so and reloads itself (every reportInterval() seconds). */
  live?: boolean;
  /** Threads that render figures (default: min(2, CPU cores)). */
  threads?: number;
  /** Skip the PNG files (SVG and the page only; PNGs already there stay). */
  png?: boolean;
  /** Display thinning: points per trial and series (data.ts). */
  pointsPerTrial?: number;
  now?: Date;
}

export interface ReportResult {
  /** Path of index.html. */
  index: string;
  /** Paths of the figure files written, SVG and PNG. */
  files: string[];
  data: ReportData;
  /** Figure name → PNG size in pixels. */
  pngSizes: Record<string, { width: number; height: number }>;
  /** Milliseconds spent: reading DIR, rendering figures (and each figure's SVG), the whole report. */
  ms: { read: number; figures: number; total: number; svg: Record<string, number> };
}

function buildPayload(data: ReportData): Payload {
  const p: Payload = {
    sweep: data.sweep, problems: data.problems, axes: data.axes, rows: data.rows, cols: data.cols,
    cells: data.cells.map((c, i) => ({
      row: c.row, col: c.col, facet: c.facetLabel, xLabel: c.xLabel, yLabel: c.yLabel, x: c.x, phase: c.phase, count: c.count, trials: c.trials,
      median_t_equilibrium: c.median_t_equilibrium, de_range: deRange(c), median_final_rel_l2: c.median_final_rel_l2,
      rel_l2_range: c.best_final_rel_l2 === null ? '-' : `${c.best_final_rel_l2.toPrecision(2)}–${(c.worst_final_rel_l2 ?? c.best_final_rel_l2).toPrecision(2)}`,
      members: data.trials
        .filter((t) => t.cell === i)
        .map((t) => `seed ${t.seed}: ${t.final_phase} (t_diffusion ${t.t_diffusion ?? '-'}, t_DE ${t.t_equilibrium ?? '-'}, rel. L2 ${t.final_rel_l2?.toPrecision(3) ?? '-'})`)
        .join('; '),
    })),
    trials: data.trials.map((t) => ({ trial_id: t.trial_id, seed: t.seed, phase: t.final_phase, cell: t.cell, t_diffusion: t.t_diffusion, t_equilibrium: t.t_equilibrium })),
    tables: { snr: data.snr, error: data.error, loss: data.loss, signals: data.signals },
    figures: [],
  };
  return p;
}

/** Removes the temporary files (`NAME.tmp-<pid>-…`) of report writers that were ended before their rename. */
async function removeOrphans(out: string): Promise<void> {
  for (const f of await readdir(out)) {
    const pid = /\.tmp-(\d+)(-|$)/.exec(f)?.[1];
    if (pid && !pidAlive(Number(pid))) await rm(join(out, f), { force: true });
  }
}

/**
 * Writes the report of a results DIR (module header).
 * @throws Error when DIR is not a results DIR (no sweep.json / trials.parquet), or an axis is not a trials.parquet column (naming the flag).
 */
export async function writeReport(dir: string, opts: ReportOptions = {}): Promise<ReportResult> {
  const t0 = performance.now();
  const data = await loadReportData(dir, { axes: opts.axes, pointsPerTrial: opts.pointsPerTrial });
  const t1 = performance.now();
  const out = opts.out ?? join(dir, REPORT_DIR);
  await mkdir(out, { recursive: true });
  await removeOrphans(out);
  const payload = buildPayload(data);
  const hasLambda = data.trials.some((t) => t.cell >= 0 && t.strategy !== null && t.strategy !== 'vanilla');
  const defs = figureDefs(payload, data.layers, hasLambda, data.maxCollocation);
  // The refined phase map, after the phase diagram, when the samples are irregular (refinement).
  const map = phaseMapFigure(data, `${data.sweep} · ${data.problems.join(', ')}: phase map (nearest-sample regions)`);
  if (map) defs.splice(1, 0, map);
  payload.figures = defs.map(({ panel: _panel, ...f }) => f);
  const trialSpecs = Object.fromEntries(defs.filter((f) => f.panel).map((f) => [f.name, trialFigureSpec(payload, f, f.panel!)]));
  const threads = opts.threads ?? Math.min(2, availableParallelism());
  const { files, pngSizes, svgMs } = await writeFigureFilesThreaded(payload, payload.figures, out, opts.png !== false, threads);
  const t2 = performance.now();
  const index = join(out, 'index.html');
  await writeAtomic(index, renderPage({ data, payload, trialSpecs, live: opts.live === true ? reportInterval() : null, now: opts.now ?? new Date() }));
  return { index, files, data, pngSizes, ms: { read: t1 - t0, figures: t2 - t1, total: performance.now() - t0, svg: svgMs } };
}

export interface WatchOptions extends Omit<ReportOptions, 'live'> {
  /** Stop watching (the last report stays as written). */
  signal?: AbortSignal;
  /** Seconds between reports at least (default $PHASEMAP_REPORT_INTERVAL or 15). */
  minInterval?: number;
  /** Seconds between looks at DIR (default 2). */
  poll?: number;
  onWrite?: (r: ReportResult) => void;
}

/** Modification time of trials.parquet (what the collector rewrites as trials finish), 0 when absent. */
async function trialsMtime(dir: string): Promise<number> {
  try {
    return (await stat(join(dir, TRIALS_FILE))).mtimeMs;
  } catch {
    return 0;
  }
}

/**
 * `phasemap report DIR --watch`: waits for DIR's trials.parquet, writes a live report (without PNGs: the page does not use them), then again whenever trials.parquet changed,
 * at most every `minInterval` seconds, until every trial of sweep.json has finished (done, failed or
 * cancelled); the last report written then is the final one (no reload). Returns then, or when
 * `signal` aborts.
 */
export async function watchReport(dir: string, opts: WatchOptions = {}): Promise<ReportResult | null> {
  const min = (opts.minInterval ?? reportInterval()) * 1000;
  const poll = (opts.poll ?? 2) * 1000;
  let last: ReportResult | null = null;
  let seen = -1;
  let wroteAt = 0;
  const sleep = (ms: number) => new Promise<void>((r) => {
    const t = setTimeout(r, ms);
    opts.signal?.addEventListener('abort', () => { clearTimeout(t); r(); }, { once: true });
  });
  while (!opts.signal?.aborted) {
    const m = await trialsMtime(dir);
    // Before the orchestrator wrote trials.parquet there is nothing to show yet.
    if (m !== 0 && m !== seen && Date.now() - wroteAt >= min) {
      seen = m;
      wroteAt = Date.now();
      last = await writeReport(dir, { ...opts, live: true, png: false });
      const c = last.data.counts;
      if (c.done + c.failed + c.cancelled === c.total) {
        last = await writeReport(dir, { ...opts, live: false });
        opts.onWrite?.(last);
        return last;
      }
      opts.onWrite?.(last);
    }
    await sleep(poll);
  }
  return last;
}
