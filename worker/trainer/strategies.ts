/**
 * Loss re-weighting strategies (science.md §4): per-point weights λ_i inside the square of the
 * residual term, L = mean_i (λ_i r_i)² + w_bc · mean_j (u(x_j) − g_j)².
 *
 * A Strategy is a small object that creates per-trial state; the state is consulted inside the
 * gradient tape each step and never lets the network's gradient flow into λ (`sa` trains λ by its
 * own gradient ascent, computed outside the network's gradient pass).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { StrategyConfig } from '../../schemas/sweep.js';
import type { AdamOptions } from './adam.js';
import './gradients.js';
import { heapKernel, heapKernelsAvailable } from './backend.js';
import { residualLoss } from './loss.js';
import { Rng } from './rng.js';

/** Per-trial state of a strategy (λ over the N collocation points). */
export interface StrategyState {
  /**
   * Called inside the gradient tape with the step's batch residual r [G, n_b] (differentiable) and
   * the batch indices into 0..N−1 (int32 [n_b], or null for the full batch in order). Returns λ_b
   * [G, n_b] to use in this step's loss (not differentiated), or null for λ ≡ 1. May record a
   * pending update, persisted by `commit`.
   */
  batchWeights(r: tf.Tensor, idx: tf.Tensor | null): tf.Tensor | null;
  /**
   * Persist the update recorded by the last `batchWeights` (call once, after the gradient pass). For
   * `sa` the λ ascent of this step is recorded here and applied at the start of the next `batchWeights`
   * (so that `lambda()` stays the λ of this step's loss).
   */
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
  /**
   * New state for N collocation points; `lambda0` overrides the initial λ (tests, resume). `resume`
   * (with `lambda0`) restores the rest of a checkpointed state: only `sa` reads it (its λ Adam and step
   * count); for `rba` the trainer skips the λ update of the resumed step itself (worker/trainer/resume.ts).
   */
  init(n: number, lambda0?: Float32Array, resume?: StrategyResume): StrategyState;
}

/**
 * The part of a strategy's state beyond λ that a resumed trial restores (worker/trainer/resume.ts).
 * `steps`: the step number k of the next `batchWeights` (the checkpoint's step). `lambdaAdam`: the `sa`
 * λ Adam's moments m, v [N] and per-point step counts t [N] as of λ (checkpoint tensors
 * `sa.adam.m`, `sa.adam.v`, `sa.adam.t`, a phasemap extension of science.md §7); absent: they restart
 * from zero (the λ trajectory then differs from the uninterrupted run's).
 */
export interface StrategyResume {
  steps: number;
  lambdaAdam?: { m: Float32Array; v: Float32Array; t: Int32Array };
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

/** Normalisation of |r| in the RBA update (science.md §4). */
export type RbaNormalization = 'max' | 'minmax';
/** Initial λ of RBA (science.md §4). */
export type RbaInit = 'zero' | 'residual';

/**
 * The normalised residual of the RBA update over the last axis (the step's batch, per group):
 *  - `max`: |r_i| / max_j |r_j| (0 for every point when all r are 0);
 *  - `minmax`: (|r_i| − min_j |r_j|) / (max_j |r_j| − min_j |r_j|); when max = min (all |r| equal,
 *    e.g. a batch of one point) it falls back to the `max` form (1, or 0 when all r are 0).
 * Values in [0, 1]. Pure tensor function, r: [..., n_b].
 */
export function rbaNormalize(r: tf.Tensor, normalization: RbaNormalization = 'max'): tf.Tensor {
  return tf.tidy(() => {
    const a = tf.abs(r);
    const mx = tf.max(a, -1, true);
    // denominators made 1 where they are 0 (exact elsewhere: x + 0 = x), without tf.where broadcasting
    const mxPos = tf.cast(tf.greater(mx, 0), 'float32');
    const byMax = tf.div(a, tf.add(mx, tf.sub(1, mxPos)));
    if (normalization === 'max') return byMax;
    const mn = tf.min(a, -1, true);
    const range = tf.sub(mx, mn);
    const rPos = tf.cast(tf.greater(range, 0), 'float32');
    const byRange = tf.div(tf.sub(a, mn), tf.add(range, tf.sub(1, rPos)));
    return tf.add(tf.mul(byRange, rPos), tf.mul(byMax, tf.sub(1, rPos)));
  });
}

/**
 * The RBA update (science.md §4): λ_b ← γ λ_b + η* · n(r_b), with n the normalised residual
 * (`rbaNormalize`: |r_i| / max_j |r_j| by default, or the min–max form), max/min over the batch
 * (per group: over the last axis). Pure tensor function, shapes λ_b, r: [..., n_b]. No gradient
 * flows through it when used via `rba`.
 */
export function rbaUpdate(lambdaB: tf.Tensor, r: tf.Tensor, gamma: number, eta: number, normalization: RbaNormalization = 'max'): tf.Tensor {
  return tf.tidy(() => tf.add(tf.mul(lambdaB, gamma), tf.mul(rbaNormalize(r, normalization), eta)));
}

/** Options of `rba` beyond η* and γ (science.md §4). */
export interface RbaOptions {
  /** `max` (default): |r_i| / max_j |r_j|; `minmax`: (|r_i| − min|r|) / (max|r| − min|r|). */
  normalization?: RbaNormalization;
  /**
   * `zero` (default): λ⁰ = 0. `residual`: the first step of a fresh state (the first `batchWeights`
   * call, i.e. training step 0) sets λ of that step's batch to the normalised residual (λ¹ = |r|/max|r|,
   * or the min–max form) instead of γ·0 + η*·that; points outside step 0's batch keep λ⁰ = 0 and
   * follow the usual update when they are drawn. Not applied to a state created with `lambda0`
   * (a resumed state is not at its first step).
   */
  init?: RbaInit;
}

/** rba strategy (science.md §4) with η* = `eta`, γ = `gamma`, normalisation and λ init from `opts`. */
export function rba(eta = 1e-3, gamma = 0.999, opts: RbaOptions = {}): Strategy {
  const normalization = opts.normalization ?? 'max';
  const initMode = opts.init ?? 'zero';
  return {
    name: 'rba',
    config: { name: 'rba', eta, gamma, normalization, init: initMode },
    init(n: number, lambda0?: Float32Array): StrategyState {
      let lam: tf.Tensor = lambda0 ? tf.tensor1d(lambda0) : tf.zeros([n]);
      let first = !lambda0 && initMode === 'residual';
      /** λ_b of group 0 [n_b] and the batch: indices as a tensor (tf-op path) or as numbers (heap path). */
      let pending: { lb: tf.Tensor; idx: tf.Tensor | null; at: Int32Array | null } | null = null;
      return {
        batchWeights(r: tf.Tensor, idx: tf.Tensor | null): tf.Tensor {
          const G = r.shape[0]!;
          if (pending) pending.lb.dispose();
          if (heapKernelsAvailable() && r.dtype === 'float32') {
            const at = idx ? Int32Array.from(idx.dataSync()) : null;
            const { lb, row } = rbaHeap(lam, at, r, first ? null : { gamma, eta }, normalization);
            pending = { lb: tf.keep(row), idx: null, at };
            return lb;
          }
          const lamB = idx ? tf.gather(lam, idx) : lam; // [n_b]
          const lb = stopGradient(r, (ri) =>
            first ? rbaNormalize(ri, normalization) : rbaUpdate(tf.reshape(lamB, [1, -1]), ri, gamma, eta, normalization),
          ); // [G, n_b]
          // λ of one trial: groups (if any) share λ, take group 0.
          pending = { lb: tf.keep(G === 1 ? tf.reshape(lb, [-1]) : tf.reshape(tf.slice(lb, [0, 0], [1, -1]), [-1])), idx, at: null };
          return lb;
        },
        commit(): void {
          if (!pending) return;
          const { lb, idx, at } = pending;
          pending = null;
          first = false;
          let next = lb;
          if (at) next = scatterHeap(lam, at, lb);
          else if (idx) next = tf.tidy(() => tf.tensorScatterUpdate(lam, tf.reshape(idx, [-1, 1]), lb));
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
 * The RBA λ_b of `rba`'s batchWeights on the wasm heap in one loop, instead of ~13 kernels and a
 * stop-gradient op: `rbaNormalize` of each group's row of r [G, n_b] and, with `upd`, `rbaUpdate` of λ
 * at the batch `at` (null: all N in order), every operation rounded to float32 as those kernels round
 * it (abs, max, min, compare and select are exact; a float32 sum, difference, product or quotient
 * computed in double and rounded once is the correctly rounded float32 one), so the same bits. The
 * outputs are not recorded on any gradient tape: λ is a constant to the network's gradient.
 * @returns λ_b [G, n_b] and its group-0 row [n_b].
 */
function rbaHeap(lam: tf.Tensor, at: Int32Array | null, r: tf.Tensor, upd: { gamma: number; eta: number } | null, normalization: RbaNormalization): { lb: tf.Tensor; row: tf.Tensor } {
  const [G, nb] = r.shape as [number, number];
  const f = Math.fround;
  const g32 = upd ? f(upd.gamma) : 0;
  const e32 = upd ? f(upd.eta) : 0;
  const [lb, row] = heapKernel([r, lam], [[G, nb], [nb]], ([R, LAM], [LB, ROW]) => {
    for (let g = 0; g < G; g++) {
      const o = g * nb;
      let mx = Math.abs(R![o]!);
      let mn = mx;
      for (let j = 1; j < nb; j++) {
        const a = Math.abs(R![o + j]!);
        if (a > mx) mx = a;
        if (a < mn) mn = a;
      }
      const mxPos = mx > 0 ? 1 : 0;
      const den = f(mx + (1 - mxPos));
      const range = f(mx - mn);
      const rPos = range > 0 ? 1 : 0;
      const rden = f(range + (1 - rPos));
      for (let j = 0; j < nb; j++) {
        const a = Math.abs(R![o + j]!);
        const byMax = f(a / den);
        const norm = normalization === 'max' ? byMax : f(f(f(f(a - mn) / rden) * rPos) + f(byMax * (1 - rPos)));
        LB![o + j] = upd ? f(f(LAM![at ? at[j]! : j]! * g32) + f(norm * e32)) : norm;
      }
    }
    ROW!.set(LB!.subarray(0, nb));
  });
  return { lb: lb!, row: row! };
}

/** λ [N] with λ[at[j]] = lb[j] (`tensorScatterUpdate` on the wasm heap: a copy). */
function scatterHeap(lam: tf.Tensor, at: Int32Array, lb: tf.Tensor): tf.Tensor {
  const [next] = heapKernel([lam, lb], [lam.shape.slice()], ([LAM, LB], [O]) => {
    O!.set(LAM!);
    for (let j = 0; j < at.length; j++) O![at[j]!] = LB![j]!;
  });
  return next!;
}

/** Options of `sa` (science.md §4). */
export interface SaOptions {
  /** Learning rate of the λ Adam (constant, no decay); default 5e-3. */
  lr?: number;
  /** λ is updated after steps k < freeze_step only (0: never); null/undefined: never frozen. */
  freezeStep?: number | null;
  /** Seed of the U(0,1) initial λ (the trial seed; stream 'sa_lambda'); default 0. */
  seed?: number;
  /** β1, β2, ε of the λ Adam; default the network's (0.9, 0.999, 1e-8). */
  adam?: AdamOptions;
}

/** State of an `sa` strategy: the common interface plus the λ Adam's state (checkpoints, tests). */
export interface SaState extends StrategyState {
  lambda(): tf.Tensor;
  /**
   * The λ Adam's first/second moments [N] (not copies: do not dispose) and per-point step counts t_i
   * (a copy), all as of `lambda()`: the ascent recorded by the last `commit` is not in them yet.
   */
  adamState(): { m: tf.Tensor; v: tf.Tensor; t: Int32Array };
  /** Steps committed so far (the step number k of the next `batchWeights`). */
  steps(): number;
}

/**
 * sa strategy (science.md §4), self-adaptive weights: λ_i ~ U(0,1) (seeded JS RNG, stream
 * 'sa_lambda' of `seed`; float32), trained by gradient ASCENT on the same loss L while the network
 * descends, with their own Adam (lr `lr`, constant; β1, β2, ε as the network's).
 *
 * Step k uses λ^k inside the square, mean_i (λ_i r_i)², and the λ gradient of that loss at step k's
 * parameters, ∂L/∂λ_i = 2 λ_i r_i² / n_b (by autodiff of `residualLoss`; λ is a constant for the
 * network's gradient). The ascent λ^{k+1} = λ^k + lr · m̂_i / (sqrt(v̂_i) + ε) is simultaneous with the
 * network's Adam update of step k: `commit` records it, and it is applied at the start of the next
 * `batchWeights`, so `lambda()` is always λ as used in the last loss (diagnostics, checkpoint `lambda`).
 *
 * Mini-batches: each λ_i has its own Adam. Only the points of the step's batch change their λ_i, their
 * moments m_i, v_i and their step count t_i (the number of steps point i was in the batch, used in the
 * bias corrections 1 − β^t_i); λ, moments and counts of the other points are untouched. With the full
 * batch every t_i equals the global step count, i.e. plain Adam on the vector λ.
 *
 * `freezeStep` F: the ascent of step k is recorded only for k < F, so λ changes at most F times and
 * steps ≥ F use λ^F; the λ Adam state stops changing with it.
 */
export function sa(opts: SaOptions = {}): Strategy {
  const lr = opts.lr ?? 5e-3;
  const freezeStep = opts.freezeStep ?? null;
  const seed = opts.seed ?? 0;
  const b1 = opts.adam?.beta1 ?? 0.9;
  const b2 = opts.adam?.beta2 ?? 0.999;
  const eps = opts.adam?.epsilon ?? 1e-8;
  return {
    name: 'sa',
    config: { name: 'sa', lr, freeze_step: freezeStep },
    init(n: number, lambda0?: Float32Array, resume?: StrategyResume): SaState {
      let init = lambda0;
      if (!init) {
        const rng = Rng.stream(seed, 'sa_lambda');
        init = new Float32Array(n);
        for (let i = 0; i < n; i++) init[i] = rng.uniform();
      }
      let lam: tf.Tensor = tf.tensor1d(init);
      const restored = resume?.lambdaAdam;
      if (restored && !(restored.m.length === n && restored.v.length === n && restored.t.length === n)) throw new Error(`sa: resumed λ Adam state has ${restored.m.length}/${restored.v.length}/${restored.t.length} values for ${n} points`);
      let m: tf.Tensor = restored ? tf.tensor1d(restored.m) : tf.zeros([n]);
      let v: tf.Tensor = restored ? tf.tensor1d(restored.v) : tf.zeros([n]);
      const counts = restored ? Int32Array.from(restored.t) : new Int32Array(n);
      let stepCount = resume?.steps ?? 0;
      /** What the last batchWeights saw: residual of group 0 [1, n_b], λ_b [1, n_b], batch indices. */
      let current: { r: tf.Tensor; lamB: tf.Tensor; idx: tf.Tensor | null } | null = null;
      /** The recorded ascent: λ gradient [n_b] and batch (null = all N, in order). */
      let pending: { g: tf.Tensor; idx: Int32Array | null } | null = null;

      const dropCurrent = () => {
        if (current) tf.dispose([current.r, current.lamB]);
        current = null;
      };

      /** Apply the recorded ascent (one Adam step on the batch's λ, moments and counts). */
      const applyPending = () => {
        if (!pending) return;
        const { g, idx } = pending;
        pending = null;
        const nb = idx ? idx.length : n;
        const c1 = new Float32Array(nb);
        const c2 = new Float32Array(nb);
        for (let j = 0; j < nb; j++) {
          const i = idx ? idx[j]! : j;
          counts[i] = counts[i]! + 1;
          const t = counts[i]!;
          c1[j] = 1 / (1 - Math.pow(b1, t));
          c2[j] = 1 / (1 - Math.pow(b2, t));
        }
        const [lam2, m2, v2] = tf.tidy(() => {
          const idxT = idx ? tf.tensor1d(idx, 'int32') : null;
          const at = (x: tf.Tensor) => (idxT ? tf.gather(x, idxT) : x);
          const mB = tf.add(tf.mul(at(m), b1), tf.mul(g, 1 - b1));
          const vB = tf.add(tf.mul(at(v), b2), tf.mul(tf.square(g), 1 - b2));
          const mhat = tf.mul(mB, tf.tensor1d(c1));
          const vhat = tf.mul(vB, tf.tensor1d(c2));
          const lamB = tf.add(at(lam), tf.mul(tf.div(mhat, tf.add(tf.sqrt(vhat), eps)), lr)); // ascent
          if (!idxT) return [lamB, mB, vB];
          const where = tf.reshape(idxT, [-1, 1]);
          return [tf.tensorScatterUpdate(lam, where, lamB), tf.tensorScatterUpdate(m, where, mB), tf.tensorScatterUpdate(v, where, vB)];
        });
        tf.dispose([g, lam, m, v]);
        lam = tf.keep(lam2!);
        m = tf.keep(m2!);
        v = tf.keep(v2!);
      };

      return {
        batchWeights(r: tf.Tensor, idx: tf.Tensor | null): tf.Tensor {
          applyPending();
          dropCurrent();
          const nb = r.shape[r.shape.length - 1]!;
          const lamB = idx ? tf.gather(lam, idx) : lam; // [n_b]
          current = {
            r: tf.keep(tf.reshape(tf.slice(tf.reshape(r, [-1, nb]), [0, 0], [1, -1]), [1, nb])),
            lamB: tf.keep(tf.reshape(lamB, [1, nb])),
            idx,
          };
          return stopGradient(r, (ri) => tf.broadcastTo(tf.reshape(lamB, [1, nb]), ri.shape));
        },
        commit(): void {
          if (!current) return;
          const k = stepCount++;
          if (freezeStep === null || k < freezeStep) {
            const { r, lamB, idx } = current;
            const rc = tf.tidy(() => tf.clone(r)); // r may belong to a finished tape: differentiate a fresh copy
            const g = tf.tidy(() => tf.reshape(tf.grad((l: tf.Tensor) => tf.sum(residualLoss(rc, l)))(lamB), [-1]));
            rc.dispose();
            if (pending) pending.g.dispose();
            pending = { g: tf.keep(g), idx: idx ? Int32Array.from(idx.dataSync()) : null };
          }
          dropCurrent();
        },
        lambda: () => lam,
        adamState: () => ({ m, v, t: counts.slice() }),
        steps: () => stepCount,
        dispose(): void {
          dropCurrent();
          if (pending) pending.g.dispose();
          pending = null;
          tf.dispose([lam, m, v]);
        },
      };
    },
  };
}

/**
 * The Strategy for a trial's `strategy` config section; `seed` (the trial seed) seeds the `sa` λ init.
 * @throws Error for an unknown strategy name.
 */
export function makeStrategy(cfg: StrategyConfig, seed = 0): Strategy {
  switch (cfg.name) {
    case 'vanilla':
      return vanilla;
    case 'rba':
      return rba(cfg.eta, cfg.gamma, { normalization: cfg.normalization, init: cfg.init });
    case 'sa':
      return sa({ lr: cfg.lr, freezeStep: cfg.freeze_step, seed });
    default:
      throw new Error(`unknown strategy '${(cfg as { name: string }).name}'`);
  }
}
