/**
 * The phase record (science.md §6, orchestrator/phases.ts): synthetic series with transitions at
 * known steps, the recorded CPU-scale calibration series, reading an attempt back from Parquet
 * parts, and the spec's `analysis:` block.
 */
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { Field, Float64, Int32, makeData, RecordBatch, Schema, Struct, Table, tableToIPC, vectorFromArray } from 'apache-arrow';
import { Table as WasmTable, writeParquet } from 'parquet-wasm';
import { metricsPartPath } from '../schemas/parquet.js';
import { AnalysisSchema } from '../schemas/sweep.js';
import { attemptPhases, DEFAULT_PHASE_PARAMS, detectPhases, readAttemptSeries, snrPoints, type PhaseSeries } from '../analysis/phases.js';
import { parseSpecText, resolveSweep } from '../orchestrator/spec.js';
import { repoRoot } from './helpers.js';
import { specErrors, TINY_SPEC } from './spec-helpers.js';

const EVERY = 50;

/**
 * A series with one logged SNR point every 50 steps: point i at step 50·i has log10 SNR `logSnr[i]`
 * (null = no diagnostics on that row). The loss falls smoothly unless given.
 */
function series(logSnr: (number | null)[], loss?: number[]): PhaseSeries {
  return {
    step: logSnr.map((_, i) => i * EVERY),
    snr: logSnr.map((v) => (v === null ? null : 10 ** v)),
    loss: loss ?? logSnr.map((_, i) => 1 / (1 + i)),
  };
}

const fill = (n: number, v: number): number[] => Array<number>(n).fill(v);

// Fitting at 10^1 for points 0–4, diffusion at 10^-1.5 for points 5–39, DE at 10^0.5 from point 40.
// The values are exact in binary, so the 5-point averages below are exact too.
const FIT = 1;
const DIFF = -1.5;
const DE = 0.5;
const threePhases = (): number[] => [...fill(5, FIT), ...fill(35, DIFF), ...fill(60, DE)];

test('defaults: DEFAULT_PHASE_PARAMS equals the defaults of the spec\'s analysis block, field for field', (t) => {
  const fromSchema = Object.fromEntries(Object.entries(AnalysisSchema.properties).map(([k, v]) => [k, (v as { default: unknown }).default]));
  t.deepEqual(fromSchema, { ...DEFAULT_PHASE_PARAMS });
  for (const [k, v] of Object.entries(AnalysisSchema.properties)) t.true(((v as { description?: string }).description ?? '').length > 20, `${k} is documented`);
});

test('fitting peak → diffusion at a known step → abrupt rise at a known step', (t) => {
  // Smoothed s (centered, 5 points): s[3] = (4·1 − 1.5)/5 = 0.5, s[4] = (3 − 3)/5 = 0 (not below 0),
  // s[5] = (2 − 4.5)/5 = −0.5 < min(0, peak 1 − 1 decade): diffusion from step 5·50 = 250 (below 0 for
  // the 10 points from there). Rise: s[38] = (4·−1.5 + 0.5)/5 = −1.1, s[39] = (3·−1.5 + 1)/5 = −0.7,
  // s[40] = (2·−1.5 + 1.5)/5 = −0.3: s[39] is 0.8 decades above the window's low (−1.5), s[40] 1.2
  // → DE at step 40·50 = 2000; s stays above the diffusion level (median −1.5, + 0.25) to the end.
  t.deepEqual(detectPhases(series(threePhases())), { t_diffusion: 250, t_equilibrium: 2000, final_phase: 'equilibrium' });
});

test('a trial that never rises stays in diffusion', (t) => {
  const y = [...fill(5, FIT), ...fill(95, DIFF)];
  t.deepEqual(detectPhases(series(y)), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
});

test('diffusion needs a sustained stretch: a dip shorter than sustain_points is still fitting', (t) => {
  // Points 5–12 at −1.5 (8 points; smoothed below 0 for points 5..12 only: 8 < 10), then back to 10^1.
  const y = [...fill(5, FIT), ...fill(8, DIFF), ...fill(30, FIT)];
  t.deepEqual(detectPhases(series(y)), { t_diffusion: null, t_equilibrium: null, final_phase: 'fitting' });
  t.is(detectPhases(series(y), { sustain_points: 8 }).t_diffusion, 250);
});

test('SNR that starts below 1 enters diffusion only once it has fallen a decade below its start (diffusion_drop)', (t) => {
  // Starts at 10^-0.25 (below 1 already, like the CPU-scale vanilla calibration), falls to 10^-1.5 at point 10.
  const y = [...fill(10, -0.25), ...fill(40, DIFF)];
  // Peak s[0] = −0.25. s[9] = (3·−0.25 + 2·−1.5)/5 = −0.75, s[10] = (2·−0.25 + 3·−1.5)/5 = −1.0,
  // s[11] = (−0.25 + 4·−1.5)/5 = −1.25 (not below −0.25 − 1), s[12] = −1.5 → step 12·50 = 600.
  t.deepEqual(detectPhases(series(y)), { t_diffusion: 600, t_equilibrium: null, final_phase: 'diffusion' });
  // Without the drop, any fall below the start counts: s[8] = (4·−0.25 − 1.5)/5 = −0.5 → step 400.
  t.is(detectPhases(series(y), { diffusion_drop: 0 }).t_diffusion, 400);
});

test('NaN loss → diverged; the phases before it are still reported', (t) => {
  const y: (number | null)[] = [...fill(5, FIT), ...fill(20, DIFF), null];
  const loss = [...y.map((_, i) => 1 / (1 + i)).slice(0, -1), NaN];
  t.deepEqual(detectPhases(series(y, loss)), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diverged' });
  // A trial that diverged at once: few rows, no SNR after the first.
  t.deepEqual(detectPhases({ step: [0, 10, 20], snr: [3, null, null], loss: [1, 1e3, Infinity] }), { t_diffusion: null, t_equilibrium: null, final_phase: 'diverged' });
});

test('a loss that explodes by ≥ divergence_factor over its running minimum and stays there → diverged; a spike that recovers is not', (t) => {
  const y = threePhases();
  const falling = y.map((_, i) => 10 ** (-i / 20)); // 1 → 1e-4.95
  const exploded = falling.map((v, i) => (i >= 70 ? falling[69]! * 1e5 : v)); // 1e5 × the minimum, from point 70 to the end
  t.is(detectPhases(series(y, exploded)).final_phase, 'diverged');
  const spike = falling.map((v, i) => (i === 70 ? v * 1e6 : v));
  t.is(detectPhases(series(y, spike)).final_phase, 'equilibrium');
  const grew1e3 = falling.map((v, i) => (i >= 70 ? falling[69]! * 1e3 : v));
  t.is(detectPhases(series(y, grew1e3)).final_phase, 'equilibrium');
  t.is(detectPhases(series(y, grew1e3), { divergence_factor: 100 }).final_phase, 'diverged');
});

test('RBA with λ⁰ = 0: a meaningless first SNR (10^6, every batch loss the same boundary term) is not read as the fitting peak', (t) => {
  // After step 0 the SNR sits at 10^-0.5 (never a decade lower: no diffusion by the rule).
  const y = [6, ...fill(60, -0.5)];
  t.deepEqual(detectPhases(series(y)), { t_diffusion: null, t_equilibrium: null, final_phase: 'fitting' });
  // Read as a peak (skip disabled), the same series would show "diffusion" from step 150:
  // s[0] = (6 − 1)/3, s[1] = (6 − 1.5)/4, s[2] = (6 − 2)/5 = 0.8, s[3] = −0.5 < 0.
  t.deepEqual(detectPhases(series(y), { outlier_decades: 100 }), { t_diffusion: 150, t_equilibrium: null, final_phase: 'diffusion' });
  // A genuine fitting peak at steps 0–50 (2.5 decades above the rest, under outlier_decades = 3) is
  // kept: s[0] = (3 − 1)/3 (the peak), s[3] = (1.5 − 4)/5 = −0.5 < 2/3 − 1 → step 150. Had step 0 been
  // dropped (skipping step 0 outright, or a lower outlier_decades), the peak would read s = −1/6 and
  // the fall to −1 would be under a decade: no diffusion at all.
  const vanilla = [1.5, 1.5, ...fill(60, -1)];
  t.deepEqual(detectPhases(series(vanilla)), { t_diffusion: 150, t_equilibrium: null, final_phase: 'diffusion' });
  t.deepEqual(detectPhases(series(vanilla), { outlier_decades: 2 }), { t_diffusion: null, t_equilibrium: null, final_phase: 'fitting' });
  // Several meaningless leading points (e.g. diagnostics every step) are all dropped.
  t.deepEqual(detectPhases(series([6.5, 6, 5.5, ...fill(60, -0.5)])), { t_diffusion: null, t_equilibrium: null, final_phase: 'fitting' });
});

test('noisy spikes in diffusion do not trigger equilibrium', (t) => {
  // Diffusion at 10^-1.5 with a single-point spike to 10^1 every 7 points (smoothed: +0.5 decade) and,
  // at points 50–51, two adjacent spikes to 10^1.5 (smoothed: −0.3, a 1.2-decade "rise" that falls back).
  const y = [...fill(5, FIT), ...fill(95, DIFF)];
  for (let i = 12; i < 100; i += 7) y[i] = FIT;
  y[50] = 1.5;
  y[51] = 1.5;
  const r = detectPhases(series(y));
  t.deepEqual(r, { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
  // A rise in the last few points (fewer than sustain_points left) is not DE either.
  const late = [...fill(5, FIT), ...fill(90, DIFF), ...fill(5, DE)];
  t.deepEqual(detectPhases(series(late)), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
  // A dip back to diffusion after a real rise, shorter than sustain_points once smoothed (points
  // 60–71 at 10^-1.5: s at or below the level −1.25 for points 62–69, 8 < 10), does not undo DE.
  const dip = threePhases();
  for (let i = 60; i < 72; i++) dip[i] = DIFF;
  t.deepEqual(detectPhases(series(dip)), { t_diffusion: 250, t_equilibrium: 2000, final_phase: 'equilibrium' });
  // A long return (points 50–69: s at or below the level for 16 points) does: the first rise is not
  // DE, the second is (s[70] = (2·−1.5 + 3·0.5)/5 = −0.3, 1.2 decades up → step 3500).
  const back = threePhases();
  for (let i = 50; i < 70; i++) back[i] = DIFF;
  t.deepEqual(detectPhases(series(back)), { t_diffusion: 250, t_equilibrium: 3500, final_phase: 'equilibrium' });
});

test('no diagnostics (snr all null), empty series, order of rows, mismatched arrays', (t) => {
  const n = 40;
  const noSnr = { step: [...Array(n).keys()].map((i) => i * 10), snr: fill(n, 0).map(() => null), loss: fill(n, 0).map((_, i) => 1 / (1 + i)) };
  t.deepEqual(detectPhases(noSnr), { t_diffusion: null, t_equilibrium: null, final_phase: 'fitting' });
  t.deepEqual(detectPhases({ ...noSnr, loss: [...noSnr.loss.slice(0, -1), NaN] }), { t_diffusion: null, t_equilibrium: null, final_phase: 'diverged' });
  t.deepEqual(detectPhases({ step: [], snr: [], loss: [] }), { t_diffusion: null, t_equilibrium: null, final_phase: 'fitting' });
  // Rows in any order, NaN/0 SNR ignored as points.
  const s = series(threePhases());
  const idx = s.step.map((_, i) => i).reverse();
  const shuffled = { step: idx.map((i) => s.step[i]!), snr: idx.map((i) => s.snr[i]!), loss: idx.map((i) => s.loss[i]!) };
  t.deepEqual(detectPhases(shuffled), detectPhases(s));
  // Extra rows whose SNR is NaN, 0 or null are not SNR points.
  const extra = { step: [...s.step, 1, 2, 3], snr: [...s.snr, NaN, 0, null], loss: [...s.loss, 1, 1, 1] };
  t.deepEqual(detectPhases(extra), detectPhases(s));
  t.throws(() => detectPhases({ step: [0, 1], snr: [1], loss: [1, 1] }), { message: /one entry per row/ });
});

// ---------------------------------------------------------------------------------------------
// Recorded series: sweeps/helmholtz-calibration.yaml (science.md §6's CPU-scale calibration), one run.

interface Fixture {
  source: string;
  trials: Record<'vanilla' | 'rba', PhaseSeries & { trial_id: string }>;
}
const calib = JSON.parse(readFileSync(join(repoRoot, 'test/fixtures/helmholtz-calibration-series.json'), 'utf8')) as Fixture;

test('calibration run, vanilla: diffusion from 650, DE at 1,900', (t) => {
  const v = calib.trials.vanilla;
  t.is(v.step.length, 101);
  // Smoothed log10 SNR (5 points, centered): −0.12 at step 0 (the fitting peak: SNR is below 1 from the
  // start at this scale, as in science.md §6's reference, −0.18), −0.56 at 300, −1.08 at 600, −1.14 at
  // 650 — the first point a decade below the peak — then −1.33 at 900 and a plateau at −1.4…−1.47 to
  // 1,450: diffusion, as in the reference ("sits in diffusion (SNR ≈ 0.045) from ~900"). From −1.47
  // at 1,450 it climbs to −0.29 at 1,900 (1.18 decades in 9 points) and never returns below its
  // diffusion level (median −1.42, + 0.25): DE at 1,900. The reference climbs later (by ~3,300); this
  // run leaves its minimum earlier (README: by 1,800 its smoothed SNR is already −0.6), so 1,900 is
  // what §6's rule reads here — the rise is complete at 1,900 and smoothed SNR is above 1 from ~3,100.
  t.deepEqual(detectPhases(v), { t_diffusion: 650, t_equilibrium: 1900, final_phase: 'equilibrium' });
});

test('calibration run, RBA: step 0 (10^6) skipped; diffusion from 300, DE at 1,650', (t) => {
  const r = calib.trials.rba;
  t.true(Math.log10(r.snr[0]!) > 5.9, 'step 0 holds the meaningless λ⁰ = 0 value');
  // Without step 0 the smoothed log10 SNR starts at +0.59 (step 50: the real fitting peak) and falls
  // to −0.45 at 300, a decade below it, while rel_l2 drops from 1.8 to 0.05: diffusion from 300,
  // shallower than vanilla's (−0.4…−0.9; science.md: RBA "never falls as deep"). From −0.89 at
  // 1,250 it rises to +0.29 at 1,650 (1.18 decades in 8 points) and stays above its diffusion level
  // (median −0.51, + 0.25 = −0.26) except for short dips (at most 2 points in a row; its late
  // points drift back towards it, −0.1…−0.4 after 4,000, like the reference's −0.12 at 4,800):
  // DE at 1,650, earlier than vanilla, as science.md §6 expects of RBA.
  t.deepEqual(detectPhases(r), { t_diffusion: 300, t_equilibrium: 1650, final_phase: 'equilibrium' });
  // Read as the fitting peak, step 0 would inflate the smoothed start (+2.59) and move diffusion to 200.
  t.is(detectPhases(r, { outlier_decades: 100 }).t_diffusion, 200);
});

// ---------------------------------------------------------------------------------------------
// Reading an attempt back from its parts

async function writePart(dir: string, trialId: string, attempt: number, part: number, rows: Array<[number, number | null, number]>): Promise<void> {
  const schema = new Schema([new Field('step', new Int32(), false), new Field('snr', new Float64(), true), new Field('loss', new Float64(), false)]);
  const children = [
    vectorFromArray(rows.map((r) => r[0]), new Int32()).data[0]!,
    vectorFromArray(rows.map((r) => r[1]), new Float64()).data[0]!,
    vectorFromArray(rows.map((r) => r[2]), new Float64()).data[0]!,
  ];
  const batch = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: rows.length, nullCount: 0, children }));
  const bytes = writeParquet(WasmTable.fromIPCStream(tableToIPC(new Table(schema, [batch]), 'stream')));
  const path = join(dir, metricsPartPath(trialId, attempt, part));
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, bytes);
}

test('readAttemptSeries / attemptPhases: parts of one attempt, in step order; other attempts ignored', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'phasemap-phases-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const id = 't0123456789abcdef';
  const s = series(threePhases());
  const rows = s.step.map((st, i) => [st, s.snr[i]!, s.loss[i]!] as [number, number | null, number]);
  // Part 1 holds the later rows, part 0 the earlier ones and one row with no SNR; step 1000 is in both.
  await writePart(dir, id, 2, 1, rows.slice(20));
  await writePart(dir, id, 2, 0, [...rows.slice(0, 21), [1025, null, 0.5]]);
  await writePart(dir, id, 1, 0, rows.slice(0, 3).map(([st]) => [st, 1e9, NaN]));
  const back = await readAttemptSeries(dir, id, 2);
  t.deepEqual(back.step, [...s.step.slice(0, 21), 1025, ...s.step.slice(21)].sort((a, b) => a - b));
  t.is(back.snr.filter((v) => v === null).length, 1);
  t.deepEqual(await attemptPhases(dir, id, 2, {}), { t_diffusion: 250, t_equilibrium: 2000, final_phase: 'equilibrium' });
  t.deepEqual(await attemptPhases(dir, id, 2, {}, true), { t_diffusion: 250, t_equilibrium: 2000, final_phase: 'diverged' });
  t.deepEqual(await attemptPhases(dir, id, 1, {}), { t_diffusion: null, t_equilibrium: null, final_phase: 'diverged' });
  t.deepEqual(await readAttemptSeries(dir, id, 3), { step: [], snr: [], loss: [] });
  await t.throwsAsync(() => readAttemptSeries(dir, '../etc', 1), { message: /trial_id/ });
});

// ---------------------------------------------------------------------------------------------
// The spec's analysis: block

const base = TINY_SPEC;

const errorsOf = specErrors;

test('spec analysis: defaults when absent, values in schema order, trial ids unchanged', (t) => {
  const plain = resolveSweep(parseSpecText(base));
  t.deepEqual(plain.analysis, { ...DEFAULT_PHASE_PARAMS });
  const tuned = resolveSweep(parseSpecText(`${base}analysis: {rise_window: 20, smooth_window: 7}\n`));
  t.deepEqual(Object.keys(tuned.analysis), Object.keys(DEFAULT_PHASE_PARAMS));
  t.deepEqual(tuned.analysis, { ...DEFAULT_PHASE_PARAMS, rise_window: 20, smooth_window: 7 });
  t.deepEqual(tuned.trials.map((x) => x.trial_id), plain.trials.map((x) => x.trial_id));
});

test('spec analysis: unknown keys named, ranges and types checked, smooth_window odd, not a grid key', (t) => {
  const typo = errorsOf(`${base}analysis: {rise_windw: 5}\n`);
  t.is(typo.length, 1);
  t.regex(typo[0]!, /^spec\.yaml: analysis\.rise_windw: unknown key, expected one of the keys smooth_window, outlier_decades, .*divergence_factor \(did you mean 'rise_window'\?\)$/);
  const bad = errorsOf(`${base}analysis: {divergence_factor: 1, sustain_points: 0, rise_decades: high}\n`);
  t.true(bad.some((e) => e.includes('analysis.divergence_factor: got 1, expected a number > 1')), bad.join('\n'));
  t.true(bad.some((e) => e.includes('analysis.sustain_points: got 0, expected a number >= 1')), bad.join('\n'));
  t.true(bad.some((e) => e.includes('analysis.rise_decades: got "high", expected a value of type number')), bad.join('\n'));
  t.deepEqual(errorsOf(`${base}analysis: {smooth_window: 4}\n`), ['spec.yaml: analysis.smooth_window: got 4, expected an odd integer (a centered moving average)']);
  t.regex(errorsOf(`${base}analysis: 3\n`)[0]!, /analysis: got 3, expected a value of type object/);
  t.regex(errorsOf(`${base}grid:\n  analysis.rise_window: [5, 10]\n`)[0]!, /grid\.analysis\.rise_window: .*expected a dotted path into one of problem/);
});

test('snrPoints: the points and the smoothed series the detector reads (what the report draws)', (t) => {
  // Step 0 is 10^6 over a run near 10^0: dropped (rule 1). Then log10 SNR 0, 1, 2, 3 smoothed over 3 points.
  const series: PhaseSeries = { step: [0, 10, 20, 30, 40, 50], snr: [1e6, 1, 10, null, 100, 1000], loss: [1, 1, 1, 1, 1, 1] };
  const p = snrPoints(series, { smooth_window: 3 });
  t.deepEqual(p.step, [10, 20, 40, 50]);
  t.deepEqual(p.log10, [0, 1, 2, 3]);
  t.deepEqual(p.smoothed, [0.5, 1, 2, 2.5]);
  t.is(p.dropped, 1);
});
