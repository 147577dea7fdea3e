/**
 * The general forward pass of an MLP with K ≥ 1 outputs and its input derivatives (science.md §2), for
 * systems of equations (problem-api.ts `DefinedProblem.isSystem`). Plain tfjs operations, differentiable
 * by tfjs autodiff with respect to the weights and biases; slower than network.ts's fused single-output
 * path, which stays the path of single-output problems.
 *
 * Forward propagation of input derivatives through layer z = a W + b, a' = tanh z (science.md §2):
 *   a'_x = s1 ⊙ z_x,  a'_xx = s1 ⊙ z_xx + s2 ⊙ z_x²,  s1 = 1 − a'²,  s2 = −2 a' s1;
 * the output layer is linear (z_x, z_xx pass through). At the input, x_{,i} = e_i and x_{,ii} = 0.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { MlpParams } from './network.js';
import type { DerivSpec, Fields } from './problems.js';

/**
 * The fields of every output: `<o>` [G, n] (the value of output o), `<o>_<name>` for the first
 * derivatives in `derivs.first` and `<o>_<name><name>` for the diagonal second derivatives in
 * `derivs.second`, for each output name o of `outputs` (the network's output columns, in order).
 * @param params shared weights [in, out] and biases [out] (per-group weights are not supported here).
 * @param x points [G, n, d]; `names` the input names (d of them).
 * @throws Error when the weights are per group ([G, in, out]), or the last layer has not `outputs.length` columns.
 */
export function systemForward(params: MlpParams, x: tf.Tensor, derivs: DerivSpec, names: readonly string[], outputs: readonly string[]): Fields {
  const { weights, biases } = params;
  if (weights.some((w) => w.rank !== 2)) throw new Error('systemForward: weights must be shared ([in, out])');
  const K = weights[weights.length - 1]!.shape[1]!;
  if (K !== outputs.length) throw new Error(`systemForward: the network has ${K} output column(s), the problem ${outputs.length} outputs (${outputs.join(', ')})`);
  return tf.tidy(() => {
    const [G, n, d] = x.shape as [number, number, number];
    const R = G * n;
    const firstIdx = [...derivs.first];
    const secondIdx = [...derivs.second];
    for (const i of secondIdx) if (!firstIdx.includes(i)) throw new Error(`systemForward: derivs.second ${i} needs derivs.first ${i}`);
    let a = tf.reshape(x, [R, d]);
    // x_{,i} = e_i: [R, d] one-hot rows; x_{,ii} = 0.
    let da = firstIdx.map((i) => tf.tile(tf.oneHot(tf.tensor1d([i], 'int32'), d), [R, 1]));
    let dda = secondIdx.map(() => tf.zeros([R, d]));
    const L = weights.length;
    for (let l = 0; l < L; l++) {
      const W = weights[l]! as tf.Tensor2D;
      const z = tf.add(tf.matMul(a as tf.Tensor2D, W), biases[l]!);
      const zd = da.map((t) => tf.matMul(t as tf.Tensor2D, W));
      const zdd = dda.map((t) => tf.matMul(t as tf.Tensor2D, W));
      if (l === L - 1) {
        a = z;
        da = zd;
        dda = zdd;
        break;
      }
      const an = tf.tanh(z);
      const s1 = tf.sub(1, tf.square(an));
      const s2 = tf.mul(tf.mul(an, -2), s1);
      da = zd.map((t) => tf.mul(s1, t));
      dda = secondIdx.map((i, j) => {
        const zi = zd[firstIdx.indexOf(i)]!;
        return tf.add(tf.mul(s1, zdd[j]!), tf.mul(s2, tf.square(zi)));
      });
      a = an;
    }
    const col = (t: tf.Tensor, k: number) => tf.reshape(tf.slice(t, [0, k], [R, 1]), [G, n]);
    const fields: Fields = {};
    outputs.forEach((o, k) => {
      fields[o] = col(a, k);
      firstIdx.forEach((i, j) => (fields[`${o}_${names[i]}`] = col(da[j]!, k)));
      secondIdx.forEach((i, j) => (fields[`${o}_${names[i]}${names[i]}`] = col(dda[j]!, k)));
    });
    return fields;
  });
}

/**
 * The outputs of the network at points x [G, n, d] → [G, n, K] (no derivatives), shared weights.
 */
export function systemValue(params: MlpParams, x: tf.Tensor): tf.Tensor {
  const { weights, biases } = params;
  return tf.tidy(() => {
    const [G, n, d] = x.shape as [number, number, number];
    let a = tf.reshape(x, [G * n, d]);
    for (let l = 0; l < weights.length; l++) {
      const z = tf.add(tf.matMul(a as tf.Tensor2D, weights[l]! as tf.Tensor2D), biases[l]!);
      a = l === weights.length - 1 ? z : tf.tanh(z);
    }
    return tf.reshape(a, [G, n, a.shape[1]!]);
  });
}

/** The selected output of each point: Σ_k y [G, m, K] ⊙ sel [1 or G, m, K] (one-hot) over K → [G, m]. */
export function selectOutputs(y: tf.Tensor, sel: tf.Tensor): tf.Tensor {
  return tf.tidy(() => tf.sum(tf.mul(y, sel), -1));
}

/** One-hot [1, m, K] float32 selector of output indices `output` [m] (for `selectOutputs`). */
export function outputSelector(output: Int32Array, K: number): tf.Tensor {
  return tf.tidy(() => tf.cast(tf.reshape(tf.oneHot(tf.tensor1d(output, 'int32'), K), [1, output.length, K]), 'float32'));
}
