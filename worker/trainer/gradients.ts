/**
 * Gradient functions for the kernels the trainer differentiates through.
 *
 * @tensorflow/tfjs-core's Node entry point (tf-core.node.js) registers no gradients: the umbrella
 * @tensorflow/tfjs package does that, and it is not a dependency here. These are the tfjs-core
 * 4.22 gradient definitions (ported) for the kernels on the path from the parameters to the loss.
 * A gradient that is already registered (e.g. by tfjs-node loading the umbrella package on the same
 * tfjs-core instance) is left alone. Registration is idempotent and happens on import.
 */
import * as tf from '@tensorflow/tfjs-core';

type Saved = tf.Tensor[];
type Attrs = Record<string, unknown>;

/** The gradient `res` of a broadcast op's output (shape `outShape`) summed back to an input's `shape`. */
function reduceTo(res: tf.Tensor, shape: number[], outShape: number[]): tf.Tensor {
  const axes = tf.broadcast_util.getReductionAxes(shape, outShape);
  if (axes.length === 0 && tf.util.arraysEqual(res.shape, shape)) return res;
  return tf.reshape(axes.length > 0 ? tf.sum(res, axes) : res, shape);
}

function binary(kernelName: string, da: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor, db: (dy: tf.Tensor, a: tf.Tensor, b: tf.Tensor) => tf.Tensor): tf.GradConfig {
  return {
    kernelName,
    inputsToSave: ['a', 'b'],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: Saved) => {
      const d = dy as tf.Tensor;
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      const out = tf.broadcast_util.assertAndGetBroadcastShape(a.shape, b.shape);
      return { a: () => reduceTo(da(d, a, b), a.shape, out), b: () => reduceTo(db(d, a, b), b.shape, out) };
    },
  };
}

function normAxes(axis: unknown, rank: number): number[] {
  if (axis == null) return [...Array(rank).keys()];
  const arr = Array.isArray(axis) ? (axis as number[]) : [axis as number];
  return arr.map((a) => (a < 0 ? a + rank : a));
}

function expandReduced(dy: tf.Tensor, x: tf.Tensor, axis: unknown): tf.Tensor {
  const shape = x.shape.slice();
  for (const a of normAxes(axis, x.rank)) shape[a] = 1;
  return tf.mul(tf.reshape(dy, shape), tf.ones(x.shape));
}

const configs: tf.GradConfig[] = [
  // A clone (no copy: it shares dy's data) per input: handing the same tensor object to two inputs would
  // let the tape's gradient accumulation dispose it for one while the other still holds it (e.g. r = a + b
  // with a and b each also used elsewhere, as in a system of equations).
  binary('Add', (dy) => tf.clone(dy), (dy) => tf.clone(dy)),
  binary('Sub', (dy) => tf.clone(dy), (dy) => tf.neg(dy)),
  binary('Multiply', (dy, _a, b) => tf.mul(dy, b), (dy, a) => tf.mul(dy, a)),
  binary('RealDiv', (dy, _a, b) => tf.div(dy, b), (dy, a, b) => tf.neg(tf.div(tf.mul(dy, a), tf.square(b)))),
  {
    kernelName: 'Square',
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => tf.mul(dy as tf.Tensor, tf.mul(saved[0]!, 2)) }),
  },
  {
    kernelName: 'Tanh',
    outputsToSave: [true],
    gradFunc: (dy, saved) => ({ x: () => tf.mul(tf.sub(1, tf.square(saved[0]!)), dy as tf.Tensor) }),
  },
  {
    kernelName: 'Sqrt',
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => tf.div(dy as tf.Tensor, tf.mul(tf.sqrt(saved[0]!), 2)) }),
  },
  { kernelName: 'Neg', gradFunc: (dy) => ({ x: () => tf.neg(dy as tf.Tensor) }) },
  { kernelName: 'Identity', gradFunc: (dy) => ({ x: () => tf.clone(dy as tf.Tensor) }) },
  { kernelName: 'Cast', gradFunc: (dy) => ({ x: () => tf.clone(dy as tf.Tensor) }) },
  {
    kernelName: 'Abs',
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => tf.mul(dy as tf.Tensor, tf.step(saved[0]!, -1)) }),
  },
  {
    kernelName: 'BatchMatMul',
    inputsToSave: ['a', 'b'],
    gradFunc: (dyIn, saved, attrs) => {
      const dy = dyIn as tf.Tensor;
      const [a, b] = saved as [tf.Tensor, tf.Tensor];
      const { transposeA, transposeB } = attrs as { transposeA: boolean; transposeB: boolean };
      // Transposes are done explicitly (cheap for the small operand) instead of via matMul's
      // transpose flags: the wasm backend's transposed matmul path is several times slower.
      const T = (x: tf.Tensor) => tf.transpose(x, x.rank === 2 ? [1, 0] : [0, 2, 1]);
      const mm = (x: tf.Tensor, y: tf.Tensor, tx: boolean, ty: boolean) => tf.matMul(tx ? T(x) : x, ty ? T(y) : y);
      const reduceBatch = (g: tf.Tensor, like: tf.Tensor) => (g.rank > like.rank ? tf.sum(g, 0) : g);
      if (!transposeA && !transposeB) return { a: () => reduceBatch(mm(dy, b, false, true), a), b: () => reduceBatch(mm(a, dy, true, false), b) };
      if (!transposeA && transposeB) return { a: () => mm(dy, b, false, false), b: () => mm(dy, a, true, false) };
      if (transposeA && !transposeB) return { a: () => mm(b, dy, false, true), b: () => mm(a, dy, false, false) };
      return { a: () => mm(b, dy, true, true), b: () => mm(dy, a, true, true) };
    },
  },
  {
    kernelName: 'Reshape',
    inputsToSave: ['x'],
    gradFunc: (dy, saved) => ({ x: () => tf.reshape(dy as tf.Tensor, saved[0]!.shape) }),
  },
  {
    kernelName: 'ExpandDims',
    inputsToSave: ['input'],
    gradFunc: (dy, saved) => ({ input: () => tf.reshape(dy as tf.Tensor, saved[0]!.shape) }),
  },
  {
    kernelName: 'Slice',
    inputsToSave: ['x'],
    gradFunc: (dyIn, saved, attrs) => {
      const dy = dyIn as tf.Tensor;
      const x = saved[0]!;
      const { begin } = attrs as Attrs as { begin: number | number[] };
      const b = typeof begin === 'number' ? [begin, ...Array(x.rank - 1).fill(0)] : [...begin, ...Array(x.rank - begin.length).fill(0)];
      const paddings = x.shape.map((s, i) => [b[i]!, s - b[i]! - dy.shape[i]!] as [number, number]);
      return { x: () => tf.pad(dy, paddings) };
    },
  },
  {
    kernelName: 'Unpack',
    gradFunc: (dy, _saved, attrs) => ({ value: () => tf.stack(dy as tf.Tensor[], (attrs as Attrs as { axis: number }).axis) }),
  },
  {
    kernelName: 'Concat',
    saveAllInputs: true,
    gradFunc: (dyIn, saved, attrs) => {
      const dy = dyIn as tf.Tensor;
      const { axis } = attrs as { axis: number | number[] };
      const ax0 = Array.isArray(axis) ? axis[0]! : axis;
      const ax = ax0 < 0 ? ax0 + saved[0]!.rank : ax0;
      const parts = tf.split(dy, saved.map((t) => t.shape[ax]!), ax);
      return parts.map((t) => () => t) as unknown as { [k: string]: () => tf.Tensor };
    },
  },
  {
    kernelName: 'Sum',
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => ({ x: () => expandReduced(dy as tf.Tensor, saved[0]!, (attrs as Attrs).axis) }),
  },
  {
    kernelName: 'Mean',
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => ({
      x: () => {
        const x = saved[0]!;
        const axes = normAxes((attrs as Attrs).axis, x.rank);
        const count = axes.reduce((p, a) => p * x.shape[a]!, 1);
        return tf.div(expandReduced(dy as tf.Tensor, x, axes), count);
      },
    }),
  },
];

let registered = false;

/** Register the trainer's gradient functions on the tfjs-core engine (once; existing ones kept). */
export function ensureGradients(): void {
  if (registered) return;
  registered = true;
  for (const c of configs) if (tf.getGradient(c.kernelName) == null) tf.registerGradient(c);
}

ensureGradients();
