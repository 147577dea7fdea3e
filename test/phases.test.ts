/**
 * The phase record (science.md §6, analysis/phases.ts): synthetic series with transitions at
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

// The running median (9 points, span 1.25) leaves a series of constant blocks at least 5 points long
// unchanged (each window's majority is the point's own block), so s = y in the tests below.

test('a dip that climbs back is not diffusion: steady; a shorter dip neither; diffusion_points', (t) => {
  // 8 points at 10^-1.5 (under sustain_points = 10), then back up: no diffusion. The run then sits at
  // 10^1 over its last third (no fall): steady, not fitting.
  const short = [...fill(5, FIT), ...fill(8, DIFF), ...fill(30, FIT)];
  t.deepEqual(detectPhases(series(short)), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
  // 25 points at 10^-0.8 (deep enough, long enough) that end back at 10^0: a rise of 0.8 decades from
  // the level −0.8 (under rise_decades = 0.9), so not DE, and the stretch ended: a dip. Steady.
  const dip = [...fill(5, 0.5), ...fill(25, -0.8), ...fill(50, 0)];
  t.deepEqual(detectPhases(series(dip)), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
  // The same dip followed by 10^0.5: a 1.3-decade rise that holds — diffusion from 250, DE at 1,500.
  const rise = [...fill(5, 0.5), ...fill(25, -0.8), ...fill(50, 0.5)];
  t.deepEqual(detectPhases(series(rise)), { t_diffusion: 250, t_equilibrium: 1500, final_phase: 'equilibrium' });
  // A shallow fall to 10^-0.3 that stays: not diffusion (its level, the mean of s, is above diffusion_depth −0.5). Steady.
  t.deepEqual(detectPhases(series([...fill(5, FIT), ...fill(80, -0.3)])), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
  t.deepEqual(detectPhases(series([...fill(5, FIT), ...fill(80, -0.3)]), { diffusion_depth: -0.3 }), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
  // Fewer than diffusion_points (16) points of diffusion before a DE rise: a cluster of dips, not
  // diffusion (points 5–19 at 10^-1.5, 15 points, then 10^0.5).
  const brief = [...fill(5, FIT), ...fill(15, DIFF), ...fill(60, DE)];
  t.deepEqual(detectPhases(series(brief)), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
  t.deepEqual(detectPhases(series(brief), { diffusion_points: 15 }), { t_diffusion: 250, t_equilibrium: 1000, final_phase: 'equilibrium' });
});

/** log10 SNR c − a·log10(step) at steps 50·i (step 0 takes step 50's value): a straight line on the log step axis. */
const logFall = (c: number, a: number, n = 60): number[] => [...Array(n).keys()].map((i) => c - a * Math.log10(Math.max(i, 1) * EVERY));

test('fitting: a run still above 1 whose SNR still falls a decade per decade of steps at the end (log step axis), or too short to tell', (t) => {
  // A monotone series is its own running median, so s is the line itself: its least-squares slope
  // over the last decade of steps (T/10…T, T = 2,950) is exactly −a. 5 − 1.2·log10(step) ends at
  // 10^0.84 (above 1 over T/2…T) falling 1.2 decades per decade: still fitting; settle_slope 1.3: steady.
  t.is(detectPhases(series(logFall(5, 1.2))).final_phase, 'fitting');
  t.is(detectPhases(series(logFall(5, 1.2)), { settle_slope: 1.3 }).final_phase, 'steady');
  // Falling 0.8 decades per decade (under settle_slope 1): settled — steady.
  t.is(detectPhases(series(logFall(5, 0.8))).final_phase, 'steady');
  // 3.5 − 1.2·log10(step): the same fall, but below 1 from step 850 on (its mean there, about −0.35, is
  // above diffusion_depth: no diffusion) and over T/2…T: a run that ends below 1 is not fitting.
  t.is(detectPhases(series(logFall(3.5, 1.2))).final_phase, 'steady');
  // The first fall for 50 points, then a jump to 10^8 for the last 10 (steps 2,500–2,950: a network
  // that collapsed at a large learning rate, whose SNR jumps by decades): within the last decade of
  // steps s rises — not still falling: steady.
  t.is(detectPhases(series([...logFall(5, 1.2, 50), ...fill(10, 8)])).final_phase, 'steady');
  // Fewer than 2 × sustain_points (16) points: too short to tell.
  t.is(detectPhases(series(fill(15, FIT))).final_phase, 'fitting');
  t.is(detectPhases(series(fill(16, FIT))).final_phase, 'steady');
});

test('diffusion is a plateau on the log step axis (diffusion_span); its level is the mean of s, the centre of a flicker', (t) => {
  // 10^0.6 for points 0–39, 25 points at 10^-1.5 (steps 2,000–3,200), 10^0.6 again to step 4,950: the
  // dip spans (3,200 + 50)/(2,000 + 50) = 1.59 < diffusion_span 2 of steps — a late dip, not diffusion:
  // steady. With diffusion_span 1.5 it is diffusion from 2,000, and the jump back (2.1 decades, held to
  // the end over a factor 1.5 of steps) is DE at 3,250.
  const late = [...fill(40, 0.6), ...fill(25, DIFF), ...fill(35, 0.6)];
  t.deepEqual(detectPhases(series(late)), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
  t.deepEqual(detectPhases(series(late), { diffusion_span: 1.5 }), { t_diffusion: 2000, t_equilibrium: 3250, final_phase: 'equilibrium' });
  // After fitting, SNR flickers in blocks: 11 points at 10^-0.9, 9 at 10^0.05, four times (blocks of ≥ 4
  // equal values are their own running median). The low level holds 55 % of the points, so the median
  // of s is −0.9; the mean, −0.9·0.55 + 0.05·0.45 = −0.4725, is above diffusion_depth −0.5: the
  // flicker's centre is near 10^-0.5 — steady, not diffusion.
  const flicker = [...fill(5, FIT)];
  for (let k = 0; k < 4; k++) flicker.push(...fill(11, -0.9), ...fill(9, 0.05));
  t.deepEqual(detectPhases(series(flicker)), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
  // With diffusion_depth −0.45 the flicker is deep enough. Its upper level is 0.95 decades above the
  // level −0.9: under rise_decades 1 no jump up is a DE rise, and the whole stretch from 250 is
  // diffusion. Under the default 0.9 the first jump up (point 16) is a rise that holds (36 of the 69
  // points from it are up, mean −0.40), which leaves 11 points of diffusion before it — fewer than
  // diffusion_points 16: no diffusion, and each later low block is as short: steady.
  t.deepEqual(detectPhases(series(flicker), { diffusion_depth: -0.45, rise_decades: 1 }), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
  t.deepEqual(detectPhases(series(flicker), { diffusion_depth: -0.45 }), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
});

test('DE must last (equilibrium_span) and bring SNR back within a decade of 1 (equilibrium_level)', (t) => {
  // Diffusion at 10^-1.5 from point 5 and a jump to 10^0.5 for the last 10 points (4,500–4,950): it
  // holds over (4,950 + 50)/(4,500 + 50) = 1.10 of steps, under equilibrium_span 1.25 — too late to
  // tell from a spike: diffusion. With equilibrium_span 1.05: DE at 4,500.
  const lateDE = [...fill(5, FIT), ...fill(85, DIFF), ...fill(10, DE)];
  t.deepEqual(detectPhases(series(lateDE)), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
  t.deepEqual(detectPhases(series(lateDE), { equilibrium_span: 1.05 }), { t_diffusion: 250, t_equilibrium: 4500, final_phase: 'equilibrium' });
  // A deep diffusion at 10^-3 that jumps 1.3 decades to 10^-1.7 and holds: its level (−1.7) stays below
  // equilibrium_level −1 — still diffusion; with equilibrium_level −2, DE at 2,000.
  const deep = [...fill(5, FIT), ...fill(35, -3), ...fill(60, -1.7)];
  t.deepEqual(detectPhases(series(deep)), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
  t.deepEqual(detectPhases(series(deep), { equilibrium_level: -2 }), { t_diffusion: 250, t_equilibrium: 2000, final_phase: 'equilibrium' });
});

test('SNR that starts below 1: diffusion from where it has fallen diffusion_drop below its start', (t) => {
  // Starts at 10^-0.25 (below 1 already, like the CPU-scale vanilla calibration), falls to 10^-1.5 at
  // point 10: below 1 from point 0, so t_diffusion is the first point 0.5 decades under the running
  // maximum (−0.25): point 10, step 500.
  const y = [...fill(10, -0.25), ...fill(40, DIFF)];
  t.deepEqual(detectPhases(series(y)), { t_diffusion: 500, t_equilibrium: null, final_phase: 'diffusion' });
  // A run that crosses 1 on its way down starts diffusion at the crossing (science.md §6).
  const crossing = [...fill(5, 0.25), ...fill(45, DIFF)];
  t.deepEqual(detectPhases(series(crossing)), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
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
  // After step 0 the SNR sits at 10^-0.5 from the start: dropped, the run is below 1 from its first
  // point and never falls half a decade under it — steady.
  const y = [6, ...fill(60, -0.5)];
  t.deepEqual(detectPhases(series(y)), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
  // Read as a peak (the drop disabled), the same series crosses below 1 at point 1: "diffusion" from step 50.
  t.deepEqual(detectPhases(series(y), { outlier_decades: 100 }), { t_diffusion: 50, t_equilibrium: null, final_phase: 'diffusion' });
  // A genuine fitting peak at steps 0–50 (2.5 decades above the rest, under outlier_decades = 3) is
  // kept: diffusion from the crossing at point 2 (step 100).
  const vanilla = [1.5, 1.5, ...fill(60, -1)];
  t.deepEqual(detectPhases(series(vanilla)), { t_diffusion: 100, t_equilibrium: null, final_phase: 'diffusion' });
  // Several meaningless leading points (e.g. diagnostics every step) are all dropped.
  t.deepEqual(detectPhases(series([6.5, 6, 5.5, ...fill(60, -0.5)])), { t_diffusion: null, t_equilibrium: null, final_phase: 'steady' });
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
  // A return to the diffusion level after a real rise, shorter than sustain_points (points 60–67,
  // 8 < 10), does not undo DE.
  const dip = threePhases();
  for (let i = 60; i < 68; i++) dip[i] = DIFF;
  t.deepEqual(detectPhases(series(dip)), { t_diffusion: 250, t_equilibrium: 2000, final_phase: 'equilibrium' });
  // A long return (points 50–69, 20 points) does: the first rise is not DE, the second is (step 3500).
  const back = threePhases();
  for (let i = 50; i < 70; i++) back[i] = DIFF;
  t.deepEqual(detectPhases(series(back)), { t_diffusion: 250, t_equilibrium: 3500, final_phase: 'equilibrium' });
  // Two-level flicker (the upper level 10^0.5 on 2 of every 3 points from point 40 on): the running
  // median follows the upper level — DE at 2,050 (point 41: the first 7-point window, 38–44, with 4
  // upper points); on 1 of every 3, it follows the floor — no DE.
  const often = [...fill(5, FIT), ...fill(35, DIFF), ...[...Array(60).keys()].map((i) => (i % 3 === 2 ? DIFF : DE))];
  t.deepEqual(detectPhases(series(often)), { t_diffusion: 250, t_equilibrium: 2050, final_phase: 'equilibrium' });
  const rare = [...fill(5, FIT), ...fill(35, DIFF), ...[...Array(60).keys()].map((i) => (i % 3 === 2 ? DE : DIFF))];
  t.deepEqual(detectPhases(series(rare)), { t_diffusion: 250, t_equilibrium: null, final_phase: 'diffusion' });
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

test('calibration run (science.md §6, CPU scale): vanilla diffusion then DE; RBA reaches DE earlier', (t) => {
  const v = calib.trials.vanilla;
  const r = calib.trials.rba;
  t.is(v.step.length, 101);
  t.true(Math.log10(r.snr[0]!) > 5.9, 'RBA step 0 holds the meaningless λ⁰ = 0 value');
  // Vanilla starts below 1 (10^-0.12; the reference −0.18), has fallen half a decade by 150, sits at
  // 10^-1.4 from ~900 (the reference: ~0.045 from ~900 to ~2,000) and climbs more than a decade (the
  // reference: "by ~3,300"); its rise passes half a decade above the diffusion level at 1,750.
  t.deepEqual(detectPhases(v), { t_diffusion: 150, t_equilibrium: 1750, final_phase: 'equilibrium' });
  // RBA (step 0 dropped): falls below 1 at 150 to a shallower floor (−0.4…−0.9) and rises out of it
  // at 1,500: DE earlier than vanilla, as science.md §6 expects.
  t.deepEqual(detectPhases(r), { t_diffusion: 150, t_equilibrium: 1500, final_phase: 'equilibrium' });
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
  t.regex(typo[0]!, /^spec\.yaml: analysis\.rise_windw: unknown key, expected one of the keys smooth_window, smooth_span, outlier_decades, .*divergence_factor \(did you mean 'rise_window'\?\)$/);
  const bad = errorsOf(`${base}analysis: {divergence_factor: 1, sustain_points: 0, rise_decades: high}\n`);
  t.true(bad.some((e) => e.includes('analysis.divergence_factor: got 1, expected a number > 1')), bad.join('\n'));
  t.true(bad.some((e) => e.includes('analysis.sustain_points: got 0, expected a number >= 1')), bad.join('\n'));
  t.true(bad.some((e) => e.includes('analysis.rise_decades: got "high", expected a value of type number')), bad.join('\n'));
  t.deepEqual(errorsOf(`${base}analysis: {smooth_window: 4}\n`), ['spec.yaml: analysis.smooth_window: got 4, expected an odd integer (a centered running median)']);
  t.regex(errorsOf(`${base}analysis: 3\n`)[0]!, /analysis: got 3, expected a value of type object/);
  t.regex(errorsOf(`${base}grid:\n  analysis.rise_window: [5, 10]\n`)[0]!, /grid\.analysis\.rise_window: .*expected a dotted path into one of problem/);
});

test('snrPoints: the points and the smoothed series the detector reads (what the report draws)', (t) => {
  // Step 0 is 10^6 over a run near 10^0: dropped (rule 1). Then log10 SNR 0, 1, 2, 3 at steps 10, 20,
  // 40, 50. Steps offset by the first interval (10): 20, 30, 50, 60 — no two neighbours within a factor
  // 1.25, so the running median leaves every point as it is; with an unlimited span it is the plain
  // 3-point running median, truncated at the ends.
  const series: PhaseSeries = { step: [0, 10, 20, 30, 40, 50], snr: [1e6, 1, 10, null, 100, 1000], loss: [1, 1, 1, 1, 1, 1] };
  const p = snrPoints(series, { smooth_window: 3 });
  t.deepEqual(p.step, [10, 20, 40, 50]);
  t.deepEqual(p.log10, [0, 1, 2, 3]);
  t.deepEqual(p.smoothed, [0, 1, 2, 3]);
  t.is(p.dropped, 1);
  t.deepEqual(snrPoints(series, { smooth_window: 3, smooth_span: Infinity }).smoothed, [0.5, 1, 2, 2.5]);
  // Late points (steps 1,000–1,080 every 10) are within the span: a single spike is removed.
  const late: PhaseSeries = { step: [0, ...[...Array(9).keys()].map((i) => 1000 + 10 * i)], snr: [1, 1, 1, 1, 1, 1e3, 1, 1, 1, 1], loss: Array(10).fill(1) };
  t.deepEqual(snrPoints(late, { outlier_decades: 100 }).smoothed, Array(10).fill(0));
});
