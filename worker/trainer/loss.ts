/**
 * Loss terms (science.md §2): L = mean_i (λ_i r_i)² + w_bc · mean_j (u(x_j) − g_j)².
 * All tensors carry a leading group axis G ([G, n, d] points, [G, n] values).
 */
import * as tf from '@tensorflow/tfjs-core';
import { mlpForward, mlpValue, type MlpParams } from './network.js';
import type { Problem } from './problems.js';

/**
 * PDE residual r [G, n] of the network at points x [G, n, d] with forcing q ([G, n] or broadcastable).
 */
export function residualOf(problem: Problem, params: MlpParams, x: tf.Tensor, q: tf.Tensor): tf.Tensor {
  return tf.tidy(() => problem.residual(mlpForward(params, x, problem.derivs, problem.inputOrder), q));
}

/** Residual term per group: mean_i (λ_i r_i)² over the last axis; r, λ [G, n] (λ null = 1) → [G]. */
export function residualLoss(r: tf.Tensor, lambda: tf.Tensor | null): tf.Tensor {
  return tf.tidy(() => tf.mean(tf.square(lambda ? tf.mul(lambda, r) : r), -1));
}

/**
 * Boundary term, weighted as it enters L: w_bc · mean_j (u(x_j) − g_j)² over the last axis.
 * @param x boundary points [G, m, d]; @param g targets [G, m]; @returns [G].
 */
export function boundaryLoss(params: MlpParams, x: tf.Tensor, g: tf.Tensor, wBc: number): tf.Tensor {
  return tf.tidy(() => tf.mul(tf.mean(tf.square(tf.sub(mlpValue(params, x), g)), -1), wBc));
}

/**
 * Squared L2 error Σ (u − u*)² over the evaluation grid x [G, m, d] against uStar [m]; → [G].
 * rel_l2 = sqrt(that / Σ u*²) (science.md §2).
 */
export function sqError(params: MlpParams, x: tf.Tensor, uStar: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.sum(tf.square(tf.sub(mlpValue(params, x), uStar)), -1));
}
