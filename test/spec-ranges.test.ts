/** Ranges in grid lists (linspace, logspace, geomspace) and the seeded `sample:` block of a sweep spec. */
import test from 'ava';
import { parseSpecText, resolveSweep, type ResolvedSweep } from '../orchestrator/spec.js';
import { mulberry32, rangeValues, stableNumber } from '../orchestrator/spec-ranges.js';
import { specErrors, TINY_SPEC } from './spec-helpers.js';

const resolve = (extra: string): ResolvedSweep => resolveSweep(parseSpecText(`${TINY_SPEC}${extra}`, 'spec.yaml'), 'spec.yaml');
const errorsOf = (extra: string) => specErrors(`${TINY_SPEC}${extra}`);
const ids = (s: ResolvedSweep) => s.trials.map((t) => t.trial_id);

test('each range form gives the hand-computed values, both ends included', (t) => {
  t.deepEqual(resolve('grid:\n  problem.a1: {linspace: [-1, 1, 5]}\n').grid['problem.a1'], [-1, -0.5, 0, 0.5, 1]);
  t.deepEqual(resolve('grid:\n  problem.a1: {linspace: [0.1, 0.3, 3]}\n').grid['problem.a1'], [0.1, 0.2, 0.3]);
  t.deepEqual(resolve('grid:\n  problem.a1: {linspace: [2, 5, 1]}\n').grid['problem.a1'], [2], 'n = 1: the start alone');
  // logspace takes exponents of 10 (numpy), geomspace the values themselves.
  t.deepEqual(resolve('grid:\n  train.lr: {logspace: [-4, -1, 4]}\n').grid['train.lr'], [1e-4, 1e-3, 1e-2, 1e-1]);
  t.deepEqual(resolve('grid:\n  problem.a1: {geomspace: [1, 1000, 4]}\n').grid['problem.a1'], [1, 10, 100, 1000]);
  const seven = [1e-4, 0.000316227766017, 1e-3, 0.00316227766017, 1e-2, 0.0316227766017, 1e-1];
  t.deepEqual(resolve('grid:\n  train.lr: {geomspace: [1e-4, 1e-1, 7]}\n').grid['train.lr'], seven);
  t.deepEqual(resolve('grid:\n  train.lr: {logspace: [-4, -1, 7]}\n').grid['train.lr'], seven);
  // Unrounded, 10^-4 computes as 0.00009999999999999999: the 12-digit rounding makes it 1e-4.
  t.not(rangeValues('logspace', -4, -1, 7)[0], 1e-4);
  t.is(stableNumber(rangeValues('logspace', -4, -1, 7)[0]!), 1e-4);
});

test('at an integer key range values are rounded to integers and merged; values rounding leaves invalid are an error', (t) => {
  t.deepEqual(resolve('grid:\n  train.batch_size: {linspace: [1, 4, 7]}\n').grid['train.batch_size'], [1, 2, 3, 4]);
  t.deepEqual(resolve('grid:\n  model.width: {geomspace: [8, 64, 4]}\n').grid['model.width'], [8, 16, 32, 64]);
  t.deepEqual(resolve('grid:\n  seed: {logspace: [0, 1, 3]}\n').grid.seed, [1, 3, 10]);
  t.deepEqual(resolve('grid:\n  problem.n_collocation: {linspace: [60.4, 64.2, 2]}\n').grid['problem.n_collocation'], [60, 64]);
  t.is(resolve('grid:\n  train.batch_size: {linspace: [1, 4, 7]}\n').trials.length, 4);
  t.deepEqual(errorsOf('grid:\n  model.width: {linspace: [0, 2, 3]}\n'), [
    'spec.yaml: grid.model.width: got {"linspace":[0,2,3]}, which rounds to 0, expected an integer >= 1 and <= 4096; model.width takes integers, so range values are rounded to integers',
  ]);
  t.deepEqual(errorsOf('grid:\n  train.batch_size: {linspace: [0.2, 0.4, 2]}\n'), [
    'spec.yaml: grid.train.batch_size: got {"linspace":[0.2,0.4,2]}, which rounds to 0, expected an integer >= 1 and <= 10000000; train.batch_size takes integers, so range values are rounded to integers',
  ]);
});

test('a range and the hand-written list of its values give the same trial ids', (t) => {
  const hand = resolve('grid:\n  train.lr: [0.0001, 0.001, 0.01, 0.1]\n  train.batch_size: [16, 32, full]\n');
  t.deepEqual(ids(resolve('grid:\n  train.lr: {logspace: [-4, -1, 4]}\n  train.batch_size: [16, 32, full]\n')), ids(hand));
  t.deepEqual(ids(resolve('grid:\n  train.lr: {geomspace: [1e-4, 1e-1, 4]}\n  train.batch_size: [16, 32, full]\n')), ids(hand));
  // The 3rd of 7 geomspace values is the 1e-3 a person writes: same config, same id.
  const third = resolve('grid:\n  train.lr: {geomspace: [1e-4, 1e-1, 7]}\n').trials[2]!;
  t.is(third.config.train.lr, 0.001);
  t.is(third.trial_id, resolve('grid:\n  train.lr: [1e-3]\n').trials[0]!.trial_id);
  t.is(third.trial_id, resolve('').trials[0]!.trial_id, 'and as the default lr 1e-3');
});

test('mulberry32 gives its reference sequence (the same on every Node version)', (t) => {
  const r = mulberry32(42);
  t.deepEqual([r(), r(), r()], [0.6011037519201636, 0.44829055899754167, 0.8524657934904099]);
});

const SAMPLE = 'sample:\n  count: 5\n  seed: 7\n  params:\n    train.lr: {loguniform: [1e-4, 1e-2]}\n    model.width: {int_uniform: [4, 16]}\n    strategy: {choice: [{name: vanilla}, {name: rba}]}\n';

test('a sample draws count points crossed with every grid combination, the same on every run; another seed draws others', (t) => {
  const a = resolve(`${SAMPLE}grid:\n  seed: [0, 1]\n  train.batch_size: [16, full]\n`);
  const b = resolve(`${SAMPLE}grid:\n  seed: [0, 1]\n  train.batch_size: [16, full]\n`);
  t.is(a.trials.length, 4 * 5);
  t.deepEqual(ids(a), ids(b));
  t.is(a.sample!.length, 5);
  for (const p of a.sample!) {
    const lr = p['train.lr'] as number;
    t.true(lr >= 1e-4 && lr <= 1e-2, String(lr));
    t.true(Number.isInteger(p['model.width']) && (p['model.width'] as number) >= 4 && (p['model.width'] as number) <= 16);
    t.true(['vanilla', 'rba'].includes((p.strategy as { name: string }).name));
    t.is(lr, stableNumber(lr), 'rounded to 12 significant digits');
  }
  // Every grid combination meets every point, and the drawn values are in the config (so in the id).
  for (const seed of [0, 1])
    for (const bs of [16, 'full']) {
      const cell = a.trials.filter((x) => x.config.seed === seed && x.config.train.batch_size === bs);
      t.deepEqual(cell.map((x) => x.config.train.lr), a.sample!.map((p) => p['train.lr']));
      t.deepEqual(cell.map((x) => x.grid_values['model.width']), a.sample!.map((p) => p['model.width']));
    }
  t.deepEqual(a.trials[0]!.grid_values, { seed: 0, 'train.batch_size': 16, ...a.sample![0] });
  const other = resolve(`${SAMPLE.replace('seed: 7', 'seed: 8')}grid:\n  seed: [0, 1]\n  train.batch_size: [16, full]\n`);
  t.notDeepEqual(other.sample!.map((p) => p['train.lr']), a.sample!.map((p) => p['train.lr']));
  t.is(ids(other).filter((id) => ids(a).includes(id)).length, 0);
  // No seed: seed 0; int_loguniform stays in its integer bounds.
  const d = resolve('sample: {count: 50, params: {model.depth: {int_loguniform: [1, 8]}, problem.a1: {uniform: [-2, 2]}}}\n');
  t.deepEqual(d.sample, resolve('sample: {count: 50, seed: 0, params: {model.depth: {int_loguniform: [1, 8]}, problem.a1: {uniform: [-2, 2]}}}\n').sample);
  for (const p of d.sample!) {
    t.true(Number.isInteger(p['model.depth']) && (p['model.depth'] as number) >= 1 && (p['model.depth'] as number) <= 8);
    t.true(Math.abs(p['problem.a1'] as number) <= 2);
  }
  t.true(new Set(d.sample!.map((p) => p['model.depth'])).size > 3, 'draws spread over the range');
});

test('an invalid drawn value names the sample points it occurs in', (t) => {
  const errs = errorsOf('sample: {count: 4, seed: 1, params: {model.width: {uniform: [0, 3]}}}\n');
  t.is(errs.length, 1, errs.join('\n'));
  t.regex(errs[0]!, /^spec\.yaml: sample\[\d\](, sample\[\d\])* → model\.width: got 0, expected a number >= 1$/);
});

test('bad ranges are named errors with the path, the value and what was expected', (t) => {
  const cases: Array<[string, string[]]> = [
    ['train.lr: {linspace: [0.1, 1, 0]}', ['grid.train.lr.linspace[2]: got 0, expected an integer >= 1 (n, the number of values)']],
    ['train.lr: {linspace: [0.1, 1, 2.5]}', ['grid.train.lr.linspace[2]: got 2.5, expected an integer (n, the number of values, >= 1)']],
    ['train.lr: {geomspace: [1e-1, 1e-4, 4]}', ['grid.train.lr.geomspace: got [0.1,0.0001,4], expected stop >= start (a range runs upwards: [0.0001, 0.1, 4])']],
    ['train.lr: {geomspace: [0, 1, 4]}', ['grid.train.lr.geomspace[0]: got 0, expected a number > 0 (geomspace spaces values on a log scale; for exponents of 10 use logspace)']],
    ['train.lr: {geomspace: [-1, -0.1, 4]}', ['grid.train.lr.geomspace[0]: got -1, expected a number > 0 (geomspace spaces values on a log scale; for exponents of 10 use logspace)']],
    ['train.lr: {linspace: [.nan, 1, 3]}', ['grid.train.lr.linspace[0]: got NaN, expected a finite number (start)']],
    ['train.lr: {logspace: [-4, .inf, 3]}', ['grid.train.lr.logspace[1]: got Infinity, expected a finite number (stop, an exponent of 10)']],
    ['train.lr: {logspace: [-4, 400, 3]}', ['grid.train.lr.logspace[1]: got 400, expected an exponent <= 308 (10^stop must be a finite number)']],
    ['train.lr: {linspace: [1, 2]}', ['grid.train.lr.linspace: got [1,2], expected a list [start, stop, n] (values, both included; n values)']],
    [
      'train.lr: {lgospace: [-4, -1, 4]}',
      ["grid.train.lr.lgospace: unknown key, expected one of the range forms linspace, logspace, geomspace (did you mean 'logspace'?); a grid value is a list of values (one object: [{…}]) or a range {linspace|logspace|geomspace: [start, stop, n]}"],
    ],
    [
      'train.lr: {linspace: [1, 2, 3], logspace: [1, 2, 3]}',
      ['grid.train.lr: got {"linspace":[1,2,3],"logspace":[1,2,3]}, expected one range form: {linspace|logspace|geomspace: [start, stop, n]}; a grid value is a list of values (one object: [{…}]) or a range {linspace|logspace|geomspace: [start, stop, n]}'],
    ],
  ];
  for (const [grid, want] of cases) t.deepEqual(errorsOf(`grid:\n  ${grid}\n`), want.map((w) => `spec.yaml: ${w}`), grid);
});

test('bad samples are named errors: distributions, bounds, a path both in grid and sample, the block\'s keys', (t) => {
  const p = (params: string, extra = '') => errorsOf(`sample: {count: 3, params: {${params}}}\n${extra}`);
  t.deepEqual(p('train.lr: {logunifrom: [1e-4, 1e-2]}'), [
    "spec.yaml: sample.params.train.lr.logunifrom: unknown key, expected one of the distributions uniform, loguniform, int_uniform, int_loguniform, choice (did you mean 'loguniform'?)",
  ]);
  t.deepEqual(p('train.lr: {loguniform: [0, 1e-2]}'), ['spec.yaml: sample.params.train.lr.loguniform[0]: got 0, expected a number > 0 (loguniform draws on a log scale)']);
  t.deepEqual(p('train.lr: {uniform: [0.1, 0.1]}'), ['spec.yaml: sample.params.train.lr.uniform: got [0.1,0.1], expected low < high']);
  t.deepEqual(p('model.width: {int_uniform: [16, 4]}'), ['spec.yaml: sample.params.model.width.int_uniform: got [16,4], expected low < high']);
  t.deepEqual(p('model.width: {int_uniform: [1.5, 4]}'), ['spec.yaml: sample.params.model.width.int_uniform[0]: got 1.5, expected an integer (low)']);
  t.deepEqual(p('model.width: {int_loguniform: [0, 4]}'), ['spec.yaml: sample.params.model.width.int_loguniform[0]: got 0, expected an integer >= 1 (int_loguniform draws on a log scale)']);
  t.deepEqual(p('train.lr: {uniform: [.nan, 1]}'), ['spec.yaml: sample.params.train.lr.uniform[0]: got NaN, expected a finite number (low)']);
  t.deepEqual(p('train.lr: {uniform: [1]}'), ['spec.yaml: sample.params.train.lr.uniform: got [1], expected a list [low, high]']);
  t.deepEqual(p('seed: {choice: []}'), ['spec.yaml: sample.params.seed.choice: got [], expected a non-empty list of values']);
  t.deepEqual(p('train.lr: 0.1'), ['spec.yaml: sample.params.train.lr: got 0.1, expected a distribution {uniform|loguniform|int_uniform|int_loguniform|choice: …}']);
  t.deepEqual(p("trian.lr: {uniform: [0.1, 1]}"), ["spec.yaml: sample.params.trian.lr: got \"trian.lr\", expected a dotted path into one of problem, model, train, strategy, diagnostics, seed (did you mean 'train.lr'?)"]);
  t.deepEqual(p('train.lr: {uniform: [0.1, 1]}', 'grid:\n  train.lr: [0.1]\n'), [
    'spec.yaml: sample.params.train.lr: also a grid key (grid.train.lr), expected a path either in grid or in sample, not both',
  ]);
  t.deepEqual(errorsOf('sample: {count: 0, seeed: 1, params: {}}\n'), [
    "spec.yaml: sample.seeed: unknown key, expected one of the keys count, seed, params (did you mean 'seed'?)",
    'spec.yaml: sample.count: got 0, expected a number >= 1',
    'spec.yaml: sample.params: got {}, expected a mapping with at least 1 key(s)',
  ]);
});

test('max_trials counts range sizes and the sample count before anything is expanded', (t) => {
  t.deepEqual(errorsOf('max_trials: 1000\nsample: {count: 200, params: {train.lr: {loguniform: [1e-4, 1e-2]}}}\ngrid:\n  seed: {linspace: [0, 9, 10]}\n'), [
    'spec.yaml: grid: got 2,000 trials (seed 10 × sample 200), expected at most 1,000 trial(s) (max_trials); shrink the grid, or raise max_trials (top-level key, up to 1,000,000,000) if you mean it',
  ]);
  // A billion-value range, or a billion points, is refused at once, never computed.
  const t0 = performance.now();
  t.regex(errorsOf('grid:\n  train.lr: {geomspace: [1e-4, 1, 1000000000]}\n')[0]!, /grid: got 1,000,000,000 trials \(train\.lr 1,000,000,000\), expected at most 1,000,000/);
  t.regex(errorsOf('sample: {count: 1000000000, params: {train.lr: {uniform: [0.1, 1]}}}\n')[0]!, /grid: got 1,000,000,000 trials \(sample 1,000,000,000\)/);
  t.true(performance.now() - t0 < 1000);
  // At an integer key a range counts its n, also where rounding then merges values.
  t.regex(errorsOf('grid:\n  seed: {linspace: [0, 9, 2000000]}\n')[0]!, /grid: got 2,000,000 trials \(seed 2,000,000\)/);
  t.deepEqual(resolve('grid:\n  seed: {linspace: [0, 9, 1000]}\n').grid.seed, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
});
