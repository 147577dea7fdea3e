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

/** A set of conditioning points (boundary or initial) with target values. */
export interface ConditionSet {
  /** Row-major [m, d] float64 points. */
  points: Float64Array;
  /** Targets g(x_j), [m]. */
  values: Float64Array;
  count: number;
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
  /** Initial-condition set (time-dependent problems only), else null. */
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

/** Builds a Problem from its config section. */
export type ProblemFactory = (cfg: ProblemConfig) => Problem;

const registry = new Map<string, ProblemFactory>();

/** Register a problem under its config `name` (later: burgers1d, allen_cahn1d). */
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
