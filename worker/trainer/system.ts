/**
 * Systems of equations and networks with several outputs (problem-api.ts `DefinedProblem.isSystem`):
 * the general, unfused training path.
 *
 * With E residual terms r_e (one per equation) at the N collocation points, the loss is (science.md §2,
 * the mean of squared residuals summed over equations)
 *   L = Σ_e mean_i (λ_{e,i} r_{e,i})² + the condition terms,
 * with λ per point per equation: the strategy (science.md §4) keeps one state per equation, each over
 * the N points (`systemStrategy`; rba normalises |r_e| by the max over the batch of its own equation).
 * The diagnostics (science.md §5) are those of this total loss: the SNR batch loss of batch b is
 * L_b = Σ_e mean_{i∈b} (λ_{e,i} r_{e,i})² + (full condition term) (`systemGradientSnr`, one backward pass
 * per batch — the simple B-pass loop §5 describes, not the one-pass trick of diagnostics.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { MlpParams } from './network.js';
import type { Problem } from './problems.js';
import type { Strategy, StrategyResume, StrategyState } from './strategies.js';
import { conditionsLoss, type ConditionTerm } from './loss.js';
import { snrFromBatchGradients, type SnrResult, type SnrSplit } from './diagnostics.js';
import { systemForward } from './system-forward.js';

/** A system problem as the general path needs it. */
export interface SystemProblem extends Problem {
  readonly outputs: readonly string[];
  readonly equations: readonly string[];
  residualTerms(f: Record<string, tf.Tensor>, q: tf.Tensor, x?: tf.Tensor): tf.Tensor[];
}

/** Whether `p` is a system (several outputs or several residual terms). */
export function isSystemProblem(p: Problem): p is SystemProblem {
  return p.isSystem === true;
}

/** The E residual terms [G, n] each of the network at points x [G, n, d] with source q ([G, n] or broadcastable). */
export function systemResiduals(problem: SystemProblem, params: MlpParams, x: tf.Tensor, q: tf.Tensor): tf.Tensor[] {
  return tf.tidy(() => problem.residualTerms(systemForward(params, x, problem.derivs, problem.inputOrder, problem.outputs), q, x));
}

/**
 * The residual part of L per group (science.md §2, summed over equations): Σ_e mean_i (λ_{e,i} r_{e,i})²
 * over the last axis; rs: E tensors [G, n]; lambdas: E tensors [G, n] or [n] (null: λ ≡ 1) → [G].
 */
export function systemResidualLoss(rs: readonly tf.Tensor[], lambdas: ReadonlyArray<tf.Tensor | null>): tf.Tensor {
  return tf.tidy(() => rs.map((r, e) => tf.mean(tf.square(lambdas[e] ? tf.mul(lambdas[e]!, r) : r), -1)).reduce((a, b) => tf.add(a, b)));
}

/** A strategy state over the E equations of a system: λ [N, E] (point-major), one inner state per equation. */
export interface SystemStrategyState extends StrategyState {
  /** The E inner states, in equation order. */
  readonly equations: readonly StrategyState[];
  /**
   * Called inside the gradient tape with the E residual terms r_e [G, n_b] and the batch (int32 [n_b]
   * indices into 0..N−1, or null for all N): λ_{e,b} [G, n_b] (null for λ ≡ 1) of each equation.
   */
  batchWeightsSystem(rs: readonly tf.Tensor[], idx: tf.Tensor | null): Array<tf.Tensor | null>;
  /** λ of equation e [N], or null for λ ≡ 1. Not a copy. */
  lambdaOf(e: number): tf.Tensor | null;
}

/** rba resumed at a step whose λ update is already in λ (as worker/trainer/resume.ts does for one equation). */
function skipFirstUpdate(inner: StrategyState): StrategyState {
  let skip = true;
  return {
    batchWeights(r, idx) {
      if (!skip) return inner.batchWeights(r, idx);
      const lam = inner.lambda();
      if (!lam) return null;
      const nb = r.shape[r.shape.length - 1]!;
      return tf.tidy(() => tf.broadcastTo(tf.reshape(idx ? tf.gather(lam, idx) : lam, [1, nb]), r.shape));
    },
    commit() {
      if (skip) skip = false;
      else inner.commit();
    },
    lambda: () => inner.lambda(),
    dispose: () => inner.dispose(),
  };
}

/**
 * The strategy `inner` (science.md §4) over E equations: λ per point per equation, one inner state of N
 * points per equation. `init(N, lambda0?, resume?)`: lambda0 is λ [N, E] point-major (a checkpoint's
 * `lambda`); fresh `sa` draws its U(0,1) λ for all N·E at once (one stream: equation e gets values
 * e·N … e·N + N − 1 of it), so the equations start from different λ. A resumed `rba` skips the λ update
 * of the resumed step, as for one equation (worker/trainer/resume.ts).
 */
export function systemStrategy(inner: Strategy, E: number): Strategy {
  return {
    name: inner.name,
    config: inner.config,
    init(n: number, lambda0?: Float32Array, resume?: StrategyResume): SystemStrategyState {
      if (lambda0 && lambda0.length !== n * E) throw new Error(`${inner.name}: λ has ${lambda0.length} values, expected N·E = ${n}·${E} (one per point per equation)`);
      let fresh: Float32Array | null = null;
      if (!lambda0 && inner.name === 'sa') {
        const all = inner.init(n * E);
        fresh = Float32Array.from(all.lambda()!.dataSync());
        all.dispose();
      }
      const states = Array.from({ length: E }, (_, e) => {
        if (lambda0) {
          const lam = new Float32Array(n);
          for (let i = 0; i < n; i++) lam[i] = lambda0[i * E + e]!;
          const st = inner.init(n, lam, resume);
          return inner.name === 'rba' && resume ? skipFirstUpdate(st) : st;
        }
        return fresh ? inner.init(n, fresh.slice(e * n, (e + 1) * n)) : inner.init(n);
      });
      let cached: tf.Tensor | null = null;
      const drop = () => {
        cached?.dispose();
        cached = null;
      };
      return {
        equations: states,
        batchWeightsSystem(rs, idx) {
          if (rs.length !== E) throw new Error(`system strategy: got ${rs.length} residual terms, expected ${E}`);
          return rs.map((r, e) => states[e]!.batchWeights(r, idx));
        },
        batchWeights() {
          throw new Error('system strategy: use batchWeightsSystem (one residual per equation)');
        },
        commit() {
          for (const st of states) st.commit();
          drop();
        },
        lambdaOf: (e) => states[e]!.lambda(),
        lambda() {
          if (cached) return cached;
          const ls = states.map((st) => st.lambda());
          if (ls.every((l) => l === null)) return null;
          cached = tf.tidy(() => tf.stack(ls.map((l) => l ?? tf.ones([n])), 1)); // [N, E]
          return cached;
        },
        dispose() {
          drop();
          for (const st of states) st.dispose();
        },
      };
    },
  };
}

/**
 * snr, snr_layers, grad_order (science.md §5) of the total loss of a system, by a loop over the B
 * batches of the fixed split: g_b = ∂L_b/∂W (weight matrices only), L_b = Σ_e mean_{i∈b} (λ_{e,i} r_{e,i})²
 * + the full condition term (whose gradient, the same in every batch, is computed once and passed to
 * `snrFromBatchGradients` as the common part). Also the residual size at every collocation point in the
 * original order, |r_i| = sqrt(Σ_e r_{e,i}²) (the Euclidean norm of the residual vector; no λ), for
 * res_homogeneity.
 * @param lambdas λ_e [N] per equation (null: λ ≡ 1).
 */
export function systemGradientSnr(
  problem: SystemProblem,
  params: MlpParams,
  split: SnrSplit,
  lambdas: ReadonlyArray<tf.Tensor | null>,
  terms: readonly ConditionTerm[],
): SnrResult & { residual: Float32Array } {
  const { B, perBatch } = split;
  const d = problem.inputOrder.length;
  const L = params.weights.length;
  const perLayer: tf.Tensor[][] = Array.from({ length: L }, () => []);
  const rnorm = new Float32Array(B * perBatch);
  let common: tf.Tensor[] = [];
  try {
    for (let b = 0; b < B; b++) {
      const gs = tf.tidy(() => {
        const x = tf.slice(split.x, [b, 0, 0], [1, perBatch, d]);
        const q = tf.slice(split.q, [b, 0], [1, perBatch]);
        const idx = tf.reshape(tf.slice(split.idx, [b, 0], [1, perBatch]), [perBatch]);
        const lb = lambdas.map((l) => (l ? tf.reshape(tf.gather(l, idx), [1, perBatch]) : null));
        const rs0 = systemResiduals(problem, params, x, q);
        const r2 = rs0.map((r) => tf.square(r)).reduce((a, c) => tf.add(a, c));
        rnorm.set(tf.sqrt(r2).dataSync() as Float32Array, b * perBatch);
        return tf.grads((...ws: tf.Tensor[]) => tf.sum(systemResidualLoss(systemResiduals(problem, { weights: ws, biases: params.biases }, x, q), lb)) as tf.Scalar)(params.weights);
      });
      gs.forEach((g, l) => perLayer[l]!.push(g));
    }
    common = tf.tidy(() => tf.grads((...ws: tf.Tensor[]) => tf.sum(conditionsLoss({ weights: ws, biases: params.biases }, terms, problem.inputOrder)) as tf.Scalar)(params.weights));
    const stacked = perLayer.map((gs) => tf.stack(gs));
    try {
      const snr = snrFromBatchGradients(stacked, common);
      const residual = new Float32Array(rnorm.length);
      for (let j = 0; j < rnorm.length; j++) residual[split.order[j]!] = rnorm[j]!;
      return { ...snr, residual };
    } finally {
      tf.dispose(stacked);
    }
  } finally {
    tf.dispose([...perLayer.flat(), ...common]);
  }
}
