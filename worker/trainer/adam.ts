/**
 * Adam (science.md §2): β1 = 0.9, β2 = 0.999, ε = 1e-8, bias-corrected:
 *   t ← t + 1;  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
 *   m̂ = m / (1 − β1^t);  v̂ = v / (1 − β2^t);  θ ← θ − lr · m̂ / (sqrt(v̂) + ε).
 * Written with tf ops on tf.Variables; the moments m, v and the step t are public (diagnostics such
 * as snr_adam, and checkpoints `adam.m.*`, `adam.v.*`, `adam.step`, science.md §5, §7).
 * Every op is elementwise, so parameters with a leading trial axis work unchanged.
 */
import * as tf from '@tensorflow/tfjs-core';

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
   * One Adam update with learning rate `lr` (dimensionless step size) from gradients `grads`
   * (same order and shapes as `params`). Does not dispose `grads`.
   */
  step(grads: tf.Tensor[], lr: number): void {
    if (grads.length !== this.params.length) throw new Error(`Adam.step: ${grads.length} grads for ${this.params.length} params`);
    this.t += 1;
    const { beta1: b1, beta2: b2, epsilon: eps, t } = this;
    const c1 = 1 / (1 - Math.pow(b1, t));
    const c2 = 1 / (1 - Math.pow(b2, t));
    tf.tidy(() => {
      for (let i = 0; i < grads.length; i++) {
        const g = grads[i]!;
        const m = tf.add(tf.mul(this.m[i]!, b1), tf.mul(g, 1 - b1));
        const v = tf.add(tf.mul(this.v[i]!, b2), tf.mul(tf.square(g), 1 - b2));
        this.m[i]!.assign(m);
        this.v[i]!.assign(v);
        const mhat = tf.mul(m, c1);
        const vhat = tf.mul(v, c2);
        this.params[i]!.assign(tf.sub(this.params[i]!, tf.mul(tf.div(mhat, tf.add(tf.sqrt(vhat), eps)), lr)));
      }
    });
  }

  dispose(): void {
    for (const x of [...this.m, ...this.v]) x.dispose();
  }
}
