import test from 'ava';
import { parseSpecText, resolveSweep, trialId } from '../orchestrator/spec.js';
import { specErrors, TINY_SPEC } from './spec-helpers.js';

const errorsOf = specErrors;

const base = TINY_SPEC;

test('a typo\'d key is rejected with its path, value and a suggestion', (t) => {
  const errs = errorsOf(`${base.replace('steps: 10', 'stesp: 10')}`);
  t.is(errs.length, 1);
  t.is(errs[0]!, "spec.yaml: train.stesp: unknown key, expected one of the keys steps, lr, batch_size, lr_decay, log_every, eval_every, checkpoint_every (did you mean 'steps'?)");
});

test('an unknown top-level key names itself', (t) => {
  const errs = errorsOf(`${base}lerning_rate: 0.1\n`);
  t.deepEqual(errs.length, 1);
  t.regex(errs[0]!, /^spec\.yaml: lerning_rate: unknown key, expected one of the keys \$schema, name, description, problem/);
});

test('wrong types and out-of-range values name the field, the value and what was expected', (t) => {
  const errs = errorsOf(base.replace('steps: 10', 'steps: ten').replace('width: 8', 'width: 0'));
  t.true(errs.some((e) => /train\.steps: got "ten", expected a value of type integer/.test(e)), errs.join('\n'));
  t.true(errs.some((e) => /model\.width: got 0, expected a number >= 1/.test(e)), errs.join('\n'));
});

test('a bad grid value names the grid key and its index', (t) => {
  const errs = errorsOf(`${base}grid:\n  train.lr: [0.001, -0.5]\n  strategy: [{name: vanilla}, {name: rab}]\n`);
  t.true(errs.some((e) => e.includes('grid.train.lr[1] → train.lr: got -0.5, expected a number > 0')), errs.join('\n'));
  t.true(errs.some((e) => e.includes("grid.strategy[1] → strategy.name: got \"rab\", expected one of vanilla, rba, sa (did you mean 'rba'?)")), errs.join('\n'));
});

test('batch_size accepts full or an integer, nothing else', (t) => {
  const errs = errorsOf(base.replace('steps: 10', 'steps: 10, batch_size: half'));
  t.is(errs.length, 1);
  t.regex(errs[0]!, /train\.batch_size: got "half", expected "full" or a value of type integer/);
  t.regex(errorsOf(base.replace('steps: 10', 'steps: 10, batch_size: 100'))[0]!, /train\.batch_size: got 100, expected .*<= problem\.n_collocation \(64\)/);
});

test('snr_batches need not divide N when diagnostics are off (diagnostics.every: 0)', (t) => {
  t.deepEqual(errorsOf(base.replace('diagnostics: {every: 5, snr_batches: 4}', 'diagnostics: {every: 0, snr_batches: 5}')), []);
  t.deepEqual(errorsOf(base.replace('diagnostics: {every: 5, snr_batches: 4}', 'diagnostics: {every: 0}')), [], 'nor the default 10');
});

test('a grid key into a strategy field the strategy lacks names the key, the strategy and those it applies to', (t) => {
  t.deepEqual(errorsOf(`${base}grid:\n  strategy.eta: [0.1, 0.2]\n`), [
    'spec.yaml: grid.strategy.eta: does not apply to strategy vanilla (the default strategy: the spec sets none), expected a key of strategy vanilla (name); strategy.eta applies to strategy rba only: set strategy: {name: rba} or vary grid.strategy',
  ]);
  t.deepEqual(errorsOf(`${base}strategy: {name: sa}\ngrid:\n  strategy.gama: [0.9]\n`), [
    'spec.yaml: grid.strategy.gama: does not apply to strategy sa, expected a key of strategy sa (name, lr, freeze_step); no strategy has the key gama',
  ]);
  t.regex(errorsOf(`${base}grid:\n  problem.nu: [0.01]\n`)[0]!, /^spec\.yaml: grid\.problem\.nu: does not apply to problem helmholtz2d, .*problem\.nu applies to problem burgers1d only/);
  // Where the grid picks the strategy, each combination is checked (vanilla × eta is still an error).
  t.deepEqual(errorsOf(`${base}grid:\n  strategy: [{name: rba}]\n  strategy.eta: [0.1, 0.2]\n`), []);
});

test('a base section that is not an object where the grid sets a field in it is an error naming it', (t) => {
  for (const v of ['abc', '7', '[1]'])
    t.deepEqual(errorsOf(`${base.replace(/^train: .*$/m, `train: ${v}`).replace('every: 5,', 'every: 10,')}grid:\n  train.lr: [0.1, 0.2]\n`), [
      `spec.yaml: train: got ${v === 'abc' ? '"abc"' : v}, expected a value of type object; grid.train.lr replaces this base value in every trial, so it is never used: fix it or remove it`,
    ]);
});

test('NaN and ±Infinity are named as such, with the range of the field', (t) => {
  const errs = errorsOf(base.replace('steps: 10', 'steps: .inf, lr: .nan, batch_size: -.inf').replace('width: 8', 'width: 1e309'));
  t.deepEqual(errs, [
    'spec.yaml: model.width: got Infinity, expected an integer >= 1 and <= 4096',
    'spec.yaml: train.steps: got Infinity, expected an integer >= 1 and <= 100000000',
    'spec.yaml: train.lr: got NaN, expected a number > 0 and <= 10',
    'spec.yaml: train.batch_size: got -Infinity, expected "full" or an integer >= 1 and <= 10000000',
  ]);
  t.deepEqual(errorsOf(`${base}seed: .nan\nmax_attempts: .inf\n`), ['spec.yaml: max_attempts: got Infinity, expected an integer from 1 to 10', 'spec.yaml: seed: got NaN, expected an integer in [0, 2147483647]']);
  t.deepEqual(errorsOf(`${base}grid:\n  train.lr: [0.1, .NaN]\n`), ['spec.yaml: grid.train.lr[1] → train.lr: got NaN, expected a number > 0 and <= 10']);
  t.deepEqual(errorsOf(`${base}foo: [1, .inf, {a: -.inf}]\n`).map((e) => e.split(',')[0]), ['spec.yaml: foo: unknown key']);
});

test('a grid larger than max_trials is refused before it is expanded, with its count and keys', (t) => {
  const list = (n: number) => `[${[...Array(n).keys()].map((i) => i + 1).join(', ')}]`;
  const grid = `grid:\n  train.steps: ${list(100)}\n  model.width: ${list(20)}\n  seed: ${list(50)}\n  model.depth: ${list(50)}\n  train.eval_every: [5]\n  problem.n_boundary: ${list(10)}\n`;
  const t0 = performance.now();
  const errs = errorsOf(`${base}${grid}`);
  t.true(performance.now() - t0 < 2000);
  t.deepEqual(errs, [
    'spec.yaml: grid: got 50,000,000 trials (train.steps 100 × model.width 20 × seed 50 × model.depth 50 × problem.n_boundary 10), expected at most 1,000,000 trial(s) (max_trials, default 1,000,000); shrink the grid, or raise max_trials (top-level key, up to 1,000,000,000) if you mean it',
  ]);
  t.regex(errorsOf(`${base}max_trials: 10\ngrid:\n  seed: ${list(11)}\n`)[0]!, /^spec\.yaml: grid: got 11 trials \(seed 11\), expected at most 10 trial\(s\) \(max_trials\);/);
  t.deepEqual(errorsOf(`${base}max_trials: 11\ngrid:\n  seed: ${list(11)}\n`), []);
  // A bad max_trials is an error, and the default limit still holds.
  t.deepEqual(errorsOf(`${base}max_trials: 0\ngrid:\n  seed: [0, 1]\n`), ['spec.yaml: max_trials: got 0, expected an integer from 1 to 1000000000']);
  t.is(errorsOf(`${base}max_trials: .inf\n${grid}`).length, 2);
});

test('a grid key through __proto__ is refused, and sets no prototype', (t) => {
  t.deepEqual(errorsOf(`${base}grid:\n  train.__proto__.polluted: [1]\n`), [
    'spec.yaml: grid.train.__proto__.polluted: got "train.__proto__.polluted", expected a dotted path of the trial config\'s keys (__proto__ is none)',
  ]);
  t.is(({} as Record<string, unknown>).polluted, undefined);
});

test('recursive and unresolved aliases, and alias bombs, are errors of the file', (t) => {
  t.deepEqual(errorsOf(`${base}grid:\n  seed: &s [0, 1, *s]\n`), ['spec.yaml:8:19: Recursive alias: *s lies inside the node &s names; a spec cannot contain itself']);
  const bomb = ['name: b', 'a: &a [x, x, x, x, x, x, x, x, x]', ...'bcdefgh'.split('').map((c, i) => `${c}: &${c} [${Array(9).fill(`*${'abcdefgh'[i]}`).join(', ')}]`)].join('\n');
  t.deepEqual(errorsOf(bomb), [
    'spec.yaml: YAML aliases expand too much: more than 100 alias expansion(s) (a "billion laughs" alias bomb?): write the values out, or raise the limit with PHASEMAP_MAX_YAML_ALIASES',
  ]);
  // A long chain of aliases is found in one pass (the search for an unresolved alias was quadratic).
  const chain = ['name: c', 'l0: &l0 [1]', ...Array.from({ length: 5000 }, (_, i) => `l${i + 1}: &l${i + 1} [*l${i}]`)].join('\n');
  const t0 = performance.now();
  t.regex(errorsOf(chain)[0]!, /aliases expand too much/);
  t.true(performance.now() - t0 < 10_000);
});

test('cross-field rules: snr_batches divides N; cadences are multiples of log_every', (t) => {
  t.regex(errorsOf(base.replace('snr_batches: 4', 'snr_batches: 5'))[0]!, /diagnostics\.snr_batches: got 5, expected a divisor of problem\.n_collocation \(64\)/);
  t.notRegex(errorsOf(base.replace('snr_batches: 4', 'snr_batches: 5'))[0]!, /default/, 'a value the spec set is not called the default');
  // Left out, the default (10) does not divide 64: the error says it is the default and which key sets it.
  t.regex(errorsOf(base.replace(/,? *snr_batches: 4,? */, ''))[0]!, /diagnostics\.snr_batches: got 10, expected a divisor of problem\.n_collocation \(64\).*\(10 is the default; set diagnostics\.snr_batches\)/);
  t.regex(errorsOf(base.replace('eval_every: 5', 'eval_every: 7'))[0]!, /train\.eval_every: got 7, expected a multiple of train\.log_every \(5\)/);
});

test('a grid key outside the trial config is rejected', (t) => {
  t.regex(errorsOf(`${base}grid:\n  optimizer.lr: [1]\n`)[0]!, /grid\.optimizer\.lr: got "optimizer\.lr", expected a dotted path into one of problem/);
});

test('grid expansion is the cartesian product, defaults applied, objects as values', (t) => {
  const s = resolveSweep(parseSpecText(`${base}grid:\n  train.lr: [0.001, 0.01, 0.1]\n  train.batch_size: [full, 16]\n  strategy: [{name: vanilla}, {name: rba, eta: 0.01}]\n`));
  t.is(s.trials.length, 12);
  const combos = s.trials.map((x) => `${x.config.train.lr}|${x.config.train.batch_size}|${x.config.strategy.name}`);
  t.is(new Set(combos).size, 12);
  t.deepEqual(combos.slice(0, 4), ['0.001|full|vanilla', '0.001|full|rba', '0.001|16|vanilla', '0.001|16|rba']);
  const rba = s.trials[1]!.config.strategy;
  t.deepEqual(rba, { name: 'rba', eta: 0.01, gamma: 0.999, normalization: 'max', init: 'zero' });
  t.deepEqual(s.trials[0]!.config.train.lr_decay, { rate: 0.9, every: 5000 });
  t.is(s.trials[0]!.config.seed, 0);
  t.is(s.trials[0]!.config.problem.n_boundary, 100);
  t.true(s.trials.every((x) => /^t[0-9a-f]{16}$/.test(x.trial_id)));
  t.is(new Set(s.trials.map((x) => x.trial_id)).size, 12);
});

test('trial ids are stable under key reordering and explicit defaults, and change with any value', (t) => {
  const a = resolveSweep(parseSpecText(`${base}grid:\n  train.lr: [0.001, 0.01]\n`));
  const b = resolveSweep(parseSpecText(`
grid:
  train.lr: [0.001, 0.01]
diagnostics: {snr_batches: 4, every: 5}
train: {eval_every: 5, log_every: 5, steps: 10, batch_size: full, lr_decay: {every: 5000, rate: 0.9}}
model: {depth: 2, width: 8}
strategy: {name: vanilla}
seed: 0
problem: {n_collocation: 64, a2: 4, a1: 1, name: helmholtz2d, k: 1}
name: other-name
`));
  t.deepEqual(a.trials.map((x) => x.trial_id), b.trials.map((x) => x.trial_id));
  const c = resolveSweep(parseSpecText(`${base}seed: 1\ngrid:\n  train.lr: [0.001, 0.01]\n`));
  t.notDeepEqual(a.trials.map((x) => x.trial_id), c.trials.map((x) => x.trial_id));
  t.is(trialId(a.trials[0]!.config), a.trials[0]!.trial_id);
});

test('JSON specs are accepted', (t) => {
  const s = resolveSweep(parseSpecText(JSON.stringify({ name: 'j', problem: { name: 'poisson2d', n_collocation: 64 }, diagnostics: { snr_batches: 4 } })));
  t.is(s.trials.length, 1);
  t.is(s.trials[0]!.config.problem.name, 'poisson2d');
});

test('a sweep name that cannot be a subject token is rejected', (t) => {
  t.regex(errorsOf(base.replace('name: t', 'name: my sweep.v2'))[0]!, /name: got "my sweep\.v2", expected a string matching/);
});

test('every error is reported in one round: top-level, nested and grid-expanded alike', (t) => {
  const errs = errorsOf(`
name: bad name
seeed: 3
problem: {name: poisson2d, a1: 2, n_collocation: 64}
strategy: {name: rba, eta: -1}
train: {batch_size: 0}
diagnostics: {snr_batches: 4}
`);
  t.deepEqual(errs.map((e) => e.replace(/^spec\.yaml: /, '').split(':')[0]), ['seeed', 'name', 'problem.a1', 'strategy.eta', 'train.batch_size']);
  t.true(errs.includes('spec.yaml: train.batch_size: got 0, expected "full" or a number >= 1'), errs.join('\n'));
});

test('grid combinations that resolve to the same trial run once and are counted', (t) => {
  const s = resolveSweep(parseSpecText(`${base}grid:\n  seed: [1, 1, 2]\n`));
  t.is(s.trials.length, 2);
  t.is(s.duplicates, 1);
});

test('an unknown key suggests the nearest key of its own object, by edit distance', (t) => {
  const errs = errorsOf(`${base.replace('n_collocation: 64', 'n_collocation: 64, n_colocation: 3').replace('eval_every: 5', 'eval_every: 5, lr_decay: {rat: 0.9}')}strategy: {name: rba, gama: 0.99}\n`);
  t.deepEqual(errs, [
    "spec.yaml: problem.n_colocation: unknown key, expected one of the keys name, a1, a2, k, n_collocation, n_boundary, w_bc, eval_grid (did you mean 'n_collocation'?)",
    "spec.yaml: strategy.gama: unknown key, expected one of the keys name, eta, gamma, normalization, init (did you mean 'gamma'?)",
    "spec.yaml: train.lr_decay.rat: unknown key, expected one of the keys rate, every (did you mean 'rate'?)",
  ]);
  // Case alone is a typo; a key nothing is near gets no suggestion (not 'k' for 'x').
  t.deepEqual(errorsOf(base.replace('a1: 1', 'a1: 1, x: 2').replace('depth: 2', 'depth: 2, Width: 3')), [
    'spec.yaml: problem.x: unknown key, expected one of the keys name, a1, a2, k, n_collocation, n_boundary, w_bc, eval_grid',
    "spec.yaml: model.Width: unknown key, expected one of the keys width, depth (did you mean 'width'?)",
  ]);
  t.deepEqual(errorsOf(`${base}strategy: {name: RBA}\nseeed: 1\ngrid:\n  trian.lr: [0.1]\n`), [
    "spec.yaml: seeed: unknown key, expected one of the keys $schema, name, description, problem, model, train, strategy, diagnostics, seed, grid, sample, analysis, max_attempts, max_trials, refine (did you mean 'seed'?)",
    "spec.yaml: grid.trian.lr: got \"trian.lr\", expected a dotted path into one of problem, model, train, strategy, diagnostics, seed (did you mean 'train.lr'?)",
  ]);
  t.deepEqual(errorsOf(`${base}strategy: {name: RBA}\n`), ["spec.yaml: strategy.name: got \"RBA\", expected one of vanilla, rba, sa (did you mean 'rba'?)"]);
  // A grid key without its section: the section that has the key.
  t.deepEqual(errorsOf(`${base}grid:\n  lr: [0.1]\n  width: [8]\n  eta: [0.1]\n`), [
    "spec.yaml: grid.lr: got \"lr\", expected a dotted path into one of problem, model, train, strategy, diagnostics, seed (did you mean 'train.lr'?)",
    "spec.yaml: grid.width: got \"width\", expected a dotted path into one of problem, model, train, strategy, diagnostics, seed (did you mean 'model.width'?)",
    "spec.yaml: grid.eta: got \"eta\", expected a dotted path into one of problem, model, train, strategy, diagnostics, seed (did you mean 'strategy.eta'?)",
  ]);
});

test('a base value the grid overrides is still checked, and the error says it is never used', (t) => {
  t.deepEqual(errorsOf(`${base}strategy: {name: RBA, gama: 0.99}\ngrid:\n  strategy: [{name: vanilla}, {name: rba}]\n`), [
    "spec.yaml: strategy.name: got \"RBA\", expected one of vanilla, rba, sa (did you mean 'rba'?); grid.strategy overrides this base value in every trial, so it is never used: fix it or remove it",
  ]);
  t.deepEqual(errorsOf(`${base}strategy: {name: rba, gama: 0.99}\ngrid:\n  strategy: [{name: vanilla}, {name: rba}]\n`), [
    "spec.yaml: strategy.gama: unknown key, expected one of the keys name, eta, gamma, normalization, init (did you mean 'gamma'?); grid.strategy overrides this base value in every trial, so it is never used: fix it or remove it",
  ]);
  // A dotted grid key: only the value it overrides; a base that is not an object where the grid sets a field in it is replaced.
  t.deepEqual(errorsOf(`${base.replace('steps: 10', 'steps: 10, lr: -1')}seed: x\ngrid:\n  train.lr: [0.1]\n  seed.a: [1]\n`), [
    'spec.yaml: train.lr: got -1, expected a number > 0; grid.train.lr overrides this base value in every trial, so it is never used: fix it or remove it',
    'spec.yaml: seed: got "x", expected an integer in [0, 2147483647]; grid.seed.a replaces this base value in every trial, so it is never used: fix it or remove it',
    'spec.yaml: grid.seed.a[0] → seed: got {"a":1}, expected an integer in [0, 2147483647]',
  ]);
  // Valid base values the grid overrides are fine, and cross-field rules apply to the trials only.
  t.deepEqual(errorsOf(`${base.replace('steps: 10', 'steps: 10, batch_size: 100')}grid:\n  train.batch_size: [full, 16]\n`), []);
});

test('each distinct error is reported once, naming the grid values it occurs in, in the grid\'s order', (t) => {
  const errs = errorsOf(`${base.replace('width: 8', 'widht: 8')}grid:
  train.lr: [0.001, -0.5, 0.01, -0.5]
  strategy: [{name: rba, gama: 0.9}, {name: vanilla}, {name: rba, gama: 0.99}, {name: sa, lr: -1}]
  seed: [0, 1]
`);
  t.deepEqual(errs, [
    "spec.yaml: model.widht: unknown key, expected one of the keys width, depth (did you mean 'width'?)",
    'spec.yaml: grid.train.lr[1], grid.train.lr[3] → train.lr: got -0.5, expected a number > 0',
    "spec.yaml: grid.strategy[0], grid.strategy[2] → strategy.gama: unknown key, expected one of the keys name, eta, gamma, normalization, init (did you mean 'gamma'?)",
    'spec.yaml: grid.strategy[3] → strategy.lr: got -1, expected a number > 0',
  ]);
  // Every value of a key; a combination of two keys; a key that selects the schema.
  t.deepEqual(errorsOf(`${base}grid:\n  train.lrr: [1, 2]\n  problem.n_collocation: [64, 32]\n  train.batch_size: [full, 40]\n  problem.name: [helmholtz2d, poisson2d]\n`), [
    "spec.yaml: grid.train.lrr (all 2 values) → train.lrr: unknown key, expected one of the keys steps, lr, batch_size, lr_decay, log_every, eval_every, checkpoint_every (did you mean 'lr'?)",
    "spec.yaml: grid.problem.name[1] → problem.a1: unknown key, expected one of the keys name, n_collocation, n_boundary, w_bc, eval_grid",
    "spec.yaml: grid.problem.name[1] → problem.a2: unknown key, expected one of the keys name, n_collocation, n_boundary, w_bc, eval_grid",
  ]);
  // Cross-field rules are checked only where the fields are valid: train.lr[1] is not named for them.
  t.deepEqual(errorsOf(`${base}grid:\n  train.lr: [0.1, -1]\n  problem.n_collocation: [64, 32]\n  train.batch_size: [full, 40]\n  seed: [0, 1, 2]\n`), [
    'spec.yaml: grid.train.lr[1] → train.lr: got -1, expected a number > 0',
    "spec.yaml: grid.problem.n_collocation[1] × grid.train.batch_size[1] → train.batch_size: got 40, expected 'full' or an integer <= problem.n_collocation (32)",
  ]);
});

test('YAML and JSON syntax errors give FILE:LINE:COLUMN, the parser\'s whole message and the lines it points at', (t) => {
  t.deepEqual(errorsOf('name: t\nproblem: {name: helmholtz2d\ntrain: {steps: 10}\n'), [
    'spec.yaml:3:1: Flow map in block collection must be sufficiently indented and end with a }\n    problem: {name: helmholtz2d\n    train: {steps: 10}\n    ^',
  ]);
  t.deepEqual(errorsOf('name: t\nname: u\n'), ['spec.yaml:2:1: Map keys must be unique\n    name: t\n    name: u\n    ^']);
  t.deepEqual(errorsOf('{"name": "t",\n  "problem": {"name": "poisson2d" "n_collocation": 64}\n}\n'), [
    // The carets span the token: "n_collocation" (15 characters), then "poisson2d" "n_collocation" (31).
    `spec.yaml:2:35: Unexpected double-quoted-scalar token\n      "problem": {"name": "poisson2d" "n_collocation": 64}\n${' '.repeat(38)}${'^'.repeat(15)}`,
    `spec.yaml:2:23: Block collections are not allowed within flow collections\n      "problem": {"name": "poisson2d" "n_collocation": 64}\n${' '.repeat(26)}${'^'.repeat(31)}`,
  ]);
  t.deepEqual(errorsOf('name: t\nproblem: *p\n'), ['spec.yaml:2:10: Unresolved alias (the anchor must be set before the alias): p']);
});
