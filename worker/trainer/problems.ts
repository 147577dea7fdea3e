/**
 * PDE problems (science.md §3). A Problem owns its domain, input order, collocation sampler,
 * boundary set, forcing, residual and reference solution with its evaluation grid: the trainer's view.
 * Problems are stated as `ProblemDefinition`s on the public problem API (problem-api.ts) and turned
 * into a Problem there (`definedProblem`): the four built-ins below, and users' modules
 * (problem-module.ts), which `makeProblem` finds by their content hash.
 *
 * Point arrays are row-major float64 [n, d] in the problem's `inputOrder`. Tensors passed to
 * `residual` carry a leading group axis G (batches of the SNR split, or later trials): [G, n].
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ProblemConfig } from '../../schemas/sweep.js';
import type { Rng } from './rng.js';
import { boxBoundary2d, linspace, tensorGrid, xtBoundary } from './problem-geometry.js';
export { boxBoundary2d, linspace, tensorGrid, xtBoundary };
import { DefinedProblem, defineProblem, definedProblem, type ConditionContext, type ConditionOutput, type ProblemDefinition } from './problem-api.js';
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
  /**
   * For a problem with several outputs: the output (index into its `outputs`) each target is of, Int32Array
   * [m]; absent for a single-output problem.
   */
  output?: Int32Array;
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
  /**
   * PDE residual r [G, n] from the fields, the forcing q (broadcastable to [G, n]) and the points x
   * [G, n, d] the fields were computed at (read only by a residual that declares a coordinate field).
   */
  residual(f: Fields, q: tf.Tensor, x?: tf.Tensor): tf.Tensor;
  /** Reference solution u* at the points, [n] float64. */
  reference(points: Float64Array, n: number): Float64Array;
  /** Evaluation grid: `perAxis` evenly spaced points per axis over `domain`, row-major [perAxis^d, d]. */
  evalGrid(perAxis: number): { points: Float64Array; count: number };
  /**
   * True for a system of equations or a network with several outputs (problem-api.ts `DefinedProblem`):
   * the trainer takes the general path (worker/trainer/system.ts). Absent: false.
   */
  readonly isSystem?: boolean;
}

// ---------------------------------------------------------------------------------------------
// The built-in problems (science.md §3), stated on the public problem API (problem-api.ts) exactly as a
// user module states a problem. The classes bind parameters and add the pointwise helpers tests use.

const BOX2: ReadonlyArray<readonly [number, number]> = [
  [-1, 1],
  [-1, 1],
];

/**
 * helmholtz2d (science.md §3): r = u_xx + u_yy + k² u − q on [-1,1]², u* = sin(a1 π x) sin(a2 π y),
 * hence q = (k² − π²(a1² + a2²)) u*; u = 0 on the boundary (`perEdge` points per edge).
 */
export const HELMHOLTZ2D = defineProblem({
  name: 'helmholtz2d',
  inputs: ['x', 'y'],
  domain: BOX2,
  outputs: ['u'],
  params: { a1: 1, a2: 4, k: 1 },
  fields: ['u', 'u_xx', 'u_yy', 'q'],
  residuals: { pde: (f, { p, ops }) => ops.sub(ops.add(ops.add(f.u_xx!, f.u_yy!), ops.mul(f.u!, p.k! * p.k!)), f.q!) },
  source: ([x, y], p) => (p.k! * p.k! - Math.PI * Math.PI * (p.a1! * p.a1! + p.a2! * p.a2!)) * helmholtzExact(x!, y!, p),
  solution: ([x, y], p) => helmholtzExact(x!, y!, p),
  conditions: { bc: ({ n_boundary, helpers }) => helpers.boxBoundary(n_boundary) },
});

function helmholtzExact(x: number, y: number, p: Readonly<Record<string, number>>): number {
  return Math.sin(p.a1! * Math.PI * x) * Math.sin(p.a2! * Math.PI * y);
}

/** poisson2d (science.md §3): r = u_xx + u_yy − q on [-1,1]², u* = sin(π x) sin(π y), q = −2π² u*; u = 0 on the boundary. */
export const POISSON2D = defineProblem({
  name: 'poisson2d',
  inputs: ['x', 'y'],
  domain: BOX2,
  outputs: ['u'],
  params: {},
  fields: ['u_xx', 'u_yy', 'q'],
  residuals: { pde: (f, { ops }) => ops.sub(ops.add(f.u_xx!, f.u_yy!), f.q!) },
  source: ([x, y]) => -2 * Math.PI * Math.PI * poissonExact(x!, y!),
  solution: ([x, y]) => poissonExact(x!, y!),
  conditions: { bc: ({ n_boundary, helpers }) => helpers.boxBoundary(n_boundary) },
});

function poissonExact(x: number, y: number): number {
  return Math.sin(Math.PI * x) * Math.sin(Math.PI * y);
}

/** Box problems: the pointwise u* and q the tests use. */
abstract class Box2dProblem extends DefinedProblem {
  /** u*(x, y) */
  exact(x: number, y: number): number {
    return this.definition.solution!([x, y], this.params) as number;
  }
  /** q(x, y) */
  q(x: number, y: number): number {
    return this.definition.source!([x, y], this.params);
  }
}

/** helmholtz2d with parameters a1, a2, k bound. */
export class Helmholtz2d extends Box2dProblem {
  declare readonly params: { a1: number; a2: number; k: number };
  constructor(a1: number, a2: number, k: number) {
    super(HELMHOLTZ2D, { a1, a2, k }, { guard: false });
  }
}

/** poisson2d. */
export class Poisson2d extends Box2dProblem {
  constructor() {
    super(POISSON2D, {}, { guard: false });
  }
}

// ---------------------------------------------------------------------------------------------
// Time-dependent problems on x ∈ [−1, 1], t ∈ [0, 1] (input order ['x', 't'])

const XT: ReadonlyArray<readonly [number, number]> = [
  [-1, 1],
  [0, 1],
];

/** Where the reference cache lives on disk: `defaultReferenceCacheDir()`, or memory only if PHASEMAP_REFERENCE_CACHE=off. */
function referenceCacheOpts(): { dir?: string } {
  return process.env.PHASEMAP_REFERENCE_CACHE === 'off' ? {} : { dir: defaultReferenceCacheDir() };
}

/**
 * The initial set of an x × t problem: `n_initial` evenly spaced x over the domain (ends included) at
 * t = the domain's start, targets u0(x).
 */
function initialAtT0(ctx: ConditionContext, u0: (x: number) => number): ConditionOutput {
  const [[x0, x1], [t0]] = ctx.domain as [[number, number], [number, number]];
  const xs = linspace(x0, x1, ctx.n_initial);
  const points = new Float64Array(2 * ctx.n_initial);
  const values = new Float64Array(ctx.n_initial);
  for (let k = 0; k < ctx.n_initial; k++) {
    points[2 * k] = xs[k]!;
    points[2 * k + 1] = t0;
    values[k] = u0(xs[k]!);
  }
  return { points, values };
}

/** Gauss–Hermite nodes of the Burgers reference for viscosity ν: max(200, ⌈200·√(ν₀/ν)⌉), capped at 2000. */
export function burgersNodes(nu: number): number {
  return Math.min(2000, Math.max(BURGERS_NODES, Math.ceil(BURGERS_NODES * Math.sqrt(BURGERS_NU / nu) - 1e-9)));
}

/**
 * u* at the points through `cachedReference` (memo + disk cache), keyed on the problem name, its
 * parameters, the solver settings and the points (by content): computed once per problem
 * configuration and evaluation grid, not per trial.
 */
function cachedSolve(problem: string, params: Readonly<Record<string, number>>, solver: Record<string, number>, points: Float64Array, n: number, solve: () => Float64Array): Float64Array {
  return cachedReference({ problem, params: { ...params }, solver, points }, solve, referenceCacheOpts());
}

/**
 * burgers1d (science.md §3): r = u_t + u u_x − ν u_xx on x ∈ [−1, 1], t ∈ [0, 1];
 * u(x, 0) = −sin(πx) (initial set, `value` term weighted by w_ic); u(±1, t) = 0 (boundary set:
 * `perEdge` times on each of x = −1 and x = +1, `value` term weighted by w_bc).
 * Reference: Cole–Hopf + Gauss–Hermite (`burgersOnPoints`) with `burgersNodes(ν)` nodes
 * (ν₀ = 0.01/π: the integrand's peaks narrow like √ν).
 */
export const BURGERS1D = defineProblem({
  name: 'burgers1d',
  inputs: ['x', 't'],
  domain: XT,
  outputs: ['u'],
  params: { nu: BURGERS_NU },
  fields: ['u', 'u_t', 'u_x', 'u_xx'],
  residuals: { pde: (f, { p, ops }) => ops.sub(ops.add(f.u_t!, ops.mul(f.u!, f.u_x!)), ops.mul(f.u_xx!, p.nu!)) },
  conditions: {
    bc: ({ n_boundary, helpers }) => helpers.axisEnds('x', n_boundary),
    ic: (ctx) => initialAtT0(ctx, (x) => -Math.sin(Math.PI * x)),
  },
  reference: (points, n, p) => {
    const nodes = burgersNodes(p.nu!);
    return cachedSolve('burgers1d', p, { nodes }, points, n, () => burgersOnPoints(points, n, p.nu!, nodes));
  },
});

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
export const ALLEN_CAHN1D = defineProblem({
  name: 'allen_cahn1d',
  inputs: ['x', 't'],
  domain: XT,
  outputs: ['u'],
  params: { d: ALLEN_CAHN_D },
  fields: ['u', 'u_t', 'u_xx'],
  // 5u³ − 5u = 5u(u² − 1)
  residuals: { pde: (f, { p, ops }) => ops.add(ops.sub(f.u_t!, ops.mul(f.u_xx!, p.d!)), ops.mul(ops.mul(f.u!, 5), ops.sub(ops.square(f.u!), 1))) },
  conditions: {
    bc: ({ n_boundary, helpers }) => ({ ...helpers.axisEnds('x', n_boundary), kind: 'periodic', axis: 'x' }),
    ic: (ctx) => initialAtT0(ctx, (x) => x * x * Math.cos(Math.PI * x)),
  },
  reference: (points, n, p) => {
    const solver = { modes: ALLEN_CAHN_MODES, dt: ALLEN_CAHN_DT };
    return cachedSolve('allen_cahn1d', p, solver, points, n, () => allenCahnOnPoints(points, n, p.d!, solver));
  },
});

/** burgers1d with ν bound; `solve` is the uncached reference solver. */
export class Burgers1d extends DefinedProblem {
  declare readonly params: { nu: number };
  readonly nodes: number;
  constructor(nu: number = BURGERS_NU) {
    super(BURGERS1D, { nu }, { guard: false });
    this.nodes = burgersNodes(nu);
  }
  /** The reference solver at arbitrary points (uncached). */
  solve(points: Float64Array, n: number): Float64Array {
    return burgersOnPoints(points, n, this.params.nu, this.nodes);
  }
}

/** allen_cahn1d with d bound; `solve` is the uncached reference solver. */
export class AllenCahn1d extends DefinedProblem {
  declare readonly params: { d: number };
  constructor(d = ALLEN_CAHN_D) {
    super(ALLEN_CAHN1D, { d }, { guard: false });
  }
  /** The reference solver at arbitrary points (uncached). */
  solve(points: Float64Array, n: number): Float64Array {
    return allenCahnOnPoints(points, n, this.params.d, { modes: ALLEN_CAHN_MODES, dt: ALLEN_CAHN_DT });
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

/** Problem definitions of user modules loaded in this process, by their content hash (`problem.module_hash`). */
const modules = new Map<string, { definition: ProblemDefinition; where: string }>();

/**
 * Makes a loaded module's definition available to `makeProblem` for configs with this `module_hash`
 * (worker/trainer/problem-module.ts `loadProblemModule` calls it).
 */
export function registerProblemModule(hash: string, definition: ProblemDefinition, where: string): void {
  modules.set(hash, { definition, where });
}

/** Keys of a module problem's config section that are not its parameters. */
export const MODULE_CONFIG_KEYS: readonly string[] = ['name', 'module', 'module_hash', 'n_collocation', 'n_boundary', 'w_bc', 'eval_grid', 'n_initial', 'w_ic'];

/** A module problem's config section: the module's path and content hash, the common fields and its parameters. */
export interface ModuleProblemConfig {
  name: string;
  module: string;
  module_hash: string;
  n_collocation: number;
  n_boundary: number;
  w_bc: number;
  eval_grid: number;
  n_initial?: number;
  w_ic?: number;
  [param: string]: string | number | undefined;
}

/** Whether a problem config section names a user module (`problem: {module: …}`). */
export function isModuleConfig(cfg: unknown): cfg is ModuleProblemConfig {
  return !!cfg && typeof cfg === 'object' && typeof (cfg as { module?: unknown }).module === 'string';
}

/** The parameter values of a module problem's config section. */
export function moduleParams(cfg: ModuleProblemConfig): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(cfg)) if (!MODULE_CONFIG_KEYS.includes(k) && typeof v === 'number') out[k] = v;
  return out;
}

/**
 * Whether a trial's problem config is a system (a loaded module with several outputs or residual terms):
 * such trials train on the general path, one at a time, never fused (worker/trainer/system.ts). False for
 * the built-ins and for a module not loaded in this process.
 */
export function configIsSystem(cfg: ProblemConfig): boolean {
  if (!isModuleConfig(cfg)) return false;
  const def = modules.get(cfg.module_hash)?.definition;
  return !!def && (def.outputs.length > 1 || Object.keys(def.residuals).length > 1);
}

/**
 * The Problem for a trial's `problem` config section: a built-in by `name`, or — for a section with
 * `module` — the definition of that module loaded in this process under `module_hash`.
 * @throws Error if `cfg.name` is not registered, or the module is not loaded here.
 */
export function makeProblem(cfg: ProblemConfig): Problem {
  if (isModuleConfig(cfg)) {
    const m = modules.get(cfg.module_hash);
    if (!m) throw new Error(`problem module ${cfg.module} (${cfg.module_hash}) is not loaded in this process: its source comes with the trial message (loadProblemModule)`);
    return definedProblem(m.definition, moduleParams(cfg), { where: m.where });
  }
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
