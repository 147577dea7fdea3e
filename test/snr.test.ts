import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import {
  boundaryLoss, evalSnr, gradientSnr, residualLoss, residualOf, setupTrial, lossAndGrads, type TrialSetup,
} from '../worker/trainer/index.js';
import { relDiff, testBackend, tinyConfig } from './trainer-helpers.js';

test.before(async () => {
  await testBackend();
});

/** Brute force (science.md §5): B separate backward passes, statistics in float64 JS. */
function bruteForce(s: TrialSetup, lambda: Float32Array | null) {
  const split = s.split!;
  const B = split.B;
  const per = split.perBatch;
  const d = s.d;
  const perBatch: Float64Array[][] = []; // [b][layer]
  for (let b = 0; b < B; b++) {
    const ids = Array.from(split.order.subarray(b * per, (b + 1) * per));
    const xs = new Float32Array(per * d);
    const qs = new Float32Array(per);
    const q = s.problem.forcing(s.points, s.n);
    ids.forEach((i, j) => {
      for (let c = 0; c < d; c++) xs[j * d + c] = s.points[i * d + c]!;
      qs[j] = q[i]!;
    });
    const lam = lambda ? tf.tensor2d(Float32Array.from(ids.map((i) => lambda[i]!)), [1, per]) : null;
    const x = tf.tensor3d(xs, [1, per, d]);
    const qt = tf.tensor2d(qs, [1, per]);
    const gs = tf.grads((...ws: tf.Tensor[]) => {
      const p = { weights: ws, biases: s.net.biases };
      const r = residualOf(s.problem, p, x, qt);
      return tf.add(tf.sum(residualLoss(r, lam)), tf.sum(boundaryLoss(p, s.bc.x, s.bc.g, s.bc.wBc)));
    })(s.net.weights);
    perBatch.push(gs.map((g) => Float64Array.from(g.dataSync())));
    tf.dispose([x, qt, ...gs]);
    lam?.dispose();
  }
  let mu2 = 0, var2 = 0, ms2 = 0;
  const layers: number[] = [];
  for (let l = 0; l < s.net.weights.length; l++) {
    let lm = 0, lv = 0;
    const size = perBatch[0]![l]!.length;
    for (let j = 0; j < size; j++) {
      let m = 0;
      for (let b = 0; b < B; b++) m += perBatch[b]![l]![j]!;
      m /= B;
      let v = 0, sq = 0;
      for (let b = 0; b < B; b++) {
        const g = perBatch[b]![l]![j]!;
        v += (g - m) ** 2;
        sq += g * g;
      }
      lm += m * m;
      lv += v / B;
      ms2 += sq / B;
    }
    mu2 += lm;
    var2 += lv;
    layers.push(Math.sqrt(lm / lv));
  }
  return { snr: Math.sqrt(mu2 / var2), snr_layers: layers, grad_order: Math.sqrt(mu2 / ms2) };
}

function compare(t: import('ava').ExecutionContext, got: { snr: number; snr_layers: number[]; grad_order: number }, want: ReturnType<typeof bruteForce>) {
  t.true(relDiff(got.snr, want.snr) < 1e-4, `snr ${got.snr} vs ${want.snr}`);
  t.true(relDiff(got.grad_order, want.grad_order) < 1e-4, `grad_order ${got.grad_order} vs ${want.grad_order}`);
  t.is(got.snr_layers.length, want.snr_layers.length);
  got.snr_layers.forEach((v, l) => t.true(relDiff(v, want.snr_layers[l]!) < 1e-4, `snr_layers[${l}] ${v} vs ${want.snr_layers[l]}`));
  t.true(relDiff(got.grad_order, got.snr / Math.sqrt(1 + got.snr ** 2)) < 1e-4, 'grad_order = snr/sqrt(1+snr²)');
  t.true(got.grad_order > 0 && got.grad_order <= 1);
}

const cfg = (strategy: 'vanilla' | 'rba') =>
  tinyConfig({
    problem: { n_collocation: 40 },
    model: { width: 8, depth: 2 },
    diagnostics: { every: 1, snr_batches: 4 },
    strategy: strategy === 'rba' ? { name: 'rba', eta: 0.1, gamma: 0.9 } : { name: 'vanilla' },
  });

test('one-pass snr = brute force (vanilla, 2×8, N = 40, B = 4)', (t) => {
  const s = setupTrial(cfg('vanilla'));
  try {
    // a few Adam steps so the state is not the initial one
    for (let k = 0; k < 3; k++) {
      const st = lossAndGrads(s, null);
      s.adam.step(st.grads, 1e-2);
      tf.dispose([st.loss, st.lossResidual, st.lossBoundary, ...st.grads]);
    }
    compare(t, evalSnr(s), bruteForce(s, null));
  } finally {
    s.dispose();
  }
});

test('one-pass snr = brute force (rba with non-trivial λ)', (t) => {
  const s = setupTrial(cfg('rba'));
  try {
    for (let k = 0; k < 4; k++) {
      const st = lossAndGrads(s, null); // updates λ
      s.adam.step(st.grads, 1e-2);
      tf.dispose([st.loss, st.lossResidual, st.lossBoundary, ...st.grads]);
    }
    const lam = Float32Array.from(s.state.lambda()!.dataSync());
    t.true(Math.max(...lam) - Math.min(...lam) > 1e-3, 'λ is non-trivial');
    compare(t, gradientSnr(s.problem, s.net.params(), s.split!, s.state.lambda(), s.bc), bruteForce(s, lam));
  } finally {
    s.dispose();
  }
});

test('snr split: fixed, equal batches, covers every point once', (t) => {
  const s = setupTrial(cfg('vanilla'));
  const s2 = setupTrial(cfg('vanilla'));
  try {
    const counts = new Array(4).fill(0);
    for (const b of s.split!.batchOf) counts[b]++;
    t.deepEqual(counts, [10, 10, 10, 10]);
    t.deepEqual(Array.from(s.split!.batchOf), Array.from(s2.split!.batchOf));
    t.deepEqual(new Set(s.split!.order).size, 40);
  } finally {
    s.dispose();
    s2.dispose();
  }
});

test('snr_batches must divide N', (t) => {
  t.throws(() => setupTrial(tinyConfig({ problem: { n_collocation: 42 }, diagnostics: { every: 1, snr_batches: 4 } })), { message: /divide/ });
});
