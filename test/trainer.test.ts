import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { Worker } from 'node:worker_threads';
import type { MetricRow } from '../schemas/metrics.js';
import {
  Helmholtz2d, Mlp, Poisson2d, Rng, evalDiagnostics, evalSnr, initBackend, lossAndGrads, makeProblem, mlpForward, mlpShapes, setupTrial,
  staircaseLr, trainTrial, xavierInit, type TrainSummary,
} from '../worker/trainer/index.js';
import { testBackend, tinyConfig } from './trainer-helpers.js';

let backend: Awaited<ReturnType<typeof testBackend>>;
test.before(async () => {
  backend = await testBackend();
});

/** Plain float64 JS forward of the same MLP (for finite differences). */
function jsMlp(weights: Float64Array[], shapes: Array<[number, number]>, x: number, y: number): number {
  let a = [x, y];
  shapes.forEach(([fin, fout], l) => {
    const z = new Array<number>(fout).fill(0); // biases are 0
    for (let j = 0; j < fout; j++) for (let i = 0; i < fin; i++) z[j] += a[i]! * weights[l]![i * fout + j]!;
    a = l < shapes.length - 1 ? z.map(Math.tanh) : z;
  });
  return a[0]!;
}

test('forward derivatives u_x, u_y, u_xx, u_yy = central finite differences (float64)', (t) => {
  const shapes = mlpShapes(2, 5, 3);
  const init = xavierInit(shapes, new Rng(3, 'fd'));
  const net = new Mlp(shapes, init);
  const w64 = init.weights.map((w) => Float64Array.from(w));
  const pts = [[0.3, -0.7], [-0.2, 0.1], [0.9, 0.5], [-0.6, -0.4]];
  const names = ['u', 'u_x', 'u_y', 'u_xx', 'u_yy'];
  const f: Record<string, Float64Array> = {};
  {
    const x = tf.tensor3d(Float32Array.from(pts.flat()), [1, pts.length, 2]);
    const out = mlpForward(net.params(), x, { first: [0, 1], second: [0, 1] }, ['x', 'y']);
    for (const k of names) f[k] = Float64Array.from(out[k]!.dataSync());
    tf.dispose([x, ...Object.values(out)]);
  }
  const h1 = 1e-5, h2 = 1e-3;
  pts.forEach(([x, y], i) => {
    const u = (dx: number, dy: number) => jsMlp(w64, shapes, x! + dx, y! + dy);
    const want = {
      u: u(0, 0),
      u_x: (u(h1, 0) - u(-h1, 0)) / (2 * h1),
      u_y: (u(0, h1) - u(0, -h1)) / (2 * h1),
      u_xx: (u(h2, 0) - 2 * u(0, 0) + u(-h2, 0)) / (h2 * h2),
      u_yy: (u(0, h2) - 2 * u(0, 0) + u(0, -h2)) / (h2 * h2),
    };
    for (const [k, v] of Object.entries(want)) {
      const got = f[k]![i]!;
      t.true(Math.abs(got - v) < 1e-4 * (1 + Math.abs(v)), `${k} at ${i}: ${got} vs ${v}`);
    }
  });
  // Per-group weight copies give the same result as shared weights.
  let g: Float64Array;
  {
    const x = tf.tensor3d(Float32Array.from([...pts.flat(), ...pts.flat()]), [2, pts.length, 2]);
    const ws = net.weights.map((w) => tf.tile(tf.expandDims(w, 0), [2, 1, 1]));
    const out = mlpForward({ weights: ws, biases: net.biases }, x, { first: [0, 1], second: [0, 1] }, ['x', 'y']);
    g = Float64Array.from(out.u_xx!.dataSync());
    tf.dispose([x, ...ws, ...Object.values(out)]);
  }
  for (let i = 0; i < pts.length; i++) {
    t.true(Math.abs(g[i]! - f.u_xx![i]!) < 1e-5 && Math.abs(g[pts.length + i]! - f.u_xx![i]!) < 1e-5);
  }
  net.dispose();
});

function exactResidual(p: Helmholtz2d | Poisson2d, a1: number, a2: number) {
  const pts = p.collocation(200, new Rng(1, 'res'));
  const n = 200;
  const u = p.reference(pts, n);
  const q = p.forcing(pts, n);
  const uxx = new Float64Array(n), uyy = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    uxx[i] = -((a1 * Math.PI) ** 2) * u[i]!;
    uyy[i] = -((a2 * Math.PI) ** 2) * u[i]!;
  }
  const T = (a: Float64Array) => tf.tensor2d(Float32Array.from(a), [1, n]);
  const r = tf.tidy(() => p.residual({ u: T(u), u_xx: T(uxx), u_yy: T(uyy) }, T(q)).dataSync());
  return { maxR: Math.max(...Array.from(r, Math.abs)), maxQ: Math.max(...Array.from(q, Math.abs)) };
}

test('helmholtz2d: residual of u* is ~0 (q correct)', (t) => {
  for (const [a1, a2, k] of [[1, 4, 1], [6, 6, 1], [1, 1, 3]] as const) {
    const p = new Helmholtz2d(a1, a2, k);
    const { maxR, maxQ } = exactResidual(p, a1, a2);
    t.true(maxR < 1e-5 * maxQ, `a=(${a1},${a2}) k=${k}: max|r| = ${maxR}, max|q| = ${maxQ}`);
  }
  t.is(makeProblem({ name: 'helmholtz2d', a1: 1, a2: 4, k: 1, n_collocation: 4, n_boundary: 1, w_bc: 1, eval_grid: 2 }).name, 'helmholtz2d');
});

test('poisson2d: residual of u* is ~0; boundary points on the edges with g = 0 and u* = 0 there', (t) => {
  const p = new Poisson2d();
  const { maxR, maxQ } = exactResidual(p, 1, 1);
  t.true(maxR < 1e-5 * maxQ, `max|r| = ${maxR}`);
  const bc = p.boundary(5);
  t.is(bc.count, 20);
  const ustar = p.reference(bc.points, bc.count);
  for (let j = 0; j < bc.count; j++) {
    const [x, y] = [bc.points[2 * j]!, bc.points[2 * j + 1]!];
    t.true(Math.abs(x) === 1 || Math.abs(y) === 1);
    t.is(bc.values[j], 0);
    t.true(Math.abs(ustar[j]!) < 1e-12);
  }
  const grid = p.evalGrid(3);
  t.is(grid.count, 9);
  t.deepEqual(Array.from(grid.points.subarray(0, 6)), [-1, -1, -1, 0, -1, 1]);
});

test('Latin hypercube: one point per stratum per axis, in [-1, 1]²', (t) => {
  const p = new Poisson2d();
  const n = 50;
  const pts = p.collocation(n, new Rng(9, 'collocation'));
  for (let j = 0; j < 2; j++) {
    const strata = new Set<number>();
    for (let i = 0; i < n; i++) strata.add(Math.floor(((pts[2 * i + j]! + 1) / 2) * n));
    t.is(strata.size, n);
  }
});

test('staircase lr', (t) => {
  t.is(staircaseLr(1e-3, 0.9, 5000, 4999), 1e-3);
  t.true(Math.abs(staircaseLr(1e-3, 0.9, 5000, 10000) - 1e-3 * 0.81) < 1e-15);
});

async function run(cfg = tinyConfig(), opts: { flushRows?: number; divergence?: { factor: number; rows: number } } = {}) {
  const rows: MetricRow[] = [];
  const chunks: number[] = [];
  const tensors: number[] = [];
  const summary = await trainTrial(cfg, {
    onRows: (r) => {
      rows.push(...r);
      chunks.push(r.length);
      tensors.push(tf.memory().numTensors);
    },
  }, { backend, ...opts });
  return { rows, chunks, tensors, summary };
}

const strip = (rows: MetricRow[]) => rows.map(({ wall_seconds: _w, ...r }) => r);

test.serial('reproducible: two runs of the same config give identical rows; no tensor leak', async (t) => {
  const cfg = tinyConfig({ strategy: { name: 'rba', eta: 0.01, gamma: 0.99 }, train: { steps: 31 } });
  const before = tf.memory().numTensors;
  const a = await run(cfg, { flushRows: 1 });
  const b = await run(cfg);
  t.is(tf.memory().numTensors, before, 'all tensors disposed after training');
  t.deepEqual(strip(a.rows), strip(b.rows));
  t.true(new Set(a.tensors).size === 1, `tensor count flat over steps: ${a.tensors.join(',')}`);
  // rows at k % 5 == 0 and the last step; rel_l2 at k % 10 == 0 and last; snr likewise.
  t.deepEqual(a.rows.map((r) => r.step), [0, 5, 10, 15, 20, 25, 30]);
  t.deepEqual(a.rows.map((r) => r.rel_l2 !== null), [true, false, true, false, true, false, true]);
  t.deepEqual(a.rows.map((r) => r.snr !== null), [true, false, true, false, true, false, true]);
  t.deepEqual(a.rows.map((r) => r.lr), [0, 5, 10, 15, 20, 25, 30].map((k) => staircaseLr(1e-2, 0.9, 10, k)));
  for (const r of a.rows) {
    t.true(Math.abs(r.loss - (r.loss_residual + r.loss_boundary)) < 1e-5 * r.loss);
    if (r.snr !== null) t.is(r.snr_layers!.length, 3);
    // The other diagnostic columns share snr's cadence (snr_adam: not at step 0, Adam's t = 0).
    const diag = r.snr !== null;
    t.is(r.snr_adam !== null, diag && r.step > 0, `snr_adam at ${r.step}`);
    for (const v of [r.res_homogeneity, r.saturation_layers, r.entropy_layers, r.lambda_mean, r.lambda_max]) t.is(v !== null, diag);
    if (!diag) continue;
    t.true(r.res_homogeneity! > 0 && r.res_homogeneity! <= 1);
    t.is(r.saturation_layers!.length, 2, 'one per hidden layer');
    t.is(r.entropy_layers!.length, 2);
    for (const v of r.saturation_layers!) t.true(v >= 0 && v <= 100);
    for (const v of r.entropy_layers!) t.true(v >= 0 && v <= Math.log2(64) + 1e-12);
    t.true(r.lambda_max! > 0 && r.lambda_max! <= 1 && r.lambda_mean! <= r.lambda_max!);
    if (r.step > 0) t.true(r.snr_adam! > 0 && Number.isFinite(r.snr_adam!));
  }
  t.is(a.summary.steps_done, 31);
  t.false(a.summary.diverged);
  t.is(a.summary.backend, backend);
  t.is(a.summary.final_rel_l2, a.rows.at(-1)!.rel_l2);
  // RBA with λ⁰ = 0: the first residual loss uses λ¹ = η |r|/max|r|, small.
  t.true(a.rows[0]!.loss_residual < 1e-2 * a.rows[1]!.loss_residual * 1e4);
});

test('mini-batch run (rba) and a different seed give different, finite rows; shouldStop stops', async (t) => {
  const cfg = tinyConfig({ train: { batch_size: 16, steps: 20 }, strategy: { name: 'rba', eta: 1e-3, gamma: 0.999 } });
  const a = await run(cfg);
  const b = await run({ ...cfg, seed: 8 });
  t.true(a.rows.every((r) => Number.isFinite(r.loss)));
  t.notDeepEqual(strip(a.rows), strip(b.rows));
  let calls = 0;
  const s: TrainSummary = await trainTrial(cfg, { onRows: () => {}, shouldStop: () => ++calls > 7 }, { backend });
  t.is(s.steps_done, 7);
  t.true(s.stopped);
});

test('loss decreases on a short helmholtz run', async (t) => {
  const cfg = tinyConfig({
    problem: { n_collocation: 256, n_boundary: 16 },
    model: { width: 16, depth: 2 },
    train: { steps: 300, lr: 1e-2, log_every: 50, eval_every: 50, lr_decay: { rate: 0.9, every: 1000 } },
    diagnostics: { every: 0 },
  });
  const { rows, summary } = await run(cfg);
  t.log(rows.map((r) => `${r.step}: loss ${r.loss.toExponential(3)} rel_l2 ${r.rel_l2?.toFixed(3)}`).join('\n'));
  t.true(rows.at(-1)!.loss < 0.2 * rows[0]!.loss, `loss ${rows[0]!.loss} → ${rows.at(-1)!.loss}`);
  t.true(rows.every((r) => r.snr === null && r.snr_adam === null && r.entropy_layers === null && r.lambda_mean === null));
});

test('divergence: a NaN loss is logged, training stops, diverged = true', async (t) => {
  // lr huge enough that tanh saturation is irrelevant: weights blow up to Inf/NaN quickly.
  const cfg = tinyConfig({ train: { lr: 1e30, steps: 200, log_every: 1 }, problem: { w_bc: 1e6 } });
  const { rows, summary } = await run(cfg);
  t.true(summary.diverged, JSON.stringify(rows.slice(-2)));
  t.false(Number.isFinite(rows.at(-1)!.loss));
  t.true(summary.steps_done < 200);
});

test('divergence: an exploding loss stops the trial after the configured run of logged rows', async (t) => {
  // Reference run: no early stop. Then the same run with a rule that is provably met on every row
  // (loss ≥ 0.5 × running minimum always holds): it must stop after exactly 3 logged rows.
  const cfg = tinyConfig({ train: { steps: 30, log_every: 5 } });
  const free = await run(cfg);
  t.false(free.summary.diverged);
  t.is(free.summary.steps_done, 30);
  const stopped = await run(cfg, { divergence: { factor: 0.5, rows: 3 } });
  t.true(stopped.summary.diverged);
  t.deepEqual(stopped.rows.map((r) => r.step), [0, 5, 10]);
  t.is(stopped.summary.steps_done, 10);
  t.deepEqual(stopped.rows.map((r) => r.loss), free.rows.slice(0, 3).map((r) => r.loss));
  // A real blow-up (lr 10: the loss climbs ~1,500× before tanh saturation caps it) with factor 1e3:
  // it stops on the third consecutive logged row at ≥ 1e3 × the running minimum, and not before.
  const boom = await run(tinyConfig({ train: { lr: 10, steps: 300, log_every: 5 } }), { divergence: { factor: 1e3, rows: 3 } });
  const losses = boom.rows.map((r) => r.loss);
  t.true(boom.summary.diverged, losses.map((l) => l.toExponential(2)).join(' '));
  const runMin = (i: number) => Math.min(...losses.slice(0, i + 1));
  const above = losses.map((l, i) => l >= 1e3 * runMin(i));
  t.deepEqual(above.slice(-3), [true, true, true]);
  t.false(above.slice(0, -3).some((a, i) => a && above[i + 1] && above[i + 2]), 'no earlier run of 3');
  t.true(boom.summary.steps_done < 300);
});

test('tensorflow backend: clear error when tfjs-node is not installed', async (t) => {
  let ok = false;
  try {
    await import('@tensorflow/tfjs-node' as string);
    ok = true;
  } catch {
    /* not installed */
  }
  if (ok) return t.pass('tfjs-node installed here');
  await t.throwsAsync(initBackend('tensorflow'), { message: /tfjs-node/ });
  t.is(tf.getBackend(), backend, 'active backend unchanged');
});

test('wasm backend works inside a worker_threads thread', async (t) => {
  const url = new URL('../worker/trainer/index.js', import.meta.url).href;
  const code = `
    const { parentPort } = require('node:worker_threads');
    import(${JSON.stringify(url)}).then(async (T) => {
      const b = await T.initBackend('wasm');
      const rows = [];
      const cfg = ${JSON.stringify(tinyConfig({ train: { steps: 6 } }))};
      const s = await T.trainTrial(cfg, { onRows: (r) => rows.push(...r) });
      parentPort.postMessage({ b, s, rows: rows.length, loss0: rows[0].loss });
    }).catch((e) => parentPort.postMessage({ error: String(e && e.stack || e) }));`;
  const msg = await new Promise<Record<string, unknown>>((resolve, reject) => {
    const w = new Worker(code, { eval: true });
    w.once('message', (m) => {
      resolve(m);
      void w.terminate();
    });
    w.once('error', reject);
  });
  t.falsy(msg.error, String(msg.error));
  t.is(msg.b, 'wasm');
  t.is((msg.s as TrainSummary).steps_done, 6);
  if (backend === 'wasm') {
    const { rows } = await run(tinyConfig({ train: { steps: 6 } }));
    t.is(msg.loss0, rows[0]!.loss, 'same numbers in the thread as in the main thread');
  }
});

test.serial('timing (reported, not asserted): ms/step and snr cost', async (t) => {
  const measure = (cfg: ReturnType<typeof tinyConfig>, steps: number) => {
    const s = setupTrial(cfg);
    try {
      const step = () => {
        const st = lossAndGrads(s, null);
        s.adam.step(st.grads, 1e-3);
        tf.dispose([st.loss, st.lossResidual, st.lossBoundary, ...st.grads]);
      };
      for (let i = 0; i < 3; i++) step();
      let t0 = performance.now();
      for (let i = 0; i < steps; i++) step();
      const stepMs = (performance.now() - t0) / steps;
      // snr alone and all diagnostics, interleaved (the machine is shared): fastest of a few runs each.
      evalSnr(s);
      evalDiagnostics(s);
      let snrMs = Infinity;
      let diagMs = Infinity;
      const nsnr = Math.max(3, Math.floor(steps / 4));
      for (let i = 0; i < nsnr; i++) {
        t0 = performance.now();
        evalSnr(s);
        snrMs = Math.min(snrMs, performance.now() - t0);
        t0 = performance.now();
        evalDiagnostics(s);
        diagMs = Math.min(diagMs, performance.now() - t0);
      }
      return { stepMs, snrMs, diagMs };
    } finally {
      s.dispose();
    }
  };
  const small = measure(
    tinyConfig({ problem: { n_collocation: 512, n_boundary: 100, eval_grid: 11 }, model: { width: 20, depth: 3 }, diagnostics: { every: 1, snr_batches: 8 } }),
    30,
  );
  t.log(`[${backend}] helmholtz2d 3×20, N=512 full batch, 400 bc pts: ${small.stepMs.toFixed(1)} ms/step; snr B=8: ${small.snrMs.toFixed(1)} ms (${(small.snrMs / small.stepMs).toFixed(2)}× a step)`);
  const big = measure(
    tinyConfig({ problem: { n_collocation: 2560, n_boundary: 100, eval_grid: 11 }, model: { width: 32, depth: 4 }, diagnostics: { every: 1, snr_batches: 10 } }),
    8,
  );
  t.log(`[${backend}] helmholtz2d 4×32, N=2560 full batch, 400 bc pts: ${big.stepMs.toFixed(1)} ms/step; snr B=10: ${big.snrMs.toFixed(1)} ms (${(big.snrMs / big.stepMs).toFixed(2)}× a step)`);
  for (const [name, m] of [['3×20, N=512', small], ['4×32, N=2560', big]] as const) {
    t.log(`[${backend}] ${name}: snr alone ${m.snrMs.toFixed(1)} ms, all diagnostics (evalDiagnostics) ${m.diagMs.toFixed(1)} ms: ${(m.diagMs - m.snrMs).toFixed(1)} ms extra (${((m.diagMs - m.snrMs) / m.stepMs).toFixed(2)}× a step; fastest runs)`);
  }
  t.pass();
});
