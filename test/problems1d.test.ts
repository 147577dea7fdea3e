/**
 * The time-dependent problems burgers1d and allen_cahn1d (docs/science.md §2–§3): residual formula
 * against finite differences of the reference solvers, initial and boundary sets, the periodic
 * boundary term, a short training run of each, and `phasemap validate` of a burgers spec.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import * as tf from '@tensorflow/tfjs-core';
import type { MetricRow } from '../schemas/metrics.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { conditionTermLoss, type ConditionTerm } from '../worker/trainer/loss.js';
import { Mlp, mlpForward, mlpValue } from '../worker/trainer/network.js';
import { AllenCahn1d, Burgers1d, makeProblem, problemConditions, type Problem } from '../worker/trainer/problems.js';
import { gridCells } from '../worker/trainer/diagnostics.js';
import { Rng } from '../worker/trainer/rng.js';
import { setupTrial, trainTrial } from '../worker/trainer/train.js';
import { runCli } from './helpers.js';
import { resolved, testBackend } from './trainer-helpers.js';

process.env.PHASEMAP_REFERENCE_CACHE = 'off'; // memory-only reference cache in tests

test.before(async () => {
  await testBackend();
});

/** A resolved trial config (spec defaults applied) for a problem section and overrides. */
function config(problem: Record<string, unknown>, over: Record<string, unknown> = {}): TrialConfig {
  return resolved({
    problem,
    model: { width: 10, depth: 2 },
    train: { steps: 50, lr: 5e-3, log_every: 5, eval_every: 10, lr_decay: { rate: 0.9, every: 1000 } },
    diagnostics: { every: 10, snr_batches: 4 },
    seed: 3,
    ...over,
  });
}

/**
 * Residual of the reference u* at points (x, t) by central finite differences in float64
 * (step h): u_t, u_x, u_xx, u from the reference solver, then the problem's own `residual` on them.
 */
function fdResidual(p: Problem, solve: (pts: Float64Array, n: number) => Float64Array, xs: number[], ts: number[], h: number): { r: Float64Array; scale: Float64Array } {
  const n = xs.length;
  const pts = new Float64Array(n * 5 * 2);
  const offs: Array<[number, number]> = [[0, 0], [h, 0], [-h, 0], [0, h], [0, -h]];
  for (let i = 0; i < n; i++)
    offs.forEach(([dx, dt], k) => {
      pts[2 * (5 * i + k)] = xs[i]! + dx;
      pts[2 * (5 * i + k) + 1] = ts[i]! + dt;
    });
  const u = solve(pts, 5 * n);
  const U = new Float64Array(n), Ux = new Float64Array(n), Uxx = new Float64Array(n), Ut = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const [u0, up, um, tp, tm] = [0, 1, 2, 3, 4].map((k) => u[5 * i + k]!) as [number, number, number, number, number];
    U[i] = u0;
    Ux[i] = (up - um) / (2 * h);
    Uxx[i] = (up - 2 * u0 + um) / (h * h);
    Ut[i] = (tp - tm) / (2 * h);
  }
  const T = (a: Float64Array) => tf.tensor2d(Float32Array.from(a), [1, n]);
  const f = { u: T(U), u_x: T(Ux), u_xx: T(Uxx), u_t: T(Ut) };
  const q = tf.zeros([1, n]);
  const rt = p.residual(f, q);
  const r = Float64Array.from(rt.dataSync());
  tf.dispose([rt, q, ...Object.values(f)]);
  // Size of the largest term at each point (for a relative check).
  const scale = new Float64Array(n);
  for (let i = 0; i < n; i++) scale[i] = Math.max(Math.abs(Ut[i]!), Math.abs(U[i]! * Ux[i]!), Math.abs(Uxx[i]!) * 1e-3, Math.abs(5 * U[i]! ** 3 - 5 * U[i]!), 1e-3);
  return { r, scale };
}

const maxAbs = (a: ArrayLike<number>) => Array.from(a).reduce((m, v) => Math.max(m, Math.abs(v)), 0);

test('burgers1d: the Cole–Hopf reference satisfies the residual (away from the shock); a wrong ν does not', (t) => {
  const p = new Burgers1d();
  const xs: number[] = [];
  const ts: number[] = [];
  for (const x of [-0.9, -0.7, -0.5, -0.3, 0.3, 0.5, 0.7, 0.9]) for (const tt of [0.05, 0.2, 0.4, 0.6, 0.8, 0.95]) (xs.push(x), ts.push(tt));
  const solve = (pts: Float64Array, n: number) => p.solve(pts, n);
  const { r, scale } = fdResidual(p, solve, xs, ts, 1e-4);
  const termMax = maxAbs(scale);
  t.true(termMax > 0.5, `terms of size O(1) (${termMax})`);
  t.true(maxAbs(r) < 1e-4 * termMax, `max |r| = ${maxAbs(r)} vs terms ${termMax}`);
  // Same derivatives, the residual of a problem with 3ν: fails by ~2ν|u_xx|.
  const wrong = fdResidual(new Burgers1d(3 * p.params.nu), solve, xs, ts, 1e-4);
  t.true(maxAbs(wrong.r) > 100 * maxAbs(r), `wrong ν: ${maxAbs(wrong.r)} vs ${maxAbs(r)}`);
  // And the shock region is where the residual of the wrong ν is largest (|u_xx| large near x = 0).
  t.deepEqual(p.params, { nu: 0.01 / Math.PI });
  t.deepEqual(p.inputOrder, ['x', 't']);
});

test('allen_cahn1d: the spectral reference satisfies the residual; a wrong d does not', (t) => {
  const p = new AllenCahn1d();
  const xs: number[] = [];
  const ts: number[] = [];
  // Solver grid points x_j = −1 + 2j/512 (where the pseudo-spectral equations hold), smooth region.
  for (const j of [40, 100, 170, 230, 300, 360, 420, 470]) for (const tt of [0.1, 0.3, 0.5, 0.7, 0.9]) (xs.push(-1 + (2 * j) / 512), ts.push(tt));
  const solve = (pts: Float64Array, n: number) => p.solve(pts, n);
  const { r, scale } = fdResidual(p, solve, xs, ts, 1e-4);
  const termMax = maxAbs(scale);
  t.true(termMax > 0.1, `terms (${termMax})`);
  t.true(maxAbs(r) < 1e-3 * termMax, `max |r| = ${maxAbs(r)} vs terms ${termMax}`);
  const wrong = fdResidual(new AllenCahn1d(1e-2), solve, xs, ts, 1e-4);
  t.true(maxAbs(wrong.r) > 10 * maxAbs(r), `wrong d: ${maxAbs(wrong.r)} vs ${maxAbs(r)}`);
  t.deepEqual(p.params, { d: 1e-4 });
});

test('initial and boundary sets: targets u0 on t = 0, zeros on x = ±1 (Burgers), periodic pairs (Allen–Cahn)', (t) => {
  const b = makeProblem(config({ name: 'burgers1d', n_collocation: 64 }).problem);
  t.is(b.name, 'burgers1d');
  const ic = b.initial!(11)!;
  t.is(ic.count, 11);
  const ref = b.reference(ic.points, ic.count);
  for (let k = 0; k < ic.count; k++) {
    const x = ic.points[2 * k]!;
    t.is(ic.points[2 * k + 1], 0);
    t.true(Math.abs(ic.values[k]! + Math.sin(Math.PI * x)) < 1e-15);
    t.true(Math.abs(ref[k]! - ic.values[k]!) < 1e-12);
  }
  t.is(ic.points[0], -1);
  t.is(ic.points[20], 1);
  const bc = b.boundary(7);
  t.is(bc.count, 14);
  t.is(bc.kind ?? 'value', 'value');
  const bref = b.reference(bc.points, bc.count);
  for (let j = 0; j < bc.count; j++) {
    t.is(Math.abs(bc.points[2 * j]!), 1);
    t.is(bc.values[j], 0);
    t.true(Math.abs(bref[j]!) < 1e-6, `u*(±1, t) = ${bref[j]}`);
  }

  const a = makeProblem(config({ name: 'allen_cahn1d', n_collocation: 64 }).problem);
  const aic = a.initial!(9)!;
  for (let k = 0; k < aic.count; k++) {
    const x = aic.points[2 * k]!;
    t.true(Math.abs(aic.values[k]! - x * x * Math.cos(Math.PI * x)) < 1e-15);
  }
  const abc = a.boundary(5);
  t.is(abc.kind, 'periodic');
  t.is(abc.axis, 0);
  t.is(abc.count, 10);
  const aref = a.reference(abc.points, abc.count);
  for (let j = 0; j < 5; j++) {
    t.is(abc.points[2 * j], -1);
    t.is(abc.points[2 * (5 + j)], 1);
    t.is(abc.points[2 * j + 1], abc.points[2 * (5 + j) + 1]);
    t.true(Math.abs(aref[j]! - aref[5 + j]!) < 1e-9, 'the reference is periodic');
  }
  // problemConditions: bc (w_bc) then ic (w_ic); helmholtz has no ic.
  const conds = problemConditions(a, config({ name: 'allen_cahn1d', n_collocation: 64, w_bc: 2, w_ic: 3, n_initial: 9 }).problem);
  t.deepEqual(conds.map((c) => [c.name, c.w, c.set.count]), [['bc', 2, 200], ['ic', 3, 9]]);
  const h = config({ name: 'helmholtz2d', n_collocation: 64 }).problem;
  t.deepEqual(problemConditions(makeProblem(h), h).map((c) => c.name), ['bc']);
  // res_homogeneity cells cover x × t.
  const cells = gridCells(new Float64Array([-1, 0, 1, 1, 0, 0.5]), 3, a.domain)!;
  t.deepEqual(Array.from(cells), [0, 99, 55]);
});

test('periodic term: zero for a function periodic in x, and (u(−1)−u(1))² + (u_x(−1)−u_x(1))² otherwise', (t) => {
  const p = new AllenCahn1d();
  const bcSet = p.boundary(6);
  const x = tf.tensor3d(Float32Array.from(bcSet.points), [1, bcSet.count, 2]);
  const g = tf.zeros([1, bcSet.count]);
  const term: ConditionTerm = { name: 'bc', kind: 'periodic', x, g, w: 2.5, axis: 0 };
  const net = Mlp.xavier(2, 6, 2, new Rng(11));
  try {
    // Generic network: compare with the formula from value-only passes (u_x by central differences).
    const got = conditionTermLoss(net.params(), term, p.inputOrder).dataSync()[0]!;
    const ev = (pts: number[]) => {
      const tt = tf.tensor3d(pts, [1, pts.length / 2, 2]);
      const u = mlpValue(net.params(), tt);
      const v = Array.from(u.dataSync());
      tf.dispose([tt, u]);
      return v;
    };
    const h = 1e-2;
    let want = 0;
    for (let j = 0; j < 6; j++) {
      const tj = bcSet.points[2 * j + 1]!;
      const [ua, ub, uap, uam, ubp, ubm] = ev([-1, tj, 1, tj, -1 + h, tj, -1 - h, tj, 1 + h, tj, 1 - h, tj]) as [number, number, number, number, number, number];
      want += (ua - ub) ** 2 + ((uap - uam) / (2 * h) - (ubp - ubm) / (2 * h)) ** 2;
    }
    want = (2.5 * want) / 6;
    t.true(got > 1e-4, `non-periodic network: ${got}`);
    t.true(Math.abs(got - want) < 2e-3 * want, `got ${got}, want ${want}`);
    // u_x from the forward-derivative machinery agrees too (sanity of the DerivSpec with second: []).
    const f = mlpForward(net.params(), x, { first: [0], second: [] }, p.inputOrder);
    t.is(f.u_x!.shape[1], 12);
    tf.dispose(Object.values(f));
    // A function periodic in x: zero the x column of the first layer (u depends on t only).
    const w0 = net.weights[0]!;
    const arr = w0.arraySync() as number[][];
    arr[0] = arr[0]!.map(() => 0);
    w0.assign(tf.tensor2d(arr));
    const zero = conditionTermLoss(net.params(), term, p.inputOrder).dataSync()[0]!;
    t.is(zero, 0);
  } finally {
    tf.dispose([x, g]);
    net.dispose();
  }
});

for (const [name, extra] of [
  ['burgers1d', {}],
  ['allen_cahn1d', {}],
] as const) {
  test(`${name}: a short training run gives finite rows with rel_l2 and snr, and the loss falls`, async (t) => {
    const cfg = config({ name, n_collocation: 256, n_boundary: 16, n_initial: 32, eval_grid: 21, ...extra });
    // The setup carries the initial set and its term (w_ic) next to the boundary term.
    const s = setupTrial(cfg);
    t.deepEqual(s.bc.terms.map((c) => [c.name, c.kind]), [['bc', name === 'burgers1d' ? 'value' : 'periodic'], ['ic', 'value']]);
    t.is(s.initial!.values.length, 32);
    t.true(s.cells !== null);
    s.dispose();
    const rows: MetricRow[] = [];
    const sum = await trainTrial(cfg, { onRows: (r) => void rows.push(...r) });
    t.false(sum.diverged);
    t.is(sum.steps_done, 50);
    t.true(rows.length >= 10);
    for (const r of rows) {
      t.true(Number.isFinite(r.loss) && Number.isFinite(r.loss_residual) && Number.isFinite(r.loss_boundary));
      t.true(Math.abs(r.loss - r.loss_residual - r.loss_boundary) <= 1e-5 * Math.max(1, r.loss));
    }
    const withRel = rows.filter((r) => r.rel_l2 !== null);
    const withSnr = rows.filter((r) => r.snr !== null);
    t.true(withRel.length >= 5 && withRel.every((r) => Number.isFinite(r.rel_l2!)));
    t.true(withSnr.length >= 5 && withSnr.every((r) => Number.isFinite(r.snr!) && r.snr! > 0));
    t.true(withSnr.every((r) => r.res_homogeneity !== null && r.res_homogeneity > 0 && r.res_homogeneity <= 1));
    // The initial term dominates at step 0 (u ≈ 0 vs u0 of size O(1)): the loss falls as it is fitted.
    t.true(rows[rows.length - 1]!.loss < 0.7 * rows[0]!.loss, `loss ${rows[0]!.loss} → ${rows[rows.length - 1]!.loss}`);
  });
}

test('phasemap validate: a burgers spec lists its trials; a typo in the problem is named', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'phasemap-p1d-'));
  const good = join(dir, 'burgers.yaml');
  await writeFile(
    good,
    ['name: b1', 'problem: {name: burgers1d, n_collocation: 512, n_boundary: 50, n_initial: 100, w_ic: 2}', 'diagnostics: {every: 100, snr_batches: 8}', 'grid:', '  strategy: [{name: vanilla}, {name: rba}]', ''].join('\n'),
  );
  const ok = await runCli(['validate', good], { timeoutMs: 60_000 });
  t.is(ok.code, 0, ok.stderr);
  t.regex(ok.stdout, /b1: 2 trial\(s\)/);
  const bad = join(dir, 'bad.yaml');
  await writeFile(bad, ['name: b2', 'problem: {name: allen_cahn1d, n_collocation: 512, n_intial: 100}', ''].join('\n'));
  const ko = await runCli(['validate', bad], { timeoutMs: 60_000 });
  t.not(ko.code, 0);
  t.regex(ko.stdout + ko.stderr, /n_intial/);
});
