/**
 * Systems of equations and several outputs (docs/problems.md "Systems of equations"; worker/trainer/system.ts):
 * the two-output toy system examples/problems/poisson_pair.mjs (u_xx + u_yy = q, u + v = 0; u* = sin πx sin πy,
 * v* = −u*) trains; its loss terms and gradient SNR at one step equal a brute-force float64 recomputation
 * (a plain loop: forward with derivatives, residuals, losses, finite-difference gradients per SNR batch);
 * rba keeps λ per point per equation ([N, E] in checkpoints, each column normalised by its own equation's
 * max); checkpoints record the output names; a system trial resumes bit for bit; systems never fuse.
 * The lid-driven cavity module (examples/problems/cavity.mjs): its Ghia reference data (34 values per Re,
 * the cross-checked readings) and its residuals ≈ 0 on Kovasznay's exact Navier–Stokes flow.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import { loadSweep } from '../orchestrator/spec.js';
import { decodeSafetensors, encodeSafetensors } from '../schemas/safetensors.js';
import type { MetricRow } from '../schemas/metrics.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { definedProblem, ProblemError, type DefinedProblem, type ProblemDefinition } from '../worker/trainer/problem-api.js';
import { evalDiagnostics, evalSnr, lossAndGrads, setupTrial, trainTrial } from '../worker/trainer/train.js';
import { fusionKey, fusionLimit } from '../worker/trainer/fused.js';
import type { CheckpointData } from '../worker/trainer/checkpoint.js';
import { repoRoot, tempDir } from './helpers.js';
import { testBackend } from './trainer-helpers.js';

const PAIR = join(repoRoot, 'examples/problems/poisson_pair.mjs');
const CAVITY = join(repoRoot, 'examples/problems/cavity.mjs');

/** The trial configs of a spec around the poisson_pair module (JSON is YAML). */
async function pairConfigs(over: Record<string, unknown>): Promise<TrialConfig[]> {
  const dir = await tempDir('systems');
  const spec = {
    name: 'pair',
    problem: { module: PAIR, n_collocation: 256, n_boundary: 16, eval_grid: 21 },
    model: { width: 16, depth: 2 },
    train: { steps: 301, lr: 0.005, log_every: 50, eval_every: 50 },
    diagnostics: { every: 100, snr_batches: 4 },
    seed: 0,
    ...over,
  };
  const file = join(dir, 'spec.yaml');
  await writeFile(file, JSON.stringify(spec));
  return (await loadSweep(file)).trials.map((t) => t.config);
}

async function run(cfg: TrialConfig, resume?: Uint8Array): Promise<{ rows: MetricRow[]; ckpts: Map<number, CheckpointData> }> {
  const rows: MetricRow[] = [];
  const ckpts = new Map<number, CheckpointData>();
  await trainTrial(cfg, { onRows: (r) => void rows.push(...r), onCheckpoint: (c) => void ckpts.set(c.step, c) }, resume ? { resume: { checkpoint: resume } } : {});
  return { rows, ckpts };
}

test.before(async () => {
  await testBackend();
});

test('poisson_pair (2 outputs, 2 equations) trains: the loss falls 30× in 300 steps and rel_l2 (over u and v) falls', async (t) => {
  const [cfg] = await pairConfigs({ grid: { strategy: [{ name: 'vanilla' }] } });
  const { rows } = await run(cfg!);
  t.is(rows.length, 7);
  t.true(rows.every((r) => Number.isFinite(r.loss)));
  t.true(rows.at(-1)!.loss < rows[0]!.loss / 30, `loss ${rows[0]!.loss} → ${rows.at(-1)!.loss}`);
  t.true(rows.at(-1)!.rel_l2! < rows[0]!.rel_l2!, `rel_l2 ${rows[0]!.rel_l2} → ${rows.at(-1)!.rel_l2}`);
  t.true(rows.filter((r) => r.snr !== null).every((r) => Number.isFinite(r.snr!) && r.snr! > 0));
});

// ------------------------------------------------------------------------------------------------
// Brute force, float64, plain loops.

/** MLP with 2 inputs: outputs y [K], and per input i: y_{,i} [K], y_{,ii} [K] (forward derivatives, science.md §2). */
function forward64(W: Float64Array[], shapes: Array<[number, number]>, b: Float64Array[], pt: [number, number]): { y: number[]; d1: number[][]; d2: number[][] } {
  let a = [pt[0], pt[1]];
  let d1 = [[1, 0], [0, 1]]; // d1[i][unit]
  let d2 = [[0, 0], [0, 0]];
  for (let l = 0; l < shapes.length; l++) {
    const [fin, fout] = shapes[l]!;
    const z = new Array<number>(fout).fill(0);
    const zd = [0, 1].map(() => new Array<number>(fout).fill(0));
    const zdd = [0, 1].map(() => new Array<number>(fout).fill(0));
    for (let o = 0; o < fout; o++) {
      z[o] = b[l]![o]!;
      for (let k = 0; k < fin; k++) {
        const w = W[l]![k * fout + o]!;
        z[o] += a[k]! * w;
        for (let i = 0; i < 2; i++) {
          zd[i]![o] += d1[i]![k]! * w;
          zdd[i]![o] += d2[i]![k]! * w;
        }
      }
    }
    if (l === shapes.length - 1) return { y: z, d1: zd, d2: zdd };
    const an = z.map(Math.tanh);
    const s1 = an.map((v) => 1 - v * v);
    const s2 = an.map((v, o) => -2 * v * s1[o]!);
    d1 = zd.map((row) => row.map((v, o) => s1[o]! * v));
    d2 = zdd.map((row, i) => row.map((v, o) => s1[o]! * v + s2[o]! * zd[i]![o]! ** 2));
    a = an;
  }
  throw new Error('unreachable');
}

test('poisson_pair: loss terms and gradient SNR (snr, snr_layers, grad_order) and res_homogeneity at step 0 equal a float64 brute-force loop (rel. 1e-4)', async (t) => {
  const [cfg] = await pairConfigs({
    problem: { module: PAIR, n_collocation: 32, n_boundary: 4, eval_grid: 5, w_bc: 2 },
    model: { width: 5, depth: 2 },
    train: { steps: 2, lr: 0.005, log_every: 1, eval_every: 1 },
    diagnostics: { every: 1, snr_batches: 4 },
    grid: { strategy: [{ name: 'vanilla' }] },
  });
  const s = setupTrial(cfg!);
  try {
    const problem = s.problem as DefinedProblem;
    const shapes = s.net.shapes;
    const W = s.net.weights.map((w) => Float64Array.from(w.dataSync()));
    const B = s.net.biases.map((b) => Float64Array.from(b.dataSync()));
    const N = s.n;
    const q = problem.forcing(s.points, N);
    const bc = problem.boundary(4);
    const wBc = 2;
    const pt = (arr: Float64Array, j: number): [number, number] => [arr[2 * j]!, arr[2 * j + 1]!];
    /** Per point: [pde, couple] residuals (u = output 0, v = output 1). */
    const residuals = (Ws: Float64Array[], i: number): [number, number] => {
      const f = forward64(Ws, shapes, B, pt(s.points, i));
      return [f.d2[0]![0]! + f.d2[1]![0]! - q[i]!, f.y[0]! + f.y[1]!];
    };
    const bcTerm = (Ws: Float64Array[]) => {
      let acc = 0;
      for (let j = 0; j < bc.count; j++) acc += (forward64(Ws, shapes, B, pt(bc.points, j)).y[bc.output![j]!]! - bc.values[j]!) ** 2;
      return (wBc * acc) / bc.count;
    };
    const resTerm = (Ws: Float64Array[], idx: ArrayLike<number>) => {
      let a = 0;
      let c = 0;
      for (let j = 0; j < idx.length; j++) {
        const [r1, r2] = residuals(Ws, idx[j]!);
        a += r1 * r1;
        c += r2 * r2;
      }
      return a / idx.length + c / idx.length; // Σ_e mean_i r_e² (λ ≡ 1)
    };
    // Loss terms of the step (science.md §2).
    const all = Array.from({ length: N }, (_, i) => i);
    const step = lossAndGrads(s, null);
    const [loss, lres, lbc] = [step.loss, step.lossResidual, step.lossBoundary].map((x) => x.dataSync()[0]!);
    tf.dispose([step.loss, step.lossResidual, step.lossBoundary, ...step.grads]);
    let worst = 0;
    const rel = (a: number, b: number) => {
      const r = Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);
      worst = Math.max(worst, r);
      return r;
    };
    t.true(rel(lres, resTerm(W, all)) < 1e-4, `loss_residual ${lres} vs ${resTerm(W, all)}`);
    t.true(rel(lbc, bcTerm(W)) < 1e-4, `loss_boundary ${lbc} vs ${bcTerm(W)}`);
    t.true(rel(loss, resTerm(W, all) + bcTerm(W)) < 1e-4);

    // Per-batch gradients g_b of L_b = Σ_e mean_{i∈b} r_e² + the full boundary term, w.r.t. the weight
    // matrices only, by central differences (h = 1e-5) in float64 (science.md §5).
    const split = s.split!;
    const batches = Array.from({ length: split.B }, (_, b) => split.order.subarray(b * split.perBatch, (b + 1) * split.perBatch));
    const h = 1e-5;
    const grads: number[][][] = batches.map(() => W.map(() => [])); // [b][layer][entry]
    for (let l = 0; l < W.length; l++)
      for (let k = 0; k < W[l]!.length; k++) {
        const plus = W.map((w) => Float64Array.from(w));
        const minus = W.map((w) => Float64Array.from(w));
        plus[l]![k]! += h;
        minus[l]![k]! -= h;
        const bp = bcTerm(plus);
        const bm = bcTerm(minus);
        batches.forEach((idx, b) => grads[b]![l]!.push((resTerm(plus, idx) + bp - (resTerm(minus, idx) + bm)) / (2 * h)));
      }
    let mu2 = 0;
    let var2 = 0;
    let ms2 = 0;
    const layers: number[] = [];
    for (let l = 0; l < W.length; l++) {
      let lm = 0;
      let lv = 0;
      for (let k = 0; k < W[l]!.length; k++) {
        const g = grads.map((gb) => gb[l]![k]!);
        const mu = g.reduce((a, c) => a + c, 0) / g.length;
        const v = g.reduce((a, c) => a + (c - mu) ** 2, 0) / g.length; // ddof 0
        lm += mu * mu;
        lv += v;
        ms2 += g.reduce((a, c) => a + c * c, 0) / g.length;
      }
      mu2 += lm;
      var2 += lv;
      layers.push(Math.sqrt(lm / lv));
    }
    const snr = evalSnr(s);
    t.true(rel(snr.snr, Math.sqrt(mu2 / var2)) < 1e-4, `snr ${snr.snr} vs ${Math.sqrt(mu2 / var2)}`);
    t.true(rel(snr.grad_order, Math.sqrt(mu2 / ms2)) < 1e-4, `grad_order ${snr.grad_order} vs ${Math.sqrt(mu2 / ms2)}`);
    t.is(snr.snr_layers.length, 3);
    snr.snr_layers.forEach((v, l) => t.true(rel(v, layers[l]!) < 1e-4, `snr_layers[${l}] ${v} vs ${layers[l]}`));

    // res_homogeneity over |r_i| = sqrt(pde² + couple²) (the residual vector's norm), 10 × 10 cells.
    const cellSum = new Map<number, { s: number; c: number }>();
    for (let i = 0; i < N; i++) {
      const [r1, r2] = residuals(W, i);
      const [x, y] = pt(s.points, i);
      const cell = Math.min(9, Math.floor(((x + 1) / 2) * 10)) * 10 + Math.min(9, Math.floor(((y + 1) / 2) * 10));
      const e = cellSum.get(cell) ?? { s: 0, c: 0 };
      e.s += Math.hypot(r1, r2);
      e.c += 1;
      cellSum.set(cell, e);
    }
    const cs = [...cellSum.values()].map((e) => e.s / e.c);
    const phi = cs.reduce((a, c) => a + c, 0) / cs.length / Math.sqrt(cs.reduce((a, c) => a + c * c, 0) / cs.length);
    const diag = evalDiagnostics(s);
    t.true(rel(diag.res_homogeneity!, phi) < 1e-4, `res_homogeneity ${diag.res_homogeneity} vs ${phi}`);
    t.deepEqual([diag.lambda_mean, diag.lambda_max], [1, 1]);
    t.log(`snr ${snr.snr}; largest relative difference to the float64 loop: ${worst.toExponential(2)}`);
  } finally {
    s.dispose();
  }
});

test('rba on a system: λ is [N, E] in checkpoints, one column per equation, each normalised by its own equation (max η* at step 0); checkpoints record output_order, equations, boundary.outputs; a resumed trial reproduces the rows', async (t) => {
  const [cfg] = await pairConfigs({
    problem: { module: PAIR, n_collocation: 64, n_boundary: 8, eval_grid: 9 },
    model: { width: 8, depth: 2 },
    train: { steps: 30, lr: 0.005, log_every: 5, eval_every: 10, checkpoint_every: 10 },
    diagnostics: { every: 10, snr_batches: 4 },
    grid: { strategy: [{ name: 'rba' }] },
  });
  const { rows, ckpts } = await run(cfg!);
  t.deepEqual([...ckpts.keys()], [0, 10, 20, 30]);
  const c0 = ckpts.get(0)!;
  t.is(c0.metadata.output_order, '["u","v"]');
  t.is(c0.metadata.equations, '["pde","couple"]');
  t.is(c0.metadata.input_order, '["x","y"]');
  const lam = c0.tensors.find((x) => x.name === 'lambda')!;
  t.deepEqual(lam.shape, [64, 2]);
  for (const e of [0, 1]) {
    const col = Array.from({ length: 64 }, (_, i) => lam.data[i * 2 + e] as number);
    t.is(Math.max(...col), Math.fround(1e-3), `column ${e}: max η* (λ⁰ = 0, |r|/max|r| of its own equation)`);
    t.true(col.every((v) => v >= 0 && v <= 1e-3 + 1e-9));
  }
  const bo = c0.tensors.find((x) => x.name === 'boundary.outputs')!;
  t.deepEqual(bo.shape, [64]); // 4 edges × 8, twice (u then v)
  t.deepEqual(Array.from(bo.data as Int32Array), [...new Array(32).fill(0), ...new Array(32).fill(1)]);
  // Resume from step 10: the rows from step 10 on are those of the uninterrupted run.
  const c10 = ckpts.get(10)!;
  const bytes = encodeSafetensors(c10.tensors, c10.metadata);
  t.deepEqual(decodeSafetensors(bytes).tensors.get('lambda')!.shape, [64, 2]);
  const again = await run(cfg!, bytes);
  const strip = (rs: MetricRow[]) => rs.map(({ wall_seconds: _w, ...r }) => r);
  t.deepEqual(strip(again.rows), strip(rows.filter((r) => r.step >= 10)));
});

test('systems never fuse: fusionKey is the whole config, fusionLimit 1', async (t) => {
  const cfgs = await pairConfigs({ grid: { strategy: [{ name: 'vanilla' }, { name: 'rba' }] } });
  t.not(fusionKey(cfgs[0]!), fusionKey(cfgs[1]!));
  t.is(fusionLimit(cfgs[0]!, 'wasm'), 1);
  t.is(fusionLimit(cfgs[0]!, 'cpu'), 1);
});

test('a condition naming an unknown output fails with the field, the value and the outputs', (t) => {
  const def = {
    name: 'bad_pair', inputs: ['x', 'y'], domain: [[0, 1], [0, 1]], outputs: ['u', 'v'], fields: ['u', 'v'],
    residuals: { a: (f: Record<string, tf.Tensor>) => f.u!, b: (f: Record<string, tf.Tensor>) => f.v! },
    conditions: { bc: () => ({ points: [[0, 0], [1, 1]], values: [0, 0], output: ['u', 'w'] }) },
  } as unknown as ProblemDefinition;
  const e = t.throws(() => definedProblem(def).boundary(1), { instanceOf: ProblemError });
  t.regex(e!.message, /conditions\.bc output 1: got "w", expected one of the outputs u, v/);
});

// ------------------------------------------------------------------------------------------------
// The lid-driven cavity

test('cavity: the Ghia, Ghia & Shin (1982) centre lines load, 34 values per Re (u on x = 0.5, v on y = 0.5), with the cross-checked readings; other Re refused by name', async (t) => {
  const def = (await import(CAVITY)).default as ProblemDefinition;
  const data = await import(join(repoRoot, 'examples/problems/cavity/ghia1982.mjs'));
  for (const re of [100, 1000]) {
    const ev = definedProblem(def, { re }).evaluationSet(2);
    t.is(ev.count, 34);
    t.deepEqual(Array.from(ev.output), [...new Array(17).fill(0), ...new Array(17).fill(1)]);
    for (let k = 0; k < 17; k++) {
      t.deepEqual([ev.points[2 * k], ev.points[2 * k + 1]], [0.5, data.GHIA_Y[k]]);
      t.deepEqual([ev.points[2 * (17 + k)], ev.points[2 * (17 + k) + 1]], [data.GHIA_X[k], 0.5]);
    }
    t.deepEqual(Array.from(ev.values), [...data.GHIA_U[re], ...data.GHIA_V[re]]);
    // The walls: u = 1 at the lid, 0 at the bottom; v = 0 at both side walls.
    t.deepEqual([ev.values[0], ev.values[16], ev.values[17], ev.values[33]], [1, 0, 0, 0]);
  }
  const v1000 = data.GHIA_V[1000] as number[];
  t.is(v1000[8], 0.02526); // x = 0.5 (not 0.02426)
  t.is(v1000[5], -0.5155); // x = 0.9063 (majority reading; one copy −0.51500)
  t.is(v1000[7], -0.31966); // x = 0.8047 (one copy −0.31996)
  t.is((data.GHIA_U[100] as number[])[9], -0.2109); // y = 0.4531, the Re = 100 minimum
  const e = t.throws(() => definedProblem(def, { re: 400 }).evaluationSet(2));
  t.regex(e!.message, /params\.re: got 400, expected 100 or 1000/);
});

/**
 * Kovasznay's flow, an exact steady Navier–Stokes solution for any Re (checked by hand in docs/problems.md):
 * u = 1 − e^{λx} cos 2πy, v = λ/(2π) e^{λx} sin 2πy, p = ½(1 − e^{2λx}), λ = Re/2 − sqrt(Re²/4 + 4π²).
 */
function kovasznay(re: number, pts: Array<[number, number]>): Record<string, number[]> {
  const k = 2 * Math.PI;
  const lam = re / 2 - Math.sqrt((re * re) / 4 + k * k);
  const f: Record<string, number[]> = {};
  const put = (name: string, v: number) => (f[name] ??= []).push(v);
  for (const [x, y] of pts) {
    const E = Math.exp(lam * x);
    const [c, s] = [Math.cos(k * y), Math.sin(k * y)];
    put('u', 1 - E * c);
    put('u_x', -lam * E * c);
    put('u_xx', -lam * lam * E * c);
    put('u_y', k * E * s);
    put('u_yy', k * k * E * c);
    put('v', (lam / k) * E * s);
    put('v_x', ((lam * lam) / k) * E * s);
    put('v_xx', ((lam * lam * lam) / k) * E * s);
    put('v_y', lam * E * c);
    put('v_yy', -lam * k * E * s);
    put('p', 0.5 * (1 - E * E));
    put('p_x', -lam * E * E);
    put('p_y', 0);
  }
  return f;
}

test('cavity: the three residuals vanish on Kovasznay flow (|r| < 1e-4 in float32, Re 100 and 1000) and not on a wrong pressure', async (t) => {
  const def = (await import(CAVITY)).default as ProblemDefinition;
  const pts: Array<[number, number]> = [];
  for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) pts.push([(i + 0.5) / 8, (j + 0.5) / 8]);
  const n = pts.length;
  for (const re of [100, 1000]) {
    const problem = definedProblem(def, { re });
    t.deepEqual(problem.equations, ['momentum_x', 'momentum_y', 'continuity']);
    const fields = kovasznay(re, pts);
    const asTensors = (over: Record<string, number[]> = {}) => Object.fromEntries(Object.entries({ ...fields, ...over }).map(([k, v]) => [k, tf.tensor2d(v, [1, n])]));
    const x = tf.tensor3d(pts.flat(), [1, n, 2]);
    const q = tf.zeros([1, n]);
    const f = asTensors();
    const rs = problem.residualTerms(f, q, x);
    rs.forEach((r, e) => {
      const worst = Math.max(...Array.from(r.dataSync(), Math.abs));
      t.true(worst < 1e-4, `Re ${re}, ${problem.equations[e]}: max |r| = ${worst}`);
    });
    const wrong = asTensors({ p_x: fields.p_x!.map((v) => v + 0.1) });
    const rw = problem.residualTerms(wrong, q, x);
    t.true(Math.min(...Array.from(rw[0]!.dataSync(), Math.abs)) > 0.09, 'momentum_x sees a wrong p_x');
    tf.dispose([x, q, ...Object.values(f), ...rs, ...Object.values(wrong), ...rw]);
  }
});

test('a time-dependent system: initial targets per output (initial.outputs in checkpoints); a periodic set on a system is refused by name', async (t) => {
  const dir = await tempDir('systems-ic');
  // u_t − u_xx = 0 and v − 2u = 0 on x ∈ [0, 1], t ∈ [0, 1]; u(x, 0) = sin πx, v(x, 0) = 2 sin πx; u = v = 0 at x = 0, 1.
  const src = `
const s = (x) => Math.sin(Math.PI * x);
export default {
  name: 'heat_pair', inputs: ['x', 't'], domain: [[0, 1], [0, 1]], outputs: ['u', 'v'],
  fields: ['u', 'v', 'u_t', 'u_xx'],
  residuals: { heat: (f, { ops }) => ops.sub(f.u_t, f.u_xx), scale: (f, { ops }) => ops.sub(f.v, ops.mul(f.u, 2)) },
  solution: ([x, t]) => [Math.exp(-Math.PI * Math.PI * t) * s(x), 2 * Math.exp(-Math.PI * Math.PI * t) * s(x)],
  conditions: {
    bc: ({ n_boundary, helpers }) => ({ ...helpers.axisEnds('x', n_boundary), output: 'u' }),
    ic: ({ n_initial, helpers }) => {
      const xs = helpers.linspace(0, 1, n_initial);
      return { points: [...xs, ...xs].map((x) => [x, 0]), values: [...xs.map(s), ...xs.map((x) => 2 * s(x))], output: [...xs.map(() => 'u'), ...xs.map(() => 'v')] };
    },
  },
};`;
  await writeFile(join(dir, 'heat_pair.mjs'), src);
  const spec = {
    name: 'heat-pair', problem: { module: './heat_pair.mjs', n_collocation: 64, n_boundary: 8, n_initial: 8, eval_grid: 5 },
    model: { width: 8, depth: 2 }, train: { steps: 20, lr: 0.005, log_every: 10, eval_every: 10, checkpoint_every: 10 },
    diagnostics: { every: 10, snr_batches: 4 }, strategy: { name: 'rba' }, seed: 1,
  };
  await writeFile(join(dir, 'spec.yaml'), JSON.stringify(spec));
  const [trial] = (await loadSweep(join(dir, 'spec.yaml'))).trials;
  const { rows, ckpts } = await run(trial!.config);
  t.is(rows.length, 3);
  t.true(rows.every((r) => Number.isFinite(r.loss) && Number.isFinite(r.rel_l2!) && Number.isFinite(r.snr!)));
  const c = ckpts.get(10)!;
  const io = c.tensors.find((x) => x.name === 'initial.outputs')!;
  t.deepEqual(Array.from(io.data as Int32Array), [...new Array(8).fill(0), ...new Array(8).fill(1)]);
  t.deepEqual(c.tensors.find((x) => x.name === 'initial.values')!.shape, [16]);
  t.deepEqual(Array.from(c.tensors.find((x) => x.name === 'boundary.outputs')!.data as Int32Array), new Array(16).fill(0));

  const def = (await import(join(dir, 'heat_pair.mjs'))).default as ProblemDefinition;
  const periodic = { ...def, conditions: { ...def.conditions, bc: (ctx: Parameters<ProblemDefinition['conditions']['bc']>[0]) => ({ ...ctx.helpers.axisEnds('x', 4), kind: 'periodic' as const }) } };
  const e = t.throws(() => definedProblem(periodic, {}, { where: 'problem module ./heat_pair.mjs' }).boundary(4), { instanceOf: ProblemError });
  t.regex(e!.message, /problem module \.\/heat_pair\.mjs: conditions\.bc: kind 'periodic' is for single-output problems today/);
});

test('a single-output problem with an explicit evaluation set: rel_l2 equals that of the same points given as evalGrid + solution', async (t) => {
  const dir = await tempDir('systems-eval');
  const common = `
const exact = (x, y) => Math.sin(Math.PI * x) * Math.sin(Math.PI * y);
const P = [[0.1, 0.2], [0.5, 0.5], [-0.3, 0.7], [0.9, -0.4], [-0.6, -0.6]];
export const base = {
  inputs: ['x', 'y'], domain: [[-1, 1], [-1, 1]], outputs: ['u'], fields: ['u_xx', 'u_yy', 'q'],
  residuals: { pde: (f, { ops }) => ops.sub(ops.add(f.u_xx, f.u_yy), f.q) },
  source: ([x, y]) => -2 * Math.PI * Math.PI * exact(x, y),
  conditions: { bc: ({ n_boundary, helpers }) => helpers.boxBoundary(n_boundary) },
};
export { exact, P };`;
  await writeFile(join(dir, 'common.mjs'), common);
  await writeFile(join(dir, 'a.mjs'), `import { base, exact, P } from './common.mjs';\nexport default { ...base, name: 'eval_a', solution: ([x, y]) => exact(x, y), evalGrid: () => P };`);
  await writeFile(join(dir, 'b.mjs'), `import { base, exact, P } from './common.mjs';\nexport default { ...base, name: 'eval_b', evaluation: () => ({ points: P, values: P.map(([x, y]) => exact(x, y)) }) };`);
  const rowsOf = async (m: string) => {
    const spec = {
      name: `eval-${m}`, problem: { module: `./${m}.mjs`, n_collocation: 32, n_boundary: 4, eval_grid: 3 },
      model: { width: 8, depth: 2 }, train: { steps: 11, lr: 0.01, log_every: 5, eval_every: 5 }, diagnostics: { every: 0 }, seed: 2,
    };
    await writeFile(join(dir, `${m}.yaml`), JSON.stringify(spec));
    const [trial] = (await loadSweep(join(dir, `${m}.yaml`))).trials;
    return (await run(trial!.config)).rows.map((r) => r.rel_l2);
  };
  const [a, b] = [await rowsOf('a'), await rowsOf('b')];
  t.is(a.length, 3);
  t.true(a.every((v) => v !== null && Number.isFinite(v) && v > 0));
  t.deepEqual(b, a);
});
