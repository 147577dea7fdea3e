/**
 * Diagnostics (science.md §5), computed on the diagnostics cadence:
 *  - gradient SNR: snr, snr_layers, grad_order over a fixed split of the N collocation points into
 *    B equal batches, with all B per-batch gradients from ONE backward pass;
 *  - snr_adam from the optimizer's bias-corrected moments;
 *  - res_homogeneity from |r| over a 10 × 10 grid of cells (the residual comes from the SNR pass);
 *  - saturation_layers and entropy_layers from the binned tanh activations of every hidden layer;
 *  - lambda_mean, lambda_max of the per-point weights λ.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Adam } from './adam.js';
import { nativeMatMulActive } from './backend.js';
import { conditionsLoss, residualLoss, type ConditionTerm } from './loss.js';
import { mlpPerGroupWeightGrads, type MlpParams } from './network.js';
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

/**
 * Boundary data of one trial: points [1, m, d], targets [1, m], weight w_bc of the Dirichlet
 * boundary term — and, when `terms` is given, the full list of condition terms (boundary and
 * initial, `value` or `periodic`), which then replaces (x, g, wBc) as the boundary/initial term.
 */
export interface BoundaryData {
  x: tf.Tensor;
  g: tf.Tensor;
  wBc: number;
  terms?: ConditionTerm[];
}

/** The condition terms of `bc`: `bc.terms`, or the single `value` term (x, g, wBc). */
export function conditionTermsOf(bc: BoundaryData): ConditionTerm[] {
  return bc.terms ?? [{ name: 'bc', kind: 'value', x: bc.x, g: bc.g, w: bc.wBc }];
}


/**
 * Per-batch gradients g_b of L_b = mean_{i∈b} (λ_i r_i)² + (full boundary/initial term: the condition
 * terms of `bc`, e.g. w_bc·mean_j (u(x_j) − g_j)² [+ w_ic·mean_k (u(x_k,0) − u0_k)²]) with respect to
 * the weight matrices only (biases excluded), for all B batches in one pass (science.md §5): every
 * batch gets its own copy of each weight matrix ([B, in, out]), the batches go through a batched
 * matmul, and the sum of the batch residual losses is differentiated w.r.t. the copies.
 * Returned in two parts, g_b = resGrads[l][b] + bcGrads[l]: the boundary/initial-term gradient is the
 * same for every b, computed once, and kept apart so that the spread over batches is taken without
 * it (see `snrFromBatchGradients`). Also the residual r [B, perBatch] (split order: row b holds the
 * points `split.order[b·perBatch ..]`) of the current network at every collocation point, as formed
 * in that same pass (no λ).
 * @param lambda current λ [N] (for RBA: as used in this step's loss), or null for λ ≡ 1.
 * @returns resGrads [B, in, out] and bcGrads [in, out] per weight matrix, input layer first; caller disposes all.
 */
export function perBatchGradientParts(
  problem: Problem,
  params: MlpParams,
  split: SnrSplit,
  lambda: tf.Tensor | null,
  bc: BoundaryData,
): { resGrads: tf.Tensor[]; bcGrads: tf.Tensor[]; residual: tf.Tensor } {
  const kept: { residual: tf.Tensor | null } = { residual: null };
  const parts = tf.tidy(() => {
    const B = split.B;
    const lamB = lambda ? tf.gather(lambda, split.idx) : null; // [B, per]
    // Gradient w.r.t. each batch's own copy of the weights, without materialising the copies: the
    // forward pass and ∂/∂A run with the shared weights on all B·per points at once, and only the
    // weight gradients are formed per batch (`mlpPerGroupWeightGrads`; equal to differentiating
    // w.r.t. tiled copies [B, in, out], which the copies' values equal).
    if (split.x.shape[0] !== B) throw new Error('perBatchGradientParts: split.x must be [B, perBatch, d]');
    const resGrads = mlpPerGroupWeightGrads(params, split.x, problem.derivs, problem.inputOrder, (f) => {
      const r = problem.residual(f, split.q, split.x); // [B, per]
      kept.residual = tf.keep(r);
      return tf.sum(residualLoss(r, lamB)) as tf.Scalar;
    });
    const terms = conditionTermsOf(bc);
    const bcGrads = tf.grads((...ws: tf.Tensor[]) => tf.sum(conditionsLoss({ weights: ws, biases: params.biases }, terms, problem.inputOrder)))(
      params.weights,
    );
    return [...resGrads, ...bcGrads];
  });
  const L = params.weights.length;
  return { resGrads: parts.slice(0, L), bcGrads: parts.slice(L), residual: kept.residual! };
}

/**
 * From per-batch gradients ([B, ...] per weight matrix): per parameter j, μ_j = mean_b g_bj,
 * σ_j = std_b g_bj (population, ddof 0), RMS_j = sqrt(mean_b g_bj²) (science.md §5):
 *  snr = ‖μ‖₂/‖σ‖₂ over all matrices; snr_layers[l] = ‖μ_l‖_F/‖σ_l‖_F; grad_order = ‖μ‖₂/‖RMS‖₂,
 *  with ‖RMS‖² = ‖σ‖² + ‖μ‖² (exact for ddof 0).
 * @param common optional per-matrix part shared by every batch (the boundary/initial-term gradient,
 *   shape [in, out]): the batch gradients are then gs[l][b] + common[l], and σ comes from gs alone.
 * Reductions run in float32 on the backend; one small readback.
 */
/**
 * Mean over the leading (batch) axis of x [B, ...rest] → [...rest]. With the native matmuls
 * (backend.ts) as ones[1, B] @ x[B, P] ÷ B, one BLAS call: tfjs-wasm's Mean over a leading axis
 * transposes first (~3 ms of the SNR at B = 100, 3 × 50). Else tf.mean.
 */
function batchMean(x: tf.Tensor): tf.Tensor {
  if (!nativeMatMulActive()) return tf.mean(x, 0);
  const B = x.shape[0]!;
  const rest = x.shape.slice(1);
  const sum = tf.matMul(tf.ones([1, B]) as tf.Tensor2D, tf.reshape(x, [B, x.size / B]) as tf.Tensor2D);
  return tf.reshape(tf.div(sum, B), rest);
}

export function snrFromBatchGradients(gs: tf.Tensor[], common?: tf.Tensor[]): SnrResult {
  const sums = tf.tidy(() =>
    tf.stack(
      gs.map((g, l) => {
        // σ is shift-invariant: with a common part c (the same in every batch), σ is taken from g
        // alone, μ = mean_b g + c and mean_b (g + c)² = σ² + μ² (ddof 0). In float32 this keeps σ
        // exact when c dominates (e.g. RBA at λ ≈ 0, where every batch sees the same boundary term).
        const m = batchMean(g);
        const varr = batchMean(tf.square(tf.sub(g, m)));
        const mu = common ? tf.add(m, common[l]!) : m;
        const mu2 = tf.sum(tf.square(mu));
        const var2 = tf.sum(varr);
        return tf.stack([mu2, var2, tf.add(mu2, var2)]);
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
  const { resGrads, bcGrads, residual } = perBatchGradientParts(problem, params, split, lambda, bc);
  try {
    return snrFromBatchGradients(resGrads, bcGrads);
  } finally {
    tf.dispose([...resGrads, ...bcGrads, residual]);
  }
}

/**
 * `gradientSnr`, plus the residual r_i of the current network at every collocation point from the
 * same pass, in the original point order (Float32Array [N]; no λ) — the input of res_homogeneity.
 */
export function gradientSnrWithResidual(
  problem: Problem,
  params: MlpParams,
  split: SnrSplit,
  lambda: tf.Tensor | null,
  bc: BoundaryData,
): SnrResult & { residual: Float32Array } {
  const { resGrads, bcGrads, residual } = perBatchGradientParts(problem, params, split, lambda, bc);
  try {
    const snr = snrFromBatchGradients(resGrads, bcGrads);
    const rs = residual.dataSync();
    const out = new Float32Array(rs.length);
    for (let j = 0; j < rs.length; j++) out[split.order[j]!] = rs[j]!;
    return { ...snr, residual: out };
  } finally {
    tf.dispose([...resGrads, ...bcGrads, residual]);
  }
}

// ---------------------------------------------------------------------------------------------
// snr_adam

/**
 * snr_adam (science.md §5): ‖m̂‖₂ / ‖sqrt(v̂) + ε‖₂ over all of Adam's parameters (weights and
 * biases), with m̂ = m / (1 − β1^t), v̂ = v / (1 − β2^t) from the optimizer's current moments (in the
 * trainer: the state before step k's update, t = k). Null when t = 0: no update has been made, the
 * moments are zero and m̂, v̂ undefined. Squared norms are reduced in float32 on the backend.
 */
export function adamSnr(adam: Adam): number | null {
  const t = adam.t;
  if (t === 0) return null;
  const c1 = 1 / (1 - Math.pow(adam.beta1, t));
  const c2 = 1 / (1 - Math.pow(adam.beta2, t));
  const sums = tf.tidy(() => {
    const m2 = adam.m.map((m) => tf.sum(tf.square(m)));
    const d2 = adam.v.map((v) => tf.sum(tf.square(tf.add(tf.sqrt(tf.mul(v, c2)), adam.epsilon))));
    return tf.stack([tf.addN(m2), tf.addN(d2)]);
  });
  const [m2, d2] = sums.dataSync() as Float32Array;
  sums.dispose();
  return (c1 * Math.sqrt(m2!)) / Math.sqrt(d2!);
}

// ---------------------------------------------------------------------------------------------
// res_homogeneity

/** Cells per axis of the res_homogeneity grid (science.md §5: 10 × 10). */
export const RES_GRID_CELLS = 10;

/**
 * Grid cell of every point for res_homogeneity: the 2-D domain [lo0, hi0] × [lo1, hi1] (for x,t
 * problems x × t) cut into `cells` × `cells` equal cells; point (p0, p1) is in cell
 * k = i0 · cells + i1 with i_a = clamp(floor((p_a − lo_a) / (hi_a − lo_a) · cells), 0, cells − 1)
 * (so the upper edge belongs to the last cell; points outside the domain are clamped to the border).
 * @param points row-major [n, 2]; @returns Int32Array [n] of cell ids in 0 .. cells² − 1, or null when
 *   the domain is not 2-D (res_homogeneity is then null).
 */
export function gridCells(points: ArrayLike<number>, n: number, domain: ReadonlyArray<readonly [number, number]>, cells = RES_GRID_CELLS): Int32Array | null {
  if (domain.length !== 2) return null;
  const out = new Int32Array(n);
  const idx = (v: number, [lo, hi]: readonly [number, number]) => Math.min(cells - 1, Math.max(0, Math.floor(((v - lo) / (hi - lo)) * cells)));
  for (let i = 0; i < n; i++) out[i] = idx(points[2 * i]!, domain[0]!) * cells + idx(points[2 * i + 1]!, domain[1]!);
  return out;
}

/**
 * res_homogeneity φ_R (science.md §5): c_k = mean |r_i| over the points i in cell k, cells without a
 * point skipped; φ_R = mean_k c_k / sqrt(mean_k c_k²), in (0, 1], 1 = uniform. λ does not enter (r is
 * the plain PDE residual, the same r as in the loss). Float64. Returns 1 when every c_k is 0 (uniform,
 * and the limit of φ_R), null when no point is given.
 * @param r residuals [n]; @param cellOf cell id of each point (`gridCells`); @param cellCount number of cells.
 */
export function residualHomogeneity(r: ArrayLike<number>, cellOf: ArrayLike<number>, cellCount = RES_GRID_CELLS * RES_GRID_CELLS): number | null {
  const sum = new Float64Array(cellCount);
  const count = new Int32Array(cellCount);
  for (let i = 0; i < r.length; i++) {
    const k = cellOf[i]!;
    sum[k] += Math.abs(r[i]!);
    count[k]++;
  }
  let s1 = 0;
  let s2 = 0;
  let m = 0;
  for (let k = 0; k < cellCount; k++) {
    if (count[k] === 0) continue;
    const c = sum[k]! / count[k]!;
    s1 += c;
    s2 += c * c;
    m++;
  }
  if (m === 0) return null;
  if (s2 === 0) return 1;
  return s1 / m / Math.sqrt(s2 / m);
}

// ---------------------------------------------------------------------------------------------
// saturation_layers, entropy_layers

/** Bins per unit on average for the activation binning (science.md §5: 30). */
export const ACTIVATION_MEAN_BINS = 30;

/** One hidden layer's activations binned as in science.md §5 (see `binActivations`). */
export interface ActivationBins {
  /** Samples (rows) and units (columns). */
  n: number;
  units: number;
  /** The common bin width w = Σ_u range_u / (units · meanBins); 0 when every unit is constant. */
  width: number;
  /** Per unit: its minimum over the samples (left edge of its bin 0). */
  min: Float64Array;
  /** Per unit: its number of bins, max(1, ceil(range_u / w − 1e-9)). */
  nbins: Int32Array;
  /** Bin index of every activation, row-major [n, units], in 0 .. nbins[u] − 1. */
  bin: Int32Array;
}

/**
 * Bins the activations of one layer (science.md §5). Per unit u: range_u = max_u − min_u over the
 * n samples; common width w = Σ_u range_u / (units · meanBins) (meanBins = 30: 30 bins per unit on
 * average). Unit u has nbins_u = max(1, ceil(range_u / w − 1e-9)) bins of width w starting at min_u,
 * the last one closed at max_u (it is [min_u + (nbins_u − 1)·w, max_u], at most w wide; the 1e-9
 * keeps a range that is a whole number of widths from gaining an empty extra bin through rounding);
 * activation a goes to bin min(nbins_u − 1, floor((a − min_u) / w)). A constant unit (range 0), and
 * every unit when w = 0, has the single bin 0. Float64 arithmetic.
 * @param acts row-major [n, units] (sample i's activations at i·units ..).
 */
export function binActivations(acts: ArrayLike<number>, n: number, units: number, meanBins = ACTIVATION_MEAN_BINS): ActivationBins {
  const min = new Float64Array(units).fill(Infinity);
  const max = new Float64Array(units).fill(-Infinity);
  for (let i = 0; i < n; i++) {
    const o = i * units;
    for (let u = 0; u < units; u++) {
      const a = acts[o + u]!;
      if (a < min[u]!) min[u] = a;
      if (a > max[u]!) max[u] = a;
    }
  }
  let total = 0;
  for (let u = 0; u < units; u++) total += max[u]! - min[u]!;
  const w = n > 0 ? total / (units * meanBins) : 0;
  const nbins = new Int32Array(units).fill(1);
  if (w > 0) for (let u = 0; u < units; u++) nbins[u] = Math.max(1, Math.ceil((max[u]! - min[u]!) / w - 1e-9));
  const bin = new Int32Array(n * units);
  if (w > 0) {
    for (let i = 0; i < n; i++) {
      const o = i * units;
      for (let u = 0; u < units; u++) {
        const b = Math.floor((acts[o + u]! - min[u]!) / w);
        const last = nbins[u]! - 1;
        bin[o + u] = b < last ? b : last;
      }
    }
  }
  return { n, units, width: w, min, nbins, bin };
}

/**
 * saturation (science.md §5) of a binned layer: per unit, 100 × (samples in its lowest or highest
 * bin) / n — a sample counted once; a unit with a single bin is 100 % saturated —, averaged over the
 * layer's units. In [0, 100].
 */
export function binnedSaturation(b: ActivationBins): number {
  const { n, units, nbins, bin } = b;
  if (n === 0 || units === 0) return NaN;
  const edge = new Float64Array(units);
  for (let i = 0; i < n; i++) {
    const o = i * units;
    for (let u = 0; u < units; u++) {
      const k = bin[o + u]!;
      if (k === 0 || k === nbins[u]! - 1) edge[u]++;
    }
  }
  let s = 0;
  for (let u = 0; u < units; u++) s += edge[u]! / n;
  return (100 * s) / units;
}

/**
 * entropy (science.md §5) of a binned layer: H(T) = −Σ_t p_t log₂ p_t over the distinct binned
 * activation vectors t (a sample's tuple of bin indices across the layer's units), p_t = (samples
 * with vector t) / n; in bits, in [0, log₂ n]. Exact: the vectors are grouped through an
 * open-addressing hash table on a 32-bit hash of each vector, and equal hashes are confirmed by
 * comparing the vectors element by element.
 */
export function binnedEntropy(b: ActivationBins): number {
  const { n, units, bin } = b;
  if (n === 0) return NaN;
  let cap = 2;
  while (cap < 2 * n) cap *= 2;
  const mask = cap - 1;
  const slotRow = new Int32Array(cap).fill(-1);
  const slotHash = new Int32Array(cap);
  const slotCount = new Int32Array(cap);
  let distinct = 0;
  for (let i = 0; i < n; i++) {
    const o = i * units;
    // murmur3-style mix of the row's bin indices.
    let h = units | 0;
    for (let u = 0; u < units; u++) {
      let k = Math.imul(bin[o + u]!, 0xcc9e2d51);
      k = (k << 15) | (k >>> 17);
      h ^= Math.imul(k, 0x1b873593);
      h = (h << 13) | (h >>> 19);
      h = (Math.imul(h, 5) + 0xe6546b64) | 0;
    }
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    let at = h & mask;
    for (;;) {
      const r = slotRow[at]!;
      if (r < 0) {
        slotRow[at] = i;
        slotHash[at] = h;
        slotCount[at] = 1;
        distinct++;
        break;
      }
      if (slotHash[at] === h) {
        const p = r * units;
        let u = 0;
        while (u < units && bin[p + u] === bin[o + u]) u++;
        if (u === units) {
          slotCount[at]!++;
          break;
        }
      }
      at = (at + 1) & mask;
    }
  }
  if (distinct === n) return Math.log2(n);
  let h = 0;
  for (let j = 0; j < cap; j++) {
    const c = slotCount[j]!;
    if (c === 0) continue;
    const p = c / n;
    h -= p * Math.log2(p);
  }
  return h;
}

/** saturation and entropy of one layer's activations [n, units] (`binActivations` with 30 bins per unit on average). */
export function activationStats(acts: ArrayLike<number>, n: number, units: number, meanBins = ACTIVATION_MEAN_BINS): { saturation: number; entropy: number } {
  const b = binActivations(acts, n, units, meanBins);
  return { saturation: binnedSaturation(b), entropy: binnedEntropy(b) };
}

/**
 * Runs the value-only forward pass of an MLP with shared weights ([in, out]) over x [1, n, d] and
 * hands each hidden layer's tanh activations to `fn` as a Float32Array [n, units] (input side first),
 * one layer at a time: at most two layers' activations live on the backend at once, and the array
 * handed to `fn` is only valid during the call.
 */
export function forEachHiddenActivation(params: MlpParams, x: tf.Tensor, fn: (layer: number, acts: Float32Array, units: number) => void): void {
  const { weights, biases } = params;
  if (x.rank !== 3 || x.shape[0] !== 1) throw new Error(`forEachHiddenActivation: x must be [1, n, d], got [${x.shape}]`);
  if (weights.some((w) => w.rank !== 2)) throw new Error('forEachHiddenActivation: weights must be shared ([in, out])');
  const [, n, d] = x.shape as [number, number, number];
  let a = tf.reshape(x, [n, d]);
  try {
    for (let l = 0; l < weights.length - 1; l++) {
      const prev = a;
      a = tf.tidy(() => tf.tanh(tf.add(tf.matMul(prev as tf.Tensor2D, weights[l]! as tf.Tensor2D), biases[l]!)));
      prev.dispose();
      fn(l, a.dataSync() as Float32Array, a.shape[1]!);
    }
  } finally {
    a.dispose();
  }
}

/** saturation_layers and entropy_layers (science.md §5) of an MLP over the points x [1, n, d]. */
export function hiddenLayerStats(params: MlpParams, x: tf.Tensor, meanBins = ACTIVATION_MEAN_BINS): { saturation_layers: number[]; entropy_layers: number[] } {
  const saturation_layers: number[] = [];
  const entropy_layers: number[] = [];
  forEachHiddenActivation(params, x, (_l, acts, units) => {
    const s = activationStats(acts, acts.length / units, units, meanBins);
    saturation_layers.push(s.saturation);
    entropy_layers.push(s.entropy);
  });
  return { saturation_layers, entropy_layers };
}

// ---------------------------------------------------------------------------------------------
// lambda_mean, lambda_max

/**
 * lambda_mean, lambda_max: mean and max of the per-point weights λ over all N collocation points,
 * in float64 (λ as used in the current step's loss). For λ ≡ 1 (vanilla, `lambda` null): 1 and 1.
 */
export function lambdaStats(lambda: tf.Tensor | null): { lambda_mean: number; lambda_max: number } {
  if (lambda === null) return { lambda_mean: 1, lambda_max: 1 };
  const v = lambda.dataSync();
  let s = 0;
  let mx = -Infinity;
  for (let i = 0; i < v.length; i++) {
    const x = v[i]!;
    s += x;
    if (x > mx) mx = x;
  }
  return { lambda_mean: s / v.length, lambda_max: mx };
}
