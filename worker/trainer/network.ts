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
import { heapKernel, heapKernelsAvailable, nativeMatMulActive, nativeStreams, tanhD, type NativeStreams } from './backend.js';
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
  return perGroupMatMul(x, w);
}

/**
 * Per-group product a [G, m, k] @ b [G, k, p] → [G, m, p], with `transposeA` (a [G, k, m]) /
 * `transposeB` (b [G, p, k]). The wasm backend runs a batched (G > 1) or transposed-left matmul as a
 * naive scalar loop, several times slower than its XNNPACK path, which only takes unbatched products:
 * there (G > 1) it is one 2-D matmul per group, after one transpose of the whole operand when asked.
 * Measured: [4, 2560, 20] @ [4, 20, 20] 1.8 vs 6.1 ms; the SNR's per-batch Aᵀ dZ at
 * [100, 50, 50] 4.0 vs 14.6 ms, [10, 500, 32] 1.3 vs 5.0 ms. With the native BLAS (backend.ts) it is
 * one batched call, each group the same product as a single 2-D call.
 */
function perGroupMatMul(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  const g = a.shape[0]!;
  if (g > 1 && tf.getBackend() === 'wasm' && !nativeMatMulActive()) {
    const at = transposeA ? tf.transpose(a, [0, 2, 1]) : a;
    const bt = transposeB ? tf.transpose(b, [0, 2, 1]) : b;
    const [, m, k] = at.shape as [number, number, number];
    const p = bt.shape[2]!;
    const parts: tf.Tensor[] = [];
    for (let i = 0; i < g; i++) {
      const ai = tf.reshape(tf.slice(at, [i, 0, 0], [1, -1, -1]), [m, k]) as tf.Tensor2D;
      const bi = tf.reshape(tf.slice(bt, [i, 0, 0], [1, -1, -1]), [k, p]) as tf.Tensor2D;
      parts.push(tf.matMul(ai, bi));
    }
    return tf.reshape(tf.concat(parts, 0), [g, m, p]);
  }
  return tf.matMul(a as tf.Tensor3D, b as tf.Tensor3D, transposeA, transposeB);
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
  if (params.weights.length < 2) return mlpForwardTape(params, x, derivs, names);
  const sp = streamSpec(derivs);
  const [G, n] = x.shape as [number, number, number];
  if (sp.S === 1) return { u: streamsOp(params, x, sp, [G, n]) };
  return fieldsOf3(streamsOp(params, x, sp, [G, sp.S, n]), derivs, names);
}

/**
 * The Fields of output streams [G, S, n] (S > 1): u = stream 0, u_<x_i> = stream 1 + p (p = position
 * of i in derivs.first), u_<x_i x_i> = stream 1 + nd + q. One Unpack kernel, which saves nothing for
 * its gradient (a slice and a reshape per stream would each save a copy of their input on the tape).
 */
function fieldsOf3(o3: tf.Tensor, derivs: DerivSpec, names: readonly string[]): Fields {
  const streams = tf.unstack(o3, 1);
  const fields: Fields = { u: streams[0]! };
  const nd = derivs.first.length;
  derivs.first.forEach((i, p) => (fields[`u_${names[i]}`] = streams[1 + p]!));
  derivs.second.forEach((i, q) => (fields[`u_${names[i]}${names[i]}`] = streams[1 + nd + q]!));
  return fields;
}

/** The Fields of output streams [G, S, n, 1] (see `fieldsOf3`). */
function fieldsOfStreams(out: tf.Tensor, derivs: DerivSpec, names: readonly string[]): Fields {
  const [G, S, n] = out.shape as [number, number, number, number];
  if (S === 1) return { u: tf.reshape(out, [G, n]) };
  return fieldsOf3(tf.reshape(out, [G, S, n]), derivs, names);
}

/**
 * Per-group weight gradients in one pass (the SNR diagnostic, science.md §5): with the network's
 * weights shared by the G groups of x [G, n, d], the gradient of Σ_g loss_g with respect to group g's
 * own copy of every weight matrix — i.e. g_g = ∂ loss_g / ∂W — as [G, in, out] per matrix, input
 * layer first. `loss` maps the fields (each [G, n]) to a scalar (the sum of the per-group losses); only
 * its dependence on the fields is differentiated (by autodiff, elementwise and cheap); the MLP part
 * is the hand-derived `streamsBackward`, so the matmuls run on the stacked [G·S·n, width] rows with
 * the shared weights and only the weight gradients are per group.
 */
export function mlpPerGroupWeightGrads(params: MlpParams, x: tf.Tensor, derivs: DerivSpec, names: readonly string[], loss: (f: Fields) => tf.Scalar): tf.Tensor[] {
  return tf.tidy(() => {
    if (params.weights.length < 2) {
      const G = x.shape[0]!;
      const copies = params.weights.map((w) => (w.rank === 3 ? w : tf.tile(tf.expandDims(w, 0), [G, 1, 1])));
      return tf.grads((...ws: tf.Tensor[]) => loss(mlpForwardTape({ weights: ws, biases: params.biases }, x, derivs, names)))(copies);
    }
    const sp = streamSpec(derivs);
    const chunks = chunkRanges(x, params.weights, sp);
    if (chunks.length === 1) {
      const { out, cache } = fwdImpl(params.weights, params.biases, x, sp);
      const dOut = tf.grad((o: tf.Tensor) => loss(fieldsOfStreams(o, derivs, names)))(out);
      return bwdImpl(params.weights, params.biases, cache, dOut, sp, true).dW;
    }
    const out = chunkedOut(params.weights, params.biases, x, sp, chunks);
    const dOut = tf.grad((o: tf.Tensor) => loss(fieldsOfStreams(o, derivs, names)))(out);
    out.dispose();
    return chunkedBackward(params.weights, params.biases, x, dOut, sp, true, chunks).dW;
  });
}

/** Autodiff (tape) version of `mlpForward`, used for the linear model (no hidden layer). */
export function mlpForwardTape(params: MlpParams, x: tf.Tensor, derivs: DerivSpec, names: readonly string[]): Fields {
  const { weights, biases } = params;
  const L = weights.length;
  const { nd, ns, secPos } = streamSpec(derivs);
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
  if (params.weights.length >= 2 && params.weights[params.weights.length - 1]!.shape.at(-1) === 1) {
    const [G, n] = x.shape as [number, number, number];
    return streamsOp(params, x, streamSpec({ first: [], second: [] }), [G, n]);
  }
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

// ---------------------------------------------------------------------------------------------
// Fused stream MLP with a hand-derived backward pass.
//
// Where a training step's time goes (poisson2d 3×50, N = 1000 full batch, wasm, one core): the MLP
// is ONE tape node (tf.customGrad) whose gradient is derived by hand below: the streams are stacked so
// each layer does one matmul forward, one for ∂/∂A and one for ∂/∂W. On wasm the elementwise stream
// recursions of a layer (tanh, s1, s2, derivative streams, bias; and their backward with the bias
// gradient) run as one generated JS loop over the wasm heap per layer and direction (`heapForward`,
// `heapBackward`; tf-op version `streamsForward` / `streamsBackward` on other backends), which
// replaced ~150 elementwise kernels and the scalar-libm Tanh kernel. What is left, about half and
// half: the XNNPACK matmuls (the two [50, S·n] × [S·n, 50] weight-gradient products cost ~2× a
// forward product because XNNPACK re-packs their [S·n, 50] right operand on every call — inherent to
// its fully-connected operator, whichever side is transposed), and the JS loops (~8 ns per tanh).
// Large n is processed in chunks of points (see `chunkRanges`).
// ---------------------------------------------------------------------------------------------

/** Derivative-stream layout of a forward pass (see `mlpForward`). */
interface StreamSpec {
  first: number[];
  second: number[];
  nd: number;
  ns: number;
  /** Position in `first` of each `second` input. */
  secPos: number[];
  /** secPos is 0..nd−1 (every first derivative also has its second). */
  identity: boolean;
  S: number;
}

function streamSpec(derivs: DerivSpec): StreamSpec {
  const nd = derivs.first.length;
  const ns = derivs.second.length;
  const secPos = derivs.second.map((i) => {
    const p = derivs.first.indexOf(i);
    if (p < 0) throw new Error(`second derivative of input ${i} needs its first derivative`);
    return p;
  });
  return { first: [...derivs.first], second: [...derivs.second], nd, ns, secPos, identity: ns === nd && secPos.every((p, i) => p === i), S: 1 + nd + ns };
}

/**
 * tanh (tf-op path). Not rewritten as 2σ(2z) − 1 through the wasm backend's vectorised sigmoid: that
 * loses relative precision for small |z|. On wasm, backend.ts replaces the Tanh kernel by an accurate
 * JS tanh (`tanhD`), which the heap-kernel path also uses.
 */
function tanhAct(z: tf.Tensor): tf.Tensor {
  return tf.tanh(z);
}

/** Streams [lo, lo + count) of a [G, S, n, w] tensor (the tensor itself when that is all of it). */
function streamRange(t: tf.Tensor, lo: number, count: number): tf.Tensor {
  if (lo === 0 && count === t.shape[1]) return t;
  return tf.slice(t, [0, lo, 0, 0], [-1, count, -1, -1]);
}

/** Rows `idx` of W0 ([k, w] or [G, k, w]) as [1 | G, |idx|, 1, w]. */
function rows4(w: tf.Tensor, idx: number[]): tf.Tensor {
  const r = rowsOf(w, idx);
  const wout = w.shape[w.rank - 1]!;
  return tf.reshape(r, [w.rank === 2 ? 1 : w.shape[0]!, idx.length, 1, wout]);
}

/** What the backward pass needs of one layer (tensors only, in a fixed order). */
interface LayerCache {
  /** Input of the layer ([G, n, d] for layer 0, else [G, S, n, in]). */
  ain: tf.Tensor;
  /** Hidden layers: tanh output a [G, 1, n, w], s1 = 1 − a², s2 = −2 a s1 (s2 only with second derivatives). */
  a?: tf.Tensor;
  s1?: tf.Tensor;
  s2?: tf.Tensor;
  /** Hidden layers l ≥ 1 with derivative streams: the derivative streams of z, [G, S − 1, n, w]. */
  zr?: tf.Tensor;
  /** Heap-kernel path, hidden layers l ≥ 1 with derivative streams: z = ain W (all streams, no bias), the values of [G, S, n, w]. */
  z?: tf.Tensor;
}

const CACHE_KEYS = ['ain', 'a', 's1', 's2', 'zr', 'z'] as const;

/** Bias [out] or [G, out] as [1 | G, 1, 1, out]. */
function bias4(b: tf.Tensor): tf.Tensor {
  return tf.reshape(b, [b.rank === 1 ? 1 : b.shape[0]!, 1, 1, b.shape[b.rank - 1]!]);
}

/**
 * Forward pass over all streams. Returns the output streams [G, S, n, out] (value stream with bias)
 * and the per-layer caches for `streamsBackward`. L ≥ 2 (at least one hidden layer).
 */
function streamsForward(weights: tf.Tensor[], biases: tf.Tensor[], x: tf.Tensor, sp: StreamSpec): { out: tf.Tensor; cache: LayerCache[] } {
  const L = weights.length;
  const { nd, ns, S } = sp;
  const [G, n] = x.shape as [number, number, number];
  const cache: LayerCache[] = [];
  // Layer 0: z = x W0 + b0; z_{x_i} = W0[i, :], z_{x_i x_i} = 0.
  const W0 = weights[0]!;
  const w0 = W0.shape[W0.rank - 1]!;
  const z0 = tf.add(tf.reshape(groupMatMul(x, W0), [G, 1, n, w0]), bias4(biases[0]!));
  const a0 = tanhAct(z0);
  const s10 = tf.sub(1, tf.square(a0));
  const c0: LayerCache = { ain: x, a: a0, s1: s10 };
  let A: tf.Tensor = a0;
  if (S > 1) {
    const parts = [a0, tf.mul(s10, rows4(W0, sp.first))];
    if (ns > 0) {
      const s20 = tf.mul(tf.mul(a0, -2), s10);
      c0.s2 = s20;
      parts.push(tf.mul(s20, tf.square(rows4(W0, sp.second))));
    }
    A = tf.concat(parts, 1);
  }
  cache.push(c0);
  for (let l = 1; l < L; l++) {
    const W = weights[l]!;
    const win = W.shape[W.rank - 2]!;
    const wout = W.shape[W.rank - 1]!;
    const Z = tf.reshape(groupMatMul(tf.reshape(A, [G, S * n, win]), W), [G, S, n, wout]);
    const b4 = bias4(biases[l]!);
    if (l === L - 1) {
      cache.push({ ain: A });
      // Bias on the value stream only: add [b, 0, …, 0] over the streams (one kernel on the small output).
      const bS = S === 1 ? b4 : tf.concat([b4, tf.zeros([b4.shape[0]!, S - 1, 1, wout])], 1);
      return { out: tf.add(Z, bS), cache };
    }
    const zv = tf.add(streamRange(Z, 0, 1), b4);
    const a = tanhAct(zv);
    const s1 = tf.sub(1, tf.square(a));
    const c: LayerCache = { ain: A, a, s1 };
    if (S === 1) {
      A = a;
    } else {
      const zr = streamRange(Z, 1, S - 1);
      c.zr = zr;
      const zd = streamRange(zr, 0, nd);
      const parts = [a, tf.mul(s1, zd)];
      if (ns > 0) {
        const s2 = tf.mul(tf.mul(a, -2), s1);
        c.s2 = s2;
        const zdSel = sp.identity ? zd : streamsOf(zd, sp.secPos);
        parts.push(tf.add(tf.mul(s1, streamRange(zr, nd, ns)), tf.mul(s2, tf.square(zdSel))));
      }
      A = tf.concat(parts, 1);
    }
    cache.push(c);
  }
  throw new Error('unreachable');
}

/** ∂/∂W of z = ain W from dZ: shared W ([in, out], summed over groups) or per group ([G, in, out]). */
function weightGrad(ain: tf.Tensor, dZ: tf.Tensor, perGroup: boolean): tf.Tensor {
  const G = ain.shape[0]!;
  const win = ain.shape[ain.rank - 1]!;
  const wout = dZ.shape[dZ.rank - 1]!;
  const R = ain.size / win;
  if (perGroup) {
    return perGroupMatMul(tf.reshape(ain, [G, R / G, win]), tf.reshape(dZ, [G, R / G, wout]), true);
  }
  const a2 = tf.reshape(ain, [R, win]) as tf.Tensor2D;
  // out = 1: dZᵀ is a reshape, no transpose needed.
  if (wout === 1) return tf.reshape(tf.matMul(tf.reshape(dZ, [1, R]) as tf.Tensor2D, a2), [win, 1]);
  return matMulTA(a2, tf.reshape(dZ, [R, wout]) as tf.Tensor2D);
}

/**
 * a [R, p]ᵀ @ b [R, q] → [p, q]. The native BLAS takes the transpose as a flag; XNNPACK-in-wasm has no
 * transposed-left path (tfjs-wasm runs it as a scalar loop), so there a is transposed first.
 */
function matMulTA(a: tf.Tensor2D, b: tf.Tensor2D): tf.Tensor2D {
  return nativeMatMulActive() ? tf.matMul(a, b, true, false) : tf.matMul(tf.transpose(a), b);
}

/**
 * Column sums of t [R, w] as [1, w] via ones[1, R] @ t: the wasm backend reduces over a leading axis
 * by transposing first; the matmul is one fast kernel.
 */
function colSum(t2: tf.Tensor): tf.Tensor {
  return tf.matMul(tf.ones([1, t2.shape[0]!]) as tf.Tensor2D, t2 as tf.Tensor2D);
}

/** ∂/∂b from the value stream's dZ [G, 1, n, out]: [out] (shared) or [G, out] (per group). */
function biasGrad(dzv: tf.Tensor, perGroup: boolean): tf.Tensor {
  const wout = dzv.shape[dzv.rank - 1]!;
  return perGroup ? tf.sum(dzv, [1, 2]) : tf.reshape(colSum(tf.reshape(dzv, [-1, wout])), [wout]);
}

/** ∂/∂A of z = A W from dZ [G, S, n, out] → [G, S, n, in]. */
function inputGrad(dZ: tf.Tensor, W: tf.Tensor): tf.Tensor {
  const [G, S, n, wout] = dZ.shape as [number, number, number, number];
  const win = W.shape[W.rank - 2]!;
  if (wout === 1) return tf.mul(dZ, tf.reshape(W, W.rank === 2 ? [1, 1, 1, win] : [G, 1, 1, win])); // outer product
  if (W.rank === 2) {
    const dZ2 = tf.reshape(dZ, [G * S * n, wout]) as tf.Tensor2D;
    const dA = nativeMatMulActive() ? tf.matMul(dZ2, W as tf.Tensor2D, false, true) : tf.matMul(dZ2, tf.transpose(W) as tf.Tensor2D);
    return tf.reshape(dA, [G, S, n, win]);
  }
  return tf.reshape(perGroupMatMul(tf.reshape(dZ, [G, S * n, wout]), W, false, true), [G, S, n, win]);
}

/**
 * Sum over the streams axis, kept: [G, k, n, w] → [G, 1, n, w]. For few streams as adds of the
 * (contiguous when G = 1) stream slices: the wasm backend reduces a non-last axis by transposing first.
 */
function streamSum(t: tf.Tensor): tf.Tensor {
  const k = t.shape[1]!;
  if (k === 1) return t;
  if (t.shape[0]! > 1 || k > 4) return tf.sum(t, 1, true);
  let acc = streamRange(t, 0, 1);
  for (let j = 1; j < k; j++) acc = tf.add(acc, streamRange(t, j, 1));
  return acc;
}

/**
 * Backward through one tanh layer's stream map (science.md §2):
 *   a = tanh zv, s1 = 1 − a², s2 = −2 a s1; D_p = s1 zd_p; S_q = s1 zs_q + s2 zd_{c(q)}²
 * given dA = [da, dD, dS] → dz = [dzv, dzd, dzs] with
 *   dzs = s1 dS;  dzd_p = s1 dD_p + Σ_{q: c(q) = p} 2 s2 zd_p dS_q;
 *   ds1 = Σ dD·zd + Σ dS·zs;  ds2 = Σ dS·zd_c²;  dzv = s1 (da − 2a ds1 + (6a² − 2) ds2)
 * (ds1/da = −2a, ds2/da = −2 + 6a², tanh' = s1). Returns dz [G, S, n, w] and its value stream.
 */
function tanhStreamsBackward(dA: tf.Tensor, c: LayerCache, sp: StreamSpec): { dz: tf.Tensor; dzv: tf.Tensor } {
  const { nd, ns, S } = sp;
  const a = c.a!;
  const s1 = c.s1!;
  if (S === 1) {
    const dzv = tf.mul(dA, s1);
    return { dz: dzv, dzv };
  }
  const da = streamRange(dA, 0, 1);
  const dR = streamRange(dA, 1, S - 1);
  const zr = c.zr!;
  let g = tf.sub(da, tf.mul(tf.mul(a, 2), streamSum(tf.mul(dR, zr))));
  let dzr = tf.mul(s1, dR);
  if (ns > 0) {
    const dS = streamRange(dR, nd, ns);
    const zd = streamRange(zr, 0, nd);
    const zdSel = sp.identity ? zd : streamsOf(zd, sp.secPos);
    const ds2 = streamSum(tf.mul(dS, tf.square(zdSel)));
    g = tf.add(g, tf.mul(ds2, tf.sub(tf.mul(tf.square(a), 6), 2)));
    const T = tf.mul(tf.mul(c.s2!, 2), tf.mul(zdSel, dS)); // [G, ns, n, w], to streams secPos of dzd
    dzr = tf.add(dzr, scatterStreams(T, sp.secPos, S - 1));
  }
  const dzv = tf.mul(g, s1);
  return { dz: tf.concat([dzv, dzr], 1), dzv };
}

/** [G, k, n, w] → [G, total, n, w] with stream j of the input added at stream pos[j] (zeros elsewhere). */
function scatterStreams(t: tf.Tensor, pos: number[], total: number): tf.Tensor {
  const identityPrefix = pos.every((p, i) => p === i);
  if (identityPrefix) return total === pos.length ? t : tf.pad(t, [[0, 0], [0, total - pos.length], [0, 0], [0, 0]]);
  const [G, , n, w] = t.shape as [number, number, number, number];
  const zero = tf.zeros([G, 1, n, w]);
  const parts: tf.Tensor[] = [];
  for (let p = 0; p < total; p++) {
    const js = pos.flatMap((q, j) => (q === p ? [j] : []));
    parts.push(js.length === 0 ? zero : js.map((j) => streamRange(t, j, 1)).reduce((x, y) => tf.add(x, y)));
  }
  return tf.concat(parts, 1);
}

/**
 * Hand-derived backward pass of `streamsForward`: from the cotangent of the output streams
 * dOut [G, S, n, out], the gradients of every weight and bias. `perGroupW`: weight gradients per
 * group ([G, in, out], the G groups' own contributions) even for shared weights; per-group weights
 * ([G, in, out]) always get per-group gradients. Bias gradients follow the bias's own rank.
 */
function streamsBackward(
  weights: tf.Tensor[],
  biases: tf.Tensor[],
  cache: LayerCache[],
  dOut: tf.Tensor,
  sp: StreamSpec,
  perGroupW: boolean,
): { dW: tf.Tensor[]; db: tf.Tensor[] } {
  const L = weights.length;
  const dW: tf.Tensor[] = new Array(L);
  const db: tf.Tensor[] = new Array(L);
  const pgW = (l: number) => perGroupW || weights[l]!.rank === 3;
  const pgB = (l: number) => biases[l]!.rank === 2;
  let dz = dOut;
  let dzv = streamRange(dOut, 0, 1);
  for (let l = L - 1; l >= 1; l--) {
    const ain = cache[l]!.ain;
    dW[l] = weightGrad(ain, dz, pgW(l));
    db[l] = biasGrad(dzv, pgB(l));
    const dA = inputGrad(dz, weights[l]!);
    ({ dz, dzv } = l - 1 === 0 ? layer0Backward(dA, cache[0]!, weights[0]!, sp, pgW(0), (t) => (dW[0] = t)) : tanhStreamsBackward(dA, cache[l - 1]!, sp));
  }
  const x = cache[0]!.ain;
  const [G, n] = x.shape as [number, number];
  const w0 = weights[0]!.shape[weights[0]!.rank - 1]!;
  const rowPart = dW[0];
  const xg = weightGrad(x, tf.reshape(dzv, [G, n, w0]), pgW(0));
  dW[0] = rowPart ? tf.add(xg, rowPart) : xg;
  db[0] = biasGrad(dzv, pgB(0));
  return { dW, db };
}

/**
 * Layer 0: A0 = [a, s1 W0[first], s2 W0[second]²] with a = tanh(x W0 + b0). Returns dz0 (value
 * stream, [G, 1, n, w]) and hands the direct row contributions ∂/∂W0[i, :] of the derivative streams
 * ([d, w] or [G, d, w]) to `setRows`.
 */
function layer0Backward(dA: tf.Tensor, c: LayerCache, W0: tf.Tensor, sp: StreamSpec, perGroup: boolean, setRows: (t: tf.Tensor) => void): { dz: tf.Tensor; dzv: tf.Tensor } {
  const { nd, ns, S } = sp;
  const a = c.a!;
  const s1 = c.s1!;
  if (S === 1) {
    const dzv = tf.mul(dA, s1);
    return { dz: dzv, dzv };
  }
  const d = W0.shape[W0.rank - 2]!;
  const da = streamRange(dA, 0, 1);
  const dD = streamRange(dA, 1, nd);
  const Wd = rows4(W0, sp.first); // [1|G, nd, 1, w]
  let g = tf.sub(da, tf.mul(tf.mul(a, 2), streamSum(tf.mul(dD, Wd))));
  // Σ over the points (and, for shared W0, the groups): [G, k, n, w] → [G, k, w] | [k, w].
  const red = (t: tf.Tensor) => {
    if (perGroup) return tf.sum(t, 2);
    const [G, k, n, w] = t.shape as [number, number, number, number];
    if (G > 1) return tf.sum(t, [0, 2]);
    // Block indicator E [k, k·n] (E[p, j] = 1 for j in stream p) @ t [k·n, w]: one fast matmul.
    const e = new Float32Array(k * k * n);
    for (let p = 0; p < k; p++) e.fill(1, p * k * n + p * n, p * k * n + (p + 1) * n);
    return tf.matMul(tf.tensor2d(e, [k, k * n]), tf.reshape(t, [k * n, w]) as tf.Tensor2D);
  };
  const rowFirst = red(tf.mul(s1, dD)); // Σ_n s1 dD_p
  let rowSecond: tf.Tensor | null = null;
  if (ns > 0) {
    const dS = streamRange(dA, 1 + nd, ns);
    const Ws = rows4(W0, sp.second);
    g = tf.add(g, tf.mul(streamSum(tf.mul(dS, tf.square(Ws))), tf.sub(tf.mul(tf.square(a), 6), 2)));
    const ws = perGroup ? tf.reshape(Ws, [Ws.shape[0]!, ns, Ws.shape[3]!]) : tf.reshape(Ws, [ns, Ws.shape[3]!]);
    rowSecond = tf.mul(red(tf.mul(c.s2!, dS)), tf.mul(ws, 2)); // Σ_n s2 dS_q · 2 W0[i_q]
  }
  // Scatter the row contributions to rows first[p] / second[q] of a [d, w] (or [G, d, w]) matrix.
  const rowAxis = perGroup ? 1 : 0;
  const rowOf = (t: tf.Tensor, j: number) => (perGroup ? tf.slice(t, [0, j, 0], [-1, 1, -1]) : tf.slice(t, [j, 0], [1, -1]));
  const zeroRow = tf.zerosLike(rowOf(rowFirst, 0));
  const rows: tf.Tensor[] = [];
  for (let i = 0; i < d; i++) {
    let r: tf.Tensor | null = null;
    const p = sp.first.indexOf(i);
    if (p >= 0) r = rowOf(rowFirst, p);
    const q = sp.second.indexOf(i);
    if (q >= 0 && rowSecond) r = r ? tf.add(r, rowOf(rowSecond, q)) : rowOf(rowSecond, q);
    rows.push(r ?? zeroRow);
  }
  setRows(tf.concat(rows, rowAxis));
  const dzv = tf.mul(g, s1);
  return { dz: dzv, dzv };
}

/**
 * The MLP's output streams [G, S, n, out], reshaped to `shape` (e.g. [G, S, n] or, for S = 1, [G, n]
 * when out = 1), as one differentiable op: forward as `streamsForward`, gradient from `streamsBackward`
 * (w.r.t. weights and biases; the gradient w.r.t. the inputs x is not provided — zeros).
 *
 * What the backward needs is kept with the op's `save`, which copies each tensor (one Identity kernel
 * and tape node apiece), so only what a tf.Variable does not already keep alive: the layer caches (or,
 * chunked, x) and the parameters that are not variables (a computed weight may be disposed before the
 * backward runs); of the biases the backward reads only their ranks, unless chunked (it recomputes
 * the forward).
 */
function streamsOp(params: MlpParams, x: tf.Tensor, sp: StreamSpec, shape: number[]): tf.Tensor {
  const { weights, biases } = params;
  const L = weights.length;
  const op = tf.customGrad(((...args: unknown[]) => {
    const save = args.pop() as tf.GradSaveFunc;
    const ts = args as tf.Tensor[];
    const xx = ts[0]!;
    const xShape = xx.shape.slice();
    const ps = ts.slice(1); // weights then biases
    const chunks = chunkRanges(xx, ps.slice(0, L), sp);
    // The parameters to save: non-variable weights, and biases too when chunked.
    const saveP = ps.map((p, i) => !(p instanceof tf.Variable) && (i < L || chunks.length > 1));
    const nP = saveP.filter(Boolean).length;
    /** The parameters in the backward: the saved ones from `saved` (first), the others as given. */
    const params = (saved: tf.Tensor[]) => {
      let j = 0;
      const all = ps.map((p, i) => (saveP[i] ? saved[j++]! : p));
      return { ws: all.slice(0, L), bs: all.slice(L) };
    };
    const toSave = ps.filter((_, i) => saveP[i]);
    let out: tf.Tensor;
    let grad: (dOut: tf.Tensor, saved: tf.Tensor[]) => { dW: tf.Tensor[]; db: tf.Tensor[] };
    if (chunks.length > 1) {
      // Large n: the forward keeps only the outputs; the backward recomputes each chunk's caches.
      out = chunkedOut(ps.slice(0, L), ps.slice(L), xx, sp, chunks);
      save([...toSave, xx]);
      grad = (dOut, saved) => {
        const { ws, bs } = params(saved);
        return chunkedBackward(ws, bs, saved[nP]!, dOut, sp, false, chunks);
      };
    } else {
      const f = fwdImpl(ps.slice(0, L), ps.slice(L), xx, sp);
      out = f.out;
      // The distinct cache tensors (a layer's output is the next one's input: with S = 1 the same
      // tensor), saved once each; `layout` records which keys each layer has and where they are.
      const distinct: tf.Tensor[] = [];
      const layout = f.cache.map((c) =>
        CACHE_KEYS.filter((k) => c[k] !== undefined).map((k) => {
          let at = distinct.indexOf(c[k]!);
          if (at < 0) at = distinct.push(c[k]!) - 1;
          return [k, at] as const;
        }),
      );
      save([...toSave, ...distinct]);
      grad = (dOut, saved) => {
        const sc = layout.map((keys) => {
          const c: LayerCache = { ain: null as unknown as tf.Tensor };
          for (const [k, at] of keys) c[k] = saved[nP + at]!;
          return c;
        });
        const { ws, bs } = params(saved);
        return bwdImpl(ws, bs, sc, dOut, sp, false);
      };
    }
    const outShape = out.shape.slice();
    return {
      value: tf.reshape(out, shape),
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const { dW, db } = grad(tf.reshape(dy as tf.Tensor, outShape), saved);
        return [tf.zeros(xShape), ...dW, ...db];
      },
    };
  }) as unknown as Parameters<typeof tf.customGrad>[0]);
  return op(x, ...weights, ...biases);
}

// ---------------------------------------------------------------------------------------------
// Chunking over the points (memory of large n, e.g. the paper size 6 × 128, N = 25,600: one
// activation of the 5 streams is 25,600 × 5 × 128 × 4 B = 65 MB and the caches of a step hold ~15 of
// them). Above CHUNK_FLOATS values per activation the points are processed in chunks: the forward
// keeps only the output streams; the backward recomputes one chunk's caches at a time (gradient
// checkpointing) and sums the chunks' weight and bias gradients. Same math; one more forward pass.
// ---------------------------------------------------------------------------------------------

/** Values (G · S · n · width) of one activation tensor above which the points are chunked. */
const CHUNK_FLOATS = 1 << 22;
let forcedChunkPoints: number | null = null;

/**
 * Force chunks of `points` points along the n axis for every fused MLP evaluation (tests,
 * benchmarks); null restores the automatic choice (chunks only above CHUNK_FLOATS values).
 */
export function setMlpChunkRows(points: number | null): void {
  if (points !== null && !(Number.isInteger(points) && points > 0)) throw new Error(`setMlpChunkRows: ${points}`);
  forcedChunkPoints = points;
}

/** [start, count] ranges along the points axis of x [G, n, d]: one range when no chunking is needed. */
function chunkRanges(x: tf.Tensor, weights: tf.Tensor[], sp: StreamSpec): Array<[number, number]> {
  const [G, n] = x.shape as [number, number];
  const width = Math.max(...weights.map((w) => w.shape[w.rank - 1]!));
  const per = forcedChunkPoints ?? Math.max(1, Math.floor(CHUNK_FLOATS / (G * sp.S * width)));
  if (per >= n) return [[0, n]];
  const k = Math.ceil(n / per);
  const size = Math.ceil(n / k); // equal chunks
  const out: Array<[number, number]> = [];
  for (let s = 0; s < n; s += size) out.push([s, Math.min(size, n - s)]);
  return out;
}

function sliceN(t: tf.Tensor, axis: number, [s, c]: [number, number]): tf.Tensor {
  const begin = t.shape.map(() => 0);
  const size = t.shape.map(() => -1);
  begin[axis] = s;
  size[axis] = c;
  return tf.slice(t, begin, size);
}

/** Output streams [G, S, n, out] of the forward pass, chunk by chunk (no caches kept). */
function chunkedOut(ws: tf.Tensor[], bs: tf.Tensor[], x: tf.Tensor, sp: StreamSpec, chunks: Array<[number, number]>): tf.Tensor {
  const outs = chunks.map((c) => tf.tidy(() => fwdImpl(ws, bs, sliceN(x, 1, c), sp).out));
  const out = tf.concat(outs, 2);
  tf.dispose(outs);
  return out;
}

/** Gradients of the forward pass from dOut [G, S, n, out], recomputing each chunk's caches. */
function chunkedBackward(ws: tf.Tensor[], bs: tf.Tensor[], x: tf.Tensor, dOut: tf.Tensor, sp: StreamSpec, perGroupW: boolean, chunks: Array<[number, number]>): { dW: tf.Tensor[]; db: tf.Tensor[] } {
  let acc: tf.Tensor[] | null = null;
  for (const c of chunks) {
    const g = tf.tidy(() => {
      const { cache } = fwdImpl(ws, bs, sliceN(x, 1, c), sp);
      const { dW, db } = bwdImpl(ws, bs, cache, sliceN(dOut, 2, c), sp, perGroupW);
      return [...dW, ...db];
    });
    if (!acc) acc = g;
    else {
      const prev: tf.Tensor[] = acc;
      acc = prev.map((a, i) => tf.add(a, g[i]!));
      tf.dispose([...prev, ...g]);
    }
  }
  const L = ws.length;
  return { dW: acc!.slice(0, L), db: acc!.slice(L) };
}

// ---------------------------------------------------------------------------------------------
// Heap-kernel implementation (wasm backend): the same forward and backward as streamsForward /
// streamsBackward, with the elementwise stream recursions of a layer (tanh, s1, s2, the derivative
// streams, the bias) fused into ONE JS loop over the wasm heap per layer and direction, instead of
// ~20 tfjs kernels; the matmuls stay XNNPACK matmuls. Layer 0 (d inputs) and a 1-wide output layer
// are done entirely in the JS loops (their matmuls are tiny). Values are computed in double and
// stored as float32.
// ---------------------------------------------------------------------------------------------

let heapKernelsOn = true;
/** Tests: false runs the tf-op implementation on wasm too (default true). */
export function setMlpHeapKernels(on: boolean): void {
  heapKernelsOn = on;
}

function useHeap(): boolean {
  return heapKernelsOn && heapKernelsAvailable();
}

function fwdImpl(weights: tf.Tensor[], biases: tf.Tensor[], x: tf.Tensor, sp: StreamSpec): { out: tf.Tensor; cache: LayerCache[] } {
  return useHeap() ? heapForward(weights, biases, x, sp) : streamsForward(weights, biases, x, sp);
}

function bwdImpl(weights: tf.Tensor[], biases: tf.Tensor[], cache: LayerCache[], dOut: tf.Tensor, sp: StreamSpec, perGroupW: boolean): { dW: tf.Tensor[]; db: tf.Tensor[] } {
  return cache[0]!.s1 === undefined && useHeap() ? heapBackward(weights, biases, cache, dOut, sp, perGroupW) : streamsBackward(weights, biases, cache, dOut, sp, perGroupW);
}

/**
 * The per-element loops of the heap kernels are generated per stream layout (unrolled over the
 * streams: a generic loop over 2–4 streams per element runs ~3× slower in V8) and cached.
 */
type LoopFn = (...args: unknown[]) => void;
const loopCache = new Map<string, LoopFn>();

function loopFn(kind: string, sp: StreamSpec, d: number, build: () => { args: string[]; body: string }): LoopFn {
  const key = `${kind}|${sp.first.join(',')}|${sp.second.join(',')}|${d}`;
  let f = loopCache.get(key);
  if (!f) {
    const { args, body } = build();
    f = new Function(...args, body) as LoopFn;
    loopCache.set(key, f);
  }
  return f;
}

/** `const o1 = 1 * st, …` for the stream offsets 1..S−1 and `const r0 = 0 * w, …` for rows 0..d−1. */
function offsets(S: number, d = 0): string {
  let out = '';
  for (let k = 1; k < S; k++) out += `const o${k} = ${k} * st;\n`;
  for (let k = 0; k < d; k++) out += `const r${k} = ${k} * w;\n`;
  return out;
}

/** Loop over groups, points and units with base (all-stream layout) and abase (one-stream layout) indices. */
function elementLoop(pre: string, body: string): string {
  return `const st = n * w;
${pre}
for (let g = 0; g < G; g++) {
  const bo = bPer ? g * w : 0;
  const go = gPer ? g * gSize : 0;
  const wo = wPer ? g * wSize : 0;
  for (let i = 0; i < n; i++) {
    const base0 = g * S * st + i * w;
    const abase = (g * n + i) * w;
    const xo = (g * n + i) * d;
    for (let j = 0; j < w; j++) {
      const base = base0 + j;
${body}
    }
  }
}`;
}

const LOOP_ARGS = ['T', 'G', 'n', 'w', 'd', 'S', 'bPer', 'gPer', 'gSize', 'wPer', 'wSize'];

/**
 * The C versions of these loops (backend.ts `nativeStreams`, native/streams.c: the same operations
 * in the same order, so the same bits) when the addon loaded and the layer is at most 4,096 wide;
 * else null and the generated JS loop runs.
 */
function cLoops(w: number): NativeStreams | null {
  return w <= 4096 ? nativeStreams() : null;
}

/** The C loops' layout argument: [G, n, w, d, S, nd, ns, first…, second…, secPos…]. */
function cLayout(sp: StreamSpec, G: number, n: number, w: number, d: number): Int32Array {
  return Int32Array.from([G, n, w, d, sp.S, sp.nd, sp.ns, ...sp.first, ...sp.second, ...sp.secPos]);
}

/**
 * Hidden layer: from z = ain W ([G, S, n, w], no bias) and b, the next layer's input streams
 * A = [a, s1 zd, s1 zs + s2 zd_c²] and a = tanh(z_v + b) ([G, 1, n, w]); with S = 1 only a.
 */
function heapTanhForward(z: tf.Tensor, b: tf.Tensor, G: number, n: number, w: number, sp: StreamSpec): { A: tf.Tensor; a: tf.Tensor } {
  const { nd, ns, S, secPos } = sp;
  const f = loopFn('fwd', sp, 0, () => {
    let body = `const av = T(Z[base] + B[bo + j]);\nao[abase + j] = av;\n`;
    if (S > 1) {
      body += `Ao[base] = av;\nconst s1 = 1 - av * av;\nconst s2 = -2 * av * s1;\n`;
      for (let p = 0; p < nd; p++) body += `const zd${p} = Z[base + o${1 + p}];\nAo[base + o${1 + p}] = s1 * zd${p};\n`;
      for (let q = 0; q < ns; q++) body += `Ao[base + o${1 + nd + q}] = s1 * Z[base + o${1 + nd + q}] + s2 * zd${secPos[q]} * zd${secPos[q]};\n`;
    }
    return { args: [...LOOP_ARGS, 'Z', 'B', 'Ao', 'ao'], body: elementLoop(offsets(S), body) };
  });
  const outShapes = S === 1 ? [[G, 1, n, w]] : [[G, S, n, w], [G, 1, n, w]];
  const c = cLoops(w);
  const outs = heapKernel([z, b], outShapes, ([Z, B], o) => {
    if (c) c.fwdHidden(cLayout(sp, G, n, w, 0), B!.length !== w ? 1 : 0, Z!, B!, S === 1 ? null : o[0]!, o[S === 1 ? 0 : 1]!);
    else f(tanhD, G, n, w, 0, S, B!.length !== w, false, 0, false, 0, Z, B, S === 1 ? null : o[0], o[S === 1 ? 0 : 1]);
  });
  return S === 1 ? { A: outs[0]!, a: outs[0]! } : { A: outs[0]!, a: outs[1]! };
}

/** Layer 0: z0 = x W0 ([G, n, w], no bias) → A0 = [a, s1 W0[first], s2 W0[second]²] and a. */
function heapLayer0Forward(z0: tf.Tensor, b0: tf.Tensor, W0: tf.Tensor, G: number, n: number, d: number, w: number, sp: StreamSpec): { A: tf.Tensor; a: tf.Tensor } {
  const { nd, ns, S, first, second } = sp;
  if (S === 1) return heapTanhForward(z0, b0, G, n, w, sp);
  const f = loopFn('fwd0', sp, d, () => {
    let body = `const av = T(Z[abase + j] + B[bo + j]);\nao[abase + j] = av;\nAo[base] = av;\nconst s1 = 1 - av * av;\nconst s2 = -2 * av * s1;\n`;
    for (let p = 0; p < nd; p++) body += `Ao[base + o${1 + p}] = s1 * W[wo + r${first[p]} + j];\n`;
    for (let q = 0; q < ns; q++) body += `const wq${q} = W[wo + r${second[q]} + j];\nAo[base + o${1 + nd + q}] = s2 * wq${q} * wq${q};\n`;
    return { args: [...LOOP_ARGS, 'Z', 'B', 'W', 'Ao', 'ao'], body: elementLoop(offsets(S, d), body) };
  });
  const c = cLoops(w);
  const [A, a] = heapKernel([z0, b0, W0], [[G, S, n, w], [G, 1, n, w]], ([Z, B, W], [Ao, ao]) => {
    if (c) c.fwdLayer0(cLayout(sp, G, n, w, d), B!.length !== w ? 1 : 0, W!.length !== d * w ? 1 : 0, Z!, B!, W!, Ao!, ao!);
    else f(tanhD, G, n, w, d, S, B!.length !== w, false, 0, W!.length !== d * w, d * w, Z, B, W, Ao, ao);
  });
  return { A: A!, a: a! };
}

function heapForward(weights: tf.Tensor[], biases: tf.Tensor[], x: tf.Tensor, sp: StreamSpec): { out: tf.Tensor; cache: LayerCache[] } {
  const L = weights.length;
  const { S } = sp;
  const [G, n, d] = x.shape as [number, number, number];
  const W0 = weights[0]!;
  const w0 = W0.shape[W0.rank - 1]!;
  const z0 = rowsMatMul(x, W0);
  const l0 = heapLayer0Forward(z0, biases[0]!, W0, G, n, d, w0, sp);
  z0.dispose();
  const cache: LayerCache[] = [{ ain: x, a: l0.a }];
  let A = l0.A;
  for (let l = 1; l < L; l++) {
    const W = weights[l]!;
    const wout = W.shape[W.rank - 1]!;
    const Z = rowsMatMul(A, W);
    if (l === L - 1) {
      cache.push({ ain: A });
      return { out: heapOutputBias(Z, biases[l]!, G, S, n, wout), cache };
    }
    const next = heapTanhForward(Z, biases[l]!, G, n, wout, sp);
    if (S === 1) {
      Z.dispose();
      cache.push({ ain: A, a: next.a });
    } else cache.push({ ain: A, a: next.a, z: Z });
    A = next.A;
  }
  throw new Error('unreachable');
}

/**
 * z = a W over the rows of a ([G, …, in], the values of [G, R, in]) in the layout of [G, R, out] (the
 * shape as the matmul leaves it, [G·R, out] or [G, R, out]: callers that need another reshape), with
 * the products of `groupMatMul` on a as [G, R, in].
 */
function rowsMatMul(a: tf.Tensor, W: tf.Tensor): tf.Tensor {
  const win = W.shape[W.rank - 2]!;
  if (W.rank === 2) return tf.matMul(tf.reshape(a, [a.size / win, win]) as tf.Tensor2D, W as tf.Tensor2D);
  const G = a.shape[0]!;
  return perGroupMatMul(tf.reshape(a, [G, a.size / (G * win), win]), W);
}

/**
 * The output layer's bias on the value stream, in one loop: out [G, S, n, w] = z (the values of
 * [G, S, n, w]) + [b, 0, …, 0] over the streams, b [w] or [G, w]; float32 sums as tf.add rounds them.
 */
function heapOutputBias(z: tf.Tensor, b: tf.Tensor, G: number, S: number, n: number, w: number): tf.Tensor {
  const [out] = heapKernel([z, b], [[G, S, n, w]], ([Z, B], [O]) => {
    const bPer = B!.length !== w;
    const st = n * w;
    for (let g = 0; g < G; g++) {
      const base = g * S * st;
      const bo = bPer ? g * w : 0;
      for (let k = 0; k < st; k++) O![base + k] = Z![base + k]! + B![bo + (k % w)]!;
      for (let k = base + st; k < base + S * st; k++) O![k] = Z![k]! + 0;
    }
  });
  return out!;
}

/** Offset of group g in a per-group array of `per` values (0 for a shared one of `per` values). */
function groupOffset(arr: Float32Array, per: number, g: number): number {
  return arr.length === per ? 0 : g * per;
}

/**
 * Backward through a hidden tanh layer (formulas of `tanhStreamsBackward`) in one loop: dz
 * [G, S, n, w] and the bias gradient (Σ of the value stream's dz; [w] or [G, w] when `pgB`).
 */
function heapTanhBackward(dA: tf.Tensor, c: LayerCache, G: number, n: number, w: number, sp: StreamSpec, pgB: boolean): { dz: tf.Tensor; db: tf.Tensor } {
  const { nd, ns, S, secPos } = sp;
  const f = loopFn('bwd', sp, 0, () => {
    let body = `const av = a[abase + j];\nconst s1 = 1 - av * av;\n`;
    if (S === 1) body += `const dzv = s1 * D[base];\n`;
    else {
      body += `const s2 = -2 * av * s1;\nlet ds1 = 0;\nlet ds2 = 0;\n`;
      for (let p = 0; p < nd; p++) body += `const dD${p} = D[base + o${1 + p}];\nconst zd${p} = Z[base + o${1 + p}];\nds1 += dD${p} * zd${p};\nlet dzd${p} = s1 * dD${p};\n`;
      for (let q = 0; q < ns; q++) {
        const c = secPos[q]!;
        body += `const dS${q} = D[base + o${1 + nd + q}];\nds1 += dS${q} * Z[base + o${1 + nd + q}];\nds2 += dS${q} * zd${c} * zd${c};\ndZ[base + o${1 + nd + q}] = s1 * dS${q};\ndzd${c} += 2 * s2 * zd${c} * dS${q};\n`;
      }
      for (let p = 0; p < nd; p++) body += `dZ[base + o${1 + p}] = dzd${p};\n`;
      body += `const dzv = s1 * (D[base] - 2 * av * ds1 + (6 * av * av - 2) * ds2);\n`;
    }
    body += `dZ[base] = dzv;\ndb[bo + j] += dzv;\n`;
    return { args: [...LOOP_ARGS, 'D', 'a', 'Z', 'dZ', 'db'], body: elementLoop(offsets(S), body) };
  });
  const dbAcc = new Float64Array(pgB ? G * w : w);
  const ins = S === 1 ? [dA, c.a!] : [dA, c.a!, c.z!];
  const cl = cLoops(w);
  const [dz] = heapKernel(ins, [[G, S, n, w]], ([D, a, Z], [dZ]) => {
    if (cl) cl.bwdHidden(cLayout(sp, G, n, w, 0), pgB ? 1 : 0, D!, a!, Z ?? null, dZ!, dbAcc);
    else f(tanhD, G, n, w, 0, S, pgB, false, 0, false, 0, D, a, Z ?? null, dZ, dbAcc);
  });
  return { dz: dz!, db: pgB ? tf.tensor2d(Float32Array.from(dbAcc), [G, w]) : tf.tensor1d(Float32Array.from(dbAcc)) };
}

/**
 * Backward through layer 0 in one loop: from dA0 [G, S, n, w], the weight gradient of W0 (the
 * derivative streams' direct row terms plus xᵀ dz0; [d, w] or [G, d, w] when `pgW`) and the bias
 * gradient ([w] or [G, w] when `pgB`).
 */
function heapLayer0Backward(dA: tf.Tensor, c: LayerCache, W0: tf.Tensor, G: number, n: number, d: number, w: number, sp: StreamSpec, pgW: boolean, pgB: boolean): { dW: tf.Tensor; db: tf.Tensor } {
  const { nd, ns, S, first, second } = sp;
  const f = loopFn('bwd0', sp, d, () => {
    let body = `const av = a[abase + j];\nconst s1 = 1 - av * av;\n`;
    if (S === 1) body += `const dzv = s1 * D[base];\n`;
    else {
      body += `const s2 = -2 * av * s1;\nlet acc1 = 0;\nlet acc2 = 0;\n`;
      for (let p = 0; p < nd; p++) body += `{ const dD = D[base + o${1 + p}];\nacc1 += dD * W[wo + r${first[p]} + j];\ndW[go + r${first[p]} + j] += s1 * dD; }\n`;
      for (let q = 0; q < ns; q++) body += `{ const dS = D[base + o${1 + nd + q}];\nconst wv = W[wo + r${second[q]} + j];\nacc2 += dS * wv * wv;\ndW[go + r${second[q]} + j] += 2 * s2 * dS * wv; }\n`;
      body += `const dzv = s1 * (D[base] - 2 * av * acc1 + (6 * av * av - 2) * acc2);\n`;
    }
    body += `db[bo + j] += dzv;\n`;
    for (let k = 0; k < d; k++) body += `dW[go + r${k} + j] += X[xo + ${k}] * dzv;\n`;
    return { args: [...LOOP_ARGS, 'D', 'a', 'W', 'X', 'dW', 'db'], body: elementLoop(offsets(S, d), body) };
  });
  const dWAcc = new Float64Array(pgW ? G * d * w : d * w);
  const dbAcc = new Float64Array(pgB ? G * w : w);
  const cl = cLoops(w);
  heapKernel([dA, c.a!, W0, c.ain], [], ([D, a, W, X]) => {
    if (cl) cl.bwdLayer0(cLayout(sp, G, n, w, d), pgB ? 1 : 0, pgW ? 1 : 0, W!.length !== d * w ? 1 : 0, D!, a!, W!, X!, dWAcc, dbAcc);
    else f(tanhD, G, n, w, d, S, pgB, pgW, d * w, W!.length !== d * w, d * w, D, a, W, X, dWAcc, dbAcc);
  });
  return {
    dW: pgW ? tf.tensor3d(Float32Array.from(dWAcc), [G, d, w]) : tf.tensor2d(Float32Array.from(dWAcc), [d, w]),
    db: pgB ? tf.tensor2d(Float32Array.from(dbAcc), [G, w]) : tf.tensor1d(Float32Array.from(dbAcc)),
  };
}

/**
 * Backward through a 1-wide linear output layer z = A W + b in one loop: dA = dOut ⊗ W, dW = Aᵀ dOut
 * ([win, 1] or [G, win, 1] when `pgW`), db = Σ of the value stream ([1] or [G, 1] when `pgB`).
 */
function heapOutputBackward(dOut: tf.Tensor, A: tf.Tensor, W: tf.Tensor, G: number, S: number, n: number, win: number, pgW: boolean, pgB: boolean): { dA: tf.Tensor; dW: tf.Tensor; db: tf.Tensor } {
  const dWAcc = new Float64Array(pgW ? G * win : win);
  const dbAcc = new Float64Array(pgB ? G : 1);
  const [dA] = heapKernel([dOut, A, W], [[G, S, n, win]], ([Dy, Ai, Wi], [dAo]) => {
    for (let g = 0; g < G; g++) {
      const wo = groupOffset(Wi!, win, g);
      const go = pgW ? g * win : 0;
      for (let s = 0; s < S; s++) {
        for (let i = 0; i < n; i++) {
          const r = (g * S + s) * n + i;
          const dy = Dy![r]!;
          if (s === 0) dbAcc[pgB ? g : 0] += dy;
          const ro = r * win;
          for (let k = 0; k < win; k++) {
            dAo![ro + k] = dy * Wi![wo + k]!;
            dWAcc[go + k] += Ai![ro + k]! * dy;
          }
        }
      }
    }
  });
  return {
    dA: dA!,
    dW: pgW ? tf.tensor3d(Float32Array.from(dWAcc), [G, win, 1]) : tf.tensor2d(Float32Array.from(dWAcc), [win, 1]),
    db: pgB ? tf.tensor2d(Float32Array.from(dbAcc), [G, 1]) : tf.tensor1d(Float32Array.from(dbAcc)),
  };
}

/**
 * A 1-wide output layer's W ([win, 1]) as `shape` ([1, win]): with XNNPACK in a fresh buffer, since
 * the wasm backend caches the packed right operand of a matmul by buffer, not by shape, so a reshape
 * of W (which the forward used as [win, 1]) would reuse the forward's packing; the native BLAS packs
 * nothing between calls: a reshape.
 */
function wRow(W: tf.Tensor, shape: number[]): tf.Tensor {
  const r = tf.reshape(W, shape);
  return nativeMatMulActive() ? r : tf.mul(r, tf.scalar(1));
}

function heapBackward(weights: tf.Tensor[], biases: tf.Tensor[], cache: LayerCache[], dOut: tf.Tensor, sp: StreamSpec, perGroupW: boolean): { dW: tf.Tensor[]; db: tf.Tensor[] } {
  const L = weights.length;
  const { S } = sp;
  const dW: tf.Tensor[] = new Array(L);
  const db: tf.Tensor[] = new Array(L);
  const pgW = (l: number) => perGroupW || weights[l]!.rank === 3;
  const pgB = (l: number) => biases[l]!.rank === 2;
  const x = cache[0]!.ain;
  const [G, n, d] = x.shape as [number, number, number];
  // Output layer.
  const WL = weights[L - 1]!;
  const winL = WL.shape[WL.rank - 2]!;
  const woutL = WL.shape[WL.rank - 1]!;
  let dA: tf.Tensor;
  if (woutL === 1 && WL.rank === 2 && !pgW(L - 1)) {
    // Shared 1-wide output: matmuls with tiny operands (dA = dOut ⊗ W as a K = 1 product, dW = Aᵀ dOut)
    // beat the JS loop ~3×.
    const R = G * S * n;
    const dOut2 = tf.reshape(dOut, [R, 1]) as tf.Tensor2D;
    dW[L - 1] = matMulTA(tf.reshape(cache[L - 1]!.ain, [R, winL]) as tf.Tensor2D, dOut2);
    db[L - 1] = biasGrad(streamRange(dOut, 0, 1), pgB(L - 1));
    dA = tf.reshape(tf.matMul(dOut2, wRow(WL, [1, winL]) as tf.Tensor2D), [G, S, n, winL]);
  } else if (woutL === 1 && WL.rank === 3 && pgB(L - 1) && G > 1) {
    // Per-group (fused trials) 1-wide output: each group's products exactly those of the shared branch
    // above for a single trial (same m, n, k and transposes), so a fused trial rounds as it does alone.
    // The native BLAS runs a batched product as one sgemm per group (backend.ts): one batched call
    // each; XNNPACK has no batched path with the same rounding: one 2-D product per group there.
    const R = S * n;
    const vOut = tf.reshape(streamRange(dOut, 0, 1), [G, n, 1]);
    if (nativeMatMulActive()) {
      const dOut3 = tf.reshape(dOut, [G, R, 1]);
      dW[L - 1] = tf.matMul(tf.reshape(cache[L - 1]!.ain, [G, R, winL]) as tf.Tensor3D, dOut3 as tf.Tensor3D, true, false);
      db[L - 1] = tf.reshape(tf.matMul(tf.ones([1, 1, n]) as tf.Tensor3D, vOut as tf.Tensor3D), [G, 1]);
      dA = tf.reshape(tf.matMul(dOut3 as tf.Tensor3D, tf.reshape(WL, [G, 1, winL]) as tf.Tensor3D), [G, S, n, winL]);
    } else {
      const dWs: tf.Tensor[] = [];
      const dbs: tf.Tensor[] = [];
      const dAs: tf.Tensor[] = [];
      const part = (t: tf.Tensor, g: number, shape: number[]) => tf.reshape(tf.slice(t, [g, ...shape.map(() => 0)], [1, ...shape.map(() => -1)]), shape);
      const dOutR = tf.reshape(dOut, [G, R, 1]);
      const ainR = tf.reshape(cache[L - 1]!.ain, [G, R, winL]);
      for (let g = 0; g < G; g++) {
        const dOut2 = part(dOutR, g, [R, 1]) as tf.Tensor2D;
        dWs.push(matMulTA(part(ainR, g, [R, winL]) as tf.Tensor2D, dOut2));
        dbs.push(colSum(part(vOut, g, [n, 1])));
        dAs.push(tf.matMul(dOut2, wRow(tf.slice(WL, [g, 0, 0], [1, -1, -1]), [1, winL]) as tf.Tensor2D));
      }
      dW[L - 1] = tf.stack(dWs);
      db[L - 1] = tf.reshape(tf.stack(dbs), [G, 1]);
      dA = tf.reshape(tf.stack(dAs), [G, S, n, winL]);
    }
  } else if (woutL === 1) {
    const o = heapOutputBackward(dOut, cache[L - 1]!.ain, WL, G, S, n, winL, pgW(L - 1), pgB(L - 1));
    dW[L - 1] = o.dW;
    db[L - 1] = o.db;
    dA = o.dA;
  } else {
    dW[L - 1] = weightGrad(cache[L - 1]!.ain, dOut, pgW(L - 1));
    db[L - 1] = biasGrad(streamRange(dOut, 0, 1), pgB(L - 1));
    dA = inputGrad(dOut, WL);
  }
  for (let l = L - 2; l >= 1; l--) {
    const W = weights[l]!;
    const w = W.shape[W.rank - 1]!;
    const { dz, db: b } = heapTanhBackward(dA, cache[l]!, G, n, w, sp, pgB(l));
    dA.dispose();
    db[l] = b;
    dW[l] = weightGrad(cache[l]!.ain, dz, pgW(l));
    dA = inputGrad(dz, W);
    dz.dispose();
  }
  const W0 = weights[0]!;
  const g0 = heapLayer0Backward(dA, cache[0]!, W0, G, n, d, W0.shape[W0.rank - 1]!, sp, pgW(0), pgB(0));
  dA.dispose();
  dW[0] = g0.dW;
  db[0] = g0.db;
  return { dW, db };
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
