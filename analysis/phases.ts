/**
 * The phase record of a trial (science.md §6): when it fell from fitting into diffusion, when (if
 * ever) it reached diffusion equilibrium (DE), and the phase it ended in — read from its logged
 * gradient SNR and loss series.
 *
 * The rule, on the logged SNR points (rows whose `snr` is a finite number > 0; rows without one are
 * not points), with the thresholds of `PhaseParams`:
 *
 * 1. **Meaningless leading points.** While the first point's log10 SNR is `outlier_decades` (3) or
 *    more above the median log10 SNR of all later points, it is dropped. This is RBA with λ⁰ = 0:
 *    at step 0 every batch loss is the same boundary term, the batches' gradients nearly agree and
 *    SNR reads 1e5–1e7 while the rest of the run sits near 1 (the calibration run: 10^6.0 at step 0,
 *    median 10^0.0 after). A genuine fitting peak is not that far above the run's typical level
 *    (science.md §6: SNR "often ≫ 1" in fitting, ≪ 1 in diffusion), and a point dropped from a real
 *    but short fitting phase costs at most that one point. Step 0 is not skipped as such: for a
 *    vanilla trial it is a real measurement (and often the fitting peak).
 * 2. **Smoothing.** s = centered moving average of log10 SNR over `smooth_window` (5) points,
 *    truncated at both ends of the series (the first point averages itself and the next two) —
 *    the smoothing of science.md §6's calibration table.
 * 3. **t_diffusion** = the step of the first point i where s has fallen below `diffusion_threshold`
 *    (0, i.e. SNR 1) *and* at least `diffusion_drop` (1) decades below its maximum so far (the
 *    fitting peak: max s[0..i]), and s stays below `diffusion_threshold` for `sustain_points` (10)
 *    points from i on (i included; a run that ends sooner has no t_diffusion). The drop matters
 *    where SNR starts near or below 1 (the CPU-scale vanilla calibration starts at 10^−0.2): there
 *    fitting is the stretch where SNR falls from its start to a decade lower while the loss drops,
 *    and diffusion the plateau after it.
 * 4. **t_equilibrium** = the step of the first point j after t_diffusion where s[j] is at least
 *    `rise_decades` (1) above the lowest s of the `rise_window` (10) points before j (points at or
 *    after t_diffusion only; the lowest, first-found, is the start of the rise, r), and s then stays
 *    above the **diffusion level** = median of s over the points from t_diffusion to r (inclusive)
 *    + `level_margin` (0.25 decades) for the rest of the run: the `sustain_points` (10) points from j
 *    on are all above it (so at least that many points must remain), and s is never at or below it
 *    for `sustain_points` points in a row afterwards — the same hysteresis as for entering
 *    diffusion, so that a few-point dip (Adam's loss spikes move SNR too) is not read as a return
 *    to diffusion. A rise that falls back, or a spike, is not DE: the next j is tried. Null when no j
 *    qualifies. The step is where the rise is complete, not where it starts.
 * 5. **final_phase** = `diverged` when any loss is NaN/±Inf, or when from some logged step on every
 *    loss is ≥ `divergence_factor` (1e4) × the minimum loss before that step (it blew up and never
 *    came back: a loss spike that recovers is Adam's, not a divergence); else `equilibrium` when
 *    t_equilibrium is set, `diffusion` when t_diffusion is set, `fitting` otherwise (which includes
 *    a trial without SNR diagnostics: no transition can be seen). t_diffusion and t_equilibrium are
 *    reported for a diverged trial too (what happened before it blew up).
 *
 * `readAttemptSeries` reads one attempt's series from its Parquet parts; `attemptPhases` does both.
 */
import { readdir, readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { tableFromIPC, type Table } from 'apache-arrow';
import { readParquet } from 'parquet-wasm';
import { metricsPartPath } from '../schemas/parquet.js';
import type { AnalysisConfig } from '../schemas/sweep.js';
import type { FinalPhase, PhaseRecord } from '../schemas/trial.js';

export type { FinalPhase, PhaseRecord } from '../schemas/trial.js';

/**
 * Thresholds of the phase record. The same fields, with the same defaults and their ranges, are
 * the sweep spec's `analysis:` block (schemas/sweep.ts AnalysisSchema).
 */
export interface PhaseParams {
  /** Width of the centered moving average of log10 SNR, in logged SNR points (odd; truncated at the ends). Default 5. */
  smooth_window: number;
  /** Leading SNR points this many decades or more above the median log10 SNR of all later points are dropped. Default 3. */
  outlier_decades: number;
  /** log10 SNR below which the smoothed SNR is in diffusion (0 = SNR 1). Default 0. */
  diffusion_threshold: number;
  /** Decades the smoothed SNR must also have fallen below its maximum so far (the fitting peak) to enter diffusion. Default 1. */
  diffusion_drop: number;
  /** Logged SNR points a phase must last: diffusion stays below the threshold this long; DE holds this many points to the end. Default 10. */
  sustain_points: number;
  /** Rise of the smoothed log10 SNR, in decades, that marks the DE transition. Default 1. */
  rise_decades: number;
  /** Logged SNR points within which that rise happens. Default 10. */
  rise_window: number;
  /** Decades above the diffusion level (median smoothed log10 SNR from t_diffusion to the start of the rise) DE must stay. Default 0.25. */
  level_margin: number;
  /** Loss ≥ this × its running minimum, to the end of the run, is a divergence. Default 1e4. */
  divergence_factor: number;
}

/** The defaults (equal to the defaults of the spec's `analysis:` block; a test checks it). */
export const DEFAULT_PHASE_PARAMS: Readonly<PhaseParams> = Object.freeze({
  smooth_window: 5,
  outlier_decades: 3,
  diffusion_threshold: 0,
  diffusion_drop: 1,
  sustain_points: 10,
  rise_decades: 1,
  rise_window: 10,
  level_margin: 0.25,
  divergence_factor: 1e4,
});

// The spec block and PhaseParams are the same shape (compile-time check, both ways).
const _fromSpec: PhaseParams = {} as AnalysisConfig;
const _toSpec: AnalysisConfig = {} as PhaseParams;
void _fromSpec;
void _toSpec;

/** A trial's logged series, one entry per logged row. */
export interface PhaseSeries {
  step: number[];
  /** Gradient SNR, null on rows without diagnostics. */
  snr: (number | null)[];
  loss: number[];
}

function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Centered moving average over `w` points (for an even w one more point before than after), truncated at the ends. */
export function smoothLog(y: number[], w: number): number[] {
  const before = Math.floor((w - 1) / 2);
  const after = w - 1 - before;
  const prefix = [0];
  for (const v of y) prefix.push(prefix[prefix.length - 1]! + v);
  return y.map((_, i) => {
    const lo = Math.max(0, i - before);
    const hi = Math.min(y.length - 1, i + after);
    return (prefix[hi + 1]! - prefix[lo]!) / (hi - lo + 1);
  });
}

/**
 * True when s holds above `level` from j to the end: its first `sustain` points all above it, and
 * never `sustain` points in a row at or below it afterwards (a shorter dip is noise, not a return).
 */
function staysAbove(s: number[], j: number, level: number, sustain: number): boolean {
  for (let k = j; k < j + sustain; k++) if (!(s[k]! > level)) return false;
  let below = 0;
  for (let k = j + sustain; k < s.length; k++) {
    below = s[k]! > level ? 0 : below + 1;
    if (below >= sustain) return false;
  }
  return true;
}

/** True when the loss became NaN/Inf, or rose to `factor` × its running minimum and stayed there to the end. */
export function lossDiverged(loss: number[], factor: number): boolean {
  if (loss.some((v) => !Number.isFinite(v))) return true;
  const n = loss.length;
  const suffixMin = new Array<number>(n + 1).fill(Infinity);
  for (let i = n - 1; i >= 0; i--) suffixMin[i] = Math.min(loss[i]!, suffixMin[i + 1]!);
  let runMin = Infinity;
  for (let i = 1; i < n; i++) {
    runMin = Math.min(runMin, loss[i - 1]!);
    if (runMin > 0 && suffixMin[i]! >= factor * runMin) return true;
  }
  return false;
}

/** The logged SNR points the phase record is read from (rules 1 and 2 of this module's header). */
export interface SnrPoints {
  /** Steps of the points kept, ascending. */
  step: number[];
  /** log10 SNR of each kept point. */
  log10: number[];
  /** The centered moving average of `log10` over `smooth_window` points: the series the detector reads. */
  smoothed: number[];
  /** Leading points dropped as meaningless (rule 1). */
  dropped: number;
}

/** Rows sorted by step (a repeated step keeps its first row), their losses and the SNR points of rules 1–2. */
function readSeries(series: PhaseSeries, p: PhaseParams): { loss: number[]; points: SnrPoints } {
  const n = series.step.length;
  if (series.snr.length !== n || series.loss.length !== n)
    throw new Error(`detectPhases: step, snr and loss must have one entry per row (got ${n}, ${series.snr.length}, ${series.loss.length})`);
  const order = [...Array(n).keys()].sort((a, b) => series.step[a]! - series.step[b]!);
  const seen = new Set<number>();
  const rows = order.filter((i) => (seen.has(series.step[i]!) ? false : (seen.add(series.step[i]!), true)));
  const loss = rows.map((i) => series.loss[i]!);

  // 1. Logged SNR points; drop meaningless leading ones.
  const step: number[] = [];
  const y: number[] = [];
  for (const i of rows) {
    const v = series.snr[i];
    if (typeof v === 'number' && Number.isFinite(v) && v > 0) {
      step.push(series.step[i]!);
      y.push(Math.log10(v));
    }
  }
  let dropped = 0;
  while (y.length > 1 && y[0]! - median(y.slice(1)) >= p.outlier_decades) {
    y.shift();
    step.shift();
    dropped++;
  }
  // 2. Smooth.
  return { loss, points: { step, log10: y, smoothed: smoothLog(y, p.smooth_window), dropped } };
}

/**
 * The SNR points a trial's phase record is read from: the logged points kept by rule 1 and their
 * smoothed log10 (rule 2), exactly as `detectPhases` reads them (for figures that show what the
 * detector saw). `series.loss` is not used but must have one entry per row.
 * @throws Error when the arrays differ in length.
 */
export function snrPoints(series: PhaseSeries, params: Partial<PhaseParams> = DEFAULT_PHASE_PARAMS): SnrPoints {
  return readSeries(series, { ...DEFAULT_PHASE_PARAMS, ...params }).points;
}

/**
 * Reads a trial's phase record from its logged series (rules: this module's header; science.md §6).
 *
 * @param series rows of one attempt (any order: they are sorted by step; a repeated step keeps its first row).
 * @param params thresholds; missing fields take `DEFAULT_PHASE_PARAMS`.
 * @returns t_diffusion and t_equilibrium as steps (null when not seen), and the final phase.
 * @throws Error when the arrays differ in length.
 */
export function detectPhases(series: PhaseSeries, params: Partial<PhaseParams> = DEFAULT_PHASE_PARAMS): PhaseRecord {
  const p: PhaseParams = { ...DEFAULT_PHASE_PARAMS, ...params };
  const { loss, points } = readSeries(series, p);
  const { step: steps, smoothed: s } = points;
  // 3. Diffusion.
  const m = s.length;
  let d = -1;
  let peak = -Infinity;
  for (let i = 0; i < m && d < 0; i++) {
    peak = Math.max(peak, s[i]!);
    if (!(s[i]! < Math.min(p.diffusion_threshold, peak - p.diffusion_drop))) continue;
    if (i + p.sustain_points > m) break;
    let stays = true;
    for (let k = i; k < i + p.sustain_points; k++) if (!(s[k]! < p.diffusion_threshold)) stays = false;
    if (stays) d = i;
  }

  // 4. Diffusion equilibrium.
  let e = -1;
  if (d >= 0) {
    for (let j = d + 1; j < m && e < 0; j++) {
      if (m - j < p.sustain_points) break;
      let r = Math.max(d, j - p.rise_window);
      for (let k = r + 1; k < j; k++) if (s[k]! < s[r]!) r = k;
      if (s[j]! - s[r]! < p.rise_decades) continue;
      if (staysAbove(s, j, median(s.slice(d, r + 1)) + p.level_margin, p.sustain_points)) e = j;
    }
  }

  // 5. Final phase.
  const t_diffusion = d >= 0 ? steps[d]! : null;
  const t_equilibrium = e >= 0 ? steps[e]! : null;
  const final_phase: FinalPhase = lossDiverged(loss, p.divergence_factor)
    ? 'diverged'
    : t_equilibrium !== null
      ? 'equilibrium'
      : t_diffusion !== null
        ? 'diffusion'
        : 'fitting';
  return { t_diffusion, t_equilibrium, final_phase };
}

// ---------------------------------------------------------------------------------------------
// Reading an attempt back

const PART_FILE = /^part-\d+\.parquet$/;

function parquetTable(bytes: Uint8Array, columns?: string[]): Table {
  return tableFromIPC(readParquet(bytes, columns ? { columns } : undefined).intoIPCStream());
}

/**
 * The (step, snr, loss) series of one attempt, from its parts `DIR/metrics/trial_id=<id>/attempt=<n>/part-*.parquet`,
 * sorted by step (a step present in two parts is kept once). Empty when the attempt has no parts.
 *
 * @throws Error on a bad trial id / attempt, an unreadable part, or a part without step or loss.
 */
export async function readAttemptSeries(dir: string, trialId: string, attempt: number): Promise<PhaseSeries> {
  const folder = dirname(join(dir, metricsPartPath(trialId, attempt, 0)));
  let names: string[];
  try {
    names = (await readdir(folder)).filter((f) => PART_FILE.test(f)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { step: [], snr: [], loss: [] };
    throw e;
  }
  const rows: Array<[number, number | null, number]> = [];
  for (const name of names) {
    // A column a part lacks (snr in a part written before diagnostics existed) is simply not returned.
    const table = parquetTable(await readFile(join(folder, name)), ['step', 'snr', 'loss']);
    const step = table.getChild('step');
    const loss = table.getChild('loss');
    const snr = table.getChild('snr');
    if (step === null || loss === null) throw new Error(`${join(folder, name)}: no step or loss column`);
    for (let i = 0; i < table.numRows; i++) {
      const v = snr?.get(i) as number | null | undefined;
      rows.push([Number(step.get(i)), v ?? null, Number(loss.get(i))]);
    }
  }
  rows.sort((a, b) => a[0] - b[0]);
  const out: PhaseSeries = { step: [], snr: [], loss: [] };
  for (const [st, v, l] of rows) {
    if (out.step.length && out.step[out.step.length - 1] === st) continue;
    out.step.push(st);
    out.snr.push(v);
    out.loss.push(l);
  }
  return out;
}

/**
 * The phase record of one attempt read from DIR. `diverged` (the worker's verdict: the loss became
 * NaN/Inf and training stopped) forces `final_phase: 'diverged'` even if the logged rows do not show it.
 */
export async function attemptPhases(dir: string, trialId: string, attempt: number, params: Partial<PhaseParams>, diverged = false): Promise<PhaseRecord> {
  const rec = detectPhases(await readAttemptSeries(dir, trialId, attempt), params);
  return diverged ? { ...rec, final_phase: 'diverged' } : rec;
}
