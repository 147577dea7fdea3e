/**
 * The fused stream MLP (network.ts: hand-derived backward, wasm JS kernels, chunking of large n) against
 * the autodiff reference `mlpForwardTape`, for shared and per-group ([G, in, out]) weights, and chunked
 * against unchunked evaluation.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { Rng } from '../worker/trainer/index.js';
import {
  Mlp, mlpForward, mlpForwardTape, mlpPerGroupWeightGrads, mlpShapes, mlpValue, setMlpChunkRows, setMlpHeapKernels, xavierInit, type MlpParams,
} from '../worker/trainer/network.js';
import type { DerivSpec, Fields } from '../worker/trainer/problems.js';
import { testBackend } from './trainer-helpers.js';

test.before(async () => {
  await testBackend();
});

const NAMES = ['x', 'y', 't'];

/** Random points [G, n, d] in [-1, 1]. */
function points(G: number, n: number, d: number, seed: number): tf.Tensor {
  const r = new Rng(seed, 'pts');
  const a = new Float32Array(G * n * d);
  for (let i = 0; i < a.length; i++) a[i] = 2 * r.uniform() - 1;
  return tf.tensor3d(a, [G, n, d]);
}

/** Parameters with nonzero biases; per-group (leading G axis) when `G` is given. */
function params(shapes: Array<[number, number]>, seed: number, G?: number): MlpParams {
  const rng = new Rng(seed, 'w');
  const weights: tf.Tensor[] = [];
  const biases: tf.Tensor[] = [];
  const copies = G ?? 1;
  for (const [fin, fout] of shapes) {
    const ws: Float32Array[] = [];
    const bs: Float32Array[] = [];
    for (let g = 0; g < copies; g++) {
      const init = xavierInit([[fin, fout]], rng);
      const b = new Float32Array(fout);
      for (let j = 0; j < fout; j++) b[j] = 0.3 * rng.normal();
      ws.push(init.weights[0]!);
      bs.push(b);
    }
    const cat = (xs: Float32Array[]) => Float32Array.from(xs.flatMap((x) => Array.from(x)));
    weights.push(G === undefined ? tf.tensor2d(ws[0]!, [fin, fout]) : tf.tensor3d(cat(ws), [G, fin, fout]));
    biases.push(G === undefined ? tf.tensor1d(bs[0]!) : tf.tensor2d(cat(bs), [G, fout]));
  }
  return { weights, biases };
}

/** A nonlinear scalar of every field: Σ_k Σ_i (c_k,i f + 0.5 f²). */
function lossOf(f: Fields, seed: number): tf.Scalar {
  const rng = new Rng(seed, 'loss');
  let total: tf.Tensor = tf.scalar(0);
  for (const k of Object.keys(f).sort()) {
    const v = f[k]!;
    const c = tf.tensor(Float32Array.from({ length: v.size }, () => rng.normal()), v.shape);
    total = tf.add(total, tf.sum(tf.add(tf.mul(c, v), tf.mul(0.5, tf.square(v)))));
  }
  return total as tf.Scalar;
}

function gradsOf(fwd: (p: MlpParams) => Fields, p: MlpParams, seed: number): { fields: Record<string, Float32Array>; grads: Float32Array[] } {
  const L = p.weights.length;
  const fields: Record<string, Float32Array> = {};
  tf.tidy(() => {
    const f = fwd(p);
    for (const [k, v] of Object.entries(f)) fields[k] = v.dataSync() as Float32Array;
  });
  const grads = tf.tidy(() =>
    tf.grads((...ts: tf.Tensor[]) => lossOf(fwd({ weights: ts.slice(0, L), biases: ts.slice(L) }), seed))([...p.weights, ...p.biases]).map((g) => g.dataSync() as Float32Array),
  );
  return { fields, grads };
}

function close(t: import('ava').ExecutionContext, got: Float32Array, want: Float32Array, what: string, rtol = 2e-4): void {
  t.is(got.length, want.length, `${what}: length`);
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  t.true(worst <= rtol * (scale + 1e-6), `${what}: max |diff| ${worst} vs scale ${scale}`);
}

const SPECS: Array<{ d: number; derivs: DerivSpec }> = [
  { d: 2, derivs: { first: [0, 1], second: [0, 1] } }, // poisson / helmholtz: u, u_x, u_y, u_xx, u_yy
  { d: 2, derivs: { first: [1, 0], second: [0] } }, // second derivatives not aligned with first
  { d: 2, derivs: { first: [0], second: [] } },
  { d: 2, derivs: { first: [], second: [] } },
];

for (const [si, { d, derivs }] of SPECS.entries()) {
  for (const G of [1, 3]) {
    test(`mlpForward gradients = autodiff (mlpForwardTape), shared weights, spec ${si}, G = ${G}`, (t) => {
      const p = params(mlpShapes(d, 7, 3), 11 + si);
      const x = points(G, 13, d, 5 + si);
      const names = NAMES.slice(0, d);
      const got = gradsOf((q) => mlpForward(q, x, derivs, names), p, 3);
      const want = gradsOf((q) => mlpForwardTape(q, x, derivs, names), p, 3);
      for (const k of Object.keys(want.fields)) close(t, got.fields[k]!, want.fields[k]!, `field ${k}`, 1e-5);
      got.grads.forEach((g, i) => close(t, g, want.grads[i]!, `grad ${i}`));
      tf.dispose([x, ...p.weights, ...p.biases]);
    });
  }
  test(`per-group weights [G, in, out]: gradients = autodiff and = each group's single-trial gradients, spec ${si}`, (t) => {
    const G = 3;
    const shapes = mlpShapes(d, 6, 3);
    const p = params(shapes, 21 + si, G);
    const x = points(G, 9, d, 8 + si);
    const names = NAMES.slice(0, d);
    const got = gradsOf((q) => mlpForward(q, x, derivs, names), p, 4);
    const want = gradsOf((q) => mlpForwardTape(q, x, derivs, names), p, 4);
    for (const k of Object.keys(want.fields)) close(t, got.fields[k]!, want.fields[k]!, `field ${k}`, 1e-5);
    got.grads.forEach((g, i) => close(t, g, want.grads[i]!, `grad ${i}`));
    // The loss is a sum over groups of per-group terms, so group g's slice of each gradient is the
    // single-trial gradient of group g's own loss.
    const lossG = (f: Fields, g: number) => lossOf(f, 100 + g);
    for (let g = 0; g < G; g++) {
      const single: MlpParams = {
        weights: p.weights.map((w) => tf.reshape(tf.slice(w, [g, 0, 0], [1, -1, -1]), w.shape.slice(1))),
        biases: p.biases.map((b) => tf.reshape(tf.slice(b, [g, 0], [1, -1]), [b.shape[1]!])),
      };
      const xg = tf.slice(x, [g, 0, 0], [1, -1, -1]);
      const L = shapes.length;
      const gs = tf.tidy(() =>
        tf.grads((...ts: tf.Tensor[]) => lossG(mlpForward({ weights: ts.slice(0, L), biases: ts.slice(L) }, xg, derivs, names), g))([...single.weights, ...single.biases]).map((v) => v.dataSync() as Float32Array),
      );
      const all = tf.tidy(() =>
        tf.grads((...ts: tf.Tensor[]) => {
          const f = mlpForward({ weights: ts.slice(0, L), biases: ts.slice(L) }, x, derivs, names);
          // Σ_g' loss_g'(fields of group g'): only group g's term depends on group g's parameters.
          let tot: tf.Tensor = tf.scalar(0);
          for (let h = 0; h < G; h++) tot = tf.add(tot, lossG(Object.fromEntries(Object.entries(f).map(([k, v]) => [k, tf.slice(v, [h, 0], [1, -1])])), h));
          return tot as tf.Scalar;
        })([...p.weights, ...p.biases]).map((v, i) => tf.slice(v, i < L ? [g, 0, 0] : [g, 0], i < L ? [1, -1, -1] : [1, -1]).dataSync() as Float32Array),
      );
      all.forEach((v, i) => close(t, v, gs[i]!, `group ${g} grad ${i}`));
      tf.dispose([xg, ...single.weights, ...single.biases]);
    }
    tf.dispose([x, ...p.weights, ...p.biases]);
  });
}

test('mlpValue and its gradients = autodiff, shared and per-group weights', (t) => {
  for (const G of [undefined, 2]) {
    const p = params(mlpShapes(2, 5, 3), 31, G);
    const x = points(G ?? 2, 11, 2, 9);
    const value = (q: MlpParams) => ({ u: mlpValue(q, x) });
    const tape = (q: MlpParams) => ({ u: mlpForwardTape(q, x, { first: [], second: [] }, ['x', 'y']).u! });
    const got = gradsOf(value, p, 6);
    const want = gradsOf(tape, p, 6);
    close(t, got.fields.u!, want.fields.u!, 'u', 1e-5);
    got.grads.forEach((g, i) => close(t, g, want.grads[i]!, `grad ${i} (G = ${G})`));
    tf.dispose([x, ...p.weights, ...p.biases]);
  }
});

test('mlpPerGroupWeightGrads = per-group single-trial gradients', (t) => {
  const G = 4;
  const derivs = { first: [0, 1], second: [0, 1] };
  const p = params(mlpShapes(2, 6, 3), 41);
  const x = points(G, 7, 2, 10);
  const L = p.weights.length;
  const lossG = (f: Fields, g: number) => lossOf(f, 200 + g);
  const got = tf.tidy(() =>
    mlpPerGroupWeightGrads(p, x, derivs, ['x', 'y'], (f) => {
      let tot: tf.Tensor = tf.scalar(0);
      for (let h = 0; h < G; h++) tot = tf.add(tot, lossG(Object.fromEntries(Object.entries(f).map(([k, v]) => [k, tf.slice(v, [h, 0], [1, -1])])), h));
      return tot as tf.Scalar;
    }).map((v) => v.dataSync() as Float32Array),
  );
  for (let g = 0; g < G; g++) {
    const xg = tf.slice(x, [g, 0, 0], [1, -1, -1]);
    const want = tf.tidy(() => tf.grads((...ws: tf.Tensor[]) => lossG(mlpForwardTape({ weights: ws, biases: p.biases }, xg, derivs, ['x', 'y']), g))(p.weights).map((v) => v.dataSync() as Float32Array));
    for (let l = 0; l < L; l++) {
      const per = want[l]!.length;
      close(t, got[l]!.subarray(g * per, (g + 1) * per), want[l]!, `group ${g} layer ${l}`);
    }
    xg.dispose();
  }
  tf.dispose([x, ...p.weights, ...p.biases]);
});

test('chunked evaluation (forced small chunks) = unchunked: fields, value and gradients', (t) => {
  const derivs = { first: [0, 1], second: [0, 1] };
  for (const G of [undefined, 2]) {
    const p = params(mlpShapes(2, 8, 4), 51, G);
    const x = points(G ?? 1, 37, 2, 12);
    const fwd = (q: MlpParams) => mlpForward(q, x, derivs, ['x', 'y']);
    const value = (q: MlpParams) => ({ u: mlpValue(q, x) });
    const want = gradsOf(fwd, p, 7);
    const wantV = gradsOf(value, p, 8);
    const wantPg = G === undefined ? tf.tidy(() => mlpPerGroupWeightGrads(p, tf.reshape(x, [1, 37, 2]), derivs, ['x', 'y'], (f) => lossOf(f, 9)).map((v) => v.dataSync() as Float32Array)) : null;
    for (const rows of [5, 16]) {
      setMlpChunkRows(rows);
      try {
        const got = gradsOf(fwd, p, 7);
        const gotV = gradsOf(value, p, 8);
        for (const k of Object.keys(want.fields)) close(t, got.fields[k]!, want.fields[k]!, `chunk ${rows}: field ${k}`, 1e-6);
        got.grads.forEach((g, i) => close(t, g, want.grads[i]!, `chunk ${rows}: grad ${i}`, 1e-5));
        close(t, gotV.fields.u!, wantV.fields.u!, `chunk ${rows}: value`, 1e-6);
        gotV.grads.forEach((g, i) => close(t, g, wantV.grads[i]!, `chunk ${rows}: value grad ${i}`, 1e-5));
        if (wantPg) {
          const gotPg = tf.tidy(() => mlpPerGroupWeightGrads(p, tf.reshape(x, [1, 37, 2]), derivs, ['x', 'y'], (f) => lossOf(f, 9)).map((v) => v.dataSync() as Float32Array));
          gotPg.forEach((g, i) => close(t, g, wantPg[i]!, `chunk ${rows}: per-group grad ${i}`, 1e-5));
        }
      } finally {
        setMlpChunkRows(null);
      }
    }
    tf.dispose([x, ...p.weights, ...p.biases]);
  }
});

test('Mlp variables train through mlpForward (smoke)', (t) => {
  const net = Mlp.xavier(2, 6, 3, new Rng(1, 'w'));
  const x = points(1, 10, 2, 1);
  const { value, grads } = tf.variableGrads(() => lossOf(mlpForward(net.params(), x, { first: [0, 1], second: [0, 1] }, ['x', 'y']), 1), net.variables());
  t.true(Number.isFinite(value.dataSync()[0]!));
  t.is(Object.keys(grads).length, net.variables().length);
  tf.dispose([value, x, ...Object.values(grads)]);
  net.dispose();
});

test('tf-op implementation (heap kernels off) = heap kernels: fields and gradients', (t) => {
  const derivs = { first: [0, 1], second: [1] };
  for (const G of [undefined, 2]) {
    const p = params(mlpShapes(2, 6, 3), 61, G);
    const x = points(G ?? 3, 11, 2, 13);
    const fwd = (q: MlpParams) => mlpForward(q, x, derivs, ['x', 'y']);
    const heap = gradsOf(fwd, p, 10);
    setMlpHeapKernels(false);
    let ops: ReturnType<typeof gradsOf>;
    try {
      ops = gradsOf(fwd, p, 10);
    } finally {
      setMlpHeapKernels(true);
    }
    for (const k of Object.keys(ops.fields)) close(t, heap.fields[k]!, ops.fields[k]!, `field ${k}`, 1e-5);
    heap.grads.forEach((g, i) => close(t, g, ops.grads[i]!, `grad ${i} (G = ${G})`));
    tf.dispose([x, ...p.weights, ...p.biases]);
  }
});

test('per-group weights with many points per group (one 2-D matmul per group) = autodiff', (t) => {
  const G = 2;
  const p = params(mlpShapes(2, 5, 3), 71, G);
  const x = points(G, 150, 2, 14);
  const derivs = { first: [0, 1], second: [0, 1] };
  const got = gradsOf((q) => mlpForward(q, x, derivs, ['x', 'y']), p, 11);
  const want = gradsOf((q) => mlpForwardTape(q, x, derivs, ['x', 'y']), p, 11);
  for (const k of Object.keys(want.fields)) close(t, got.fields[k]!, want.fields[k]!, `field ${k}`, 1e-5);
  got.grads.forEach((g, i) => close(t, g, want.grads[i]!, `grad ${i}`));
  tf.dispose([x, ...p.weights, ...p.biases]);
});
