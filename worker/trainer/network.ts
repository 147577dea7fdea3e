/**
 * tanh MLP with input derivatives propagated forward (science.md §2).
 *
 * Parameters: weights W_l stored [in, out] and used as x @ W + b; biases b_l [out]. A leading group
 * axis G is carried through every function: inputs are [G, n, d] and outputs [G, n]. Weights may be
 * shared ([in, out]) or per group ([G, in, out], e.g. the per-batch copies of the SNR diagnostic or,
 * later, batched trials); biases [out] or [G, out].
 *
 * Streams: the value a, the first derivatives a_{x_i} (i ∈ derivs.first) and the diagonal second
 * derivatives a_{x_i x_i} (i ∈ derivs.second) are stacked on axis 1 as [G, S, n, width], so every
 * layer does ONE matmul for all S streams; the bias is added to the value stream only.
 * For z = a W + b, a' = tanh z:  a'_x = s1 ⊙ z_x,  a'_xx = s1 ⊙ z_xx + s2 ⊙ z_x²,
 * s1 = 1 − a'², s2 = −2 a' s1.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DerivSpec, Fields } from './problems.js';
import type { Rng } from './rng.js';
import './gradients.js';

/** Parameters of an MLP: weights[l] [in, out] or [G, in, out]; biases[l] [out] or [G, out]. */
export interface MlpParams {
  weights: tf.Tensor[];
  biases: tf.Tensor[];
}

/** Layer shapes [in, out] of an MLP with `depth` hidden layers of `width` and a linear output. */
export function mlpShapes(inDim: number, width: number, depth: number, outDim = 1): Array<[number, number]> {
  const shapes: Array<[number, number]> = [];
  let prev = inDim;
  for (let l = 0; l < depth; l++) {
    shapes.push([prev, width]);
    prev = width;
  }
  shapes.push([prev, outDim]);
  return shapes;
}

/**
 * Xavier-normal initial values (science.md §2): W ~ N(0, 2/(fan_in + fan_out)) (not truncated),
 * b = 0, drawn in JS from `rng` layer by layer, row-major [in, out].
 */
export function xavierInit(shapes: ReadonlyArray<readonly [number, number]>, rng: Rng): { weights: Float32Array[]; biases: Float32Array[] } {
  const weights: Float32Array[] = [];
  const biases: Float32Array[] = [];
  for (const [fin, fout] of shapes) {
    const std = Math.sqrt(2 / (fin + fout));
    const w = new Float32Array(fin * fout);
    for (let i = 0; i < w.length; i++) w[i] = rng.normal() * std;
    weights.push(w);
    biases.push(new Float32Array(fout));
  }
  return { weights, biases };
}

/** x [G, n, k] @ W ([k, m] shared or [G, k, m] per group) → [G, n, m]. */
function groupMatMul(x: tf.Tensor, w: tf.Tensor): tf.Tensor {
  const [g, n, k] = x.shape as [number, number, number];
  if (w.rank === 2) return tf.reshape(tf.matMul(tf.reshape(x, [g * n, k]) as tf.Tensor2D, w as tf.Tensor2D), [g, n, w.shape[1]!]);
  return tf.matMul(x as tf.Tensor3D, w as tf.Tensor3D);
}

/** Bias [out] or [G, out] reshaped to broadcast against [G, S, n, out]. */
function biasFor4d(b: tf.Tensor): tf.Tensor {
  return b.rank === 1 ? b : tf.reshape(b, [b.shape[0]!, 1, 1, b.shape[1]!]);
}

/** Select rows `idx` of W ([k, m] or [G, k, m]) via slices (differentiable on every backend). */
function rowsOf(w: tf.Tensor, idx: number[]): tf.Tensor {
  const parts = idx.map((i) => (w.rank === 2 ? tf.slice(w, [i, 0], [1, -1]) : tf.slice(w, [0, i, 0], [-1, 1, -1])));
  return parts.length === 1 ? parts[0]! : tf.concat(parts, w.rank - 2);
}

/** Select streams `idx` (axis 1) of a [G, S, n, w] tensor via slices (contiguous runs merged). */
function streamsOf(t: tf.Tensor, idx: number[]): tf.Tensor {
  const runs: Array<[number, number]> = [];
  for (const i of idx) {
    const last = runs[runs.length - 1];
    if (last && last[0] + last[1] === i) last[1]++;
    else runs.push([i, 1]);
  }
  const parts = runs.map(([s, c]) => tf.slice(t, [0, s, 0, 0], [-1, c, -1, -1]));
  return parts.length === 1 ? parts[0]! : tf.concat(parts, 1);
}

/**
 * Forward pass with input derivatives (science.md §2).
 *
 * @param params weights [in, out] | [G, in, out], biases [out] | [G, out]; input layer first.
 * @param x inputs [G, n, d] (float32).
 * @param derivs which first and diagonal second derivatives to propagate (indices into the d inputs;
 *   every index of `second` must be in `first`).
 * @param names input names (for the `Fields` keys), e.g. ['x', 'y'].
 * @returns Fields: `u` [G, n], `u_<name>` and `u_<name><name>` [G, n].
 */
export function mlpForward(params: MlpParams, x: tf.Tensor, derivs: DerivSpec, names: readonly string[]): Fields {
  const { weights, biases } = params;
  const L = weights.length;
  const nd = derivs.first.length;
  const ns = derivs.second.length;
  const secPos = derivs.second.map((i) => {
    const p = derivs.first.indexOf(i);
    if (p < 0) throw new Error(`second derivative of input ${i} needs its first derivative`);
    return p;
  });
  const [G, n] = x.shape as [number, number, number];

  // Layer 0: z = x W0 + b0; z_{x_i} = W0[i, :] (constant), z_{x_i x_i} = 0.
  let z0 = groupMatMul(x, weights[0]!);
  z0 = tf.add(z0, biases[0]!.rank === 1 ? biases[0]! : tf.expandDims(biases[0]!, 1));
  const out0 = weights[0]!.shape[weights[0]!.rank - 1]!;
  let A: tf.Tensor; // [G, S, n, w]
  if (L === 1) {
    // Linear model: u = x W + b; u_{x_i} = W[i], second derivatives 0.
    const fields: Fields = { u: tf.reshape(z0, [G, n]) };
    for (const i of derivs.first) fields[`u_${names[i]}`] = tf.mul(tf.onesLike(fields.u!), tf.reshape(rowsOf(weights[0]!, [i]), [-1, 1]));
    for (const i of derivs.second) fields[`u_${names[i]}${names[i]}`] = tf.zerosLike(fields.u!);
    return fields;
  }
  {
    const a = tf.tanh(z0); // [G, n, w]
    const a4 = tf.expandDims(a, 1); // [G, 1, n, w]
    if (nd === 0) A = a4;
    else {
      const s1 = tf.sub(1, tf.square(a4));
      const wRows = (idx: number[]) => {
        const r = rowsOf(weights[0]!, idx); // [k, w] or [G, k, w]
        return r.rank === 2 ? tf.reshape(r, [1, idx.length, 1, out0]) : tf.reshape(r, [G, idx.length, 1, out0]);
      };
      const Wd = wRows(derivs.first);
      const parts = [a4, tf.mul(s1, Wd)];
      if (ns > 0) {
        const s2 = tf.mul(tf.mul(a4, -2), s1);
        parts.push(tf.mul(s2, tf.square(wRows(derivs.second))));
      }
      A = tf.concat(parts, 1);
    }
  }
  const S = 1 + nd + ns;
  for (let l = 1; l < L; l++) {
    const W = weights[l]!;
    const win = W.shape[W.rank - 2]!;
    const wout = W.shape[W.rank - 1]!;
    const Z = tf.reshape(groupMatMul(tf.reshape(A, [G, S * n, win]), W), [G, S, n, wout]);
    const b = biasFor4d(biases[l]!);
    const Zv = tf.add(S === 1 ? Z : tf.slice(Z, [0, 0, 0, 0], [-1, 1, -1, -1]), b);
    const Zd = nd > 0 ? tf.slice(Z, [0, 1, 0, 0], [-1, nd, -1, -1]) : null;
    const Zs = ns > 0 ? tf.slice(Z, [0, 1 + nd, 0, 0], [-1, ns, -1, -1]) : null;
    if (l === L - 1) {
      // Linear output (wout = 1 for a scalar u).
      const fields: Fields = { u: tf.reshape(Zv, [G, n]) };
      derivs.first.forEach((i, p) => {
        fields[`u_${names[i]}`] = tf.reshape(tf.slice(Zd!, [0, p, 0, 0], [-1, 1, -1, 1]), [G, n]);
      });
      derivs.second.forEach((i, p) => {
        fields[`u_${names[i]}${names[i]}`] = tf.reshape(tf.slice(Zs!, [0, p, 0, 0], [-1, 1, -1, 1]), [G, n]);
      });
      return fields;
    }
    const a = tf.tanh(Zv);
    if (nd === 0) {
      A = a;
      continue;
    }
    const s1 = tf.sub(1, tf.square(a));
    const parts = [a, tf.mul(s1, Zd!)];
    if (ns > 0) {
      const s2 = tf.mul(tf.mul(a, -2), s1);
      const identity = secPos.length === nd && secPos.every((p, i) => p === i);
      const ZdSel = identity ? Zd! : streamsOf(Zd!, secPos);
      parts.push(tf.add(tf.mul(s1, Zs!), tf.mul(s2, tf.square(ZdSel))));
    }
    A = tf.concat(parts, 1);
  }
  throw new Error('unreachable');
}

/**
 * Value-only forward pass u(x) (no derivative streams).
 * @param x [G, n, d]; @returns u [G, n].
 */
export function mlpValue(params: MlpParams, x: tf.Tensor): tf.Tensor {
  const { weights, biases } = params;
  const L = weights.length;
  let a = x;
  for (let l = 0; l < L; l++) {
    const b = biases[l]!;
    const z = tf.add(groupMatMul(a, weights[l]!), b.rank === 1 ? b : tf.expandDims(b, 1));
    a = l < L - 1 ? tf.tanh(z) : z;
  }
  const [G, n] = a.shape as [number, number, number];
  return tf.reshape(a, [G, n]);
}

/** The trainable parameters of one MLP as tf.Variables (weights [in, out], biases [out]). */
export class Mlp {
  readonly weights: tf.Variable[];
  readonly biases: tf.Variable[];
  readonly shapes: Array<[number, number]>;
  constructor(shapes: Array<[number, number]>, init: { weights: Float32Array[]; biases: Float32Array[] }) {
    this.shapes = shapes;
    this.weights = shapes.map((s, l) => tf.tidy(() => tf.variable(tf.tensor2d(init.weights[l]!, s), true)));
    this.biases = shapes.map((_s, l) => tf.tidy(() => tf.variable(tf.tensor1d(init.biases[l]!), true)));
  }
  /** Xavier-normal initialised MLP (science.md §2). */
  static xavier(inDim: number, width: number, depth: number, rng: Rng, outDim = 1): Mlp {
    const shapes = mlpShapes(inDim, width, depth, outDim);
    return new Mlp(shapes, xavierInit(shapes, rng));
  }
  /** All variables in the order weights then biases. */
  variables(): tf.Variable[] {
    return [...this.weights, ...this.biases];
  }
  params(): MlpParams {
    return { weights: this.weights, biases: this.biases };
  }
  dispose(): void {
    for (const v of this.variables()) v.dispose();
  }
}
