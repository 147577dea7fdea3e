import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { rba, rbaUpdate } from '../worker/trainer/index.js';
import { testBackend } from './trainer-helpers.js';

test.before(async () => {
  await testBackend();
});

// Hand computation (science.md §4): r = [1, −2, 4] → |r| / max|r| = [0.25, 0.5, 1];
// λ = [0.2, 0, 1], γ = 0.5, η = 0.1 → λ' = [0.5·0.2 + 0.1·0.25, 0 + 0.1·0.5, 0.5·1 + 0.1·1] = [0.125, 0.05, 0.6].
const R = [1, -2, 4];
const LAM = [0.2, 0, 1];
const EXPECTED = [0.125, 0.05, 0.6];

function close(t: import('ava').ExecutionContext, got: ArrayLike<number>, want: number[]) {
  t.is(got.length, want.length);
  for (let i = 0; i < want.length; i++) t.true(Math.abs(got[i]! - want[i]!) < 1e-6, `λ[${i}] = ${got[i]} ≠ ${want[i]}`);
}

test('rbaUpdate: hand-computed example', (t) => {
  const out = rbaUpdate(tf.tensor1d(LAM), tf.tensor1d(R), 0.5, 0.1);
  close(t, out.dataSync(), EXPECTED);
});

test('rba state, full batch: λ used in the loss is the updated one, and it is persisted', (t) => {
  const st = rba(0.1, 0.5).init(3, Float32Array.from(LAM));
  const r = tf.tensor2d([R]);
  const lb = tf.tidy(() => tf.keep(st.batchWeights(r, null)!));
  close(t, lb.dataSync(), EXPECTED);
  st.commit();
  close(t, st.lambda()!.dataSync(), EXPECTED);
  st.dispose();
});

test('rba state, mini-batch: only the batch points change; max is over the batch', (t) => {
  // N = 5, λ = [0.3, 0.2, 0.7, 0, 1], batch = points [1, 3, 4] with r = [1, −2, 4]
  // → λ[1,3,4] = [0.125, 0.05, 0.6], others unchanged.
  const st = rba(0.1, 0.5).init(5, Float32Array.from([0.3, 0.2, 0.7, 0, 1]));
  const idx = tf.tensor1d([1, 3, 4], 'int32');
  const lb = tf.tidy(() => tf.keep(st.batchWeights(tf.tensor2d([R]), idx)!));
  close(t, lb.dataSync(), EXPECTED);
  st.commit();
  close(t, st.lambda()!.dataSync(), [0.3, 0.125, 0.7, 0.05, 0.6]);
  st.dispose();
});

test('rba: λ⁰ = 0 by default, no gradient flows through λ', (t) => {
  const st = rba(0.1, 0.5).init(3);
  close(t, st.lambda()!.dataSync(), [0, 0, 0]);
  const r0 = tf.tensor1d(R);
  // L = mean (λ r)² with λ = λ(r) stop-gradient → dL/dr = 2 λ² r / n.
  const g = tf.grad((r: tf.Tensor) => tf.mean(tf.square(tf.mul(st.batchWeights(tf.reshape(r, [1, 3]), null)!, tf.reshape(r, [1, 3])))))(r0);
  const lam = [0.025, 0.05, 0.1]; // γ·0 + η·|r|/max|r|
  close(t, g.dataSync(), lam.map((l, i) => (2 * l * l * R[i]!) / 3));
  st.dispose();
});
