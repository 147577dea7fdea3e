/**
 * The public problem API: how a PDE problem is stated for phasemap, by the built-in problems
 * (problems.ts) and by a researcher's own module (`problem: {module: ./my_pde.mjs}` in a spec).
 *
 * ## The contract
 *
 * A problem is a plain object, a `ProblemDefinition` (a module's default export), that declares:
 *
 *  - `name`: a word (`[a-z][a-z0-9_]*`), shown in results and checkpoints (`problem` metadata).
 *  - `inputs`: the names of the input coordinates, in column order (e.g. `['x', 't']`), and `domain`:
 *    one `[lo, hi]` per input (a box). Collocation points are drawn by the trainer: a Latin hypercube
 *    over the box, seeded by the trial's seed — a problem never draws random numbers.
 *  - `outputs`: the named network outputs, e.g. `['u']`, or `['u', 'v', 'p']` for a system: the network
 *    has one linear output column per name, in this order (checkpoints' `output_order`).
 *  - `params`: every constant of the problem, each a number with its default (or `{default, minimum,
 *    maximum, description}`). The resolved values are part of the trial config, hence of the trial id,
 *    and sweepable from the grid (`problem.<param>`). They reach every function as `p`.
 *  - `fields`: exactly which fields the residual reads: each output itself (`u`), its first derivatives
 *    `u_<input>` and its diagonal second derivatives `u_<input><input>` (the set the trainer propagates
 *    forward through the network: science.md §2), the same for every other output (`v_x`, `p_y`, …), the
 *    input coordinates by name (`x`, `t`), and `q`, the source term. The trainer computes these and no
 *    others; reading any other field throws, naming it.
 *  - `residuals`: the PDE residual as named terms `{name: (f, {p, ops}) => tensor}`. `f` holds the
 *    declared fields, each a tensor [G, n] (G groups of n points); `ops` the tensor operations a
 *    residual may use (`add, sub, mul, div, neg, square, sqrt, pow, exp, log, sin, cos, tanh, abs`), so a
 *    module needs no imports. Each term returns one tensor [G, n]. One term is science.md §2's residual
 *    r; a system of equations has one term per equation, each its own term of the loss:
 *    L = Σ_e mean_i (λ_{e,i} r_{e,i})² + the condition terms, with λ per point per equation (rba, sa).
 *  - `source` (optional): the source term q(x) as a plain function of one point `(pt: number[], p)`,
 *    evaluated once per collocation point in float64 at setup and handed to the residual as field `q`.
 *  - `conditions`: the condition sets, each a function `(ctx) => {kind, points, values?, axis?}`, under
 *    the names the loss weights them by: `bc` (required; weight `w_bc`, size `n_boundary`) and `ic`
 *    (optional, a time-dependent problem's initial set; weight `w_ic`, size `n_initial`). `kind: 'value'`
 *    enters the loss as w · mean_j (u(x_j) − g_j)² with `values` g; `kind: 'periodic'` pairs point j of
 *    the first half of `points` with point j of the second half and enters as
 *    w · mean_j [(u(a_j) − u(b_j))² + (u_s(a_j) − u_s(b_j))²], s = the input named by `axis`. Points are
 *    `number[][]` (one row per point) or a row-major Float64Array [m, d]; `ctx` carries `p`, the sizes
 *    `n_boundary`, `n_initial`, the domain and `helpers` (`linspace`, `boxBoundary`, `axisEnds`).
 *    With several outputs a `value` set names the output its targets are for: `output: 'u'` (every
 *    point) or one output name per point (`output: ['u', 'u', 'v', …]`); default the first output.
 *    `periodic` sets are for single-output problems.
 *  - `solution` (optional): the exact solution u*(pt, p) of one point (with several outputs: one number
 *    per output, in `outputs` order), or `reference(points, n, p)`: u* on n points (row-major
 *    Float64Array [n, d]) at once (e.g. a numerical solver; with K outputs n·K values, point-major).
 *    Or `evaluation(ctx)`: an explicit evaluation set `{points, values, output?}` (any point set, not only
 *    a grid; `output` as for a condition set: which output each value is of), e.g. tabulated data.
 *    rel_l2 = ‖u − u*‖₂ / ‖u*‖₂ over all values of the set (science.md §2). Without any of them, rows
 *    carry no rel_l2 (null).
 *  - `evalGrid` (optional): the evaluation grid `(perAxis, ctx) => points`; default: `perAxis` evenly
 *    spaced points per input over the domain (tensor product, first input slowest).
 *
 * A module does no I/O, draws no random numbers and keeps no state at import: every worker that runs
 * a trial must compute exactly the same numbers from the definition and the trial config.
 *
 * `checkProblem` tests a definition the way Gymnasium's `check_env` tests an environment: it evaluates
 * every function on a few points and returns actionable messages. `definedProblem` turns a definition
 * and its parameter values into the trainer's `Problem` once, at setup: the training step then runs the
 * same tensor code as a hand-written problem.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Rng } from './rng.js';
import { latinHypercube } from './rng.js';
import { boxBoundary2d, linspace, tensorGrid, xtBoundary } from './problem-geometry.js';
import type { ConditionKind, ConditionSet, DerivSpec, Fields, Problem } from './problems.js';

/** A parameter declaration: its default, or the default with a range and a description. */
export type ParamDeclaration = number | { default: number; minimum?: number; maximum?: number; description?: string };

/** Tensor operations handed to a residual (the tfjs functions of those names). */
export interface ResidualOps {
  add: typeof tf.add; sub: typeof tf.sub; mul: typeof tf.mul; div: typeof tf.div; neg: typeof tf.neg;
  square: typeof tf.square; sqrt: typeof tf.sqrt; pow: typeof tf.pow; exp: typeof tf.exp; log: typeof tf.log;
  sin: typeof tf.sin; cos: typeof tf.cos; tanh: typeof tf.tanh; abs: typeof tf.abs;
}

/** The operations a residual may use. */
export const RESIDUAL_OPS: Readonly<ResidualOps> = Object.freeze({
  add: tf.add, sub: tf.sub, mul: tf.mul, div: tf.div, neg: tf.neg, square: tf.square, sqrt: tf.sqrt, pow: tf.pow,
  exp: tf.exp, log: tf.log, sin: tf.sin, cos: tf.cos, tanh: tf.tanh, abs: tf.abs,
});

/** What a residual term receives besides the fields. */
export interface ResidualContext {
  /** The problem's parameter values. */
  p: Readonly<Record<string, number>>;
  ops: Readonly<ResidualOps>;
}

/** One residual term: the declared fields (each [G, n]) → r [G, n]. */
export type ResidualTerm = (f: Readonly<Record<string, tf.Tensor>>, ctx: ResidualContext) => tf.Tensor;

/** Helpers for building condition sets and grids (so a module needs no imports). */
export interface ProblemHelpers {
  /** n evenly spaced numbers from lo to hi, ends included (the midpoint for n = 1). */
  linspace(lo: number, hi: number, n: number): number[];
  /** 2-D box: `perEdge` evenly spaced points on each of the 4 edges (bottom, top, left, right; corners on two edges), [4·perEdge, 2], values 0. */
  boxBoundary(perEdge: number): ConditionOutput;
  /**
   * 2-D domain: the two ends of input `axis` (its lo, then its hi), each at `perEnd` evenly spaced values
   * of the other input: [2·perEnd, 2], values 0. As a `periodic` set: the pairs (lo, s_j) ↔ (hi, s_j).
   */
  axisEnds(axis: string, perEnd: number): ConditionOutput;
}

/** What a condition function receives. */
export interface ConditionContext {
  p: Readonly<Record<string, number>>;
  /** Boundary set size from the config (`problem.n_boundary`, e.g. points per edge). */
  n_boundary: number;
  /** Initial set size from the config (`problem.n_initial`); only for problems with an `ic` condition. */
  n_initial: number;
  domain: ReadonlyArray<readonly [number, number]>;
  inputs: readonly string[];
  helpers: ProblemHelpers;
}

/** A condition set as a problem returns it. */
export interface ConditionOutput {
  /** `value` (default) or `periodic`. */
  kind?: ConditionKind;
  /** m points: number[][] (rows of d coordinates) or row-major Float64Array [m·d]. */
  points: ArrayLike<number>[] | Float64Array;
  /** m target values g (for `value`; ignored for `periodic`). */
  values?: ArrayLike<number>;
  /** For `periodic`: the input whose first derivative is matched too (name; default: the first input). */
  axis?: string;
  /**
   * For a `value` set of a problem with several outputs: the output the targets are for, one name for all
   * points or one name per point; default the first output.
   */
  output?: string | readonly string[];
}

/** An explicit evaluation set (`ProblemDefinition.evaluation`): points, reference values and their outputs. */
export interface EvaluationOutput {
  /** m points: number[][] (rows of d coordinates) or row-major Float64Array [m·d]. */
  points: ArrayLike<number>[] | Float64Array;
  /** m reference values u*_j. */
  values: ArrayLike<number>;
  /** The output each value is of: one name for all, or one per point; default the first output. */
  output?: string | readonly string[];
}

/** A problem, as a module states it (see the module docstring for the contract). */
export interface ProblemDefinition {
  name: string;
  inputs: readonly string[];
  domain: ReadonlyArray<readonly [number, number]>;
  outputs: readonly string[];
  params?: Readonly<Record<string, ParamDeclaration>>;
  fields: readonly string[];
  residuals: Readonly<Record<string, ResidualTerm>>;
  source?: (pt: number[], p: Readonly<Record<string, number>>) => number;
  conditions: Readonly<{ bc: (ctx: ConditionContext) => ConditionOutput; ic?: (ctx: ConditionContext) => ConditionOutput }>;
  solution?: (pt: number[], p: Readonly<Record<string, number>>) => number | readonly number[];
  reference?: (points: Float64Array, n: number, p: Readonly<Record<string, number>>) => Float64Array | ArrayLike<number>;
  evalGrid?: (perAxis: number, ctx: ConditionContext) => ArrayLike<number>[] | Float64Array;
  evaluation?: (ctx: ConditionContext) => EvaluationOutput;
}

/**
 * A definition, type-checked and frozen (shallowly): `export default defineProblem({...})` in
 * TypeScript; a plain `.mjs` module may export the object itself.
 */
export function defineProblem(def: ProblemDefinition): ProblemDefinition {
  return Object.freeze(def);
}

/** A definition error: names where the definition came from, the function and what was wrong. */
export class ProblemError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProblemError';
  }
}

/** Whether the definition has a condition set `ic` (it takes `n_initial`, `w_ic` in its config). */
export function hasInitial(def: ProblemDefinition): boolean {
  return typeof def.conditions?.ic === 'function';
}

/** The default value of each declared parameter. */
export function paramDefaults(def: ProblemDefinition): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(def.params ?? {})) out[k] = typeof v === 'number' ? v : v.default;
  return out;
}

const NAME = /^[a-z][a-z0-9_]*$/;
const INPUT = /^[a-z][a-z0-9]*$/;
const RESERVED_PARAMS = new Set(['name', 'module', 'module_hash', 'n_collocation', 'n_boundary', 'w_bc', 'eval_grid', 'n_initial', 'w_ic']);

/**
 * The static checks of a definition (types, names, declared fields), without evaluating anything.
 * @param where how messages name the definition, e.g. `problem module ./my_pde.mjs`.
 * @returns messages, empty when the declarations are sound.
 */
export function checkDeclarations(def: unknown, where: string): string[] {
  const errs: string[] = [];
  if (def === null || typeof def !== 'object') return [`${where}: the default export is ${def === null ? 'null' : typeof def}, expected a problem definition object (export default {name, inputs, domain, outputs, fields, residuals, conditions, …})`];
  const d = def as Partial<ProblemDefinition>;
  if (typeof d.name !== 'string' || !NAME.test(d.name)) errs.push(`${where}: name: got ${JSON.stringify(d.name)}, expected a word matching ${NAME.source}`);
  const inputs = Array.isArray(d.inputs) ? d.inputs : null;
  if (!inputs || inputs.length < 1 || inputs.some((s) => typeof s !== 'string' || !INPUT.test(s)) || new Set(inputs).size !== inputs.length)
    errs.push(`${where}: inputs: got ${JSON.stringify(d.inputs)}, expected a list of distinct coordinate names matching ${INPUT.source}, e.g. ['x', 't']`);
  if (!Array.isArray(d.domain) || !inputs || d.domain.length !== inputs.length || d.domain.some((r) => !Array.isArray(r) || r.length !== 2 || !Number.isFinite(r[0]) || !Number.isFinite(r[1]) || !(r[0]! < r[1]!)))
    errs.push(`${where}: domain: got ${JSON.stringify(d.domain)}, expected one [lo, hi] with lo < hi per input (${inputs?.length ?? '?'} inputs)`);
  const outputs = Array.isArray(d.outputs) ? d.outputs : null;
  if (!outputs || outputs.length < 1 || outputs.some((s) => typeof s !== 'string' || !INPUT.test(s)))
    errs.push(`${where}: outputs: got ${JSON.stringify(d.outputs)}, expected a list of output names, e.g. ['u']`);
  else if (new Set(outputs).size !== outputs.length) errs.push(`${where}: outputs: got ${JSON.stringify(outputs)}, expected distinct names`);
  if (inputs && outputs && new Set([...inputs, ...outputs, 'q']).size !== inputs.length + outputs.length + 1)
    errs.push(`${where}: inputs and outputs: names must differ from each other and from 'q' (the source term), got inputs ${JSON.stringify(inputs)}, outputs ${JSON.stringify(outputs)}`);
  if (d.params !== undefined && (d.params === null || typeof d.params !== 'object')) errs.push(`${where}: params: got ${JSON.stringify(d.params)}, expected an object {name: default}`);
  for (const [k, v] of Object.entries(d.params ?? {})) {
    const dv = typeof v === 'number' ? v : v && typeof v === 'object' ? v.default : undefined;
    if (!NAME.test(k) || RESERVED_PARAMS.has(k)) errs.push(`${where}: params.${k}: not a usable parameter name (a word, not one of ${[...RESERVED_PARAMS].join(', ')})`);
    if (typeof dv !== 'number' || !Number.isFinite(dv)) errs.push(`${where}: params.${k}: got ${JSON.stringify(v)}, expected a finite default number, or {default, minimum?, maximum?, description?}`);
  }
  if (inputs && outputs && outputs.length >= 1) {
    const known = allowedFieldsOf(inputs, outputs);
    if (!Array.isArray(d.fields) || d.fields.length === 0) errs.push(`${where}: fields: got ${JSON.stringify(d.fields)}, expected the list of fields the residual reads, from: ${known.join(', ')}`);
    else for (const f of d.fields) if (!known.includes(f)) errs.push(`${where}: fields: '${f}' is not a field the trainer computes; expected some of: ${known.join(', ')} (first and diagonal second derivatives of the output${outputs.length > 1 ? 's' : ''}, the coordinates, q)`);
    if (Array.isArray(d.fields) && d.fields.includes('q') && typeof d.source !== 'function') errs.push(`${where}: fields: 'q' is declared but there is no source(pt, p) function to compute it`);
  }
  const terms = d.residuals && typeof d.residuals === 'object' ? Object.entries(d.residuals) : null;
  if (!terms || terms.length === 0 || terms.some(([, f]) => typeof f !== 'function'))
    errs.push(`${where}: residuals: expected an object of named residual functions, e.g. {pde: (f, {p, ops}) => ops.sub(f.u_xx, f.q)}`);
  else for (const [k] of terms) if (!NAME.test(k)) errs.push(`${where}: residuals.${k}: not a usable term name (a word matching ${NAME.source})`);
  if (!d.conditions || typeof d.conditions !== 'object' || typeof d.conditions.bc !== 'function')
    errs.push(`${where}: conditions: expected {bc: (ctx) => ({points, values}), ic?: …} with a boundary set bc`);
  else for (const k of Object.keys(d.conditions)) if (k !== 'bc' && k !== 'ic') errs.push(`${where}: conditions.${k}: unknown condition; the loss weights 'bc' (w_bc) and 'ic' (w_ic)`);
  for (const k of ['source', 'solution', 'reference', 'evalGrid', 'evaluation'] as const)
    if (d[k] !== undefined && typeof d[k] !== 'function') errs.push(`${where}: ${k}: got ${typeof d[k]}, expected a function`);
  const refs = (['solution', 'reference', 'evaluation'] as const).filter((k) => d[k] !== undefined);
  if (refs.length > 1) errs.push(`${where}: ${refs.join(' and ')}: give one of them`);
  return errs;
}

/** Every field name a residual may declare for these inputs and outputs (each output's fields, then the coordinates and q). */
export function allowedFieldsOf(inputs: readonly string[], outputs: readonly string[]): string[] {
  if (outputs.length === 1) return allowedFields(inputs, outputs[0]!);
  return [...outputs.flatMap((o) => [o, ...inputs.map((i) => `${o}_${i}`), ...inputs.map((i) => `${o}_${i}${i}`)]), ...inputs, 'q'];
}

/** Every field name a residual may declare for these inputs and output. */
export function allowedFields(inputs: readonly string[], output: string): string[] {
  return [output, ...inputs.map((i) => `${output}_${i}`), ...inputs.map((i) => `${output}_${i}${i}`), ...inputs, 'q'];
}

/** The derivatives the trainer must propagate for the declared fields (indices sorted; first ⊇ second). */
export function derivSpecOf(inputs: readonly string[], output: string, fields: readonly string[]): DerivSpec {
  const first = new Set<number>();
  const second = new Set<number>();
  inputs.forEach((s, i) => {
    if (fields.includes(`${output}_${s}${s}`)) {
      second.add(i);
      first.add(i);
    }
    if (fields.includes(`${output}_${s}`)) first.add(i);
  });
  const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);
  return { first: sorted(first), second: sorted(second) };
}

/** Row-major Float64Array [m, d] of points given as rows or flat; throws naming `what` on a wrong shape. */
function toPoints(v: unknown, d: number, what: string): { points: Float64Array; count: number } {
  if (v instanceof Float64Array || v instanceof Float32Array) {
    if (v.length % d !== 0 || v.length === 0) throw new ProblemError(`${what}: got a flat array of length ${v.length}, expected a row-major [m, ${d}] array (length a positive multiple of ${d})`);
    return { points: Float64Array.from(v), count: v.length / d };
  }
  if (!Array.isArray(v) || v.length === 0) throw new ProblemError(`${what}: got ${v === undefined ? 'undefined' : JSON.stringify(v)?.slice(0, 60)}, expected points: a non-empty list of [${d}] coordinate rows or a Float64Array [m·${d}]`);
  const out = new Float64Array(v.length * d);
  v.forEach((row, j) => {
    const r = row as ArrayLike<number>;
    if (!r || typeof r !== 'object' || r.length !== d) throw new ProblemError(`${what}: point ${j} has shape [${(r as ArrayLike<number>)?.length ?? typeof r}], expected [${d}] (one coordinate per input)`);
    for (let i = 0; i < d; i++) {
      if (typeof r[i] !== 'number' || !Number.isFinite(r[i])) throw new ProblemError(`${what}: point ${j} coordinate ${i} is ${String(r[i])}, expected a finite number`);
      out[j * d + i] = r[i]!;
    }
  });
  return { points: out, count: v.length };
}

/** A [n] float64 array of finite numbers, or throws naming `what` and the shape. */
function toValues(v: unknown, n: number, what: string): Float64Array {
  const a = v as ArrayLike<number> | undefined;
  if (!a || typeof a !== 'object' || typeof a.length !== 'number') throw new ProblemError(`${what}: got ${typeof v}, expected ${n} numbers`);
  if (a.length !== n) throw new ProblemError(`${what}: got shape [${a.length}], expected [${n}] (one value per point)`);
  const out = Float64Array.from(a);
  const bad = out.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) throw new ProblemError(`${what}: value ${bad} is ${out[bad]}, expected a finite number`);
  return out;
}

/** A scalar function of one point, checked finite, as a loop over rows of `points`. */
function pointwise(f: (pt: number[], p: Readonly<Record<string, number>>) => number, p: Readonly<Record<string, number>>, points: Float64Array, n: number, d: number, what: string): Float64Array {
  const out = new Float64Array(n);
  const pt = new Array<number>(d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) pt[j] = points[i * d + j]!;
    const v = f(pt, p);
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new ProblemError(`${what}: at point [${pt.join(', ')}] returned ${typeof v === 'number' ? v : typeof v}, expected a finite number`);
    out[i] = v;
  }
  return out;
}

/** Options of `definedProblem`. */
export interface DefinedProblemOptions {
  /** How messages name the definition (e.g. `problem module ./my_pde.mjs`); default `problem <name>`. */
  where?: string;
  /**
   * Hand the residual the declared fields in an object that throws on any other key (default true).
   * The built-ins turn it off: their declarations are tested, and the training step then runs exactly
   * the tensor code of the residual with nothing around it.
   */
  guard?: boolean;
}

/**
 * The trainer's `Problem` of a definition with parameter values `params` (the defaults for those left
 * out). Everything is resolved once here: the derivatives to propagate, the field names, the checks.
 * @throws ProblemError on a definition that fails `checkDeclarations`, or an unknown parameter.
 */
export function definedProblem(def: ProblemDefinition, params: Record<string, number> = {}, opts: DefinedProblemOptions = {}): DefinedProblem {
  return new DefinedProblem(def, params, opts);
}

/** A `Problem` built from a `ProblemDefinition` (see `definedProblem`). */
export class DefinedProblem implements Problem {
  readonly name: string;
  readonly params: Record<string, number>;
  readonly inputOrder: readonly string[];
  readonly domain: ReadonlyArray<readonly [number, number]>;
  readonly derivs: DerivSpec;
  /** The first (for a single-output problem: the only) output. */
  readonly output: string;
  /** The output names, in network column order (checkpoints' `output_order`). */
  readonly outputs: readonly string[];
  /** The residual term names, one per equation, in definition order. */
  readonly equations: readonly string[];
  /**
   * True for a system (more than one output or more than one residual term): trained on the general
   * path (worker/trainer/system.ts), never fused; false for a single output with one term (the fast path).
   */
  readonly isSystem: boolean;
  /** How messages name this problem. */
  readonly where: string;
  private readonly term: [string, ResidualTerm];
  private readonly terms: Array<[string, ResidualTerm]>;
  private readonly ctx: ResidualContext;
  /** Declared field → the trainer's Fields key (`u`, `u_x`, …) or a coordinate index, or 'q'. */
  private readonly fieldMap: Array<[string, string | number]>;
  private readonly guard: boolean;
  private readonly needsCoords: boolean;
  readonly initial?: (perAxis: number) => ConditionSet;

  constructor(readonly definition: ProblemDefinition, params: Record<string, number>, opts: DefinedProblemOptions) {
    const where = opts.where ?? `problem ${String(definition?.name)}`;
    const errs = checkDeclarations(definition, where);
    if (errs.length) throw new ProblemError(errs.join('\n'));
    const defaults = paramDefaults(definition);
    for (const k of Object.keys(params)) if (!(k in defaults)) throw new ProblemError(`${where}: parameter '${k}' is not declared (declared: ${Object.keys(defaults).join(', ') || 'none'})`);
    this.where = where;
    this.name = definition.name;
    this.params = Object.freeze({ ...defaults, ...params });
    this.inputOrder = Object.freeze([...definition.inputs]);
    this.domain = definition.domain.map(([a, b]) => [a, b] as const);
    this.output = definition.outputs[0]!;
    this.outputs = Object.freeze([...definition.outputs]);
    this.terms = Object.entries(definition.residuals);
    this.equations = Object.freeze(this.terms.map(([k]) => k));
    this.isSystem = this.outputs.length > 1 || this.terms.length > 1;
    if (!this.isSystem) this.derivs = derivSpecOf(this.inputOrder, this.output, definition.fields);
    else {
      // The union over outputs: the general forward pass propagates these derivatives of every output.
      const specs = this.outputs.map((o) => derivSpecOf(this.inputOrder, o, definition.fields));
      const union = (k: 'first' | 'second') => [...new Set(specs.flatMap((sp) => sp[k]))].sort((a, b) => a - b);
      this.derivs = { first: union('first'), second: union('second') };
    }
    this.term = this.terms[0]!;
    this.ctx = Object.freeze({ p: this.params, ops: RESIDUAL_OPS });
    this.guard = opts.guard ?? true;
    const o = this.output;
    this.fieldMap = definition.fields.map((f): [string, string | number] => {
      const i = this.inputOrder.indexOf(f);
      if (i >= 0) return [f, i];
      if (f === 'q') return [f, 'q'];
      if (this.isSystem) return [f, f]; // the general forward pass names fields as declared (system.ts)
      return [f, f === o ? 'u' : `u${f.slice(o.length)}`];
    });
    this.needsCoords = this.fieldMap.some(([, k]) => typeof k === 'number');
    if (hasInitial(definition)) this.initial = (perAxis: number) => this.conditionSet('ic', this.conditionContext(1, perAxis));
  }

  /** The context handed to condition and grid functions. */
  conditionContext(nBoundary: number, nInitial: number): ConditionContext {
    const d = this.inputOrder.length;
    // No `kind` for a value set: `{kind: 'periodic', ...helpers.axisEnds('x', n)}` must stay periodic.
    const asOutput = (s: ConditionSet): ConditionOutput => ({ ...(s.kind === 'periodic' ? { kind: s.kind } : {}), points: s.points, values: s.values, ...(s.axis !== undefined ? { axis: this.inputOrder[s.axis]! } : {}) });
    const helpers: ProblemHelpers = {
      linspace: (lo, hi, n) => [...linspace(lo, hi, n)],
      boxBoundary: (perEdge) => {
        if (d !== 2) throw new ProblemError(`${this.where}: helpers.boxBoundary: the domain has ${d} inputs, expected 2`);
        return asOutput(boxBoundary2d(this.domain, perEdge));
      },
      axisEnds: (axis, perEnd) => {
        const a = this.inputOrder.indexOf(axis);
        if (d !== 2 || a < 0) throw new ProblemError(`${this.where}: helpers.axisEnds: expected a 2-D domain and one of the inputs ${this.inputOrder.join(', ')}, got '${axis}'`);
        if (a === 0) return asOutput(xtBoundary(this.domain, perEnd));
        const sw = xtBoundary([this.domain[1]!, this.domain[0]!], perEnd); // ends of the second input: swap columns
        const pts = new Float64Array(sw.points.length);
        for (let j = 0; j < sw.count; j++) [pts[2 * j], pts[2 * j + 1]] = [sw.points[2 * j + 1]!, sw.points[2 * j]!];
        return asOutput({ ...sw, points: pts });
      },
    };
    return Object.freeze({ p: this.params, n_boundary: nBoundary, n_initial: nInitial, domain: this.domain, inputs: this.inputOrder, helpers });
  }

  /** Condition set `name` ('bc' or 'ic') evaluated and checked. */
  conditionSet(name: 'bc' | 'ic', ctx: ConditionContext): ConditionSet {
    const fn = this.definition.conditions[name]!;
    const what = `${this.where}: conditions.${name}`;
    const out = fn(ctx);
    if (!out || typeof out !== 'object') throw new ProblemError(`${what}: returned ${typeof out}, expected {kind?, points, values?, axis?}`);
    const kind = out.kind ?? 'value';
    if (kind !== 'value' && kind !== 'periodic') throw new ProblemError(`${what}: kind: got ${JSON.stringify(kind)}, expected 'value' or 'periodic'`);
    const d = this.inputOrder.length;
    const { points, count } = toPoints(out.points, d, `${what} points`);
    if (kind === 'periodic') {
      if (this.outputs.length > 1) throw new ProblemError(`${what}: kind 'periodic' is for single-output problems today; this problem has outputs ${this.outputs.join(', ')}: state the periodic pairs as value sets, or use one output`);
      if (count % 2 !== 0) throw new ProblemError(`${what}: a periodic set needs an even number of points (pairs: first half ↔ second half), got ${count}`);
      const axis = out.axis === undefined ? 0 : this.inputOrder.indexOf(out.axis);
      if (axis < 0) throw new ProblemError(`${what}: axis: got ${JSON.stringify(out.axis)}, expected one of the inputs ${this.inputOrder.join(', ')}`);
      return { points, values: new Float64Array(count), count, kind, axis };
    }
    const values = toValues(out.values, count, `${what} values`);
    if (this.outputs.length === 1) {
      if (out.output !== undefined) this.outputIndices(out.output, count, `${what} output`); // checked, all 0
      return { points, values, count };
    }
    return { points, values, count, output: this.outputIndices(out.output, count, `${what} output`) };
  }

  /**
   * The output index (into `outputs`) of each of `count` values from `output`: one name for all, one name
   * per value, or undefined (the first output).
   * @throws ProblemError naming `what`, the value and the output names on an unknown name or a wrong length.
   */
  outputIndices(output: string | readonly string[] | undefined, count: number, what: string): Int32Array {
    const idx = (name: unknown, j: number | null): number => {
      const k = typeof name === 'string' ? this.outputs.indexOf(name) : -1;
      if (k < 0) throw new ProblemError(`${what}${j === null ? '' : ` ${j}`}: got ${JSON.stringify(name)}, expected one of the outputs ${this.outputs.join(', ')}`);
      return k;
    };
    if (output === undefined) return new Int32Array(count);
    if (typeof output === 'string') return new Int32Array(count).fill(idx(output, null));
    if (!Array.isArray(output) || output.length !== count)
      throw new ProblemError(`${what}: got ${Array.isArray(output) ? `${output.length} names` : JSON.stringify(output)}, expected one output name, or one per point (${count})`);
    return Int32Array.from(output, (o, j) => idx(o, j));
  }

  collocation(n: number, rng: Rng): Float64Array {
    return latinHypercube(n, this.domain, rng);
  }

  boundary(perEdge: number): ConditionSet {
    return this.conditionSet('bc', this.conditionContext(perEdge, 1));
  }

  forcing(points: Float64Array, n: number): Float64Array {
    const src = this.definition.source;
    if (!src) return new Float64Array(n);
    return pointwise(src, this.params, points, n, this.inputOrder.length, `${this.where}: source`);
  }

  /** Whether the problem has a reference solution (else rows carry no rel_l2). */
  get hasReference(): boolean {
    return !!(this.definition.solution || this.definition.reference || this.definition.evaluation);
  }

  /**
   * The evaluation set of rel_l2 (science.md §2) for any problem: m points [m, d] (float64 row-major), the
   * reference value of each and the output (index into `outputs`) it is of. From `evaluation(ctx)` when
   * given (any point set); else the evaluation grid (`evalGrid(perAxis)`) with, for K outputs, each point
   * repeated K times (point-major: the values of point j are rows j·K … j·K + K − 1) and the values of
   * `solution` / `reference`. Without a reference: the grid with zero values.
   * @throws ProblemError naming the function and the shape on a wrong-sized result.
   */
  evaluationSet(perAxis: number): { points: Float64Array; count: number; values: Float64Array; output: Int32Array } {
    const def = this.definition;
    const d = this.inputOrder.length;
    if (def.evaluation) {
      const what = `${this.where}: evaluation`;
      const out = def.evaluation(this.conditionContext(1, 1));
      if (!out || typeof out !== 'object') throw new ProblemError(`${what}: returned ${typeof out}, expected {points, values, output?}`);
      const { points, count } = toPoints(out.points, d, `${what} points`);
      return { points, count, values: toValues(out.values, count, `${what} values`), output: this.outputIndices(out.output, count, `${what} output`) };
    }
    const g = this.evalGrid(perAxis);
    const K = this.outputs.length;
    if (K === 1) return { ...g, values: this.reference(g.points, g.count), output: new Int32Array(g.count) };
    const m = g.count * K;
    const points = new Float64Array(m * d);
    const output = new Int32Array(m);
    for (let j = 0; j < g.count; j++)
      for (let k = 0; k < K; k++) {
        points.set(g.points.subarray(j * d, j * d + d), (j * K + k) * d);
        output[j * K + k] = k;
      }
    let values = new Float64Array(m);
    if (def.solution) {
      const pt = new Array<number>(d);
      for (let j = 0; j < g.count; j++) {
        for (let i = 0; i < d; i++) pt[i] = g.points[j * d + i]!;
        const v = def.solution(pt, this.params) as unknown;
        const a = v as ArrayLike<number>;
        if (!a || typeof a !== 'object' || a.length !== K) throw new ProblemError(`${this.where}: solution: at point [${pt.join(', ')}] returned ${typeof v === 'number' ? 'a number' : JSON.stringify(v)}, expected ${K} numbers (one per output: ${this.outputs.join(', ')})`);
        for (let k = 0; k < K; k++) {
          if (typeof a[k] !== 'number' || !Number.isFinite(a[k])) throw new ProblemError(`${this.where}: solution: at point [${pt.join(', ')}] output ${this.outputs[k]} is ${String(a[k])}, expected a finite number`);
          values[j * K + k] = a[k]!;
        }
      }
    } else if (def.reference) values = Float64Array.from(toValues(def.reference(g.points, g.count, this.params), m, `${this.where}: reference(points, ${g.count}) (${K} outputs: n·K values, point-major)`));
    return { points, count: m, values, output };
  }

  reference(points: Float64Array, n: number): Float64Array {
    const def = this.definition;
    const d = this.inputOrder.length;
    if (def.solution) return pointwise(def.solution as (pt: number[], p: Readonly<Record<string, number>>) => number, this.params, points, n, d, `${this.where}: solution`);
    if (def.reference) return toValues(def.reference(points.length === n * d ? points : points.slice(0, n * d), n, this.params), n, `${this.where}: reference(points, ${n})`);
    return new Float64Array(n);
  }

  evalGrid(perAxis: number): { points: Float64Array; count: number } {
    if (!this.definition.evalGrid) return tensorGrid(this.domain, perAxis);
    return toPoints(this.definition.evalGrid(perAxis, this.conditionContext(1, 1)), this.inputOrder.length, `${this.where}: evalGrid(${perAxis})`);
  }

  /**
   * The residual term r [G, n] from the trainer's fields, the source q ([G, n] or broadcastable) and,
   * when coordinates are declared, the points x [G, n, d]. For a system (`isSystem`): the E terms
   * (`residualTerms`) concatenated along the last axis, [G, E·n], equation-major.
   * @throws ProblemError naming the problem, the term and the field or shape when the residual reads an
   *   undeclared field or returns something other than a [G, n] tensor.
   */
  residual(f: Fields, q: tf.Tensor, x?: tf.Tensor): tf.Tensor {
    if (this.isSystem) return tf.tidy(() => tf.concat(this.residualTerms(f, q, x), -1));
    const [name, fn] = this.term;
    if (!this.guard && !this.needsCoords) {
      // The built-ins: their declared fields are the trainer's keys (`u`, `u_x`, …) plus q.
      const view = { ...f, q };
      return tf.tidy(() => fn(view, this.ctx));
    }
    return tf.tidy(() => this.runTerm(name, fn, this.fieldView(f, q, x), f.u!));
  }

  /**
   * The E residual terms (one per equation, in `equations` order), each [G, n], from the fields of the
   * general forward pass (keys as declared: `u`, `v_x`, `p_y`, …; worker/trainer/system.ts), the source q
   * and the points x [G, n, d].
   * @throws ProblemError as `residual`.
   */
  residualTerms(f: Fields, q: tf.Tensor, x?: tf.Tensor): tf.Tensor[] {
    const ref = f[this.output] ?? f.u!;
    return tf.tidy(() => {
      const view = this.fieldView(f, q, x);
      return this.terms.map(([name, fn]) => this.runTerm(name, fn, view, ref));
    });
  }

  /** The declared fields as the residual sees them: a plain object, or one that throws on undeclared keys (`guard`). */
  private fieldView(f: Fields, q: tf.Tensor, x?: tf.Tensor): Record<string, tf.Tensor> {
    const view: Record<string, tf.Tensor> = {};
    for (const [field, key] of this.fieldMap) {
      if (key === 'q') view[field] = q;
      else if (typeof key === 'number') {
        if (!x) throw new ProblemError(`${this.where}: residuals: reads coordinate '${field}', but no points were handed to the residual`);
        const [G, n] = x.shape as [number, number, number];
        view[field] = tf.reshape(tf.slice(x, [0, 0, key], [G, n, 1]), [G, n]);
      } else {
        const t = f[key];
        if (!t) throw new ProblemError(`${this.where}: residuals: field '${field}' was not computed by the forward pass (trainer keys: ${Object.keys(f).join(', ')})`);
        view[field] = t;
      }
    }
    if (!this.guard) return view;
    const declared = this.definition.fields;
    const where = this.where;
    return new Proxy(view, {
      get(target, prop) {
        if (typeof prop === 'string' && !Object.hasOwn(target, prop))
          throw new ProblemError(`${where}: residuals: reads field '${prop}', which the problem does not declare (fields: ${declared.join(', ')}); add '${prop}' to fields`);
        return (target as Record<string | symbol, unknown>)[prop];
      },
    });
  }

  /** Runs residual term `name` on the view; checks it returns a tensor of the shape of `ref`. */
  private runTerm(name: string, fn: ResidualTerm, view: Record<string, tf.Tensor>, ref: tf.Tensor): tf.Tensor {
    let r: tf.Tensor;
    try {
      r = fn(view, this.ctx);
    } catch (e) {
      if (e instanceof ProblemError && e.message.startsWith(`${this.where}: residuals: `)) throw new ProblemError(e.message.replace(`${this.where}: residuals: `, `${this.where}: residuals.${name}: `));
      throw e;
    }
    if (!(r instanceof tf.Tensor)) throw new ProblemError(`${this.where}: residuals.${name}: returned ${r === null ? 'null' : Array.isArray(r) ? 'an array' : typeof r}, expected a tensor of shape [${ref.shape.join(', ')}] (one value per point)`);
    if (r.shape.length !== ref.shape.length || r.shape.some((s, i) => s !== ref.shape[i]))
      throw new ProblemError(`${this.where}: residuals.${name}: returned shape [${r.shape.join(', ')}], expected [${ref.shape.join(', ')}] (one value per point: the shape of the fields)`);
    return r;
  }
}

/** A message of `checkProblem`. */
export interface CheckMessage {
  level: 'error' | 'warning';
  message: string;
}

/**
 * A conformance check of a definition (in the spirit of Gymnasium's `check_env`): the declarations,
 * then every function evaluated on a few points — the conditions (sizes 3), the source and reference on
 * 8 collocation points, the residual on the fields of a small fixed network at those points (shape
 * [1, 8], finite), and the evaluation grid (3 per axis).
 * @param params parameter values (defaults for those left out).
 * @param where how messages name the definition.
 * @param evalResidual evaluates the residual of a Problem at points x [1, n, d] with forcing q [1, n]
 *   (the trainer's forward pass; passed in so this module does not depend on the network code).
 * @returns the problems found (errors make the definition unusable), empty when it conforms.
 */
export function checkProblem(
  def: unknown,
  params: Record<string, number>,
  where: string,
  evalResidual: (problem: Problem, x: tf.Tensor, q: tf.Tensor) => tf.Tensor,
  rng: Rng,
): CheckMessage[] {
  const decl = checkDeclarations(def, where);
  if (decl.length) return decl.map((message) => ({ level: 'error', message }));
  const out: CheckMessage[] = [];
  let problem: DefinedProblem;
  try {
    problem = definedProblem(def as ProblemDefinition, params, { where });
  } catch (e) {
    return [{ level: 'error', message: (e as Error).message }];
  }
  const attempt = (what: string, f: () => void) => {
    try {
      f();
    } catch (e) {
      const m = (e as Error).message;
      out.push({ level: 'error', message: m.startsWith(where) ? m : `${where}: ${what} threw: ${m}` });
    }
  };
  const d = problem.inputOrder.length;
  attempt('conditions.bc', () => {
    const s = problem.boundary(3);
    inDomain(problem, s.points, s.count, 'conditions.bc', out);
  });
  if (problem.initial) attempt('conditions.ic', () => void problem.initial!(3));
  const n = 8;
  const pts = problem.collocation(n, rng);
  let q: Float64Array = new Float64Array(n);
  attempt('source', () => void (q = problem.forcing(pts, n)));
  if (!problem.hasReference) out.push({ level: 'warning', message: `${where}: no solution or reference: rows will carry no rel_l2` });
  else if (problem.isSystem || problem.definition.evaluation) {
    const which = problem.definition.solution ? 'solution' : problem.definition.reference ? 'reference' : 'evaluation';
    attempt(which, () => void problem.evaluationSet(3));
  } else attempt(problem.definition.solution ? 'solution' : 'reference', () => void problem.reference(pts, n));
  attempt('evalGrid', () => {
    const g = problem.evalGrid(3);
    inDomain(problem, g.points, g.count, 'evalGrid', out);
  });
  attempt(`residuals.${Object.keys(problem.definition.residuals)[0]}`, () => {
    tf.tidy(() => {
      const x = tf.tensor3d(Float32Array.from(pts), [1, n, d]);
      const r = evalResidual(problem, x, tf.tensor2d(Float32Array.from(q), [1, n]));
      const v = r.dataSync();
      const bad = Array.from(v).findIndex((a) => !Number.isFinite(a));
      if (bad >= 0) throw new ProblemError(`${where}: residuals.${problem.equations[Math.floor(bad / n)] ?? problem.equations[0]}: value ${bad % n} is ${v[bad]} at a collocation point, expected finite values`);
    });
  });
  return out;
}

/** Adds a warning when a point lies outside the domain (on its boundary is inside). */
function inDomain(problem: DefinedProblem, points: Float64Array, count: number, what: string, out: CheckMessage[]): void {
  const d = problem.inputOrder.length;
  for (let j = 0; j < count; j++)
    for (let i = 0; i < d; i++) {
      const v = points[j * d + i]!;
      const [lo, hi] = problem.domain[i]!;
      if (v < lo - 1e-12 * Math.max(1, Math.abs(lo)) || v > hi + 1e-12 * Math.max(1, Math.abs(hi))) {
        out.push({ level: 'warning', message: `${problem.where}: ${what}: point ${j} has ${problem.inputOrder[i]} = ${v}, outside the domain [${lo}, ${hi}]` });
        return;
      }
    }
}
