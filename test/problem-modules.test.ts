/**
 * User problem modules (docs/problems.md): a module re-implementing poisson2d trains bit-identically to
 * the built-in; the problem API's checks (undeclared fields, wrong shapes, more than one output or
 * residual term) name the module, the function and the field or shape; `phasemap validate` catches a
 * broken module before anything is queued; the module's content hash is part of the trial id.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { loadSweep, SpecErrors, trialId } from '../orchestrator/spec.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { definedProblem, ProblemError, type ProblemDefinition } from '../worker/trainer/problem-api.js';
import { conformanceCheck, importSpecifiers, loadProblemModule, readProblemModule } from '../worker/trainer/problem-module.js';
import { POISSON2D } from '../worker/trainer/problems.js';
import { mlpForward, Mlp, Rng } from '../worker/trainer/index.js';
import { recordedConfig, recordTrial, RECORDED_PROBLEMS } from './builtin-problems-record.js';
import { repoRoot, runCli, tempDir } from './helpers.js';
import { testBackend } from './trainer-helpers.js';

const EXAMPLE = join(repoRoot, 'examples/problems/poisson2d.mjs');

/** A spec file in `dir` around a problem section (JSON is YAML), with the recorded trials' other sections. */
async function writeSpec(dir: string, problem: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<string> {
  const base = recordedConfig(RECORDED_PROBLEMS[1]!) as unknown as Record<string, unknown>;
  const spec = { name: 'modules', ...base, problem, ...extra };
  const file = join(dir, 'spec.yaml');
  await writeFile(file, JSON.stringify(spec, null, 1));
  return file;
}

test.before(async () => {
  await testBackend();
});

test('examples/problems/poisson2d.mjs trains bit-identically to the built-in poisson2d (rows and checkpoint tensors); only the trial id differs', async (t) => {
  const dir = await tempDir('module-poisson');
  await mkdir(join(dir, 'problems'));
  await copyFile(EXAMPLE, join(dir, 'problems', 'poisson2d.mjs'));
  const { name: _n, ...common } = RECORDED_PROBLEMS[1]! as { name: string };
  const sweep = await loadSweep(await writeSpec(dir, { module: './problems/poisson2d.mjs', ...common }));
  t.is(sweep.trials.length, 1);
  const cfg = sweep.trials[0]!.config;
  const p = cfg.problem as unknown as Record<string, unknown>;
  t.is(p.name, 'poisson2d_module');
  t.regex(String(p.module_hash), /^sha256:[0-9a-f]{64}$/);
  const bundle = sweep.problem_modules![String(p.module_hash)]!;
  t.deepEqual(Object.keys(bundle.files), ['poisson2d.mjs']);

  const builtin = recordedConfig(RECORDED_PROBLEMS[1]!);
  t.not(trialId(cfg), trialId(builtin));
  const [mine, theirs] = [await recordTrial(cfg, { metadata: false }), await recordTrial(builtin, { metadata: false })];
  t.is(mine.rows.length, 7);
  t.true(mine.rows.every((r) => Number.isFinite(r.loss as number)));
  t.deepEqual(mine.rows, theirs.rows);
  t.deepEqual(Object.keys(mine.checkpoints), ['0', '10', '20', '30']);
  t.deepEqual(mine.checkpoints, theirs.checkpoints);
});

test('the module content hash is part of the trial id: editing the module (or a file it imports) changes it; parameters are sweepable and hashed', async (t) => {
  const dir = await tempDir('module-hash');
  await mkdir(join(dir, 'problems', 'util'), { recursive: true });
  const heat = join(repoRoot, 'examples/problems');
  await copyFile(join(heat, 'heat1d.mjs'), join(dir, 'problems', 'heat1d.mjs'));
  await copyFile(join(heat, 'util/trig.mjs'), join(dir, 'problems', 'util', 'trig.mjs'));
  const problem = { module: './problems/heat1d.mjs', n_collocation: 64, n_boundary: 8, n_initial: 8, eval_grid: 11 };
  const file = await writeSpec(dir, problem, { grid: { 'problem.kappa': [0.1, 0.5] } });
  const a = await loadSweep(file);
  t.deepEqual(a.trials.map((x) => (x.config.problem as unknown as { kappa: number }).kappa), [0.1, 0.5]);
  t.is(new Set(a.trials.map((x) => x.trial_id)).size, 2);
  const b = Object.values(a.problem_modules!)[0]!;
  t.deepEqual(Object.keys(b.files).sort(), ['heat1d.mjs', 'util/trig.mjs']);
  // Same files, same ids.
  t.deepEqual((await loadSweep(file)).trials.map((x) => x.trial_id), a.trials.map((x) => x.trial_id));
  // A comment in the imported helper changes every id.
  await writeFile(join(dir, 'problems', 'util', 'trig.mjs'), `// edited\nexport const sinPi = (x) => Math.sin(Math.PI * x);\n`);
  const c = await loadSweep(file);
  t.true(c.trials.every((x, i) => x.trial_id !== a.trials[i]!.trial_id));
  // The default kappa (0.5) is resolved into the config: without the grid the trial equals the grid's kappa = 0.5 one.
  const d = await loadSweep(await writeSpec(dir, problem));
  t.is(d.trials[0]!.trial_id, c.trials[1]!.trial_id);
});

test('spec errors of module problems name the field, the value and what was expected', async (t) => {
  const dir = await tempDir('module-spec');
  await copyFile(EXAMPLE, join(dir, 'p.mjs'));
  const err = async (problem: Record<string, unknown>) => {
    const e = await t.throwsAsync(loadSweep(await writeSpec(dir, problem)), { instanceOf: SpecErrors });
    return e!.message;
  };
  t.regex(await err({ module: './p.mjs', n_collocation: 64, a1: 2 }), /problem\.a1: unknown key, expected one of the keys name, module, module_hash, n_collocation/);
  t.regex(await err({ module: './p.mjs', n_collocation: 0 }), /problem\.n_collocation: got 0, expected/);
  t.regex(await err({ module: './missing.mjs', n_collocation: 64 }), /problem\.module: got "\.\/missing\.mjs", expected a problem module that loads and passes the conformance check.*cannot read the problem module \(no such file; the path is relative to the spec file/);
  t.regex(await err({ module: './p.txt', n_collocation: 64 }), /problem\.module: got "\.\/p\.txt", expected .*\.mjs or \.js/);
  t.regex(await err({ module: './p.mjs', name: 'poisson2d', n_collocation: 64 }), /problem\.name: got "poisson2d", expected 'poisson2d_module' \(the module's name\) or no name/);
});

/** Writes a module file into a fresh folder and returns the folder and the spec around it. */
async function badModule(source: string, extraFiles: Record<string, string> = {}): Promise<string> {
  const dir = await tempDir('module-bad');
  await writeFile(join(dir, 'm.mjs'), source);
  for (const [k, v] of Object.entries(extraFiles)) await writeFile(join(dir, k), v);
  return writeSpec(dir, { module: './m.mjs', n_collocation: 64, n_boundary: 8, eval_grid: 11 });
}

/** The poisson2d example's source with `from` replaced by `to`. */
async function poissonWith(from: string | RegExp, to: string): Promise<string> {
  const { readFile } = await import('node:fs/promises');
  const src = await readFile(EXAMPLE, 'utf8');
  const out = src.replace(from, to);
  if (out === src) throw new Error(`poissonWith: ${String(from)} not in the example`);
  return out;
}

test('phasemap validate catches broken modules with messages that name the module, the function and the field or shape', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['fails to load (syntax error)', await poissonWith('export default {', 'export default {{'), /problem module \.\/m\.mjs: failed to load \(import\): SyntaxError/],
    ['throws at import', `throw new Error('no GPU here');\nexport default {};`, /problem module \.\/m\.mjs: failed to load \(import\): Error: no GPU here/],
    ['residual throws', await poissonWith('pde: (f, { ops }) =>', "pde: (f, { ops }) => (() => { throw new Error('boom'); })() ||"), /problem module \.\/m\.mjs: residuals\.pde threw: boom/],
    ['undeclared derivative', await poissonWith('ops.add(f.u_xx, f.u_yy)', 'ops.add(f.u_xx, f.u_x)'), /problem module \.\/m\.mjs: residuals\.pde: reads field 'u_x', which the problem does not declare \(fields: u_xx, u_yy, q\); add 'u_x' to fields/],
    ['residual of the wrong shape', await poissonWith('ops.sub(ops.add(f.u_xx, f.u_yy), f.q)', 'ops.add(ops.sub(ops.add(f.u_xx, f.u_yy), f.q), [[0], [0]])'), /problem module \.\/m\.mjs: residuals\.pde: returned shape \[2, 8\], expected \[1, 8\] \(one value per point: the shape of the fields\)/],
    ['residual not a tensor', await poissonWith('ops.sub(ops.add(f.u_xx, f.u_yy), f.q)', '[ops.sub(ops.add(f.u_xx, f.u_yy), f.q)]'), /problem module \.\/m\.mjs: residuals\.pde: returned an array, expected a tensor of shape \[1, 8\]/],
    ['condition values of the wrong shape', await poissonWith('bc: ({ n_boundary, helpers }) => helpers.boxBoundary(n_boundary)', 'bc: ({ n_boundary, helpers }) => ({ ...helpers.boxBoundary(n_boundary), values: [0, 0] })'), /problem module \.\/m\.mjs: conditions\.bc values: got shape \[2\], expected \[12\] \(one value per point\)/],
    ['source not finite', await poissonWith('source: ([x, y]) =>', 'source: ([x, y]) => NaN *'), /problem module \.\/m\.mjs: source: at point \[.*\] returned NaN, expected a finite number/],
    ['the same output twice', await poissonWith("outputs: ['u']", "outputs: ['u', 'u']"), /outputs: got \["u","u"\], expected distinct names/],
    ['a field the trainer does not compute', await poissonWith("fields: ['u_xx', 'u_yy', 'q']", "fields: ['u_xy', 'u_yy', 'q']"), /fields: 'u_xy' is not a field the trainer computes; expected some of: u, u_x, u_y, u_xx, u_yy, x, y, q/],
    ['a bare import', `import fs from 'node:fs';\nexport default {};`, /m\.mjs imports 'node:fs': a problem module may import only files of its own folder/],
  ];
  for (const [what, source, re] of cases) {
    const spec = await badModule(source);
    const r = await runCli(['validate', spec], { timeoutMs: 60_000 });
    t.is(r.code, 2, `${what}: exit code (stderr: ${r.stderr})`);
    t.regex(r.stderr, /problem\.module: got "\.\/m\.mjs", expected a problem module that loads and passes the conformance check/, what);
    t.regex(r.stderr, re, what);
  }
  // A parameter value of the grid that breaks the module is caught too, naming the values.
  const dir = await tempDir('module-grid');
  await writeFile(join(dir, 'm.mjs'), (await poissonWith('params: {},', 'params: { bad: 0 },')).replace('ops.sub(ops.add(f.u_xx, f.u_yy), f.q)', 'p.bad ? [0] : ops.sub(ops.add(f.u_xx, f.u_yy), f.q)').replace('(f, { ops })', '(f, { p, ops })'));
  const grid = await runCli(['validate', await writeSpec(dir, { module: './m.mjs', n_collocation: 64 }, { grid: { 'problem.bad': [0, 1] } })], { timeoutMs: 60_000 });
  t.is(grid.code, 2, grid.stderr);
  t.regex(grid.stderr, /problem\.module: got "\.\/m\.mjs", expected a problem module that passes the conformance check with every parameter set of the grid \(docs\/problems\.md\); with \{"bad":1\}: problem module \.\/m\.mjs: residuals\.pde: returned an array, expected a tensor of shape \[1, 8\]/);
  t.notRegex(grid.stderr, /"bad":0/);
  // The good one passes and lists its trial.
  const ok = await runCli(['validate', await badModule(await poissonWith("name: 'poisson2d_module'", "name: 'poisson2d_copy'"))], { timeoutMs: 60_000 });
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /problem module \.\/m\.mjs \(1 file\(s\), sha256:[0-9a-f]{12}…\): conformance check passed\n/);
  t.regex(ok.stdout, /modules: 1 trial\(s\)/);
});

test('the API: the residual sees only its declared fields; coordinates by name; a definition error names the function', async (t) => {
  const def: ProblemDefinition = {
    ...POISSON2D,
    name: 'coords',
    fields: ['u', 'u_xx', 'x'],
    residuals: { pde: (f, { ops }) => ops.sub(f.u_xx!, f.x!) },
    source: undefined,
  };
  const p = definedProblem(def, {}, { where: 'problem module ./coords.mjs' });
  t.deepEqual(p.derivs, { first: [0], second: [0] });
  const net = Mlp.xavier(2, 4, 2, Rng.stream(1, 'w'));
  const xs = [0.25, -0.5, 0.75, 0.5];
  const x = tf.tensor3d(xs, [1, 2, 2]);
  const f = mlpForward(net.params(), x, p.derivs, p.inputOrder);
  const r = p.residual(f, tf.zeros([1, 2]), x);
  const uxx = f.u_xx!.dataSync();
  t.deepEqual(Array.from(r.dataSync()), [Math.fround(uxx[0]! - 0.25), Math.fround(uxx[1]! - 0.75)]);
  const sneaky = definedProblem({ ...def, residuals: { pde: (f2) => f2.u_yy! } }, {}, { where: 'problem module ./coords.mjs' });
  const e = t.throws(() => sneaky.residual(f, tf.zeros([1, 2]), x), { instanceOf: ProblemError });
  t.is(e!.message, "problem module ./coords.mjs: residuals.pde: reads field 'u_yy', which the problem does not declare (fields: u, u_xx, x); add 'u_yy' to fields");
  t.throws(() => definedProblem(def, { k: 2 }), { message: /parameter 'k' is not declared \(declared: none\)/ });
  // Two terms make a system of equations (worker/trainer/system.ts); a term name must be a word.
  t.true(definedProblem({ ...def, residuals: { a: def.residuals.pde!, b: def.residuals.pde! } }).isSystem);
  t.throws(() => definedProblem({ ...def, residuals: { 'Two words': def.residuals.pde! } }), { message: /residuals\.Two words: not a usable term name/ });
  tf.dispose([x, r, ...Object.values(f)]);
  net.dispose();
  // The conformance check of a problem without a reference only warns.
  const msgs = await conformanceCheck({ ...def, solution: undefined }, 'problem module ./coords.mjs');
  t.deepEqual(msgs, [{ level: 'warning', message: 'problem module ./coords.mjs: no solution or reference: rows will carry no rel_l2' }]);
});

test('module sources: relative imports are followed inside the folder, escapes are refused, the shipped sources are checked against the hash', async (t) => {
  t.deepEqual(importSpecifiers(`import a from './a.mjs';\nimport { b } from "./sub/b.mjs";\nexport * from './c.mjs';\nconst d = await import('./d.mjs');`), ['./a.mjs', './sub/b.mjs', './c.mjs', './d.mjs']);
  const dir = await tempDir('module-src');
  await writeFile(join(dir, 'm.mjs'), `import { x } from '../outside.mjs';\nexport default {};`);
  await t.throwsAsync(readProblemModule(join(dir, 'spec.yaml'), './m.mjs'), { message: /m\.mjs imports '\.\.\/outside\.mjs', outside the module's folder/ });
  await copyFile(EXAMPLE, join(dir, 'p.mjs'));
  const b = await readProblemModule(join(dir, 'spec.yaml'), './p.mjs');
  await t.throwsAsync(loadProblemModule({ ...b, files: { 'p.mjs': b.files['p.mjs']! + '\n' } }), { message: /problem module \.\/p\.mjs: the shipped sources hash to sha256:[0-9a-f]+, not to the trial's sha256:/ });
  const def = await loadProblemModule(b);
  t.is(def.name, 'poisson2d_module');
});

test('a module problem whose residual fails only in training fails its own trial, naming the module, the function and the shape', async (t) => {
  const dir = await tempDir('module-trainfail');
  // Right shape on the conformance check's 8 points, wrong on the trial's 64.
  await writeFile(join(dir, 'm.mjs'), await poissonWith('ops.sub(ops.add(f.u_xx, f.u_yy), f.q)', 'ops.add(ops.sub(ops.add(f.u_xx, f.u_yy), f.q), f.q.shape[1] > 8 ? [[0], [0]] : 0)'));
  const sweep = await loadSweep(await writeSpec(dir, { module: './m.mjs', n_collocation: 64, n_boundary: 8, eval_grid: 11 }));
  const cfg: TrialConfig = sweep.trials[0]!.config;
  const { trainTrial } = await import('../worker/trainer/index.js');
  await t.throwsAsync(trainTrial(cfg, { onRows: () => undefined }), { message: /problem module \.\/m\.mjs: residuals\.pde: returned shape \[2, 64\], expected \[1, 64\]/ });
});

test.serial('over NATS: a worker without --allow-modules hands module trials back, one with it runs them; a trial whose module fails fails alone, named', async (t) => {
  const { startNats, stderrOf, until, duck } = await import('./helpers.js');
  const work = await tempDir('module-workers');
  // A parameter `bad` makes the residual the wrong type, but only on more than the conformance check's 8 points.
  await writeFile(
    join(work, 'm.mjs'),
    (await poissonWith("params: {},", 'params: { bad: 0 },')).replace('ops.sub(ops.add(f.u_xx, f.u_yy), f.q)', 'p.bad && f.q.shape[1] > 8 ? [0] : ops.sub(ops.add(f.u_xx, f.u_yy), f.q)').replace('(f, { ops })', '(f, { p, ops })'),
  );
  const spec = join(work, 'spec.yaml');
  await writeFile(
    spec,
    [
      'name: module-workers',
      'problem: {module: ./m.mjs, n_collocation: 64, n_boundary: 8, eval_grid: 11}',
      'model: {width: 8, depth: 2}',
      'train: {steps: 60, log_every: 10, eval_every: 20}',
      'diagnostics: {every: 20, snr_batches: 4}',
      'max_attempts: 1',
      'grid:',
      '  problem.bad: [0, 1]',
      '',
    ].join('\n'),
  );
  const nats = await startNats(join(work, 'store'));
  const started: Array<ReturnType<typeof runCli>> = [];
  try {
    const plain = runCli(['worker', '--nats', nats.url, '--slots', '1', '--fuse', '1', '--backend', 'wasm', '--name', 'plain']);
    started.push(plain);
    const ePlain = stderrOf(plain);
    await until(() => /waiting for an orchestrator|pulling trials/.test(ePlain()), 30_000, 'the plain worker to connect', 100);
    const run = runCli(['run', spec, '--out', join(work, 'out'), '--nats', nats.url, '--slots', '0'], { timeoutMs: 110_000 });
    started.push(run);
    await until(() => (ePlain().match(/started without --allow-modules/g) ?? []).length >= 2, 60_000, 'the plain worker to refuse both trials', 100);
    t.regex(ePlain(), /trial t[0-9a-f]{16} \(bad=[01]\) runs the problem module \.\/m\.mjs \(user code\); this worker was started without --allow-modules: handed back for a worker that allows modules \(start one with: phasemap worker --allow-modules\)/);
    const allowed = runCli(['worker', '--nats', nats.url, '--slots', '1', '--fuse', '1', '--backend', 'wasm', '--name', 'allowed', '--allow-modules']);
    started.push(allowed);
    const r = await run;
    t.is(r.code, 1, r.stderr); // one trial failed
    const rows = await duck(`SELECT problem, problem_a1, status, worker, error FROM '${work}/out/trials.parquet' ORDER BY status`);
    t.is(rows.length, 2);
    t.deepEqual(rows.map((x) => [x.problem, x.status, x.worker]), [['poisson2d_module', 'done', 'allowed'], ['poisson2d_module', 'failed', 'allowed']]);
    t.regex(String(rows[1]!.error), /problem module \.\/m\.mjs: residuals\.pde: returned an array, expected a tensor of shape \[1, (64|16)\]/);
    t.notRegex(ePlain(), /attempt \d+ done/);
    // The allowing worker's log does not call the refused deliveries a take-over: nothing ran them.
    const { stderr: eAllowed } = await (allowed.child.kill('SIGTERM'), allowed);
    t.regex(eAllowed, /trial t[0-9a-f]{16}[^\n]*? attempt \d+: delivery \d+ \(the earlier ones were handed back unclaimed\)/);
    t.notRegex(eAllowed, /taken over/);
    const metrics = await duck(`SELECT count(*) AS n FROM read_parquet('${work}/out/metrics/**/*.parquet')`);
    t.true(Number(metrics[0]!.n) >= 7, `rows of the done trial: ${metrics[0]!.n}`);
  } finally {
    for (const p of started) p.child.kill('SIGTERM');
    await Promise.all(started.map((p) => p.catch(() => undefined)));
    await nats.stop();
  }
});

test('the built-ins read only the fields they declare (run under the guard a module gets, they compute the same numbers)', async (t) => {
  const { HELMHOLTZ2D, BURGERS1D, ALLEN_CAHN1D } = await import('../worker/trainer/problems.js');
  for (const def of [HELMHOLTZ2D, POISSON2D, BURGERS1D, ALLEN_CAHN1D]) {
    const fast = definedProblem(def, {}, { guard: false });
    const guarded = definedProblem(def, {});
    t.deepEqual(guarded.derivs, fast.derivs, def.name);
    const net = Mlp.xavier(2, 8, 2, Rng.stream(3, 'w'));
    const pts = guarded.collocation(16, Rng.stream(3, 'c'));
    const x = tf.tensor3d(Float32Array.from(pts), [1, 16, 2]);
    const q = tf.tensor2d(Float32Array.from(guarded.forcing(pts, 16)), [1, 16]);
    // Only the declared derivatives are computed: a read of any other field would throw.
    const f = mlpForward(net.params(), x, guarded.derivs, guarded.inputOrder);
    const a = guarded.residual(f, q, x);
    const b = fast.residual(f, q, x);
    t.deepEqual(Array.from(a.dataSync()), Array.from(b.dataSync()), def.name);
    t.true(Array.from(a.dataSync()).every(Number.isFinite), def.name);
    tf.dispose([x, q, a, b, ...Object.values(f)]);
    net.dispose();
  }
});

test('module trials fuse like built-in ones: two module trials trained fused give the rows each gives alone', async (t) => {
  const dir = await tempDir('module-fused');
  await copyFile(EXAMPLE, join(dir, 'p.mjs'));
  const sweep = await loadSweep(await writeSpec(dir, { module: './p.mjs', n_collocation: 64, n_boundary: 8, eval_grid: 11 }, { grid: { 'train.lr': [0.01, 0.02] } }));
  const configs = sweep.trials.map((x) => x.config);
  const { trainTrials, fusionKey } = await import('../worker/trainer/index.js');
  t.is(fusionKey(configs[0]!), fusionKey(configs[1]!));
  const fusedRows: Array<Array<Record<string, unknown>>> = [[], []];
  const got = await trainTrials(
    configs,
    configs.map((_, i) => ({ onRows: (rs) => void fusedRows[i]!.push(...rs.map(({ wall_seconds: _w, ...r }) => r as unknown as Record<string, unknown>)) })),
    configs.map(() => ({})),
  );
  t.true(got.every((g) => !(g instanceof Error)), String(got.find((g) => g instanceof Error)));
  for (const [i, c] of configs.entries()) t.deepEqual(fusedRows[i], (await recordTrial({ ...c, train: { ...c.train, checkpoint_every: 0 } })).rows, `trial ${i}`);
});

test('phasemap run of a module sweep without --allow-modules on its private server stops at once, saying what to add', async (t) => {
  const dir = await tempDir('module-run-refused');
  await copyFile(EXAMPLE, join(dir, 'p.mjs'));
  const spec = await writeSpec(dir, { module: './p.mjs', n_collocation: 64, n_boundary: 8, eval_grid: 11 });
  const r = await runCli(['run', spec, '--out', join(dir, 'out'), '--slots', '1'], { timeoutMs: 60_000 });
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /the sweep runs the problem module\(s\) \.\/p\.mjs \(code\): add --allow-modules to let the local worker run them \(docs\/problems\.md\), or use --nats with workers started with --allow-modules/);
});

test('a module without a solution or reference trains; its rows carry no rel_l2', async (t) => {
  const dir = await tempDir('module-noref');
  await writeFile(join(dir, 'm.mjs'), await poissonWith('solution: ([x, y]) => exact(x, y),', ''));
  const sweep = await loadSweep(await writeSpec(dir, { module: './m.mjs', n_collocation: 64, n_boundary: 8, eval_grid: 11 }));
  t.deepEqual(sweep.module_warnings, { './m.mjs': ['problem module ./m.mjs: no solution or reference: rows will carry no rel_l2'] });
  const { rows } = await recordTrial(sweep.trials[0]!.config);
  t.is(rows.length, 7);
  t.true(rows.every((r) => r.rel_l2 === null && Number.isFinite(r.loss as number)));
  t.deepEqual(rows.filter((r) => typeof r.snr === 'number').map((r) => r.step), [0, 10, 20, 29]);
});

test('helpers: axisEnds gives value sets that a spread kind: periodic (before or after) turns into periodic pairs', (t) => {
  const base: ProblemDefinition = { ...POISSON2D, name: 'adv', inputs: ['x', 't'], domain: [[0, 1], [0, 2]], fields: ['u_t', 'u_x'], residuals: { pde: (f, { ops }) => ops.add(f.u_t!, f.u_x!) }, source: undefined };
  for (const bc of [
    (c: Parameters<ProblemDefinition['conditions']['bc']>[0]) => ({ kind: 'periodic' as const, axis: 'x', ...c.helpers.axisEnds('x', 3) }),
    (c: Parameters<ProblemDefinition['conditions']['bc']>[0]) => ({ ...c.helpers.axisEnds('x', 3), kind: 'periodic' as const, axis: 'x' }),
  ]) {
    const s = definedProblem({ ...base, conditions: { bc } }).boundary(3);
    t.is(s.kind, 'periodic');
    t.is(s.axis, 0);
    t.deepEqual(Array.from(s.points), [0, 0, 0, 1, 0, 2, 1, 0, 1, 1, 1, 2]);
  }
  const ends = definedProblem({ ...base, conditions: { bc: (c) => c.helpers.axisEnds('t', 2) } }).boundary(2);
  t.is(ends.kind, undefined);
  t.deepEqual(Array.from(ends.points), [0, 0, 1, 0, 0, 2, 1, 2]);
  t.deepEqual(Array.from(ends.values), [0, 0, 0, 0]);
});

test.serial('phasemap refine of a module sweep resolves it again from the module sources sweep.json keeps', async (t) => {
  const dir = await tempDir('module-refine');
  await copyFile(EXAMPLE, join(dir, 'p.mjs'));
  const spec = await writeSpec(dir, { module: './p.mjs', n_collocation: 64, n_boundary: 8, eval_grid: 11 }, {
    train: { steps: 40, lr: 0.01, log_every: 10, eval_every: 20 },
    diagnostics: { every: 10, snr_batches: 4 },
    strategy: { name: 'vanilla' },
    grid: { 'train.lr': [0.001, 0.1] },
  });
  const out = join(dir, 'out');
  const r = await runCli(['run', spec, '--out', out, '--slots', '1', '--allow-modules'], { timeoutMs: 110_000 });
  t.is(r.code, 0, r.stderr);
  const { readFile, rm } = await import('node:fs/promises');
  const file = JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as { problem_modules?: Record<string, { path: string }>; trials: unknown[] };
  t.deepEqual(Object.values(file.problem_modules ?? {}).map((b) => b.path), ['./p.mjs']);
  // The module file is gone: refine reads the sources from sweep.json.
  await rm(join(dir, 'p.mjs'));
  const rf = await runCli(['refine', out, '--rounds', '1', '--slots', '1', '--allow-modules'], { timeoutMs: 110_000 });
  t.is(rf.code, 0, rf.stderr);
  t.regex(rf.stderr, /refine: (round 1: \d+ trial\(s\)|no new trials)/);
  t.notRegex(rf.stderr, /problem\.module/);
});
