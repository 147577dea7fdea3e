/**
 * The state diagnostics of science.md §5: snr_adam, res_homogeneity, saturation_layers,
 * entropy_layers, lambda_mean, lambda_max — each pinned on hand-computed tiny inputs, and the whole
 * set (`evalDiagnostics`) against a float64 JS twin on a small trained network.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import {
  Adam, activationStats, adamSnr, binActivations, binnedEntropy, binnedSaturation, evalDiagnostics, evalSnr, forEachHiddenActivation,
  gridCells, hiddenLayerStats, lambdaStats, lossAndGrads, Mlp, mlpShapes, residualHomogeneity, rba, Rng, setupTrial, vanilla, xavierInit,
  type TrialSetup,
} from '../worker/trainer/index.js';
import { relDiff, testBackend, tinyConfig } from './trainer-helpers.js';

test.before(async () => {
  await testBackend();
});

const close = (a: number, b: number, tol = 1e-12) => Math.abs(a - b) <= tol * Math.max(1, Math.abs(a), Math.abs(b));

// ---------------------------------------------------------------------------------------------
// snr_adam

test('snr_adam: null at t = 0; hand-set moments; = 1 after one step; two-step closed form', (t) => {
  const p = tf.variable(tf.tensor1d([0.5, -0.25]));
  const q = tf.variable(tf.tensor2d([[1, 2]]));
  const adam = new Adam([p, q]);
  try {
    t.is(adamSnr(adam), null, 't = 0: no update yet');

    // Hand-set moments at t = 1: c1 = 1/(1 − 0.9) = 10, c2 = 1/(1 − 0.999) = 1000.
    // m̂ = [3, 4 | 0, 0] → ‖m̂‖ = 5; v̂ = [1, 0 | 0, 0] → sqrt(v̂) + ε = [1 + ε, ε, ε, ε].
    adam.m[0]!.assign(tf.tensor1d([0.3, 0.4]));
    adam.m[1]!.assign(tf.tensor2d([[0, 0]]));
    adam.v[0]!.assign(tf.tensor1d([0.001, 0]));
    adam.v[1]!.assign(tf.tensor2d([[0, 0]]));
    adam.t = 1;
    const want = 5 / Math.sqrt((1 + 1e-8) ** 2 + 3e-16);
    t.true(relDiff(adamSnr(adam)!, want) < 1e-6, `${adamSnr(adam)} vs ${want}`);
    // Biases and weights both count: moving the 4 into the second parameter changes nothing.
    adam.m[0]!.assign(tf.tensor1d([0.3, 0]));
    adam.m[1]!.assign(tf.tensor2d([[0, 0.4]]));
    t.true(relDiff(adamSnr(adam)!, want) < 1e-6);

    // Real steps from zero moments: after one step m̂ = g, v̂ = g² → ‖g‖ / ‖|g| + ε‖ = 1.
    const fresh = new Adam([p, q]);
    const g1 = [tf.tensor1d([0.5, -2]), tf.tensor2d([[0.125, 1]])];
    const g2 = [tf.tensor1d([-1, 0.25]), tf.tensor2d([[3, -0.5]])];
    fresh.step(g1, 1e-3);
    t.true(relDiff(adamSnr(fresh)!, 1) < 1e-6, `one step: ${adamSnr(fresh)}`);
    fresh.step(g2, 1e-3);
    // t = 2: m̂ = (0.09 g1 + 0.1 g2)/0.19, v̂ = (0.000999 g1² + 0.001 g2²)/0.001999.
    const a = [0.5, -2, 0.125, 1];
    const b = [-1, 0.25, 3, -0.5];
    let num = 0;
    let den = 0;
    for (let j = 0; j < 4; j++) {
      const mh = (0.09 * a[j]! + 0.1 * b[j]!) / (1 - 0.9 ** 2);
      const vh = (0.999 * 0.001 * a[j]! ** 2 + 0.001 * b[j]! ** 2) / (1 - 0.999 ** 2);
      num += mh * mh;
      den += (Math.sqrt(vh) + 1e-8) ** 2;
    }
    t.is(fresh.t, 2);
    t.true(relDiff(adamSnr(fresh)!, Math.sqrt(num / den)) < 1e-5, `two steps: ${adamSnr(fresh)} vs ${Math.sqrt(num / den)}`);
    tf.dispose([...g1, ...g2]);
    fresh.dispose();
  } finally {
    adam.dispose();
    tf.dispose([p, q]);
  }
});

// ---------------------------------------------------------------------------------------------
// res_homogeneity

const BOX: Array<[number, number]> = [[-1, 1], [-1, 1]];
/** Centre of cell (i0, i1) of the 10 × 10 grid over [-1, 1]². */
const centre = (i0: number, i1: number) => [-1 + 0.2 * i0 + 0.1, -1 + 0.2 * i1 + 0.1];

test('gridCells: 10 × 10 cells, first input slowest, upper edge in the last cell, x × t domains, null for non-2-D', (t) => {
  const pts = [...centre(0, 0), ...centre(0, 9), ...centre(3, 7), -1, -1, 1, 1, 1, -1, 0.999, 0, 5, -5];
  t.deepEqual(Array.from(gridCells(pts, 8, BOX)!), [0, 9, 37, 0, 99, 90, 95, 90]);
  // x ∈ [−1, 1], t ∈ [0, 1]: t is the second axis.
  t.deepEqual(Array.from(gridCells([0.05, 0.05, -0.95, 0.95], 2, [[-1, 1], [0, 1]])!), [50, 9]);
  t.is(gridCells([0, 0, 0], 1, [[0, 1], [0, 1], [0, 1]]), null);
});

test('res_homogeneity: hand-computed cells, empty cells skipped, |r|, uniform = 1', (t) => {
  // Cell 0 holds r = 1, −3 (c = 2); cell 37 holds r = 4 (c = 4); the 98 other cells are empty.
  const pts = [...centre(0, 0), ...centre(3, 7), ...centre(0, 0)];
  const cells = gridCells(pts, 3, BOX)!;
  t.true(close(residualHomogeneity([1, 4, -3], cells)!, 3 / Math.sqrt(10)), `${residualHomogeneity([1, 4, -3], cells)}`);
  // Three occupied cells with c = 1, 2, 2: mean 5/3, rms sqrt(9/3) → 5/(3·sqrt 3).
  const pts3 = [...centre(1, 1), ...centre(2, 2), ...centre(9, 9), ...centre(9, 9)];
  t.true(close(residualHomogeneity([-1, 2, 1, 3], gridCells(pts3, 4, BOX)!)!, 5 / (3 * Math.sqrt(3))));
  // Uniform |r| over every cell (any number of points per cell) → 1; all-zero residuals → 1.
  const all: number[] = [];
  const r: number[] = [];
  for (let i = 0; i < 10; i++) for (let j = 0; j < 10; j++) for (let k = 0; k <= (i + j) % 3; k++) {
    all.push(...centre(i, j));
    r.push(k % 2 ? 0.5 : -0.5);
  }
  const c = gridCells(all, r.length, BOX)!;
  t.true(close(residualHomogeneity(r, c)!, 1));
  t.is(residualHomogeneity(r.map(() => 0), c), 1);
  t.is(residualHomogeneity([], new Int32Array(0)), null);
  // One hot cell among 100 equal ones: φ = mean/rms with c = [10, 1 × 99].
  const hot = r.map((v, i) => (c[i] === 55 ? 10 : v));
  const want = (10 + 99 * 0.5) / 100 / Math.sqrt((100 + 99 * 0.25) / 100);
  t.true(close(residualHomogeneity(hot, c)!, want));
});

// ---------------------------------------------------------------------------------------------
// saturation_layers, entropy_layers

test('binning: common width w = Σ range / (units · 30), ceil(range / w) bins per unit, clamped top bin', (t) => {
  // 6 samples × 2 units. Unit 0 ∈ [0, 1], unit 1 ∈ [−1, 1]: w = 3 / 60 = 0.05, 20 and 40 bins.
  const acts = [
    0, -1,
    0.01, 0.32,
    0.52, 0.31,
    0.51, 0.34,
    1, 1,
    0.52, -0.96,
  ];
  const b = binActivations(acts, 6, 2);
  t.true(close(b.width, 0.05));
  t.deepEqual(Array.from(b.nbins), [20, 40]);
  t.deepEqual(Array.from(b.bin), [0, 0, 0, 26, 10, 26, 10, 26, 19, 39, 10, 0]);
  // Unit 0: bins 0 or 19 for samples 0, 1, 4 → 3/6; unit 1: bins 0 or 39 for samples 0, 4, 5 → 3/6.
  t.true(close(binnedSaturation(b), 50));
  // Rows: (0,0) (0,26) (10,26) (10,26) (19,39) (10,0) → p = 1/6 × 4, 2/6.
  t.true(close(binnedEntropy(b), (4 / 6) * Math.log2(6) + (2 / 6) * Math.log2(3)));
  const s = activationStats(acts, 6, 2);
  t.true(close(s.saturation, 50) && close(s.entropy, binnedEntropy(b)));

  // meanBins = 2 on 5 samples × 2 units: ranges 1 and 0.5 → w = 1.5/4 = 0.375; bins: ceil(2.67) = 3, ceil(1.33) = 2.
  const acts2 = [
    0, 0,
    0.1, 0.4,
    0.5, 0.5,
    0.8, 0.2,
    1, 0.45,
  ];
  const b2 = binActivations(acts2, 5, 2, 2);
  t.deepEqual(Array.from(b2.nbins), [3, 2]);
  t.deepEqual(Array.from(b2.bin), [0, 0, 0, 1, 1, 1, 2, 0, 2, 1]);
  // Unit 0: bins 0 or 2 → 4 of 5 (only 0.5 is in the middle bin); unit 1 has 2 bins: every sample is in one of them.
  t.true(close(binnedSaturation(b2), (80 + 100) / 2));
  // Rows (0,0) (0,1) (1,1) (2,0) (2,1): all distinct → log2 5.
  t.true(close(binnedEntropy(b2), Math.log2(5)));

  // A whole number of widths gets no extra bin from rounding: unit ranges 0.3 and 0.1, meanBins 2 → w = 0.1, 3 and 1 bins.
  const b3 = binActivations([0.1, 0.2, 0.4, 0.3], 2, 2, 2);
  t.deepEqual(Array.from(b3.nbins), [3, 1]);
  t.deepEqual(Array.from(b3.bin), [0, 0, 2, 0]);
});

test('entropy: many repeated vectors, grouped exactly (against string keys)', (t) => {
  const rng = new Rng(11, 'bins');
  for (const [n, units, nb] of [[3000, 3, 3], [2000, 5, 2], [500, 40, 2], [64, 1, 7]] as const) {
    const bin = Int32Array.from({ length: n * units }, () => rng.int(nb));
    const b = { n, units, width: 1, min: new Float64Array(units), nbins: new Int32Array(units).fill(nb), bin };
    const counts = new Map<string, number>();
    for (let i = 0; i < n; i++) {
      const key = Array.from(bin.subarray(i * units, (i + 1) * units)).join(',');
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    let h = 0;
    for (const c of counts.values()) h -= (c / n) * Math.log2(c / n);
    t.true(close(binnedEntropy(b), h, 1e-12), `n=${n} units=${units} nb=${nb}: ${binnedEntropy(b)} vs ${h}`);
  }
});

test('binning: constant units and constant layers', (t) => {
  // Unit 1 constant → 1 bin, 100 % saturated, adds no information; unit 0 ranges over [−1, 1] (w = 2/60).
  const acts = [-1, 0.7, 0, 0.7, 0.5, 0.7, 1, 0.7, 0.02, 0.7];
  const b = binActivations(acts, 5, 2);
  t.deepEqual(Array.from(b.nbins), [60, 1]);
  t.deepEqual(Array.from(b.bin), [0, 0, 30, 0, 45, 0, 59, 0, 30, 0]);
  t.true(close(binnedSaturation(b), (40 + 100) / 2));
  t.true(close(binnedEntropy(b), 3 * (1 / 5) * Math.log2(5) + (2 / 5) * Math.log2(5 / 2)));
  // Every unit constant → w = 0: one bin each, saturation 100, entropy 0.
  const c = binActivations([0.3, -0.2, 0.3, -0.2, 0.3, -0.2], 3, 2);
  t.is(c.width, 0);
  t.is(binnedSaturation(c), 100);
  t.is(binnedEntropy(c), 0);
});

test('forEachHiddenActivation: one hidden layer at a time (6 × 128, N = 2560), values = tanh(a W + b)', (t) => {
  const shapes = mlpShapes(2, 128, 6);
  const net = new Mlp(shapes, xavierInit(shapes, new Rng(5, 'acts')));
  const n = 2560;
  const rng = new Rng(5, 'pts');
  const pts = Float32Array.from({ length: n * 2 }, () => 2 * rng.uniform() - 1);
  const x = tf.tensor3d(Float32Array.from(pts), [1, n, 2]);
  const before = tf.memory();
  let peak = 0;
  const layers: number[] = [];
  let first: Float32Array | null = null;
  forEachHiddenActivation(net.params(), x, (l, acts, units) => {
    peak = Math.max(peak, tf.memory().numBytes - before.numBytes);
    layers.push(l);
    t.is(units, 128);
    t.is(acts.length, n * units);
    if (l === 0) first = Float32Array.from(acts);
  });
  t.deepEqual(layers, [0, 1, 2, 3, 4, 5]);
  t.is(tf.memory().numTensors, before.numTensors, 'nothing left on the backend');
  // At most two layers' activations ([n, 128] float32) live at once.
  t.true(peak <= 2 * n * 128 * 4, `peak extra backend bytes ${peak}`);
  // Layer 0 against float64: tanh(x W0 + b0), b0 = 0.
  const w0 = net.weights[0]!.dataSync();
  let maxErr = 0;
  for (let i = 0; i < n; i += 97) {
    for (let j = 0; j < 128; j++) {
      const z = pts[2 * i]! * w0[j]! + pts[2 * i + 1]! * w0[128 + j]!;
      maxErr = Math.max(maxErr, Math.abs(Math.tanh(z) - first![i * 128 + j]!));
    }
  }
  t.true(maxErr < 1e-6, `max |Δ| ${maxErr}`);
  x.dispose();
  net.dispose();
});

// ---------------------------------------------------------------------------------------------
// lambda_mean, lambda_max

test('lambda_mean, lambda_max: vanilla → 1, 1; rba λ over all N points', (t) => {
  t.deepEqual(lambdaStats(vanilla.init(4).lambda()), { lambda_mean: 1, lambda_max: 1 });
  const st = rba(1e-3, 0.999).init(4, Float32Array.from([0, 0.5, 1, 0.25]));
  t.deepEqual(lambdaStats(st.lambda()), { lambda_mean: 0.4375, lambda_max: 1 });
  st.dispose();
  const zero = rba().init(3);
  t.deepEqual(lambdaStats(zero.lambda()), { lambda_mean: 0, lambda_max: 0 });
  zero.dispose();
});

// ---------------------------------------------------------------------------------------------
// The whole set against a float64 JS twin

/** Float64 forward of the MLP at one point with u, u_x, u_y, u_xx, u_yy, and every hidden layer's activations. */
function twinForward(W: Float64Array[], b: Float64Array[], shapes: Array<[number, number]>, x: number, y: number) {
  let a = [x, y];
  let ax = [1, 0];
  let ay = [0, 1];
  let axx = [0, 0];
  let ayy = [0, 0];
  const hidden: number[][] = [];
  for (let l = 0; l < shapes.length; l++) {
    const [fin, fout] = shapes[l]!;
    const z = new Array<number>(fout).fill(0);
    const zx = new Array<number>(fout).fill(0);
    const zy = new Array<number>(fout).fill(0);
    const zxx = new Array<number>(fout).fill(0);
    const zyy = new Array<number>(fout).fill(0);
    for (let j = 0; j < fout; j++) {
      z[j] = b[l]![j]!;
      for (let i = 0; i < fin; i++) {
        const w = W[l]![i * fout + j]!;
        z[j] += a[i]! * w;
        zx[j] += ax[i]! * w;
        zy[j] += ay[i]! * w;
        zxx[j] += axx[i]! * w;
        zyy[j] += ayy[i]! * w;
      }
    }
    if (l === shapes.length - 1) return { u: z[0]!, uxx: zxx[0]!, uyy: zyy[0]!, hidden };
    a = z.map(Math.tanh);
    const s1 = a.map((v) => 1 - v * v);
    const s2 = a.map((v, j) => -2 * v * s1[j]!);
    ax = zx.map((v, j) => s1[j]! * v);
    ay = zy.map((v, j) => s1[j]! * v);
    axx = zxx.map((v, j) => s1[j]! * v + s2[j]! * zx[j]! ** 2);
    ayy = zyy.map((v, j) => s1[j]! * v + s2[j]! * zy[j]! ** 2);
    hidden.push(a);
  }
  throw new Error('unreachable');
}

/** Saturation and entropy straight from the definitions: per-unit loops, rows as string keys. */
function twinLayer(rows: number[][]) {
  const n = rows.length;
  const units = rows[0]!.length;
  const mins: number[] = [];
  const maxs: number[] = [];
  for (let u = 0; u < units; u++) {
    const col = rows.map((r) => r[u]!);
    mins.push(Math.min(...col));
    maxs.push(Math.max(...col));
  }
  const w = maxs.reduce((s, m, u) => s + m - mins[u]!, 0) / (units * 30);
  const nb = maxs.map((m, u) => (w > 0 ? Math.max(1, Math.ceil((m - mins[u]!) / w - 1e-9)) : 1));
  const binned = rows.map((r) => r.map((a, u) => (w > 0 ? Math.min(nb[u]! - 1, Math.floor((a - mins[u]!) / w)) : 0)));
  let sat = 0;
  for (let u = 0; u < units; u++) sat += binned.filter((r) => r[u] === 0 || r[u] === nb[u]! - 1).length / n;
  const counts = new Map<string, number>();
  for (const r of binned) counts.set(r.join(','), (counts.get(r.join(',')) ?? 0) + 1);
  let h = 0;
  for (const c of counts.values()) h -= (c / n) * Math.log2(c / n);
  return { saturation: (100 * sat) / units, entropy: h, binned, rows, mins, w };
}

function twin(s: TrialSetup) {
  const W = s.net.weights.map((w) => Float64Array.from(w.dataSync()));
  const b = s.net.biases.map((v) => Float64Array.from(v.dataSync()));
  const k2 = s.problem.params.k! ** 2;
  const q = s.problem.forcing(s.points, s.n);
  const r: number[] = [];
  const layers: number[][][] = s.net.shapes.slice(0, -1).map(() => []);
  for (let i = 0; i < s.n; i++) {
    const x = Math.fround(s.points[2 * i]!);
    const y = Math.fround(s.points[2 * i + 1]!);
    const f = twinForward(W, b, s.net.shapes, x, y);
    r.push(f.uxx + f.uyy + k2 * f.u - Math.fround(q[i]!));
    f.hidden.forEach((a, l) => layers[l]!.push(a));
  }
  // res_homogeneity: cells from the definition, not from gridCells.
  const cellSum = new Map<number, { s: number; c: number }>();
  for (let i = 0; i < s.n; i++) {
    const ix = Math.min(9, Math.floor(((s.points[2 * i]! + 1) / 2) * 10));
    const iy = Math.min(9, Math.floor(((s.points[2 * i + 1]! + 1) / 2) * 10));
    const e = cellSum.get(ix * 10 + iy) ?? { s: 0, c: 0 };
    e.s += Math.abs(r[i]!);
    e.c++;
    cellSum.set(ix * 10 + iy, e);
  }
  const cs = [...cellSum.values()].map((e) => e.s / e.c);
  const phi = cs.reduce((a, c) => a + c, 0) / cs.length / Math.sqrt(cs.reduce((a, c) => a + c * c, 0) / cs.length);
  // snr_adam from the moments in float64.
  const { t: step, beta1, beta2, epsilon } = s.adam;
  let num = 0;
  let den = 0;
  s.adam.m.forEach((m, i) => {
    const mv = m.dataSync();
    const vv = s.adam.v[i]!.dataSync();
    for (let j = 0; j < mv.length; j++) {
      num += (mv[j]! / (1 - beta1 ** step)) ** 2;
      den += (Math.sqrt(vv[j]! / (1 - beta2 ** step)) + epsilon) ** 2;
    }
  });
  const lam = s.state.lambda();
  const lv = lam ? Array.from(lam.dataSync()) : new Array<number>(s.n).fill(1);
  const stats = layers.map(twinLayer);
  return {
    res_homogeneity: phi,
    snr_adam: step === 0 ? null : Math.sqrt(num / den),
    saturation_layers: stats.map((x) => x.saturation),
    entropy_layers: stats.map((x) => x.entropy),
    lambda_mean: lv.reduce((a, v) => a + v, 0) / s.n,
    lambda_max: Math.max(...lv),
    layers,
    stats,
  };
}

for (const strategy of ['vanilla', 'rba'] as const) {
  test(`evalDiagnostics = float64 twin on a trained 3 × 16 network, N = 400 (${strategy})`, (t) => {
    const s = setupTrial(
      tinyConfig({
        problem: { n_collocation: 400 },
        model: { width: 16, depth: 3 },
        diagnostics: { every: 1, snr_batches: 4 },
        strategy: strategy === 'rba' ? { name: 'rba', eta: 0.1, gamma: 0.9 } : { name: 'vanilla' },
      }),
    );
    try {
      const before = tf.memory().numTensors;
      const d0 = evalDiagnostics(s);
      t.is(d0.snr_adam, null, 'step 0: Adam t = 0');
      t.is(tf.memory().numTensors, before, 'no tensor leak');
      for (let k = 0; k < 25; k++) {
        const st = lossAndGrads(s, null);
        s.adam.step(st.grads, 2e-2);
        tf.dispose([st.loss, st.lossResidual, st.lossBoundary, ...st.grads]);
      }
      const got = evalDiagnostics(s);
      const want = twin(s);
      t.log(JSON.stringify({ got, want: { ...want, layers: undefined, stats: undefined } }));
      // The gradient SNR part is evalSnr's.
      const snr = evalSnr(s);
      t.true(relDiff(got.snr!, snr.snr) < 1e-6 && relDiff(got.grad_order!, snr.grad_order) < 1e-6);
      t.deepEqual(got.snr_layers!.length, 4);
      t.true(relDiff(got.res_homogeneity!, want.res_homogeneity) < 1e-4, `res_homogeneity ${got.res_homogeneity} vs ${want.res_homogeneity}`);
      t.true(got.res_homogeneity! > 0 && got.res_homogeneity! < 1);
      t.true(relDiff(got.snr_adam!, want.snr_adam!) < 1e-5, `snr_adam ${got.snr_adam} vs ${want.snr_adam}`);
      t.true(relDiff(got.lambda_mean!, want.lambda_mean) < 1e-9 && got.lambda_max === want.lambda_max);
      if (strategy === 'vanilla') t.deepEqual([got.lambda_mean, got.lambda_max], [1, 1]);
      else t.true(got.lambda_max! <= 1 && got.lambda_mean! < got.lambda_max!);
      t.is(got.saturation_layers!.length, 3);
      t.is(got.entropy_layers!.length, 3);
      // Binning: float32 activations vs the float64 twin may only differ by a sample sitting on a bin
      // edge (within float32 rounding of it: 1e-4 of a bin width), and only by one bin.
      let edgeFlips = 0;
      const otherFlips: string[] = [];
      hiddenLayerStats(s.net.params(), s.xColl); // same call evalDiagnostics makes
      forEachHiddenActivation(s.net.params(), s.xColl, (l, acts, units) => {
        const b = binActivations(acts, s.n, units);
        const tw = want.stats[l]!;
        tw.binned.forEach((row, i) =>
          row.forEach((k, u) => {
            const got = b.bin[i * units + u]!;
            if (k === got) return;
            const pos = (tw.rows[i]![u]! - tw.mins[u]!) / tw.w; // the twin's position in bin widths
            if (Math.abs(got - k) === 1 && Math.abs(pos - Math.round(pos)) < 1e-4) edgeFlips++;
            else otherFlips.push(`layer ${l} sample ${i} unit ${u}: bin ${got} vs ${k} at ${pos}`);
          }),
        );
      });
      t.deepEqual(otherFlips, [], 'float32 and float64 activations land in the same bins but on an edge');
      t.true(edgeFlips <= 2, `${edgeFlips} samples on a bin edge`);
      got.saturation_layers!.forEach((v, l) => t.true(close(v, want.saturation_layers[l]!, 1e-9), `saturation[${l}] ${v} vs ${want.saturation_layers[l]}`));
      got.entropy_layers!.forEach((v, l) => t.true(close(v, want.entropy_layers[l]!, 1e-9), `entropy[${l}] ${v} vs ${want.entropy_layers[l]}`));
      for (const v of got.saturation_layers!) t.true(v >= 0 && v <= 100);
      for (const v of got.entropy_layers!) t.true(v >= 0 && v <= Math.log2(400) + 1e-12);
    } finally {
      s.dispose();
    }
  });
}
