/**
 * Adam (science.md §2): β1 = 0.9, β2 = 0.999, ε = 1e-8, bias-corrected:
 *   t ← t + 1;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
 *   m̂ = m / (1 − β1^t);  v̂ = v / (1 − β2^t);  θ ← θ − lr · m̂ / (sqrt(v̂) + ε).
 * Written with tf ops on tf.Variables; the moments m, v and the step t are public (diagnostics such
 * as snr_adam, and checkpoints `adam.m.*`, `adam.v.*`, `adam.step`, science.md §5, §7).
 * Every op is elementwise, so parameters with a leading trial axis work unchanged.
 */
import * as tf from '@tensorflow/tfjs-core';
import { heapKernel, heapKernelsAvailable } from './backend.js';

/** Staircase exponential decay (science.md §2): lr_k = lr_0 · rate^floor(k / every). */
export function staircaseLr(lr0: number, rate: number, every: number, k: number): number {
  return lr0 * Math.pow(rate, Math.floor(k / every));
}

/** Adam hyper-parameters (defaults from science.md §2). */
export interface AdamOptions {
  beta1?: number;
  beta2?: number;
  epsilon?: number;
}

/** Adam state for a list of parameters (in a fixed order). */
export class Adam {
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  /** First moments, one per parameter, same shape. */
  readonly m: tf.Variable[];
  /** Second moments, one per parameter, same shape. */
  readonly v: tf.Variable[];
  /** Number of updates applied so far (Adam's t; 0 before the first step). */
  t = 0;

  constructor(
    readonly params: tf.Variable[],
    opts: AdamOptions = {},
  ) {
    this.beta1 = opts.beta1 ?? 0.9;
    this.beta2 = opts.beta2 ?? 0.999;
    this.epsilon = opts.epsilon ?? 1e-8;
    this.m = params.map((p) => tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
    this.v = params.map((p) => tf.tidy(() => tf.variable(tf.zerosLike(p), false)));
  }

  /**
   * One Adam update with learning rate `lr` (dimensionless step size) from gradients `grads` (same
   * order and shapes as `params`). `lr`: a number; or a tensor broadcastable to every parameter; or
   * one such tensor per parameter (e.g. [K, 1, 1] for weights and [K, 1] for biases with a leading
   * trial axis K: a learning rate per trial). Elementwise. Does not dispose `grads` or `lr`.
   */
  step(grads: tf.Tensor[], lr: number | tf.Tensor | tf.Tensor[]): void {
    if (grads.length !== this.params.length) throw new Error(`Adam.step: ${grads.length} grads for ${this.params.length} params`);
    if (Array.isArray(lr) && lr.length !== grads.length) throw new Error(`Adam.step: ${lr.length} learning rates for ${grads.length} params`);
    this.t += 1;
    const { beta1: b1, beta2: b2, epsilon: eps, t } = this;
    const c1 = 1 / (1 - Math.pow(b1, t));
    const c2 = 1 / (1 - Math.pow(b2, t));
    const lrOf = (i: number): number | tf.Tensor => (Array.isArray(lr) ? lr[i]! : lr);
    const heap = heapKernelsAvailable();
    tf.tidy(() => {
      for (let i = 0; i < grads.length; i++) {
        const g = grads[i]!;
        const lri = lrOf(i);
        if (heap && this.heapStep(i, g, lri, c1, c2)) continue;
        const m = tf.add(tf.mul(this.m[i]!, b1), tf.mul(g, 1 - b1));
        const v = tf.add(tf.mul(this.v[i]!, b2), tf.mul(tf.square(g), 1 - b2));
        this.m[i]!.assign(m);
        this.v[i]!.assign(v);
        const mhat = tf.mul(m, c1);
        const vhat = tf.mul(v, c2);
        this.params[i]!.assign(tf.sub(this.params[i]!, tf.mul(tf.div(mhat, tf.add(tf.sqrt(vhat), eps)), lri)));
      }
    });
  }

  /**
   * The update of parameter i as one JS loop on the wasm heap instead of ~14 kernels (Adam was ~100
   * small kernels a step). Every operation is rounded to float32 as the tf-op chain rounds it
   * (Math.fround: products, sums, the quotient and the square root of float32 values are exact or
   * correctly rounded in double, then rounded once), so the values are bit-identical to that path.
   * Handles lr as a number, a one-value tensor, or a tensor [P0, 1, …, 1] of the parameter's rank (one
   * learning rate per index of the parameter's leading axis); returns false (nothing done) otherwise.
   */
  private heapStep(i: number, grad: tf.Tensor, lr: number | tf.Tensor, c1: number, c2: number): boolean {
    const p = this.params[i]!;
    if (p.dtype !== 'float32' || grad.dtype !== 'float32') return false;
    let lead = 1; // values of lr: 1 (scalar) or p.shape[0]
    if (typeof lr !== 'number') {
      if (lr.dtype !== 'float32') return false;
      if (lr.size !== 1) {
        if (lr.rank !== p.rank || lr.shape[0] !== p.shape[0] || lr.size !== p.shape[0]) return false;
        lead = lr.size;
      }
    }
    const f = Math.fround;
    const b1 = f(this.beta1);
    const b2 = f(this.beta2);
    const a1 = f(1 - this.beta1);
    const a2 = f(1 - this.beta2);
    const eps = f(this.epsilon);
    const c1f = f(c1);
    const c2f = f(c2);
    const shape = p.shape.slice();
    const ins = [p, this.m[i]!, this.v[i]!, grad];
    if (typeof lr !== 'number') ins.push(lr);
    const [np, nm, nv] = heapKernel(ins, [shape, shape, shape], ([P, M, V, G, LR], [Po, Mo, Vo]) => {
      const per = P!.length / lead;
      for (let r = 0; r < lead; r++) {
        const lrf = LR ? LR[r]! : f(lr as number);
        for (let k = r * per; k < (r + 1) * per; k++) {
          const g = G![k]!;
          const m = f(f(M![k]! * b1) + f(g * a1));
          const v = f(f(V![k]! * b2) + f(f(g * g) * a2));
          Mo![k] = m;
          Vo![k] = v;
          const den = f(f(Math.sqrt(f(v * c2f))) + eps);
          Po![k] = P![k]! - f(f(f(m * c1f) / den) * lrf);
        }
      }
    });
    this.m[i]!.assign(nm!);
    this.v[i]!.assign(nv!);
    p.assign(np!);
    return true;
  }

  dispose(): void {
    for (const x of [...this.m, ...this.v]) x.dispose();
  }
}
