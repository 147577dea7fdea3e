/**
 * Loss terms (science.md §2):
 *   L = mean_i (λ_i r_i)² + w_bc · mean_j (u(x_j) − g_j)² [+ w_ic · mean_k (u(x_k, 0) − u0(x_k))²],
 * the condition terms (boundary, initial) generalised as a list of `ConditionTerm`s, each `value`
 * (the squared misfit above) or `periodic` (see `conditionTermLoss`).
 * All tensors carry a leading group axis G ([G, n, d] points, [G, n] values).
 */
import * as tf from '@tensorflow/tfjs-core';
import { mlpForward, mlpValue, type MlpParams } from './network.js';
import type { ConditionKind, Problem } from './problems.js';
import { selectOutputs, systemForward, systemValue } from './system-forward.js';

/** One condition term of the loss (boundary or initial), on the backend. */
export interface ConditionTerm {
  /** `bc` (weight w_bc) or `ic` (weight w_ic). */
  name: 'bc' | 'ic';
  kind: ConditionKind;
  /** Points [1, m, d] (for `periodic`: the m/2 points of one end, then their m/2 partners). */
  x: tf.Tensor;
  /** Targets [1, m] (unused for `periodic`). */
  g: tf.Tensor;
  /** Weight of the term in L. */
  w: number;
  /** For `periodic`: index of the periodic input (its first derivative is matched too). */
  axis?: number;
  /**
   * For a problem with several outputs (K): one-hot [1, m, K] selecting the output each target is of;
   * the term is then w · mean_j (u_{o_j}(x_j) − g_j)². Absent: the single output.
   */
  sel?: tf.Tensor;
}

/**
 * PDE residual r [G, n] of the network at points x [G, n, d] with forcing q ([G, n] or broadcastable).
 */
export function residualOf(problem: Problem, params: MlpParams, x: tf.Tensor, q: tf.Tensor): tf.Tensor {
  if (problem.isSystem) return tf.tidy(() => problem.residual(systemForward(params, x, problem.derivs, problem.inputOrder, (problem as unknown as { outputs: readonly string[] }).outputs), q, x));
  return tf.tidy(() => problem.residual(mlpForward(params, x, problem.derivs, problem.inputOrder), q, x));
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

/**
 * One condition term, weighted as it enters L, per group → [G]:
 *  - `value`: w · mean_j (u(x_j) − g_j)² (= `boundaryLoss`);
 *  - `periodic`: with a = the first m/2 points and b = their partners (the last m/2),
 *    w · mean_j [(u(a_j) − u(b_j))² + (u_s(a_j) − u_s(b_j))²], s = inputOrder[axis].
 */
export function conditionTermLoss(params: MlpParams, term: ConditionTerm, inputOrder: readonly string[]): tf.Tensor {
  if (term.kind === 'value' && term.sel) return tf.tidy(() => tf.mul(tf.mean(tf.square(tf.sub(selectOutputs(systemValue(params, term.x), term.sel!), term.g)), -1), term.w));
  if (term.kind === 'value') return boundaryLoss(params, term.x, term.g, term.w);
  return tf.tidy(() => {
    const axis = term.axis ?? 0;
    const f = mlpForward(params, term.x, { first: [axis], second: [] }, inputOrder);
    const u = f.u!;
    const us = f[`u_${inputOrder[axis]}`]!;
    const m = u.shape[1]!;
    if (m % 2 !== 0) throw new Error(`periodic condition: needs an even number of points, got ${m}`);
    const h = m / 2;
    const jump = (v: tf.Tensor) => tf.square(tf.sub(tf.slice(v, [0, 0], [-1, h]), tf.slice(v, [0, h], [-1, h])));
    return tf.mul(tf.mean(tf.add(jump(u), jump(us)), -1), term.w);
  });
}

/** Sum of the condition terms (the full boundary/initial term of L), per group → [G]. */
export function conditionsLoss(params: MlpParams, terms: readonly ConditionTerm[], inputOrder: readonly string[]): tf.Tensor {
  return tf.tidy(() => {
    if (terms.length === 0) return tf.zeros([1]);
    const parts = terms.map((t) => conditionTermLoss(params, t, inputOrder));
    return parts.reduce((a, b) => tf.add(a, b)); // (tf.addN has no registered gradient)
  });
}
