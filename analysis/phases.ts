/**
 * The phase record of a trial (science.md §6; the phases and the labelling guide: docs/phases.md):
 * when it fell from fitting into diffusion, when (if ever) it reached diffusion equilibrium (DE),
 * and the phase it ended in — read from its logged gradient SNR and loss series.
 *
 * The rule, on the logged SNR points (rows whose `snr` is a finite number > 0; rows without one are
 * not points), with the thresholds of `PhaseParams`. Phases are judged on the log step axis (the
 * axis the labelling sheets use): a stretch's length is the factor between its first and last step
 * (steps offset by the first logging interval, so that step 0 has a logarithm).
 *
 * 1. **Meaningless leading points.** While the first point's log10 SNR is `outlier_decades` (3) or
 *    more above the median log10 SNR of all later points, it is dropped: RBA with λ⁰ = 0, whose
 *    batches at step 0 all see the same boundary term (SNR 1e5–1e7 while the run sits near 1).
 * 2. **Smoothing.** s = running median of log10 SNR over `smooth_window` (7) points, centered,
 *    truncated at the ends. A median, not a mean: single values swing by ±1 decade from one logged
 *    point to the next (Adam's loss spikes), and where SNR flickers between two levels the median
 *    follows the level it spends most of its time at.
 * 3. **t_diffusion.** A *candidate* is a point i where s goes below `diffusion_threshold` (0,
 *    SNR 1) and stays below for the `sustain_points` (8) points from i. Its stretch runs from i to
 *    its DE rise (rule 4, looked for from i) or, without one, to the end of the run. The first
 *    candidate whose stretch is diffusion gives t_diffusion = i — the step where SNR fell below 1
 *    for good, science.md §6 — or, for a run below 1 from its first point, the first point where s
 *    has fallen `diffusion_drop` (0.5) decades below its running maximum. A stretch is diffusion
 *    when it has `diffusion_points` (16) points, spans a factor `diffusion_span` (2) of steps, its
 *    level — the mean of s over it — is at most `diffusion_depth` (−0.5: diffusion is SNR well
 *    below 1, ≤ 10^−0.5) and its lowest s is `diffusion_drop` below the highest s before it (the
 *    fitting peak). The mean over the whole stretch is what "stays below" means here: where SNR
 *    flickers between a low and an upper level, the running median jumps to whichever holds most of
 *    a window, while the mean weighs both by the time spent at each — the centre of the flicker a
 *    person reads; a fall that climbs back to 1 without a jump, or a cluster of dips at loss spikes,
 *    has a level above the depth — not diffusion. The span: diffusion is a plateau, not a dip of a
 *    few hundred steps late in a run that sat above 1 before and after.
 * 4. **t_equilibrium**, from t_diffusion: the diffusion level at point j is the median of s from
 *    t_diffusion to the last point before j within `level_margin` (0.5) of the level (the start of
 *    the rise). The first j where s[j] ≥ level + `rise_decades` (0.9), within `rise_window` (25)
 *    points of that start, is a candidate; it is DE when at least `sustain_points` points remain
 *    and, from the start of the rise to the end, s is above level + `level_margin` on at least half
 *    of the points and never at or below it for `diffusion_points` points in a row; the stretch from
 *    the start of the rise to the end spans a factor `equilibrium_span` (1.25) of steps; and its
 *    level (mean s) is at least `equilibrium_level` (−1). t_equilibrium is the first point of the
 *    rise above level + `level_margin`: where the upper level starts to dominate (half-way up a
 *    1-decade jump; where SNR flickers between two levels, where the upper one starts to hold most
 *    of the points). A rise that falls back, a spike, the one-off dip and recovery of a
 *    learning-rate decay, a slow drift (slower than a decade per `rise_window` points), a rise in
 *    the last factor 1.25 of the run's steps (too late to tell from a spike at the scale the
 *    smoothing works on), a rise that stays below SNR 0.1 (the gradients do not align: a deep
 *    diffusion flickering up inside itself): not DE; the next j is tried.
 * 5. **final_phase** = `diverged` when any loss is NaN/±Inf, or when from some logged step on every
 *    loss is ≥ `divergence_factor` (1e4) × the minimum loss before that step; else `equilibrium`
 *    when t_equilibrium is set, `diffusion` when t_diffusion is set; else `fitting` when the run
 *    has fewer than 2 × `sustain_points` points, or when it is still high and still falling at its
 *    end: s over its last decade of steps (T/10…T, T the last step) falls by at least `settle_slope`
 *    (1) decade per decade of steps (least squares on the log step axis) while its median over
 *    T/2…T is still above `diffusion_threshold` (fitting is the phase of high SNR; a run that ends
 *    below 1 without diffusion has settled low, and a network that collapsed at a large learning
 *    rate — its SNR jumps by decades within the last decade of steps — is not still falling).
 *    Otherwise `steady`: the SNR settled around 1 or above without collapsing into diffusion
 *    (mini-batch training, large learning rates). t_diffusion and t_equilibrium are reported for a
 *    diverged trial too (what happened before it blew up).
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
  /** Width of the centered running median of log10 SNR, in logged SNR points (odd; truncated at the ends). Default 7. */
  smooth_window: number;
  /** The smoothing takes, on each side of a point, only points whose step is within this factor of its own. Default 1.25. */
  smooth_span: number;
  /** Leading SNR points this many decades or more above the median log10 SNR of all later points are dropped. Default 3. */
  outlier_decades: number;
  /** log10 SNR below which the smoothed SNR is below 1 (0 = SNR 1): where diffusion starts. Default 0. */
  diffusion_threshold: number;
  /** Decades the smoothed SNR must also have fallen below its maximum so far (the fitting peak) to enter diffusion. Default 0.5. */
  diffusion_drop: number;
  /** Highest level (mean smoothed log10 SNR) of a diffusion stretch (diffusion is SNR well below 1). Default −0.5. */
  diffusion_depth: number;
  /** Logged SNR points the diffusion stretch lasts at least (to the DE rise, or to the end of the run). Default 16. */
  diffusion_points: number;
  /** Factor of steps the diffusion stretch spans at least, from its first to its last point (a plateau, not a late dip). Default 2. */
  diffusion_span: number;
  /** Logged SNR points a phase must last: diffusion's stretch, the points left after DE. Default 8. */
  sustain_points: number;
  /** Rise of the smoothed log10 SNR above the diffusion floor, in decades, that marks the DE transition. Default 0.9. */
  rise_decades: number;
  /** Logged SNR points within which that rise happens (from the floor's last visit). Default 25. */
  rise_window: number;
  /** Decades above the diffusion floor DE must stay (no sustained return at or below it); t_equilibrium is where s first passes it on the rise. Default 0.5. */
  level_margin: number;
  /** Factor of steps DE spans at least, from the start of its rise to the end of the run (a rise at the very end is not told from a spike). Default 1.25. */
  equilibrium_span: number;
  /** Lowest level (mean smoothed log10 SNR) of DE, from the start of its rise to the end (−1: SNR 0.1; below it the gradients do not align). Default −1. */
  equilibrium_level: number;
  /** A run without diffusion whose smoothed SNR falls at least this many decades per decade of steps over its last decade (T/10…T), and is still above 1 over T/2…T, is still fitting. Default 1. */
  settle_slope: number;
  /** Loss ≥ this × its running minimum, to the end of the run, is a divergence. Default 1e4. */
  divergence_factor: number;
}

/** The defaults (equal to the defaults of the spec's `analysis:` block; a test checks it). */
export const DEFAULT_PHASE_PARAMS: Readonly<PhaseParams> = Object.freeze({
  smooth_window: 7,
  smooth_span: 1.25,
  outlier_decades: 3,
  diffusion_threshold: 0,
  diffusion_drop: 0.5,
  diffusion_depth: -0.5,
  diffusion_points: 16,
  diffusion_span: 2,
  sustain_points: 8,
  rise_decades: 0.9,
  rise_window: 25,
  level_margin: 0.5,
  equilibrium_span: 1.25,
  equilibrium_level: -1,
  settle_slope: 1,
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

/** The median of xs (the mean of the two middle values for an even count). */
export function median(xs: number[]): number {
  const s = xs.slice().sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * Centered running median of `y` over at most `w` points (odd; (w − 1)/2 on each side), taking on
 * each side only points whose step is within a factor `span` of the point's own (steps offset by
 * one logging interval so that step 0 has a logarithm), and as many on both sides: early points,
 * where phases change within a few logged points, are smoothed little; late ones over the full w.
 * Without steps (or span = Infinity) it is a plain running median truncated at the ends.
 */
export function smoothLog(y: number[], w: number, step?: number[], span = Infinity): number[] {
  if (!Number.isFinite(span)) step = undefined;
  const half = Math.floor((w - 1) / 2);
  const off = step && step.length > 1 ? Math.max(1, step[1]! - step[0]!) : 1;
  const ln = step ? step.map((v) => Math.log(v + off)) : [];
  const lspan = Math.log(span);
  return y.map((_, i) => {
    let left = 0;
    while (left < half && i - left - 1 >= 0 && (!step || ln[i]! - ln[i - left - 1]! <= lspan)) left++;
    let right = 0;
    while (right < half && i + right + 1 < y.length && (!step || ln[i + right + 1]! - ln[i]! <= lspan)) right++;
    const h = step ? Math.min(left, right) : -1;
    return median(h >= 0 ? y.slice(i - h, i + h + 1) : y.slice(i - left, i + right + 1));
  });
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
  /** The centered running median of `log10` over `smooth_window` points: the series the detector reads. */
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
  return { loss, points: { step, log10: y, smoothed: smoothLog(y, p.smooth_window, step, p.smooth_span), dropped } };
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

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;

/**
 * The factor of steps from point a to point b (b ≥ a) on the log step axis: steps offset by the first
 * logging interval, as in `smoothLog`, so that step 0 has a logarithm.
 */
function spanOf(steps: number[], a: number, b: number): number {
  const off = steps.length > 1 ? Math.max(1, steps[1]! - steps[0]!) : 1;
  return (steps[b]! + off) / (steps[a]! + off);
}

/**
 * Rules 3–4: the indices in s of t_diffusion and t_equilibrium (−1 when not seen). Candidate starts
 * (the first point of a run of sustain_points points below the threshold) are tried in order; the
 * first whose stretch — from it to its DE rise, or to the end of the run — is diffusion gives the
 * record.
 */
function findTransitions(s: number[], steps: number[], p: PhaseParams): { d: number; e: number } {
  const m = s.length;
  let peak = -Infinity;
  for (let i = 0; i + p.sustain_points <= m; i++) {
    const start = i === 0 || !(s[i - 1]! < p.diffusion_threshold);
    let sustained = start;
    for (let k = i; k < i + p.sustain_points && sustained; k++) if (!(s[k]! < p.diffusion_threshold)) sustained = false;
    if (!sustained) {
      peak = Math.max(peak, s[i]!);
      continue;
    }
    const e = findEquilibrium(s, steps, i, p);
    const end = e >= 0 ? e : m;
    const region = s.slice(i, end);
    const top = Math.max(peak, s[i]!);
    if (
      region.length >= p.diffusion_points &&
      spanOf(steps, i, end - 1) >= p.diffusion_span &&
      mean(region) <= p.diffusion_depth &&
      Math.min(...region) <= top - p.diffusion_drop
    ) {
      if (i > 0) return { d: i, e };
      // Below 1 from the first point on: diffusion starts where s has fallen diffusion_drop below its
      // running maximum (the fitting stretch of a run that starts below 1 is its fall from the start).
      let run = -Infinity;
      for (let q = 0; q < m; q++) {
        run = Math.max(run, s[q]!);
        if (s[q]! <= run - p.diffusion_drop) return { d: q, e: e >= 0 && e <= q ? -1 : e };
      }
    }
    peak = Math.max(peak, s[i]!);
  }
  return { d: -1, e: -1 };
}

/** Rule 4: the index of t_equilibrium in s (after d), or −1. */
function findEquilibrium(s: number[], steps: number[], d: number, p: PhaseParams): number {
  const m = s.length;
  // The diffusion level at j: the median of s from d to the last point before j that was within
  // level_margin of the running level (the start of the rise).
  let lastLow = d;
  let level = s[d]!; // median of s[d..lastLow], recomputed only when lastLow moves
  for (let j = d + 1; j < m; j++) {
    if (s[j]! <= level + p.level_margin) {
      lastLow = j;
      level = median(s.slice(d, lastLow + 1));
      continue;
    }
    if (s[j]! < level + p.rise_decades || j - lastLow > p.rise_window) continue;
    if (m - j < p.sustain_points) return -1;
    // Too late: the stretch from the start of the rise to the end spans less than equilibrium_span
    // (every later candidate spans less still).
    if (spanOf(steps, lastLow + 1, m - 1) < p.equilibrium_span) return -1;
    // Holds: from the rise to the end, s is above level + level_margin on at least half of the
    // points, and never at or below it for diffusion_points points in a row (a flicker between the
    // two levels that the upper one dominates is DE; a return to diffusion is not); and its level
    // (mean s) is at least equilibrium_level (the gradients align again).
    let below = 0;
    let up = 0;
    let holds = true;
    for (let k = lastLow + 1; k < m && holds; k++) {
      if (s[k]! > level + p.level_margin) {
        below = 0;
        up++;
      } else below++;
      if (below >= p.diffusion_points) holds = false;
    }
    if (holds && 2 * up >= m - lastLow - 1 && mean(s.slice(lastLow + 1)) >= p.equilibrium_level) return lastLow + 1;
  }
  return -1;
}

/**
 * Rule 5's fitting test: too short, or still high and still falling at the end — on the log step
 * axis the phases are read on: the least-squares slope of s against log10 step over the last decade
 * of steps (T/10 to T) is −settle_slope or steeper, and the median of s over T/2 to T is still above
 * diffusion_threshold (the fitting phase is SNR above 1; a run that ends below 1 without diffusion
 * has settled low, not fitting).
 */
function stillFitting(s: number[], steps: number[], p: PhaseParams): boolean {
  const m = s.length;
  if (m < 2 * p.sustain_points) return true;
  const T = steps[m - 1]!;
  const end = s.filter((_, i) => steps[i]! >= T / 2);
  if (!(median(end) > p.diffusion_threshold)) return false;
  const idx = [...Array(m).keys()].filter((i) => steps[i]! >= T / 10 && steps[i]! > 0);
  if (idx.length < 2) return false;
  const x = idx.map((i) => Math.log10(steps[i]!));
  const y = idx.map((i) => s[i]!);
  const mx = mean(x);
  const my = mean(y);
  let sxy = 0;
  let sxx = 0;
  for (let k = 0; k < x.length; k++) {
    sxy += (x[k]! - mx) * (y[k]! - my);
    sxx += (x[k]! - mx) ** 2;
  }
  return sxx > 0 && sxy / sxx <= -p.settle_slope;
}

/**
 * Reads a trial's phase record from its logged series (rules: this module's header; science.md §6;
 * docs/phases.md).
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
  const { d, e } = findTransitions(s, steps, p);
  const t_diffusion = d >= 0 ? steps[d]! : null;
  const t_equilibrium = e >= 0 ? steps[e]! : null;
  const final_phase: FinalPhase = lossDiverged(loss, p.divergence_factor)
    ? 'diverged'
    : t_equilibrium !== null
      ? 'equilibrium'
      : t_diffusion !== null
        ? 'diffusion'
        : stillFitting(s, steps, p)
          ? 'fitting'
          : 'steady';
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
