/**
 * PDE problems (science.md §3). A Problem owns its domain, input order, collocation sampler,
 * boundary set, forcing, residual and reference solution with its evaluation grid.
 *
 * Point arrays are row-major float64 [n, d] in the problem's `inputOrder`. Tensors passed to
 * `residual` carry a leading group axis G (batches of the SNR split, or later trials): [G, n].
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ProblemConfig } from '../../schemas/sweep.js';
import { latinHypercube, type Rng } from './rng.js';
import {
  ALLEN_CAHN_D, ALLEN_CAHN_DT, ALLEN_CAHN_MODES, allenCahnOnPoints, burgersOnPoints, BURGERS_NODES, BURGERS_NU, cachedReference, defaultReferenceCacheDir,
} from './reference/index.js';

/** Which input derivatives of u a problem's residual needs (indices into `inputOrder`). */
export interface DerivSpec {
  /** First derivatives u_{x_i}; must include every index in `second`. */
  first: number[];
  /** Diagonal second derivatives u_{x_i x_i}. */
  second: number[];
}

/**
 * u and its input derivatives, each [G, n]. Keys: `u`, `u_<name>` for first and `u_<name><name>`
 * for second derivatives, with names from `inputOrder` (e.g. u_x, u_yy, u_t).
 */
export type Fields = Record<string, tf.Tensor>;

/**
 * How a condition set enters the loss (science.md §2), weighted by its w:
 *  - `value` (Dirichlet / initial): w · mean_j (u(x_j) − g_j)²;
 *  - `periodic`: the m points are two halves of m/2 points each, point j of the first half paired
 *    with point j of the second (same t, x at the two ends of the periodic axis `axis`):
 *    w · mean_j [(u(a_j) − u(b_j))² + (u_{x}(a_j) − u_{x}(b_j))²] over the m/2 pairs (targets unused, 0).
 */
export type ConditionKind = 'value' | 'periodic';

/** A set of conditioning points (boundary or initial) with target values. */
export interface ConditionSet {
  /** Row-major [m, d] float64 points. */
  points: Float64Array;
  /** Targets g(x_j), [m] (zeros for a periodic set). */
  values: Float64Array;
  count: number;
  /** How the set enters the loss; default `value`. */
  kind?: ConditionKind;
  /** For `periodic`: the index (into `inputOrder`) of the periodic input. */
  axis?: number;
}

/** One PDE problem instance (parameters bound). */
export interface Problem {
  readonly name: string;
  /** Problem parameters with science.md §3 names (checkpoint `problem_params`). */
  readonly params: Record<string, number>;
  /** Names of the input columns, e.g. ['x', 'y'] or ['x', 't']. */
  readonly inputOrder: readonly string[];
  /** [lo, hi] per input dimension. */
  readonly domain: ReadonlyArray<readonly [number, number]>;
  readonly derivs: DerivSpec;
  /** N collocation points, Latin hypercube over `domain` (seeded by `rng`), [n, d] float64. */
  collocation(n: number, rng: Rng): Float64Array;
  /** Boundary-condition set (for the 2-D box: `perEdge` evenly spaced points on each edge, g = 0). */
  boundary(perEdge: number): ConditionSet;
  /** Initial-condition set (time-dependent problems only: `perAxis` points on t = 0, targets u0), else absent or null. */
  initial?(perAxis: number): ConditionSet | null;
  /** Forcing q at the given points, [n] float64 (all zeros for homogeneous PDEs). */
  forcing(points: Float64Array, n: number): Float64Array;
  /** PDE residual r [G, n] from the fields and the forcing q (broadcastable to [G, n]). */
  residual(f: Fields, q: tf.Tensor): tf.Tensor;
  /** Reference solution u* at the points, [n] float64. */
  reference(points: Float64Array, n: number): Float64Array;
  /** Evaluation grid: `perAxis` evenly spaced points per axis over `domain`, row-major [perAxis^d, d]. */
  evalGrid(perAxis: number): { points: Float64Array; count: number };
}

/** `n` evenly spaced points from lo to hi inclusive (the midpoint if n = 1). */
export function linspace(lo: number, hi: number, n: number): Float64Array {
  const out = new Float64Array(n);
  if (n === 1) out[0] = (lo + hi) / 2;
  else for (let i = 0; i < n; i++) out[i] = lo + ((hi - lo) * i) / (n - 1);
  return out;
}

/**
 * Boundary of the box [x0,x1]×[y0,y1]: `perEdge` evenly spaced points (linspace, corners included,
 * so each corner appears on two edges) on each of the 4 edges, in the order bottom (y = y0), top,
 * left (x = x0), right; 4·perEdge points, targets 0.
 */
export function boxBoundary2d(domain: ReadonlyArray<readonly [number, number]>, perEdge: number): ConditionSet {
  const [[x0, x1], [y0, y1]] = domain as [[number, number], [number, number]];
  const xs = linspace(x0, x1, perEdge);
  const ys = linspace(y0, y1, perEdge);
  const m = 4 * perEdge;
  const points = new Float64Array(m * 2);
  let j = 0;
  const put = (x: number, y: number) => {
    points[2 * j] = x;
    points[2 * j + 1] = y;
    j++;
  };
  for (const x of xs) put(x, y0);
  for (const x of xs) put(x, y1);
  for (const y of ys) put(x0, y);
  for (const y of ys) put(x1, y);
  return { points, values: new Float64Array(m), count: m };
}

/** Tensor-product grid of `perAxis` points per axis (first input varies slowest), [perAxis^d, d]. */
export function tensorGrid(domain: ReadonlyArray<readonly [number, number]>, perAxis: number): { points: Float64Array; count: number } {
  const d = domain.length;
  const axes = domain.map(([lo, hi]) => linspace(lo, hi, perAxis));
  const count = perAxis ** d;
  const points = new Float64Array(count * d);
  for (let i = 0; i < count; i++) {
    let rem = i;
    for (let j = d - 1; j >= 0; j--) {
      points[i * d + j] = axes[j]![rem % perAxis]!;
      rem = Math.floor(rem / perAxis);
    }
  }
  return { points, count };
}

const BOX2: ReadonlyArray<readonly [number, number]> = [
  [-1, 1],
  [-1, 1],
];

/** Shared base of the 2-D box problems on [-1,1]² with u = 0 on the boundary. */
abstract class Box2dProblem implements Problem {
  abstract readonly name: string;
  abstract readonly params: Record<string, number>;
  readonly inputOrder = ['x', 'y'] as const;
  readonly domain = BOX2;
  readonly derivs: DerivSpec = { first: [0, 1], second: [0, 1] };
  collocation(n: number, rng: Rng): Float64Array {
    return latinHypercube(n, this.domain, rng);
  }
  boundary(perEdge: number): ConditionSet {
    return boxBoundary2d(this.domain, perEdge);
  }
  evalGrid(perAxis: number) {
    return tensorGrid(this.domain, perAxis);
  }
  /** u*(x, y) */
  abstract exact(x: number, y: number): number;
  /** q(x, y) */
  abstract q(x: number, y: number): number;
  abstract residual(f: Fields, q: tf.Tensor): tf.Tensor;
  forcing(points: Float64Array, n: number): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = this.q(points[2 * i]!, points[2 * i + 1]!);
    return out;
  }
  reference(points: Float64Array, n: number): Float64Array {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) out[i] = this.exact(points[2 * i]!, points[2 * i + 1]!);
    return out;
  }
}

/**
 * helmholtz2d (science.md §3): r = u_xx + u_yy + k² u − q on [-1,1]², u* = sin(a1 π x) sin(a2 π y),
 * hence q = (k² − π²(a1² + a2²)) u*.
 */
export class Helmholtz2d extends Box2dProblem {
  readonly name = 'helmholtz2d';
  readonly params: { a1: number; a2: number; k: number };
  constructor(a1: number, a2: number, k: number) {
    super();
    this.params = { a1, a2, k };
  }
  exact(x: number, y: number): number {
    return Math.sin(this.params.a1 * Math.PI * x) * Math.sin(this.params.a2 * Math.PI * y);
  }
  q(x: number, y: number): number {
    const { a1, a2, k } = this.params;
    return (k * k - Math.PI * Math.PI * (a1 * a1 + a2 * a2)) * this.exact(x, y);
  }
  residual(f: Fields, q: tf.Tensor): tf.Tensor {
    const k2 = this.params.k * this.params.k;
    return tf.tidy(() => tf.sub(tf.add(tf.add(f.u_xx!, f.u_yy!), tf.mul(f.u!, k2)), q));
  }
}

/** poisson2d (science.md §3): r = u_xx + u_yy − q on [-1,1]², u* = sin(π x) sin(π y), q = −2π² u*. */
export class Poisson2d extends Box2dProblem {
  readonly name = 'poisson2d';
  readonly params = {};
  exact(x: number, y: number): number {
    return Math.sin(Math.PI * x) * Math.sin(Math.PI * y);
  }
  q(x: number, y: number): number {
    return -2 * Math.PI * Math.PI * this.exact(x, y);
  }
  residual(f: Fields, q: tf.Tensor): tf.Tensor {
    return tf.tidy(() => tf.sub(tf.add(f.u_xx!, f.u_yy!), q));
  }
}

// ---------------------------------------------------------------------------------------------
// Time-dependent problems on x ∈ [−1, 1], t ∈ [0, 1] (input order ['x', 't'])

const XT: ReadonlyArray<readonly [number, number]> = [
  [-1, 1],
  [0, 1],
];

/**
 * Dirichlet boundary of the 1-D + time domain [x0,x1]×[t0,t1]: `perEdge` evenly spaced times
 * (linspace, ends included) on x = x0, then the same times on x = x1; 2·perEdge points, targets 0.
 * With `kind` = 'periodic' the same points form the pairs (x0, t_j) ↔ (x1, t_j) of a periodic set.
 */
export function xtBoundary(domain: ReadonlyArray<readonly [number, number]>, perEdge: number, kind: ConditionKind = 'value'): ConditionSet {
  const [[x0, x1], [t0, t1]] = domain as [[number, number], [number, number]];
  const ts = linspace(t0, t1, perEdge);
  const m = 2 * perEdge;
  const points = new Float64Array(m * 2);
  for (let j = 0; j < perEdge; j++) {
    points[2 * j] = x0;
    points[2 * j + 1] = ts[j]!;
    points[2 * (perEdge + j)] = x1;
    points[2 * (perEdge + j) + 1] = ts[j]!;
  }
  return kind === 'periodic' ? { points, values: new Float64Array(m), count: m, kind, axis: 0 } : { points, values: new Float64Array(m), count: m };
}

/** Where the reference cache lives on disk: `defaultReferenceCacheDir()`, or memory only if PHASEMAP_REFERENCE_CACHE=off. */
function referenceCacheOpts(): { dir?: string } {
  return process.env.PHASEMAP_REFERENCE_CACHE === 'off' ? {} : { dir: defaultReferenceCacheDir() };
}

/** Shared base of the x × t problems: Latin-hypercube collocation, t = 0 initial set, tensor eval grid. */
abstract class XtProblem implements Problem {
  abstract readonly name: string;
  abstract readonly params: Record<string, number>;
  readonly inputOrder = ['x', 't'] as const;
  readonly domain = XT;
  /** u_x, u_t and u_xx. */
  readonly derivs: DerivSpec = { first: [0, 1], second: [0] };
  collocation(n: number, rng: Rng): Float64Array {
    return latinHypercube(n, this.domain, rng);
  }
  abstract boundary(perEdge: number): ConditionSet;
  /** `perAxis` evenly spaced x in [−1, 1] (ends included) at t = 0, targets u0(x). */
  initial(perAxis: number): ConditionSet {
    const xs = linspace(this.domain[0]![0], this.domain[0]![1], perAxis);
    const points = new Float64Array(2 * perAxis);
    const values = new Float64Array(perAxis);
    for (let k = 0; k < perAxis; k++) {
      points[2 * k] = xs[k]!;
      points[2 * k + 1] = this.domain[1]![0];
      values[k] = this.u0(xs[k]!);
    }
    return { points, values, count: perAxis };
  }
  /** The initial condition u0(x). */
  abstract u0(x: number): number;
  /** Homogeneous PDEs: q ≡ 0. */
  forcing(_points: Float64Array, n: number): Float64Array {
    return new Float64Array(n);
  }
  abstract residual(f: Fields, q: tf.Tensor): tf.Tensor;
  /** The reference solver at arbitrary points (uncached). */
  abstract solve(points: Float64Array, n: number): Float64Array;
  /** Solver settings that the reference depends on besides `params` (part of the cache key). */
  abstract solverKey(): Record<string, number>;
  /**
   * u* at the points through `cachedReference` (memo + disk cache), keyed on the problem name, its
   * parameters, the solver settings and the points (by content): computed once per problem
   * configuration and evaluation grid, not per trial.
   */
  reference(points: Float64Array, n: number): Float64Array {
    const pts = points.length === 2 * n ? points : points.slice(0, 2 * n);
    return cachedReference({ problem: this.name, params: this.params, solver: this.solverKey(), points: pts }, () => this.solve(pts, n), referenceCacheOpts());
  }
  evalGrid(perAxis: number) {
    return tensorGrid(this.domain, perAxis);
  }
}

/**
 * burgers1d (science.md §3): r = u_t + u u_x − ν u_xx on x ∈ [−1, 1], t ∈ [0, 1];
 * u(x, 0) = −sin(πx) (initial set, `value` term weighted by w_ic); u(±1, t) = 0 (boundary set:
 * `perEdge` times on each of x = −1 and x = +1, `value` term weighted by w_bc).
 * Reference: Cole–Hopf + Gauss–Hermite (`burgersOnPoints`) with max(200, ⌈200·√(ν₀/ν)⌉) nodes
 * (ν₀ = 0.01/π: the integrand's peaks narrow like √ν), capped at 2000.
 */
export class Burgers1d extends XtProblem {
  readonly name = 'burgers1d';
  readonly params: { nu: number };
  readonly nodes: number;
  constructor(nu: number = BURGERS_NU) {
    super();
    this.params = { nu };
    this.nodes = Math.min(2000, Math.max(BURGERS_NODES, Math.ceil(BURGERS_NODES * Math.sqrt(BURGERS_NU / nu) - 1e-9)));
  }
  u0(x: number): number {
    return -Math.sin(Math.PI * x);
  }
  boundary(perEdge: number): ConditionSet {
    return xtBoundary(this.domain, perEdge);
  }
  residual(f: Fields, _q: tf.Tensor): tf.Tensor {
    const nu = this.params.nu;
    return tf.tidy(() => tf.sub(tf.add(f.u_t!, tf.mul(f.u!, f.u_x!)), tf.mul(f.u_xx!, nu)));
  }
  solve(points: Float64Array, n: number): Float64Array {
    return burgersOnPoints(points, n, this.params.nu, this.nodes);
  }
  solverKey() {
    return { nodes: this.nodes };
  }
}

/**
 * allen_cahn1d (science.md §3): r = u_t − d u_xx + 5u³ − 5u on x ∈ [−1, 1] (periodic), t ∈ [0, 1];
 * u(x, 0) = x² cos(πx) (initial set, `value` term weighted by w_ic).
 * Periodic boundary (a choice; science.md §2 leaves it open): `perEdge` times t_j, the boundary set
 * holds (−1, t_j) then (1, t_j), and the term is
 *   w_bc · mean_j [(u(−1, t_j) − u(1, t_j))² + (u_x(−1, t_j) − u_x(1, t_j))²]
 * (`periodic` kind: value and first x-derivative match across the ends; u0 itself is periodic in
 * value but not in u_x, whose jump at t = 0 the PDE smooths out at once).
 * Reference: Fourier pseudo-spectral + ETDRK4 (`allenCahnOnPoints`, 512 modes, dt 2.5e-3), the
 * Fourier interpolant evaluated on the (x, t) evaluation grid.
 */
export class AllenCahn1d extends XtProblem {
  readonly name = 'allen_cahn1d';
  readonly params: { d: number };
  constructor(d = ALLEN_CAHN_D) {
    super();
    this.params = { d };
  }
  u0(x: number): number {
    return x * x * Math.cos(Math.PI * x);
  }
  boundary(perEdge: number): ConditionSet {
    return xtBoundary(this.domain, perEdge, 'periodic');
  }
  residual(f: Fields, _q: tf.Tensor): tf.Tensor {
    const d = this.params.d;
    return tf.tidy(() => {
      const u = f.u!;
      // 5u³ − 5u = 5u(u² − 1)
      return tf.add(tf.sub(f.u_t!, tf.mul(f.u_xx!, d)), tf.mul(tf.mul(u, 5), tf.sub(tf.square(u), 1)));
    });
  }
  solve(points: Float64Array, n: number): Float64Array {
    return allenCahnOnPoints(points, n, this.params.d, { modes: ALLEN_CAHN_MODES, dt: ALLEN_CAHN_DT });
  }
  solverKey() {
    return { modes: ALLEN_CAHN_MODES, dt: ALLEN_CAHN_DT };
  }
}

/** One condition term of a trial's loss: its set and weight (science.md §2, §7 `loss_weights`). */
export interface ConditionSpec {
  /** `bc` (boundary, weight w_bc) or `ic` (initial, weight w_ic). */
  name: 'bc' | 'ic';
  set: ConditionSet;
  w: number;
}

/**
 * The condition terms of a problem under its config: the boundary set (n_boundary, w_bc), then —
 * for a problem with an initial condition — the initial set (n_initial, w_ic). Their weighted sum
 * is the "boundary/initial term" of the loss (science.md §2) and of every SNR batch loss (§5).
 */
export function problemConditions(problem: Problem, cfg: ProblemConfig): ConditionSpec[] {
  const out: ConditionSpec[] = [{ name: 'bc', set: problem.boundary(cfg.n_boundary), w: cfg.w_bc }];
  const c = cfg as { n_initial?: number; w_ic?: number };
  const ic = problem.initial && c.n_initial !== undefined ? problem.initial(c.n_initial) : null;
  if (ic) out.push({ name: 'ic', set: ic, w: c.w_ic ?? 1 });
  return out;
}

/** Builds a Problem from its config section. */
export type ProblemFactory = (cfg: ProblemConfig) => Problem;

const registry = new Map<string, ProblemFactory>();

/** Register a problem under its config `name`. */
export function registerProblem(name: string, factory: ProblemFactory): void {
  registry.set(name, factory);
}

/** Names of the registered problems. */
export function problemNames(): string[] {
  return [...registry.keys()];
}

/**
 * The Problem for a trial's `problem` config section.
 * @throws Error if `cfg.name` is not registered.
 */
export function makeProblem(cfg: ProblemConfig): Problem {
  const f = registry.get(cfg.name);
  if (!f) throw new Error(`unknown problem '${cfg.name}' (registered: ${problemNames().join(', ')})`);
  return f(cfg);
}

registerProblem('helmholtz2d', (cfg) => {
  if (cfg.name !== 'helmholtz2d') throw new Error('expected helmholtz2d config');
  return new Helmholtz2d(cfg.a1, cfg.a2, cfg.k);
});
registerProblem('poisson2d', () => new Poisson2d());
registerProblem('burgers1d', (cfg) => {
  if (cfg.name !== 'burgers1d') throw new Error('expected burgers1d config');
  return new Burgers1d(cfg.nu);
});
registerProblem('allen_cahn1d', (cfg) => {
  if (cfg.name !== 'allen_cahn1d') throw new Error('expected allen_cahn1d config');
  return new AllenCahn1d(cfg.d);
});
