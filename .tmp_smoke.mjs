import * as T from '/work/main/dist/worker/trainer/index.js';
import * as tf from '@tensorflow/tfjs-core';
const be = process.argv[2] ?? 'wasm';
await T.initBackend(be);
const cfg = (over={}) => ({
  problem: { name: 'helmholtz2d', a1: 1, a2: 1, k: 1, n_collocation: 512, n_boundary: 25, w_bc: 1, eval_grid: 51 },
  model: { width: 20, depth: 3 },
  train: { steps: 200, lr: 1e-3, batch_size: 'full', lr_decay: { rate: 0.9, every: 5000 }, log_every: 50, eval_every: 50 },
  strategy: { name: 'vanilla' }, diagnostics: { every: 100, snr_batches: 8 }, seed: 1, ...over });
const n0 = tf.memory().numTensors;
const s = await T.trainTrial(cfg(), { onRows: (r) => console.log(r) });
console.log(s, tf.memory().numTensors - n0);
const s2 = await T.trainTrial(cfg({ strategy: { name: 'rba', eta: 1e-3, gamma: 0.999 }, train: { steps: 200, lr: 1e-3, batch_size: 128, lr_decay: { rate: 0.9, every: 5000 }, log_every: 50, eval_every: 50 } }), { onRows: (r) => console.log(r.map(x=>[x.step,x.loss,x.rel_l2,x.snr])) });
console.log(s2, tf.memory().numTensors - n0);
