// Steady-state PINN training-step timing and per-kernel profile (issue 5). Run after `npm run build`:
//   node bench/train-step-profile.mjs [wasm|cpu] [poisson|helmholtz|quickstart] [--profile]
// poisson: poisson2d, 3×50 tanh, N = 1000, full batch, vanilla, SNR B = 100.
// quickstart: helmholtz2d a1 = 1, a2 = 4, 3×20, N = 512, full batch, vanilla, SNR B = 8 (sweeps/quickstart.yaml).
// helmholtz: helmholtz2d a1 = a2 = 1, 4×32, N = 2560, full batch, vanilla, SNR B = 10 (science.md §6 calibration).
// Times are the minimum over blocks of steps (robust to other load on the machine).
import * as tf from '@tensorflow/tfjs-core';
const T = await import(process.env.TRAINER ?? '../dist/worker/trainer/index.js');
const backend = process.argv[2] ?? 'wasm';
const which = process.argv[3] ?? 'poisson';
await T.initBackend(backend);
const train = { steps: 1000, lr: 1e-3, batch_size: 'full', lr_decay: { rate: 0.9, every: 5000 }, log_every: 100, eval_every: 100, checkpoint_every: 0 };
const cfg = which === 'quickstart'
  ? { problem: { name: 'helmholtz2d', a1: 1, a2: 4, k: 1, n_collocation: 512, n_boundary: 64, w_bc: 1, eval_grid: 101 }, model: { width: 20, depth: 3 }, train, strategy: { name: 'vanilla' }, diagnostics: { every: 1000000, snr_batches: 8 }, seed: 1 }
  : which === 'poisson'
  ? { problem: { name: 'poisson2d', n_collocation: 1000, n_boundary: 100, w_bc: 1, eval_grid: 101 }, model: { width: 50, depth: 3 }, train, strategy: { name: 'vanilla' }, diagnostics: { every: 1000000, snr_batches: 100 }, seed: 1 }
  : { problem: { name: 'helmholtz2d', a1: 1, a2: 1, k: 1, n_collocation: 2560, n_boundary: 100, w_bc: 1, eval_grid: 101 }, model: { width: 32, depth: 4 }, train, strategy: { name: 'vanilla' }, diagnostics: { every: 1000000, snr_batches: 10 }, seed: 1 };
const s = T.setupTrial(cfg);
function step() {
  const st = T.lossAndGrads(s, null);
  s.adam.step(st.grads, 1e-3);
  tf.dispose([st.loss, st.lossResidual, st.lossBoundary, ...st.grads]);
}
const minTime = (f, blocks, inner) => {
  let best = Infinity;
  for (let b = 0; b < blocks; b++) {
    const t = performance.now();
    for (let i = 0; i < inner; i++) f();
    s.net.weights[0].dataSync();
    best = Math.min(best, (performance.now() - t) / inner);
  }
  return best;
};
for (let i = 0; i < 10; i++) step();
const stepMs = minTime(step, 12, 10);
const snrMs = minTime(() => T.evalSnr(s), 8, 3);
console.log(`${backend} ${which}: step ${stepMs.toFixed(2)} ms; SNR (B = ${cfg.diagnostics.snr_batches}) ${snrMs.toFixed(2)} ms = ${(snrMs / stepMs).toFixed(2)}× a step; tensors ${tf.memory().numTensors}`);
if (process.argv.includes('--profile')) {
  for (const [name, f] of [['step', step], ['snr', () => T.evalSnr(s)]]) {
    const prof = await tf.profile(() => { f(); });
    const agg = new Map();
    for (const k of prof.kernels) {
      const key = `${k.name} ${JSON.stringify(k.inputShapes.slice(0, 2))}`;
      const a = agg.get(key) ?? { n: 0, ms: 0 };
      a.n++;
      a.ms += typeof k.kernelTimeMs === 'number' ? k.kernelTimeMs : 0;
      agg.set(key, a);
    }
    console.log(`${name}: ${prof.kernels.length} kernels (nested ones counted inside custom ops too)`);
    for (const [key, a] of [...agg.entries()].sort((x, y) => y[1].ms - x[1].ms).slice(0, 20)) console.log(`  ${a.ms.toFixed(2).padStart(7)} ms  ×${a.n}  ${key}`);
  }
}
s.dispose();
