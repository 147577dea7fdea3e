/**
 * Loss re-weighting strategies (science.md §4): per-point weights λ_i inside the square of the
 * residual term, L = mean_i (λ_i r_i)² + w_bc · mean_j (u(x_j) − g_j)².
 *
 * A Strategy is a small object that creates per-trial state; the state is consulted inside the
 * gradient tape each step and never lets gradients flow into λ.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { StrategyConfig } from '../../schemas/sweep.js';
import './gradients.js';

/** Per-trial state of a strategy (λ over the N collocation points). */
export interface StrategyState {
  /**
   * Called inside the gradient tape with the step's batch residual r [G, n_b] (differentiable) and
   * the batch indices into 0..N−1 (int32 [n_b], or null for the full batch in order). Returns λ_b
   * [G, n_b] to use in this step's loss (not differentiated), or null for λ ≡ 1. May record a
   * pending update, persisted by `commit`.
   */
  batchWeights(r: tf.Tensor, idx: tf.Tensor | null): tf.Tensor | null;
  /** Persist the update recorded by the last `batchWeights` (call once, after the gradient pass). */
  commit(): void;
  /** Current λ [N] (as used in the last loss after `commit`), or null for λ ≡ 1. Not a copy: do not dispose. */
  lambda(): tf.Tensor | null;
  dispose(): void;
}

/** A re-weighting strategy (science.md §4). */
export interface Strategy {
  readonly name: string;
  /** JSON-able config (checkpoint `strategy` metadata). */
  readonly config: StrategyConfig;
  /** New state for N collocation points; `lambda0` overrides the initial λ (tests, resume). */
  init(n: number, lambda0?: Float32Array): StrategyState;
}

/** vanilla: λ_i ≡ 1 (science.md §4). */
export const vanilla: Strategy = {
  name: 'vanilla',
  config: { name: 'vanilla' },
  init(): StrategyState {
    return { batchWeights: () => null, commit: () => {}, lambda: () => null, dispose: () => {} };
  },
};

/**
 * Identity in the forward pass, zero gradient in the backward pass (a stop-gradient), applied to a
 * function of x: returns f(x) with d f / d x treated as 0.
 */
export function stopGradient(x: tf.Tensor, f: (x: tf.Tensor) => tf.Tensor = (t) => tf.clone(t)): tf.Tensor {
  const g = tf.customGrad(((xi: tf.Tensor) => ({ value: f(xi), gradFunc: () => tf.zerosLike(xi) })) as unknown as Parameters<typeof tf.customGrad>[0]);
  return g(x);
}

/**
 * The RBA update (science.md §4): λ_b ← γ λ_b + η* |r_b| / max_j |r_j|, with the max over the batch
 * (per group: over the last axis). Pure tensor function, shapes λ_b, r: [..., n_b]. No gradient flows
 * through it when used via `rba`.
 */
export function rbaUpdate(lambdaB: tf.Tensor, r: tf.Tensor, gamma: number, eta: number): tf.Tensor {
  return tf.tidy(() => {
    const a = tf.abs(r);
    const mx = tf.max(a, -1, true);
    return tf.add(tf.mul(lambdaB, gamma), tf.mul(tf.div(a, mx), eta));
  });
}

/** rba strategy (science.md §4) with η* = `eta`, γ = `gamma`, λ⁰ = 0. */
export function rba(eta = 1e-3, gamma = 0.999): Strategy {
  return {
    name: 'rba',
    config: { name: 'rba', eta, gamma },
    init(n: number, lambda0?: Float32Array): StrategyState {
      let lam: tf.Tensor = lambda0 ? tf.tensor1d(lambda0) : tf.zeros([n]);
      let pending: { lb: tf.Tensor; idx: tf.Tensor | null } | null = null;
      return {
        batchWeights(r: tf.Tensor, idx: tf.Tensor | null): tf.Tensor {
          const G = r.shape[0]!;
          const lamB = idx ? tf.gather(lam, idx) : lam; // [n_b]
          const lb = stopGradient(r, (ri) => rbaUpdate(tf.reshape(lamB, [1, -1]), ri, gamma, eta)); // [G, n_b]
          if (pending) pending.lb.dispose();
          // λ of one trial: groups (if any) share λ, take group 0.
          pending = { lb: tf.keep(G === 1 ? tf.reshape(lb, [-1]) : tf.reshape(tf.slice(lb, [0, 0], [1, -1]), [-1])), idx };
          return lb;
        },
        commit(): void {
          if (!pending) return;
          const { lb, idx } = pending;
          pending = null;
          const next = idx
            ? tf.tidy(() => tf.tensorScatterUpdate(lam, tf.reshape(idx, [-1, 1]), lb))
            : lb;
          if (next !== lb) lb.dispose();
          lam.dispose();
          lam = next;
        },
        lambda: () => lam,
        dispose(): void {
          lam.dispose();
          if (pending) pending.lb.dispose();
          pending = null;
        },
      };
    },
  };
}

/**
 * The Strategy for a trial's `strategy` config section.
 * @throws Error for an unknown strategy name.
 */
export function makeStrategy(cfg: StrategyConfig): Strategy {
  switch (cfg.name) {
    case 'vanilla':
      return vanilla;
    case 'rba':
      return rba(cfg.eta, cfg.gamma);
    default:
      throw new Error(`unknown strategy '${(cfg as { name: string }).name}'`);
  }
}
