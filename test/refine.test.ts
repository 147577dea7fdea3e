/**
 * Adaptive refinement: the planner (analysis/refine.ts) on synthetic phase fields, and `phasemap
 * refine DIR` end to end on a tiny real sweep.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { renderBoundaries, type DiagramCell, type Phase } from '../analysis/diagram.js';
import { logMidpoint, mapAgreement, planRefinement, type MapPoint, type RefineSample } from '../analysis/refine.js';
import { nearestPhase, replayRefinement } from '../analysis/refine-replay.js';
import { refineDefaults } from '../orchestrator/refine.js';
import { parseSpecText, resolveSweep, trialId } from '../orchestrator/spec.js';
import { duck, runCli, tempDir } from './helpers.js';
import { specErrors, TINY_SPEC } from './spec-helpers.js';

/** A synthetic field: diverged above a boundary lr* = 3e-3 · (bs/64)^0.5, steady below; group 'b' is shifted 4x up. */
function field(group: string, lr: number, bs: number): Phase {
  const boundary = 3e-3 * Math.sqrt(bs / 64) * (group === 'b' ? 4 : 1);
  return lr > boundary ? 'diverged' : 'steady';
}
const N = 1024; // batch 'full'
const LRS = [1e-4, 1e-3, 1e-2, 1e-1];
const BSS = [16, 64, 256, N];

function grid(groups: string[], seeds: number[]): RefineSample[] {
  const out: RefineSample[] = [];
  for (const group of groups) for (const x of LRS) for (const y of BSS) for (const seed of seeds) out.push({ group, x, y, seed, phase: field(group, x, y) });
  return out;
}

/** Runs rounds of plan → "train" (evaluate the field) until nothing is proposed or the budget is spent. */
function refineRounds(samples: RefineSample[], budget: number, resolution: number, maxRounds = 100): { samples: RefineSample[]; added: number; rounds: number } {
  let added = 0;
  let rounds = 0;
  for (; rounds < maxRounds; rounds++) {
    const plan = planRefinement(samples, { resolution, budget: budget - added, yInteger: true });
    if (plan.length === 0) break;
    added += plan.length;
    samples = [...samples, ...plan.map((p) => ({ group: p.group, x: p.x, y: p.y, seed: p.seed, phase: field(p.group, p.x, p.y) }))];
  }
  return { samples, added, rounds };
}

test('planRefinement: repeated rounds bracket the boundary along each batch size to within the resolution', (t) => {
  const start = grid(['a', 'b'], [0, 1]);
  const { samples, added, rounds } = refineRounds(start, 10_000, 1.25);
  t.true(rounds > 2 && rounds < 100, `rounds ${rounds}`);
  t.true(added > 0);
  for (const group of ['a', 'b'])
    for (const y of BSS) {
      const row = [...new Set(samples.filter((s) => s.group === group && s.y === y).map((s) => s.x))].sort((a, b) => a - b);
      const boundary = 3e-3 * Math.sqrt(y / 64) * (group === 'b' ? 4 : 1);
      const below = row.filter((x) => x <= boundary).at(-1)!;
      const above = row.find((x) => x > boundary)!;
      t.true(above / below <= 1.25, `${group} bs ${y}: bracket ${below}…${above}`);
    }
  // Seeds are the same at every new point (both of the cells it lies between).
  for (const s of samples.slice(start.length)) t.true(samples.some((o) => o !== s && o.group === s.group && o.x === s.x && o.y === s.y && o.seed !== s.seed));
  // Batch sizes stay integers, within the grid's range.
  for (const s of samples) t.true(Number.isInteger(s.y) && s.y >= 16 && s.y <= N);
});

test('planRefinement: never more than the budget, over all rounds', (t) => {
  for (const budget of [0, 1, 7, 30]) {
    const { added, samples } = refineRounds(grid(['a'], [0, 1, 2]), budget, 1.25);
    t.true(added <= budget, `budget ${budget}: added ${added}`);
    t.is(samples.length, 48 + added);
    if (budget > 0) t.is(added, budget); // this field has more to refine than 30 trials
  }
});

test('planRefinement: proposes log midpoints of neighbours that differ, with the same seeds; a second call on the trials plus their refinements proposes nothing already present', (t) => {
  const start = grid(['a'], [0, 1]);
  const plan = planRefinement(start, { resolution: 1.25, budget: 1000, yInteger: true });
  // At bs 64 the boundary 3e-3 lies between lr 1e-3 and 1e-2: the midpoint 3.162e-3, seeds 0 and 1.
  t.deepEqual(plan.filter((p) => p.y === 64 && p.axis === 'x').map((p) => [p.x, p.seed]), [[3.162e-3, 0], [3.162e-3, 1]]);
  t.is(logMidpoint(1e-3, 1e-2), 3.162e-3);
  // Along y at lr 1e-2: diverged at 16, 64, 256 and steady at 1024 (boundary 1.2e-2): midpoint 512.
  t.true(plan.some((p) => p.axis === 'y' && p.x === 1e-2 && p.y === 512));
  // Only pairs that differ: at lr 1e-4 every cell is steady.
  t.false(plan.some((p) => p.x === 1e-4 && p.axis === 'y'));
  const keys = (ps: Array<{ group: string; x: number; y: number; seed: number }>) => ps.map((p) => `${p.group}|${p.x}|${p.y}|${p.seed}`);
  t.is(new Set(keys(plan)).size, plan.length, 'deduplicated');
  // Deterministic.
  t.deepEqual(planRefinement([...start].reverse(), { resolution: 1.25, budget: 1000, yInteger: true }), plan);
  // The same trials with their refinements queued but not done (existing), or done:
  const again = planRefinement(start, { resolution: 1.25, budget: 1000, yInteger: true }, plan);
  t.deepEqual(again, []);
  const done = [...start, ...plan.map((p) => ({ ...p, phase: field(p.group, p.x, p.y) }))];
  const next = planRefinement(done, { resolution: 1.25, budget: 1000, yInteger: true });
  const present = new Set(keys(done));
  t.true(next.length > 0);
  for (const k of keys(next)) t.false(present.has(k), k);
});

test('planRefinement: pairs within the resolution, and midpoints that round onto an existing value, are skipped', (t) => {
  const s = (x: number, y: number, phase: Phase, seed = 0): RefineSample => ({ group: 'g', x, y, seed, phase });
  t.deepEqual(planRefinement([s(1e-3, 64, 'steady'), s(1.2e-3, 64, 'diverged')], { resolution: 1.25, budget: 10 }), []);
  t.is(planRefinement([s(1e-3, 64, 'steady'), s(1.3e-3, 64, 'diverged')], { resolution: 1.25, budget: 10 }).length, 1);
  // 2 and 3: the midpoint 2.449 rounds to 2, which exists.
  t.deepEqual(planRefinement([s(1e-3, 2, 'steady'), s(1e-3, 3, 'diverged')], { resolution: 1.25, budget: 10, yInteger: true }), []);
  // Same consensus, but the seeds disagree in one cell: refined.
  t.is(planRefinement([s(1e-3, 64, 'steady'), s(1e-3, 64, 'steady', 1), s(1e-2, 64, 'steady'), s(1e-2, 64, 'diverged', 1), s(1e-2, 64, 'steady', 2)], { resolution: 1.25, budget: 10 }).length, 3);
  t.throws(() => planRefinement([], { resolution: 1, budget: 1 }), { message: /resolution/ });
  // √(3.162e-3 · 1.778e-2) = 7.498e-3 to 4 digits; with 7.499e-3 in the group at another batch size, the midpoint
  // along batch 64 takes it (a factor 1.0001 apart: one column of the diagram, not two).
  const near = planRefinement([s(3.162e-3, 64, 'steady'), s(1.778e-2, 64, 'diverged'), s(7.499e-3, 128, 'steady'), s(7.499e-3, 256, 'steady')], { resolution: 1.25, budget: 10 });
  t.deepEqual(near.filter((p) => p.axis === 'x').map((p) => [p.x, p.y]), [[7.499e-3, 64]]);
  t.false(near.some((p) => p.x === 7.498e-3), JSON.stringify(near));
  // The same when 7.499e-3 is only planned (in the sweep, not done yet).
  const planned = planRefinement([s(3.162e-3, 64, 'steady'), s(1.778e-2, 64, 'diverged')], { resolution: 1.25, budget: 10 }, [{ group: 'g', x: 7.499e-3, y: 128, seed: 0 }]);
  t.deepEqual(planned.map((p) => [p.x, p.y]), [[7.499e-3, 64]]);
  // Without it, the rounded midpoint itself.
  t.deepEqual(planRefinement([s(3.162e-3, 64, 'steady'), s(1.778e-2, 64, 'diverged')], { resolution: 1.25, budget: 10 }).map((p) => p.x), [7.498e-3]);
});

// A tiny real sweep: lr 1e-3 is still fitting after 40 steps; lr 3 and 10 diverge (loss at 1.5x its running minimum to the end).
const TINY = `
name: refine-tiny
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 40, log_every: 5, eval_every: 10}
diagnostics: {every: 10, snr_batches: 4}
analysis: {divergence_factor: 1.5}
refine: {rounds: 1, budget: 10}
grid:
  train.lr: [0.001, 3, 10]
`;

interface SweepJson { trials: Array<{ trial_id: string; config: { train: { lr: number } }; grid_values?: Record<string, unknown>; refine_round?: number }> }

test.serial('phasemap run with refine: adds trials at the log midpoints between cells that differ; refine again adds none; --rounds 2 goes on; sweep.json records the round', async (t) => {
  const work = await tempDir('refine');
  const spec = join(work, 'tiny.yaml');
  const out = join(work, 'out');
  await writeFile(spec, TINY);
  const flags = ['--slots', '2', '--backend', 'wasm'];
  const r1 = await runCli(['run', spec, '--out', out, ...flags], { timeoutMs: 60_000 });
  t.is(r1.code, 0, r1.stderr);
  t.regex(r1.stderr, /refine: round 1 of 1: 1 new trial/);
  // The diagram after refinement names its phase boundaries.
  t.regex(r1.stdout, /phase boundaries[^\n]*\n(  .*\n)*  vanilla, batch full: fitting → diverged between lr [0-9.e-]+ and 3\n/);
  const phases = async () => new Map((await duck(`SELECT lr, final_phase, status FROM '${out}/trials.parquet'`)).map((r) => [r.lr as number, r]));
  const p1 = await phases();
  t.deepEqual([...p1.keys()].sort((a, b) => a - b), [0.001, logMidpoint(0.001, 3), 3, 10]);
  t.is(p1.get(0.001)!.final_phase, 'fitting');
  t.is(p1.get(3)!.final_phase, 'diverged');
  for (const r of p1.values()) t.is(r.status, 'done');
  const s1 = JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as SweepJson;
  t.deepEqual(s1.trials.map((x) => [x.config.train.lr, x.refine_round]).sort((a, b) => a[0]! - b[0]!), [[0.001, undefined], [logMidpoint(0.001, 3), 1], [3, undefined], [10, undefined]]);
  // Its grid values name the axis it moved on, as the grid trials' do (and so does its label).
  t.deepEqual(s1.trials.find((x) => x.refine_round === 1)!.grid_values, { 'train.lr': logMidpoint(0.001, 3) });

  t.regex(r1.stderr, /done: 4 trial\(s\) of the sweep done \(4 run now\)/);
  // The same command again: nothing runs, and the count is the sweep's with its refinement trials.
  const r1b = await runCli(['run', spec, '--out', out, ...flags], { timeoutMs: 60_000 });
  t.is(r1b.code, 0, r1b.stderr);
  t.regex(r1b.stderr, /done: 4 trial\(s\) of the sweep done \(0 run now\)/);

  // The same options again: round 1 is recorded, nothing is added or run.
  const r2 = await runCli(['refine', out, ...flags], { timeoutMs: 60_000 });
  t.is(r2.code, 0, r2.stderr);
  t.regex(r2.stderr, /refine: no new trials/);
  t.regex(r2.stderr, /done: 4 trial\(s\) of the sweep done \(0 run now\)/);
  t.is(((JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as SweepJson).trials).length, 4);

  // One more round: new points only at the log midpoints of neighbours whose phases differ (a round
  // with a boundary left to split explores nothing).
  const lrs = [...p1.keys()].sort((a, b) => a - b);
  const expected = lrs.slice(1).flatMap((b, i) => (p1.get(lrs[i]!)!.final_phase !== p1.get(b)!.final_phase ? [logMidpoint(lrs[i]!, b)] : []));
  t.true(expected.length >= 1, `round 2 plans ${expected}`);
  const r3 = await runCli(['refine', out, '--rounds', '2', ...flags], { timeoutMs: 60_000 });
  t.is(r3.code, 0, r3.stderr);
  const s3 = JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as SweepJson;
  t.deepEqual(s3.trials.filter((x) => x.refine_round === 2).map((x) => x.config.train.lr).sort((a, b) => a - b), expected);
  t.is(s3.trials.length, 4 + expected.length);

  // A refine killed after it recorded its round's trials: the same command runs them first.
  const config = structuredClone(s3.trials[0]!.config) as Parameters<typeof trialId>[0];
  config.train.lr = 0.5;
  const id = trialId(config);
  s3.trials.push({ trial_id: id, config, refine_round: 2 });
  await writeFile(join(out, 'sweep.json'), JSON.stringify(s3));
  const r4 = await runCli(['refine', out, '--rounds', '2', ...flags], { timeoutMs: 60_000 });
  t.is(r4.code, 0, r4.stderr);
  t.regex(r4.stderr, /1 trial\(s\) of round 2 not done yet: running them first/);
  t.deepEqual(await duck(`SELECT status FROM '${out}/trials.parquet' WHERE trial_id = '${id}'`), [{ status: 'done' }]);
});

test('the refine: block: defaults, checked like the rest of the spec, no part of trial ids', (t) => {
  const plain = resolveSweep(parseSpecText(TINY_SPEC));
  const refined = resolveSweep(parseSpecText(`${TINY_SPEC}refine: {rounds: 2}\n`));
  t.is(plain.refine, null);
  t.deepEqual(refined.refine, { rounds: 2, resolution: 1.25, budget: 100, explore: 4, x: 'lr', y: 'batch_size', facet: 'strategy' });
  // `phasemap refine` on a DIR whose spec has no block: the same defaults.
  t.deepEqual(refineDefaults(), { ...refined.refine!, rounds: 3 });
  t.deepEqual(refined.trials.map((x) => x.trial_id), plain.trials.map((x) => x.trial_id));
  t.deepEqual(specErrors(`${TINY_SPEC}refine: {resolutoin: 2}\n`), ["spec.yaml: refine.resolutoin: unknown key, expected one of the keys rounds, resolution, budget, explore, x, y, facet (did you mean 'resolution'?)"]);
  t.deepEqual(specErrors(`${TINY_SPEC}refine: {explore: 1}\n`), ['spec.yaml: refine.explore: got 1, expected 0 or a number > 1']);
  t.deepEqual(specErrors(`${TINY_SPEC}refine: {resolution: 1}\n`), ['spec.yaml: refine.resolution: got 1, expected a number > 1']);
  t.deepEqual(specErrors(`${TINY_SPEC}refine: {x: batch_size}\n`), ['spec.yaml: refine.y: got "batch_size", expected an axis other than refine.x (batch_size)']);
  // The facet is checked before anything runs, not when the diagram is written at the end.
  t.deepEqual(specErrors(`${TINY_SPEC}refine: {facet: stratgy}\n`), ["spec.yaml: refine.facet: got \"stratgy\", expected a trials.parquet column, e.g. strategy, problem, seed, width, depth (did you mean 'strategy'?)"]);
  t.deepEqual(specErrors(`${TINY_SPEC}refine: {facet: bogus}\n`), ['spec.yaml: refine.facet: got "bogus", expected a trials.parquet column, e.g. strategy, problem, seed, width, depth']);
  t.deepEqual(specErrors(`${TINY_SPEC}refine: {facet: lr}\n`), ['spec.yaml: refine.facet: got "lr", expected a column other than the refined axes (lr, batch_size)']);
  t.is(resolveSweep(parseSpecText(`${TINY_SPEC}refine: {facet: seed}\n`)).refine!.facet, 'seed');
});

test('renderBoundaries: one line per pair of neighbouring cells whose dominant phases differ, per facet', (t) => {
  const cell = (facet: string, x: number, y: number, phase: Phase, y_full = false): DiagramCell => ({
    facet, x, y, trials: 1, share_diverged: 0, share_fitting: 0, share_steady: 0, share_diffusion: 0, share_equilibrium: 0, [`share_${phase}`]: 1,
    median_t_equilibrium: null, min_t_equilibrium: null, max_t_equilibrium: null, median_final_rel_l2: null, best_final_rel_l2: null, worst_final_rel_l2: null,
    y_full, x_full: false, facet_full: false,
  });
  const cells = [
    cell('vanilla', 6.3e-4, 1024, 'diffusion', true), cell('vanilla', 7.9433e-4, 1024, 'equilibrium', true), cell('vanilla', 1e-3, 1024, 'equilibrium', true),
    cell('vanilla', 6.3e-4, 128, 'diffusion'),
    cell('rba', 1e-3, 1024, 'steady', true),
  ];
  const axes = { x: 'lr', y: 'batch_size', facet: 'strategy' };
  t.is(renderBoundaries(cells, axes), 'phase boundaries (neighbouring cells whose dominant phases differ):\n  vanilla, batch full: diffusion → equilibrium between lr 6.3e-4 and 7.9e-4\n');
  t.is(renderBoundaries([cells[4]!], axes), '');
  t.regex(renderBoundaries([cell('v', 1e-3, 64, 'fitting'), cell('v', 1e-3, 128, 'diverged')], axes), /v, lr 1e-3: fitting → diverged between batch 64 and 128/);
});

test('mapAgreement: each reference point takes the phase of the nearest sample of its group in log space', (t) => {
  // Samples of group a at lr 1e-3 (steady) and 1e-2 (diffusion), batch 64; group b: one sample.
  const samples: MapPoint[] = [
    { group: 'a', x: 1e-3, y: 64, phase: 'steady' }, { group: 'a', x: 1e-2, y: 64, phase: 'diffusion' }, { group: 'b', x: 1e-3, y: 64, phase: 'fitting' },
  ];
  // lr 2e-3 is nearer 1e-3 in log10 (0.30 vs 0.70 decades): steady — agrees. lr 5e-3 is nearer 1e-2
  // (0.30 vs 0.70): diffusion, but the reference says steady — a miss. lr 1e-2 at batch 512: nearest is
  // 1e-2 at 64 (0.90 decades off in batch, against √(1 + 0.81) to 1e-3): diffusion — agrees. Group b's
  // point agrees; group c has no samples and is not counted.
  const reference: MapPoint[] = [
    { group: 'a', x: 2e-3, y: 64, phase: 'steady' }, { group: 'a', x: 5e-3, y: 64, phase: 'steady' }, { group: 'a', x: 1e-2, y: 512, phase: 'diffusion' },
    { group: 'b', x: 1e-1, y: 64, phase: 'fitting' }, { group: 'c', x: 1e-3, y: 64, phase: 'steady' },
  ];
  const r = mapAgreement(reference, samples);
  t.is(r.points, 4);
  t.is(r.agree, 3);
  t.deepEqual(r.misses, [{ group: 'a', x: 5e-3, y: 64, phase: 'steady', nearest: 'diffusion' }]);
  // A point equally near two samples of different phases (lr √(1e-3 · 1e-2) ≈ 3.162e-3 between the
  // two of group a) agrees with neither, whichever order the samples come in.
  const tie: MapPoint[] = [{ group: 'a', x: Math.sqrt(1e-5), y: 64, phase: 'steady' }];
  t.is(mapAgreement(tie, samples).agree, 0);
  t.is(mapAgreement(tie, [...samples].reverse()).agree, 0);
  t.is(mapAgreement(tie, [samples[0]!, { ...samples[1]!, phase: 'steady' }]).agree, 1);
});

test('planRefinement: samples off the lines of each other whose nearest-sample regions touch get the midpoint in both coordinates', (t) => {
  // Two samples, at (1e-3, 100) steady and (1e-2, 1000) diffusion: their regions in log space share the
  // perpendicular bisector — neighbours — and they differ: the point between them is (√(1e-5), √(1e5)).
  const samples: RefineSample[] = [
    { group: 'g', x: 1e-3, y: 100, seed: 0, phase: 'steady' },
    { group: 'g', x: 1e-2, y: 1000, seed: 0, phase: 'diffusion' },
  ];
  t.deepEqual(planRefinement(samples, { resolution: 1.25, budget: 10, yInteger: true }), [{ group: 'g', x: 3.162e-3, y: 316, seed: 0, axis: 'xy' }]);
  // The same phase on both: nothing.
  t.deepEqual(planRefinement([samples[0]!, { ...samples[1]!, phase: 'steady' }], { resolution: 1.25, budget: 10 }), []);
  // A third sample between them on the diagonal cuts them apart: only its pairs are neighbours.
  const three = [...samples, { group: 'g', x: 3.162e-3, y: 316, seed: 0, phase: 'diffusion' as Phase }];
  t.deepEqual(planRefinement(three, { resolution: 1.25, budget: 10, yInteger: true }).map((p) => [p.x, p.y]), [[1.778e-3, 178]]);
});

test('planRefinement: batch sizes between two powers of two stay powers of two; other ends round to the nearest integer', (t) => {
  const s = (y: number, phase: Phase): RefineSample => ({ group: 'g', x: 1e-3, y, seed: 0, phase });
  const ys = (a: number, b: number) => planRefinement([s(a, 'steady'), s(b, 'diffusion')], { resolution: 1.25, budget: 10, yInteger: true, yPowersOfTwo: true }).map((p) => p.y);
  t.deepEqual(ys(256, 1024), [512]); // 2^((8 + 10) / 2)
  t.deepEqual(ys(32, 256), [128]); // 2^6.5: the upper power of two on a tie (√(32 · 256) = 90.5 without)
  t.deepEqual(ys(256, 512), []); // no power of two strictly between: the pair is as fine as it gets
  t.deepEqual(ys(100, 1000), [316]); // not powers of two: the integer log midpoint
  t.deepEqual(ys(256, 1000), [506]); // a full batch of N = 1,000: √(256 000) = 505.96
});

test('planRefinement: with explore, once no boundary is left to split, neighbours of one phase beside a boundary are split while further apart than its factor', (t) => {
  const s = (x: number, phase: Phase, y = 64): RefineSample => ({ group: 'g', x, y, seed: 0, phase });
  const plan = (samples: RefineSample[], explore: number, budget = 10) => planRefinement(samples, { resolution: 1.25, budget, explore });
  const xs = (samples: RefineSample[], explore: number) => plan(samples, explore).map((p) => p.x).sort((a, b) => a - b);
  // A boundary between lr 1e-3 and 1e-2 (steady → diverged): only it is split, whatever explore says.
  const coarse = [s(1e-4, 'steady'), s(1e-3, 'steady'), s(1e-2, 'diverged'), s(1e-1, 'diverged')];
  t.deepEqual(xs(coarse, 0), [3.162e-3]);
  t.deepEqual(xs(coarse, 4), [3.162e-3]);
  // The boundary resolved (1e-3 → 1.1e-3 is within the resolution): explore splits the agreeing
  // pairs on either side of it (10x and 9.09x apart), marked so.
  const resolved = [s(1e-4, 'steady'), s(1e-3, 'steady'), s(1.1e-3, 'diverged'), s(1e-2, 'diverged'), s(1e-1, 'diverged')];
  t.deepEqual(xs(resolved, 0), []);
  t.deepEqual(plan(resolved, 4).map((p) => [p.x, p.explore]).sort((a, b) => (a[0] as number) - (b[0] as number)), [[3.162e-4, true], [3.317e-3, true]]);
  // 10x and 9.09x are not further apart than 12: nothing.
  t.deepEqual(xs(resolved, 12), []);
  // Far from any boundary nothing is explored: lr 1e-2 … 1e-1 (both diverged, neither beside the boundary).
  t.false(xs(resolved, 4).includes(3.162e-2));
  // Explored pairs are ordinary proposals: widest gaps first, within the budget.
  t.deepEqual(plan(resolved, 4, 1).map((p) => p.x), [3.162e-4]);
  t.throws(() => plan(resolved, 1), { message: /explore: got 1, expected 0 \(never\) or a number > 1/ });
});

test('planRefinement: explore finds a pocket of another phase that the coarse start steps over', (t) => {
  // Steady everywhere but a diffusion region: lr 1.5e-4 … 8e-4 at batch ≥ 64, widening to 1.5e-4 … 3e-3 at
  // the full batch. The 4 × 3 start (lr 1e-4 … 1e-1, batch 32, 256, full) sees diffusion only at lr 1e-3,
  // full batch; at batch 256 its samples on either side of the pocket (1e-4, 1e-3) are both steady.
  const pocket = (lr: number, bs: number): Phase => (lr >= 1.5e-4 && lr <= (bs >= N ? 3e-3 : 8e-4) && bs >= 64 ? 'diffusion' : 'steady');
  const start: RefineSample[] = [];
  for (const x of LRS) for (const y of [32, 256, N]) start.push({ group: 'g', x, y, seed: 0, phase: pocket(x, y) });
  const run = (explore: number) => {
    let samples = start;
    for (let round = 0; round < 8; round++) {
      const plan = planRefinement(samples, { resolution: 1.6, budget: 40 - (samples.length - start.length), explore, yInteger: true, yPowersOfTwo: true });
      if (!plan.length) break;
      samples = [...samples, ...plan.map((p) => ({ ...p, phase: pocket(p.x, p.y) }))];
    }
    // The dense grid the map is read against: 16 lr × 6 batch sizes.
    const dense: MapPoint[] = [];
    for (let i = 0; i < 16; i++) for (const y of [32, 64, 128, 256, 512, N]) dense.push({ group: 'g', x: 10 ** (-4 + i / 5), y, phase: pocket(10 ** (-4 + i / 5), y) });
    return { samples, agreement: mapAgreement(dense, samples) };
  };
  const off = run(0);
  const on = run(4);
  // Without exploring, refinement stops once the boundary it saw is resolved (11 trials), and no
  // sample at batch 256 lands in the pocket; exploring beside that boundary then puts lr 3.162e-4 there.
  t.deepEqual([off.samples.length - start.length, on.samples.length - start.length], [11, 21]);
  t.false(off.samples.some((s) => s.y === 256 && s.phase === 'diffusion'));
  t.true(on.samples.some((s) => s.y === 256 && s.x === 3.162e-4 && s.phase === 'diffusion'));
  // 91 against 85 of the 96 dense points (the pocket's rows at batch 64 … 256 read as steady without).
  t.deepEqual([on.agreement.agree, off.agreement.agree, on.agreement.points], [91, 85, 96]);
});

test('replayRefinement: rounds of the planner whose points take the phase of the nearest recorded trial', (t) => {
  // Recorded: a dense line of 16 lr (every 0.2 decades from 1e-4) at batch 64, diverged above lr 3e-3.
  const dense: MapPoint[] = Array.from({ length: 16 }, (_, i) => ({ group: 'g', x: 10 ** (-4 + i / 5), y: 64, phase: 10 ** (-4 + i / 5) > 3e-3 ? 'diverged' : 'steady' }));
  t.is(nearestPhase(dense, 'g', 2.6e-3, 64), 'steady'); // nearest: 10^-2.6 = 2.51e-3
  t.is(nearestPhase(dense, 'g', 3.5e-3, 64), 'diverged'); // nearest: 10^-2.4 = 3.98e-3
  t.is(nearestPhase(dense, 'g', 10 ** -2.5, 64), 'steady'); // a tie: the first recorded (2.51e-3)
  t.throws(() => nearestPhase(dense, 'h', 1e-3, 64), { message: /no recorded trial of group 'h'/ });
  // From lr 1e-4 and 1e-1: 3.162e-3 (read steady, the tie above), 1.778e-2, 7.498e-3, 4.869e-3 (each
  // diverged); 4.869e-3 / 3.162e-3 = 1.54 is within the resolution 1.6: 4 rounds of one trial each.
  const r = replayRefinement(dense, dense, [{ group: 'g', x: 1e-4, y: 64 }, { group: 'g', x: 1e-1, y: 64 }], { resolution: 1.6, budget: 20, rounds: 10 });
  t.deepEqual(r.samples.map((p) => [p.x, p.phase]), [[1e-4, 'steady'], [1e-1, 'diverged'], [3.162e-3, 'steady'], [1.778e-2, 'diverged'], [7.498e-3, 'diverged'], [4.869e-3, 'diverged']]);
  t.deepEqual([r.rounds, r.added, r.agreement.agree, r.agreement.points], [4, 4, 16, 16]);
  // The budget caps the trials over all rounds.
  t.is(replayRefinement(dense, dense, [{ group: 'g', x: 1e-4, y: 64 }, { group: 'g', x: 1e-1, y: 64 }], { resolution: 1.6, budget: 2, rounds: 10 }).added, 2);
});
