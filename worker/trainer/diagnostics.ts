/**
 * Gradient diagnostics (science.md §5): snr, snr_layers, grad_order over a fixed split of the N
 * collocation points into B equal batches, with all B per-batch gradients from ONE backward pass.
 */
import * as tf from '@tensorflow/tfjs-core';
import { boundaryLoss, residualOf, residualLoss } from './loss.js';
import type { MlpParams } from './network.js';
import type { Problem } from './problems.js';
import type { Rng } from './rng.js';

/** The fixed SNR split (science.md §5, §7 `snr_batch`). */
export interface SnrSplit {
  /** B, the number of batches. */
  B: number;
  /** Points per batch, N / B. */
  perBatch: number;
  /** Batch (0..B−1) of each collocation point, Int32Array [N] (checkpoint `snr_batch`). */
  batchOf: Int32Array;
  /** Point indices of the batches, Int32Array [B · perBatch], batch-major. */
  order: Int32Array;
  /** Points of the batches [B, perBatch, d]. */
  x: tf.Tensor;
  /** Forcing of the batches [B, perBatch]. */
  q: tf.Tensor;
  /** `order` as an int32 tensor [B, perBatch] (to gather λ). */
  idx: tf.Tensor;
  dispose(): void;
}

/**
 * Split N points once, in a seeded random order (`rng.permutation(N)`), into B equal batches:
 * batch b = order[b·N/B .. (b+1)·N/B).
 * @param points [N, d] row-major; @param q forcing [N].
 * @throws Error if B does not divide N or B < 2.
 */
export function makeSnrSplit(points: ArrayLike<number>, q: ArrayLike<number>, n: number, d: number, B: number, rng: Rng): SnrSplit {
  if (!(B >= 2) || n % B !== 0) throw new Error(`diagnostics.snr_batches = ${B} must be ≥ 2 and divide n_collocation = ${n}`);
  const per = n / B;
  const order = rng.permutation(n);
  const batchOf = new Int32Array(n);
  const xs = new Float32Array(n * d);
  const qs = new Float32Array(n);
  for (let j = 0; j < n; j++) {
    const i = order[j]!;
    batchOf[i] = Math.floor(j / per);
    for (let c = 0; c < d; c++) xs[j * d + c] = points[i * d + c]!;
    qs[j] = q[i]!;
  }
  const x = tf.tensor3d(xs, [B, per, d]);
  const qt = tf.tensor2d(qs, [B, per]);
  const idx = tf.tensor2d(order, [B, per], 'int32');
  return { B, perBatch: per, batchOf, order, x, q: qt, idx, dispose: () => tf.dispose([x, qt, idx]) };
}

/** Result of the gradient diagnostics (science.md §5 column names). */
export interface SnrResult {
  snr: number;
  snr_layers: number[];
  grad_order: number;
}

/** Boundary data of one trial: points [1, m, d], targets [1, m], weight w_bc. */
export interface BoundaryData {
  x: tf.Tensor;
  g: tf.Tensor;
  wBc: number;
}

/**
 * Per-batch gradients g_b of L_b = mean_{i∈b} (λ_i r_i)² + w_bc·mean_j (u(x_j) − g_j)² with respect to
 * the weight matrices only (biases excluded), for all B batches in one pass: every batch gets its own
 * copy of each weight matrix ([B, in, out]), the batches go through a batched matmul, and the sum of
 * the batch residual losses is differentiated w.r.t. the copies; the boundary-term gradient (the same
 * for every b) is computed once and added.
 * @param lambda current λ [N] (for RBA: as used in this step's loss), or null for λ ≡ 1.
 * @returns one tensor [B, in, out] per weight matrix, input layer first (caller disposes).
 */
export function perBatchGradients(problem: Problem, params: MlpParams, split: SnrSplit, lambda: tf.Tensor | null, bc: BoundaryData): tf.Tensor[] {
  return tf.tidy(() => {
    const B = split.B;
    const lamB = lambda ? tf.gather(lambda, split.idx) : null; // [B, per]
    const copies = params.weights.map((w) => tf.tile(tf.expandDims(w, 0), [B, 1, 1]));
    const resGrads = tf.grads((...ws: tf.Tensor[]) => {
      const r = residualOf(problem, { weights: ws, biases: params.biases }, split.x, split.q); // [B, per]
      return tf.sum(residualLoss(r, lamB));
    })(copies);
    const bcGrads = tf.grads((...ws: tf.Tensor[]) => tf.sum(boundaryLoss({ weights: ws, biases: params.biases }, bc.x, bc.g, bc.wBc)))(
      params.weights,
    );
    return resGrads.map((g, l) => tf.add(g, bcGrads[l]!));
  });
}

/**
 * From per-batch gradients ([B, ...] per weight matrix): per parameter j, μ_j = mean_b g_bj,
 * σ_j = std_b g_bj (population, ddof 0), RMS_j = sqrt(mean_b g_bj²) (science.md §5):
 *  snr = ‖μ‖₂/‖σ‖₂ over all matrices; snr_layers[l] = ‖μ_l‖_F/‖σ_l‖_F; grad_order = ‖μ‖₂/‖RMS‖₂.
 * Reductions run in float32 on the backend; one small readback.
 */
export function snrFromBatchGradients(gs: tf.Tensor[]): SnrResult {
  const sums = tf.tidy(() =>
    tf.stack(
      gs.map((g) => {
        const mu = tf.mean(g, 0);
        const varr = tf.mean(tf.square(tf.sub(g, mu)), 0);
        const ms = tf.mean(tf.square(g), 0);
        return tf.stack([tf.sum(tf.square(mu)), tf.sum(varr), tf.sum(ms)]);
      }),
    ),
  );
  const s = sums.dataSync();
  sums.dispose();
  let mu2 = 0;
  let var2 = 0;
  let ms2 = 0;
  const snr_layers: number[] = [];
  for (let l = 0; l < gs.length; l++) {
    mu2 += s[3 * l]!;
    var2 += s[3 * l + 1]!;
    ms2 += s[3 * l + 2]!;
    snr_layers.push(Math.sqrt(s[3 * l]!) / Math.sqrt(s[3 * l + 1]!));
  }
  return { snr: Math.sqrt(mu2) / Math.sqrt(var2), snr_layers, grad_order: Math.sqrt(mu2) / Math.sqrt(ms2) };
}

/**
 * snr, snr_layers, grad_order (science.md §5) of the current parameters with the current λ.
 * Cost ≈ one full-batch forward+backward over the N points plus one boundary backward.
 */
export function gradientSnr(problem: Problem, params: MlpParams, split: SnrSplit, lambda: tf.Tensor | null, bc: BoundaryData): SnrResult {
  const gs = perBatchGradients(problem, params, split, lambda, bc);
  try {
    return snrFromBatchGradients(gs);
  } finally {
    tf.dispose(gs);
  }
}
