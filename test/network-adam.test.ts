/**
 * Adam (adam.ts): the fused heap-kernel update on wasm is bit-identical to the tf-op update, for a
 * number learning rate and for per-trial learning-rate tensors ([K, 1, 1] / [K, 1]) on parameters
 * with a leading trial axis.
 */
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { Adam, Rng } from '../worker/trainer/index.js';
import { testBackend } from './trainer-helpers.js';

test.before(async () => {
  await testBackend();
});

function vars(seed: number, shapes: number[][]): tf.Variable[] {
  const r = new Rng(seed, 'adam');
  return shapes.map((s) => tf.variable(tf.tensor(Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => r.normal()), s)));
}

function grads(seed: number, shapes: number[][], k: number): tf.Tensor[] {
  const r = new Rng(seed + 1000 * k, 'g');
  return shapes.map((s) => tf.tensor(Float32Array.from({ length: s.reduce((a, b) => a * b, 1) }, () => r.normal() * 10 ** (r.uniform() * 4 - 3)), s));
}

function same(t: import('ava').ExecutionContext, a: tf.Tensor[], b: tf.Tensor[], what: string): void {
  a.forEach((x, i) => t.deepEqual(Array.from(x.dataSync()), Array.from(b[i]!.dataSync()), `${what} ${i}`));
}

test('heap Adam step = tf-op Adam step, bit for bit (number lr and per-trial lr tensors)', (t) => {
  const K = 3;
  const shapes = [[K, 2, 4], [K, 4, 1], [K, 4], [K, 1]];
  const pa = vars(1, shapes);
  const pb = vars(1, shapes);
  const A = new Adam(pa);
  const B = new Adam(pb);
  const lrs = [1e-3, 3e-2, 0.5];
  for (let k = 0; k < 5; k++) {
    const g = grads(2, shapes, k);
    if (k < 2) {
      A.step(g, 1e-2); // heap path
      // tf-op path: a full-shape lr tensor is not one the heap path takes.
      const full = shapes.map((s) => tf.fill(s, 1e-2));
      B.step(g, full);
      tf.dispose(full);
    } else {
      const wl = tf.tensor3d(lrs, [K, 1, 1]);
      const bl = tf.tensor2d(lrs, [K, 1]);
      A.step(g, shapes.map((s) => (s.length === 3 ? wl : bl))); // heap path, one lr per trial
      const full = shapes.map((s) => tf.mul(tf.ones(s), s.length === 3 ? wl : bl));
      B.step(g, full);
      tf.dispose([wl, bl, ...full]);
    }
    tf.dispose(g);
    same(t, pa, pb, `step ${k} params`);
    same(t, A.m, B.m, `step ${k} m`);
    same(t, A.v, B.v, `step ${k} v`);
  }
  t.is(A.t, 5);
  A.dispose();
  B.dispose();
  tf.dispose([...pa, ...pb]);
});
