/**
 * Re-weighting strategy options (science.md §4): rba normalization/init, sa (self-adaptive weights),
 * their spec section and their use in training and diagnostics. Expected values are worked out by hand
 * (in the comments) or by a float64 twin of Adam.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import type { MetricRow } from '../schemas/metrics.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { parseSpecText, resolveSweep } from '../orchestrator/spec.js';
import {
  evalDiagnostics, evalSnr, lossAndGrads, rba, rbaNormalize, rbaUpdate, Rng, sa, setupTrial, trainTrial, type SaState,
} from '../worker/trainer/index.js';
import { testBackend, tinyConfig } from './trainer-helpers.js';
import { specErrors } from './spec-helpers.js';

test.before(async () => {
  await testBackend();
});

type T = import('ava').ExecutionContext;

function close(t: T, got: ArrayLike<number>, want: ArrayLike<number>, tol = 1e-6, what = 'λ') {
  t.is(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) t.true(Math.abs(got[i]! - want[i]!) <= tol, `${what}[${i}] = ${got[i]} ≠ ${want[i]}`);
}

const arr = (x: tf.Tensor) => Array.from(x.dataSync());

/** One step of a strategy state on residual r (group axis added) and batch idx (null = full). */
function step(st: { batchWeights(r: tf.Tensor, idx: tf.Tensor | null): tf.Tensor | null; commit(): void }, r: number[], idx: number[] | null): number[] {
  const it = idx ? tf.tensor1d(idx, 'int32') : null;
  const rt = tf.tensor2d([r]);
  const lb = st.batchWeights(rt, it);
  const out = lb ? arr(lb) : r.map(() => 1);
  st.commit();
  tf.dispose([rt, ...(it ? [it] : []), ...(lb ? [lb] : [])]);
  return out;
}

// ---------------------------------------------------------------------------------------------
// rba: normalization

test('rbaNormalize minmax: hand-computed, and the max = min guard', (t) => {
  // |r| = [1, 2, 4, 3]: min 1, max 4, range 3 → [0, 1/3, 1, 2/3].
  close(t, arr(rbaNormalize(tf.tensor1d([1, -2, 4, -3]), 'minmax')), [0, 1 / 3, 1, 2 / 3]);
  // per group (last axis): second row |r| = [2, 2, 6, 4] → [0, 0, 1, 1/2].
  close(t, arr(rbaNormalize(tf.tensor2d([[1, -2, 4, -3], [2, -2, 6, 4]]), 'minmax')), [0, 1 / 3, 1, 2 / 3, 0, 0, 1, 0.5]);
  // all |r| equal: max = min → the max form |r|/max|r| = 1; all zero → 0 (no NaN) in both forms.
  close(t, arr(rbaNormalize(tf.tensor1d([-2, 2, 2]), 'minmax')), [1, 1, 1]);
  close(t, arr(rbaNormalize(tf.tensor1d([5]), 'minmax')), [1]);
  close(t, arr(rbaNormalize(tf.tensor1d([0, 0]), 'minmax')), [0, 0]);
  close(t, arr(rbaNormalize(tf.tensor1d([0, 0]), 'max')), [0, 0]);
  // the default max form is unchanged: [1, −2, 4] → [0.25, 0.5, 1].
  close(t, arr(rbaNormalize(tf.tensor1d([1, -2, 4]))), [0.25, 0.5, 1]);
});

test('rbaUpdate minmax: hand-computed example', (t) => {
  // r = [1, −2, 4, −3] → n = [0, 1/3, 1, 2/3]; λ = [0.2, 0, 1, 0.5], γ = 0.5, η = 0.1:
  // λ' = [0.1 + 0, 0 + 0.1/3, 0.5 + 0.1, 0.25 + 0.2/3] = [0.1, 0.0333…, 0.6, 0.31666…].
  close(t, arr(rbaUpdate(tf.tensor1d([0.2, 0, 1, 0.5]), tf.tensor1d([1, -2, 4, -3]), 0.5, 0.1, 'minmax')), [0.1, 0.1 / 3, 0.6, 0.25 + 0.2 / 3]);
});

test('rba minmax state, mini-batch: min and max over the batch, only batch points change', (t) => {
  // N = 5, λ = [0.3, 0.2, 0.7, 0, 1]; batch [4, 0, 2] with r = [−1, 3, 2]: |r| = [1, 3, 2],
  // n = [0, 1, 0.5]; γ = 0.5, η = 0.1 → λ4 = 0.5, λ0 = 0.15 + 0.1 = 0.25, λ2 = 0.35 + 0.05 = 0.4.
  const st = rba(0.1, 0.5, { normalization: 'minmax' }).init(5, Float32Array.from([0.3, 0.2, 0.7, 0, 1]));
  close(t, step(st, [-1, 3, 2], [4, 0, 2]), [0.5, 0.25, 0.4]);
  close(t, arr(st.lambda()!), [0.25, 0.2, 0.4, 0, 0.5]);
  st.dispose();
});

test('rba config carries normalization and init, defaults max and zero', (t) => {
  t.deepEqual(rba().config, { name: 'rba', eta: 1e-3, gamma: 0.999, normalization: 'max', init: 'zero' });
  t.deepEqual(rba(0.1, 0.5, { normalization: 'minmax', init: 'residual' }).config, { name: 'rba', eta: 0.1, gamma: 0.5, normalization: 'minmax', init: 'residual' });
});

// ---------------------------------------------------------------------------------------------
// rba: init

test('rba init residual, full batch: λ¹ = |r|/max|r|, then the usual update', (t) => {
  const st = rba(0.1, 0.5, { init: 'residual' }).init(3);
  close(t, arr(st.lambda()!), [0, 0, 0]);
  // step 0: r = [1, −2, 4] → λ¹ = [0.25, 0.5, 1] (not γ·0 + η·that = [0.025, 0.05, 0.1]).
  close(t, step(st, [1, -2, 4], null), [0.25, 0.5, 1]);
  close(t, arr(st.lambda()!), [0.25, 0.5, 1]);
  // step 1: r = [2, 2, −1] → n = [1, 1, 0.5]; λ² = 0.5·λ¹ + 0.1·n = [0.225, 0.35, 0.55].
  close(t, step(st, [2, 2, -1], null), [0.225, 0.35, 0.55]);
  close(t, arr(st.lambda()!), [0.225, 0.35, 0.55]);
  st.dispose();
});

test('rba init residual with minmax: λ¹ = (|r| − min)/(max − min)', (t) => {
  const st = rba(0.1, 0.5, { init: 'residual', normalization: 'minmax' }).init(3);
  // r = [1, −2, 4]: |r| = [1, 2, 4], min 1, range 3 → [0, 1/3, 1].
  close(t, step(st, [1, -2, 4], null), [0, 1 / 3, 1]);
  // r = [3, 1, −2] → n = [1, 0, 0.5]; λ² = 0.5·[0, 1/3, 1] + 0.1·[1, 0, 0.5] = [0.1, 1/6, 0.55].
  close(t, step(st, [3, 1, -2], null), [0.1, 1 / 6, 0.55]);
  st.dispose();
});

test('rba init residual, mini-batch: step 0 sets its batch only, later batches follow the usual update', (t) => {
  const st = rba(0.1, 0.5, { init: 'residual' }).init(5);
  // step 0: batch [1, 3, 4], r = [1, −2, 4] → λ[1,3,4] = [0.25, 0.5, 1]; λ0 = λ2 = 0 (λ⁰).
  close(t, step(st, [1, -2, 4], [1, 3, 4]), [0.25, 0.5, 1]);
  close(t, arr(st.lambda()!), [0, 0.25, 0, 0.5, 1]);
  // step 1: batch [0, 2, 1], r = [3, −1, 2] → n = [1, 1/3, 2/3];
  // λ0 = 0.5·0 + 0.1·1 = 0.1, λ2 = 0 + 0.1/3, λ1 = 0.5·0.25 + 0.1·2/3 = 0.125 + 0.0666….
  close(t, step(st, [3, -1, 2], [0, 2, 1]), [0.1, 0.1 / 3, 0.125 + 0.2 / 3]);
  close(t, arr(st.lambda()!), [0.1, 0.125 + 0.2 / 3, 0.1 / 3, 0.5, 1]);
  st.dispose();
});

test('rba init residual is not applied to a state created with lambda0 (resume)', (t) => {
  const st = rba(0.1, 0.5, { init: 'residual' }).init(3, Float32Array.from([0.2, 0, 1]));
  close(t, step(st, [1, -2, 4], null), [0.125, 0.05, 0.6]); // the usual update (test/rba.test.ts)
  st.dispose();
});

// ---------------------------------------------------------------------------------------------
// sa

/** Float64 twin of one Adam ascent step on one scalar with step count t (after increment). */
function adamTwin(p: number, m: number, v: number, g: number, t: number, lr: number, b1 = 0.9, b2 = 0.999, eps = 1e-8) {
  const m2 = b1 * m + (1 - b1) * g;
  const v2 = b2 * v + (1 - b2) * g * g;
  const mhat = m2 / (1 - Math.pow(b1, t));
  const vhat = v2 / (1 - Math.pow(b2, t));
  return { p: p + lr * (mhat / (Math.sqrt(vhat) + eps)), m: m2, v: v2 };
}

/** The λ gradient of mean_i (λ_i r_i)² over a batch of n_b points: 2 λ_i r_i² / n_b. */
const lamGrad = (lam: number[], r: number[]) => lam.map((l, i) => (2 * l * r[i]! * r[i]!) / r.length);

test('sa: λ⁰ ~ U(0,1) from the seeded JS stream; config', (t) => {
  const st = sa({ seed: 11 }).init(6) as SaState;
  const rng = Rng.stream(11, 'sa_lambda');
  const want = Array.from({ length: 6 }, () => Math.fround(rng.uniform()));
  t.deepEqual(arr(st.lambda()), want);
  t.true(want.every((x) => x >= 0 && x < 1));
  t.notDeepEqual(arr((sa({ seed: 12 }).init(6) as SaState).lambda()), want);
  t.deepEqual(sa().config, { name: 'sa', lr: 5e-3, freeze_step: null });
  t.deepEqual(sa({ lr: 0.1, freezeStep: 3 }).config, { name: 'sa', lr: 0.1, freeze_step: 3 });
  st.dispose();
});

test('sa, full batch: one and two ascent steps by hand and against a float64 Adam twin', (t) => {
  const lr = 0.01;
  const lam0 = [0.5, 0.2, 0.8];
  const r1 = [1, -2, 0.5];
  const r2 = [-1, 1, 2];
  const st = sa({ lr }).init(3, Float32Array.from(lam0)) as SaState;
  // step 0 uses λ⁰ in its loss; lambda() stays λ⁰ until the next step applies the ascent.
  close(t, step(st, r1, null), lam0);
  close(t, arr(st.lambda()), lam0);
  // g¹ = 2 λ r² / 3 = [1/3, 0.5333…, 0.1333…] > 0: Adam's first step is lr·g/(|g| + ε) ≈ +lr each.
  const g1 = lamGrad(lam0, r1);
  close(t, g1, [1 / 3, 1.6 / 3, 0.4 / 3], 1e-12, 'g¹');
  const lam1Hand = lam0.map((l) => l + lr);
  // step 1 uses λ¹ in its loss.
  const used1 = step(st, r2, null);
  close(t, used1, lam1Hand, 1e-6);
  close(t, arr(st.lambda()), lam1Hand, 1e-6);
  const a1 = lam0.map((l, i) => adamTwin(l, 0, 0, g1[i]!, 1, lr));
  close(t, arr(st.lambda()), a1.map((x) => x.p), 1e-7, 'λ¹ twin');
  const s1 = st.adamState();
  close(t, arr(s1.m), g1.map((g) => 0.1 * g), 1e-7, 'm¹'); // m = (1 − β1) g: the hand gradient
  close(t, arr(s1.v), g1.map((g) => 0.001 * g * g), 1e-9, 'v¹');
  t.deepEqual(Array.from(s1.t), [1, 1, 1]);
  // step 2: λ² from the twin with g² = 2 λ¹ r2² / 3 (λ¹ as the float32 values used in the loss).
  const g2 = lamGrad(used1, r2);
  const a2 = a1.map((a, i) => adamTwin(used1[i]!, a.m, a.v, g2[i]!, 2, lr));
  close(t, step(st, [0, 0, 0], null), a2.map((x) => x.p), 1e-7, 'λ² twin');
  close(t, arr(st.adamState().m), a2.map((x) => x.m), 1e-7, 'm²');
  t.deepEqual(Array.from(st.adamState().t), [2, 2, 2]);
  t.is(st.steps(), 3);
  st.dispose();
});

test('sa: the λ used in the loss is λ (inside the square) and no network gradient flows into λ', (t) => {
  const st = sa().init(3, Float32Array.from([0.5, 0.2, 0.8]));
  const r0 = tf.tensor1d([1, -2, 0.5]);
  // L = mean (λ r)² with λ constant → dL/dr = 2 λ² r / 3.
  const g = tf.grad((r: tf.Tensor) => tf.mean(tf.square(tf.mul(st.batchWeights(tf.reshape(r, [1, 3]), null)!, tf.reshape(r, [1, 3])))))(r0);
  close(t, arr(g), [0.5, 0.2, 0.8].map((l, i) => (2 * l * l * [1, -2, 0.5][i]!) / 3), 1e-6, 'dL/dr');
  st.commit();
  st.dispose();
});

test('sa, mini-batch: only batch points change λ, moments and step counts; per-point Adam', (t) => {
  const lr = 0.02;
  const lam0 = [0.1, 0.2, 0.3, 0.4, 0.5];
  const st = sa({ lr }).init(5, Float32Array.from(lam0)) as SaState;
  // step 0: batch [1, 3], r = [1, −2] → g = 2 λ r²/2 = [0.2, 1.6]; first Adam step: +lr each.
  close(t, step(st, [1, -2], [1, 3]), [0.2, 0.4]);
  // step 1: batch [0, 1], r = [2, 1]; its loss uses λ¹ = [0.1, 0.2 + lr, 0.3, 0.4 + lr, 0.5].
  const used = step(st, [2, 1], [0, 1]);
  close(t, used, [0.1, 0.2 + lr], 1e-6);
  close(t, arr(st.lambda()), [0.1, 0.2 + lr, 0.3, 0.4 + lr, 0.5], 1e-6);
  let s = st.adamState();
  t.deepEqual(Array.from(s.t), [0, 1, 0, 1, 0]);
  close(t, arr(s.m), [0, 0.02, 0, 0.16, 0], 1e-7, 'm¹');
  close(t, arr(s.v), [0, 0.001 * 0.04, 0, 0.001 * 2.56, 0], 1e-9, 'v¹');
  // step 2 (batch [4], r = [0]) applies step 1's ascent: point 0 takes its FIRST Adam step (t = 1:
  // +lr), point 1 its second (t = 2, twin); points 2, 3, 4 are untouched (λ, m, v, t).
  const lamNow = arr(st.lambda());
  const mNow = arr(s.m);
  const vNow = arr(s.v);
  step(st, [0], [4]);
  const g = lamGrad(used, [2, 1]); // [2·0.1·4/2, 2·λ1·1/2]
  const p0 = adamTwin(lamNow[0]!, 0, 0, g[0]!, 1, lr);
  const p1 = adamTwin(lamNow[1]!, mNow[1]!, vNow[1]!, g[1]!, 2, lr);
  s = st.adamState();
  close(t, arr(st.lambda()), [p0.p, p1.p, lamNow[2]!, lamNow[3]!, lamNow[4]!], 1e-7, 'λ²');
  t.true(Math.abs(p0.p - (0.1 + lr)) < 1e-8);
  close(t, arr(s.m), [p0.m, p1.m, 0, mNow[3]!, 0], 1e-7, 'm²');
  close(t, arr(s.v), [p0.v, p1.v, 0, vNow[3]!, 0], 1e-9, 'v²');
  t.deepEqual(Array.from(s.t), [1, 2, 0, 1, 0]);
  st.dispose();
});

test('sa freeze_step: λ and its Adam state stop changing after the freeze step', (t) => {
  const run = (freezeStep: number | null) => {
    const st = sa({ lr: 0.05, freezeStep }).init(2, Float32Array.from([0.5, 0.5])) as SaState;
    const seen: number[][] = [];
    for (let k = 0; k < 4; k++) seen.push(step(st, [1, 2], null));
    seen.push(step(st, [1, 2], null));
    const t = Array.from(st.adamState().t);
    st.dispose();
    return { seen, t };
  };
  // freeze_step 0: never updated.
  const f0 = run(0);
  for (const s of f0.seen) close(t, s, [0.5, 0.5]);
  t.deepEqual(f0.t, [0, 0]);
  // freeze_step 2: steps 0 and 1 update λ (λ¹, λ²); the loss of steps ≥ 2 uses λ² for good.
  const f2 = run(2);
  close(t, f2.seen[1]!, [0.55, 0.55], 1e-6);
  t.true(f2.seen[2]![0]! > f2.seen[1]![0]!);
  close(t, f2.seen[3]!, f2.seen[2]!, 0);
  close(t, f2.seen[4]!, f2.seen[2]!, 0);
  t.deepEqual(f2.t, [2, 2]);
  // null: never frozen.
  const fn = run(null);
  t.true(fn.seen[4]![0]! > fn.seen[3]![0]!);
  t.deepEqual(fn.t, [4, 4]);
});

// ---------------------------------------------------------------------------------------------
// sa in a trial: diagnostics and training

const saConfig = (over: Partial<TrialConfig['train']> = {}): TrialConfig =>
  tinyConfig({ strategy: { name: 'sa', lr: 0.05, freeze_step: null }, train: { steps: 20, ...over } });

test('sa in setupTrial: λ⁰ from the trial seed; lambda_mean/lambda_max and snr use the current SA λ', (t) => {
  const cfg = saConfig();
  const s = setupTrial(cfg);
  try {
    const rng = Rng.stream(cfg.seed, 'sa_lambda');
    const lam0 = Array.from({ length: s.n }, () => Math.fround(rng.uniform()));
    t.deepEqual(arr(s.state.lambda()!), lam0);
    const stats = (v: number[]) => ({ mean: v.reduce((a, b) => a + b, 0) / v.length, max: Math.max(...v) });
    const d0 = evalDiagnostics(s);
    t.true(Math.abs(d0.lambda_mean! - stats(lam0).mean) < 1e-9);
    t.is(d0.lambda_max, stats(lam0).max);
    for (let k = 0; k < 5; k++) {
      const st = lossAndGrads(s, null);
      s.adam.step(st.grads, cfg.train.lr);
      tf.dispose([st.loss, st.lossResidual, st.lossBoundary, ...st.grads]);
    }
    const lam = arr(s.state.lambda()!);
    t.true(lam.every((x, i) => x > lam0[i]!), 'ascent raised every λ_i');
    const d = evalDiagnostics(s);
    t.true(Math.abs(d.lambda_mean! - stats(lam).mean) < 1e-9);
    t.is(d.lambda_max, stats(lam).max);
    // snr with the SA state = snr with a state holding the same λ values; ≠ snr with λ ≡ 1.
    const state = s.state;
    const copy = tf.tensor1d(lam);
    s.state = { ...state, lambda: () => copy };
    const same = evalSnr(s);
    s.state = { ...state, lambda: () => null };
    const ones = evalSnr(s);
    s.state = state;
    const got = evalSnr(s);
    copy.dispose();
    t.is(got.snr, same.snr);
    t.is(d.snr, got.snr);
    t.not(got.snr, ones.snr);
  } finally {
    s.dispose();
  }
});

test('trainTrial with sa (full batch and mini-batch, freeze_step) gives finite rows', async (t) => {
  for (const [strategy, batch] of [
    [{ name: 'sa', lr: 5e-3, freeze_step: null }, 'full'],
    [{ name: 'sa', lr: 5e-3, freeze_step: 8 }, 16],
  ] as const) {
    const rows: MetricRow[] = [];
    const sum = await trainTrial(tinyConfig({ strategy, train: { steps: 20, batch_size: batch } }), { onRows: (r) => void rows.push(...r) });
    t.false(sum.diverged);
    t.is(sum.steps_done, 20);
    t.true(rows.length > 0);
    for (const r of rows) t.true(Number.isFinite(r.loss) && Number.isFinite(r.loss_residual), `step ${r.step}: loss ${r.loss}`);
    const diag = rows.filter((r) => r.snr !== null);
    t.true(diag.length >= 2);
    for (const r of diag) {
      t.true(Number.isFinite(r.snr!) && Number.isFinite(r.lambda_mean!) && Number.isFinite(r.lambda_max!));
      t.true(r.lambda_max! <= 1 + 20 * 5e-3 + 1e-6 && r.lambda_mean! > 0);
    }
    t.true(diag.at(-1)!.lambda_mean! > diag[0]!.lambda_mean!, 'λ rose under ascent');
    t.true(Number.isFinite(sum.final_rel_l2!));
  }
});

// ---------------------------------------------------------------------------------------------
// spec section

const base = `name: t
problem: {name: helmholtz2d, n_collocation: 64}
model: {width: 8, depth: 2}
train: {steps: 10, log_every: 5, eval_every: 5}
diagnostics: {every: 5, snr_batches: 4}
`;


test('spec: rba normalization/init and sa resolve with their defaults; bad values are named', (t) => {
  const s = resolveSweep(parseSpecText(`${base}grid:\n  strategy: [{name: rba}, {name: rba, normalization: minmax, init: residual}, {name: sa}, {name: sa, lr: 0.01, freeze_step: 100}]\n`));
  t.deepEqual(s.trials.map((x) => x.config.strategy), [
    { name: 'rba', eta: 1e-3, gamma: 0.999, normalization: 'max', init: 'zero' },
    { name: 'rba', eta: 1e-3, gamma: 0.999, normalization: 'minmax', init: 'residual' },
    { name: 'sa', lr: 5e-3, freeze_step: null },
    { name: 'sa', lr: 0.01, freeze_step: 100 },
  ]);
  t.is(new Set(s.trials.map((x) => x.trial_id)).size, 4);
  const errs = specErrors(`${base}grid:\n  strategy: [{name: rba, normalization: mean}, {name: sa, freeze_step: -1}, {name: sa, lr: 0}]\n`);
  t.true(errs.some((e) => e.includes('strategy.normalization') && e.includes('mean')), errs.join('\n'));
  t.true(errs.some((e) => e.includes('strategy.freeze_step') && e.includes('-1')), errs.join('\n'));
  t.true(errs.some((e) => e.includes('strategy.lr') && e.includes('> 0')), errs.join('\n'));
});
