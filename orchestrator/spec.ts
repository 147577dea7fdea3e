/**
 * Sweep spec loading: parse (YAML or JSON), validate, expand the grid, apply defaults and give
 * every resolved trial its id. Nothing runs before this has passed.
 */
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import canonicalizeModule from 'canonicalize';
import { isAlias, isNode, LineCounter, parseDocument, visit, type Node as YamlNode, type YAMLError } from 'yaml';
import { Type, type TSchema } from '@sinclair/typebox';
import {
  AnalysisSchema,
  DiagnosticsSchema,
  GridListsSchema,
  MAX_TRIALS_DEFAULT,
  MAX_TRIALS_LIMIT,
  ModelSchema,
  SampleSchema,
  RefineSchema,
  SweepSpecSchema,
  TrainSchema,
  moduleConfigSchema,
  problemSchemas,
  strategySchemas,
  type AnalysisConfig,
  type RefineConfig,
  type SweepSpec,
  type TrialConfig,
} from '../schemas/sweep.js';
import { TRIAL_COLUMNS } from '../schemas/parquet.js';
import type { ProblemModuleBundle } from '../schemas/trial.js';
import { DISTRIBUTIONS, drawSample, RANGE_KINDS, stableRange, type Distribution, type RangeKind, type SampleParam } from './spec-ranges.js';

/**
 * A spec error: names the field path, the value found and what was expected. An unknown key reads
 * `PATH: unknown key, expected one of the keys … (did you mean …?)`, since its value is not what is wrong.
 * `note`, when set, follows after a semicolon (e.g. that the value is a base value the grid overrides).
 * `got`, when set, replaces `got VALUE` (e.g. `got 50,000,000 trials (…)` for a grid too large).
 */
export class SpecError extends Error {
  constructor(
    readonly path: string,
    readonly value: unknown,
    readonly expected: string,
    readonly source?: string,
    readonly unknownKey = false,
    readonly note?: string,
    readonly got?: string,
  ) {
    super(`${source ? `${source}: ` : ''}${path}: ${unknownKey ? 'unknown key' : (got ?? `got ${show(value)}`)}, expected ${expected}${note ? `; ${note}` : ''}`);
    this.name = 'SpecError';
  }

  /** The same error under another path, source or note (what is left out is kept). */
  relocated(changes: { path?: string; source?: string; note?: string }): SpecError {
    return new SpecError(changes.path ?? this.path, this.value, this.expected, changes.source ?? this.source, this.unknownKey, changes.note ?? this.note, this.got);
  }
}

/**
 * A YAML or JSON syntax error: `FILE:LINE:COLUMN: ` and the parser's whole message, then the lines
 * of the spec it points at (indented). `line`/`column` are 1-based, absent where the parser gave none.
 * Also an error of the file as a whole (too large, aliases that expand too much): `FILE: ` and what.
 */
export class SpecSyntaxError extends SpecError {
  constructor(
    readonly detail: string,
    source: string,
    readonly line?: number,
    readonly column?: number,
    readonly excerpt?: string,
  ) {
    super('(syntax)', detail, 'valid YAML or JSON', source);
    this.message = `${source}${line === undefined ? '' : `:${line}:${column ?? 1}`}: ${detail}${excerpt ? `\n${excerpt}` : ''}`;
    this.name = 'SpecSyntaxError';
  }

  override relocated(changes: { source?: string }): SpecError {
    return changes.source === undefined || changes.source === this.source ? this : new SpecSyntaxError(this.detail, changes.source, this.line, this.column, this.excerpt);
  }
}

/** Several spec errors at once (all are reported, not just the first). */
export class SpecErrors extends Error {
  constructor(readonly errors: SpecError[]) {
    super(errors.map((e) => e.message).join('\n'));
    this.name = 'SpecErrors';
  }
}

export interface ResolvedTrial {
  trial_id: string;
  config: TrialConfig;
  /** The grid values (and sampled values) that made this trial, by dotted path. */
  grid_values: Record<string, unknown>;
  /** The refinement round that added this trial (orchestrator/refine.ts); absent for a grid trial. */
  refine_round?: number;
}

export interface ResolvedSweep {
  name: string;
  description?: string;
  spec: SweepSpec;
  /** The grid's lists, ranges computed (rounded), in the spec's order. */
  grid: Record<string, unknown[]>;
  /** The points drawn by the spec's `sample:` block (values by dotted path), crossed with the grid; absent without one. */
  sample?: Array<Record<string, unknown>>;
  /** The `analysis:` block with defaults applied: thresholds of the phase record (not part of any trial). */
  analysis: AnalysisConfig;
  /** `max_attempts` (default 3): attempts of a throwing trial per run before it is failed. */
  max_attempts: number;
  trials: ResolvedTrial[];
  /** Grid combinations that resolved to a trial already in `trials` (same config, same id), dropped. */
  duplicates: number;
  /** The `refine:` block with defaults applied; null when the spec has none. Not part of any trial. */
  refine: RefineConfig | null;
  /** The sources of the spec's problem modules by content hash (`problem.module_hash`); absent without any. */
  problem_modules?: Record<string, ProblemModuleBundle>;
  /** The warnings of each problem module's conformance check, by the path the spec writes (`loadSweep`). */
  module_warnings?: Record<string, string[]>;
}

/** A problem module read and loaded for a spec (`loadSweep`): its sources and what its config section may hold. */
export interface SpecProblemModule {
  bundle: ProblemModuleBundle;
  /** The module's problem name. */
  name: string;
  /** The schema of its config section (`moduleConfigSchema`). */
  schema: TSchema;
  /** Warnings of its conformance check (e.g. no reference solution). */
  warnings: string[];
  /** The conformance check's errors for other parameter values (those of the grid), [] when it passes. */
  check(params: Record<string, number>): string[];
}

/** Most distinct parameter sets of one module the spec's trials are checked with (beyond them: the defaults' check only). */
export const MODULE_CHECKS_MAX = 64;

/** The problem modules of the spec being resolved, by the path the spec writes (set during `resolveSweep`). */
let activeModules: ReadonlyMap<string, SpecProblemModule> | null = null;

/**
 * Checks a problem config section in place: a built-in's by its name, a module's (`module: PATH`)
 * against the module's declarations, setting its `module_hash` and `name`.
 */
function validateProblem(data: unknown): SpecError[] {
  if (!isMapping(data) || !Object.hasOwn(data, 'module')) return validateNamed('problem', problemSchemas, data);
  const path = data.module;
  if (typeof path !== 'string' || !/\.(mjs|js)$/.test(path)) return [new SpecError('problem.module', path, 'the path of a problem module (an ES module file, .mjs or .js) relative to the spec file')];
  const m = activeModules?.get(path);
  if (!m) return [new SpecError('problem.module', path, 'a problem module read with the spec file (loadSweep reads it relative to the spec; a grid may not name a module the spec does not load)')];
  if (data.name !== undefined && data.name !== m.name) return [new SpecError('problem.name', data.name, `'${m.name}' (the module's name) or no name: a module problem is named by its module`)];
  data.module_hash = m.bundle.hash;
  data.name = m.name;
  return validateObject(m.schema, data, 'problem');
}

/** RFC 8785 (JCS) canonical JSON; the package is CommonJS with an ESM-style default in its types. */
const canonicalize = ((canonicalizeModule as unknown as { default?: unknown }).default ?? canonicalizeModule) as unknown as (v: unknown) => string | undefined;

const TRIAL_KEYS = ['problem', 'model', 'train', 'strategy', 'diagnostics', 'seed'] as const;

/** Marks a non-finite number inside a value shown as JSON (JSON has no NaN or Infinity: it would read `null`). */
const NON_FINITE = '\u0000';

/**
 * A value as the errors show it: JSON, cut at 80 characters; NaN, Infinity and -Infinity by name
 * (also inside objects and lists: YAML's .nan, .inf, -.inf and 1e309 are numbers JSON cannot write).
 */
function show(v: unknown): string {
  if (v === undefined) return '(missing)';
  if (typeof v === 'number' && !Number.isFinite(v)) return String(v);
  let s: string | undefined;
  try {
    s = JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? `${NON_FINITE}${x}${NON_FINITE}` : x));
  } catch {
    return String(v); // a cycle, or a BigInt: never from a parsed spec (parseSpecText rejects recursive aliases)
  }
  if (s === undefined) return String(v);
  s = s.replace(/"\\u0000(NaN|-?Infinity)\\u0000"/g, '$1');
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

// verbose: an error carries the schema of its field, whose whole range an error for NaN or ±Infinity names.
const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false, verbose: true });
const compiled = new Map<TSchema, ValidateFunction>();
function validator(schema: TSchema): ValidateFunction {
  let v = compiled.get(schema);
  if (!v) {
    v = ajv.compile(schema);
    compiled.set(schema, v);
  }
  return v;
}

/**
 * Edit distance between `a` and `b`, case-insensitive: insertions, deletions, substitutions and
 * swaps of two adjacent characters (optimal string alignment) count 1 each, so `stesp` is 1 from `steps`.
 */
function editDistance(a: string, b: string): number {
  a = a.toLowerCase();
  b = b.toLowerCase();
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  return d[a.length]![b.length]!;
}

/**
 * The candidate nearest to `word` by edit distance (the first of equals, in the order given), if it
 * is near enough to be a likely typo: at most a third of `word`'s length away (at least 1), and
 * less than all of it. Case alone never rules a candidate out (`RBA` → `rba`).
 */
function suggest(word: string, candidates: readonly string[]): string | undefined {
  const limit = Math.max(1, Math.floor(word.length / 3));
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const dist = editDistance(word, c);
    if (dist < bestD) {
      best = c;
      bestD = dist;
    }
  }
  return bestD <= limit && bestD < word.length ? best : undefined;
}

/** ` (did you mean 'X'?)` for the nearest candidate, or '' when none is near. */
function didYouMean(word: string, candidates: readonly string[]): string {
  const near = suggest(word, candidates);
  return near === undefined ? '' : ` (did you mean '${near}'?)`;
}

function allowedKeys(instancePath: string, root: TSchema): string[] {
  let s: TSchema | undefined = root;
  for (const seg of instancePath.split('/').filter(Boolean)) s = s?.properties?.[seg] as TSchema | undefined;
  return Object.keys((s?.properties as object | undefined) ?? {});
}

function getAt(obj: unknown, segs: string[]): unknown {
  let o = obj;
  for (const s of segs) o = o !== null && typeof o === 'object' && Object.hasOwn(o, s) ? (o as Record<string, unknown>)[s] : undefined;
  return o;
}

/**
 * What a number field takes, from its schema: `a number > 0 and <= 10`, `an integer >= 1 and <= 100`
 * (for NaN and ±Infinity, which break every bound, and so are told the whole range).
 */
function rangeText(schema: Record<string, unknown> | undefined): string {
  const kind = schema?.type === 'integer' ? 'an integer' : 'a number';
  const parts: string[] = [];
  if (schema?.exclusiveMinimum !== undefined) parts.push(`> ${String(schema.exclusiveMinimum)}`);
  else if (schema?.minimum !== undefined) parts.push(`>= ${String(schema.minimum)}`);
  if (schema?.exclusiveMaximum !== undefined) parts.push(`< ${String(schema.exclusiveMaximum)}`);
  else if (schema?.maximum !== undefined) parts.push(`<= ${String(schema.maximum)}`);
  return parts.length ? `${kind} ${parts.join(' and ')}` : `a finite ${kind.replace(/^an? /, '')}`;
}

const NUMBER_KEYWORDS = new Set(['type', 'minimum', 'maximum', 'exclusiveMinimum', 'exclusiveMaximum', 'multipleOf']);

/** Turns Ajv errors into SpecErrors with dotted paths under `prefix`. */
function toSpecErrors(errors: ErrorObject[], data: unknown, prefix: string, root: TSchema): SpecError[] {
  const out: SpecError[] = [];
  const seen = new Set<string>();
  for (const e of errors) {
    const segs = e.instancePath.split('/').filter(Boolean).map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
    const join = (extra?: string) => [prefix, ...segs, ...(extra ? [extra] : [])].filter(Boolean).join('.');
    let err: SpecError;
    const value = getAt(data, segs);
    const p = e.params as Record<string, unknown>;
    // NaN or ±Infinity where a number goes: the field's whole range, whichever bound ajv tripped on.
    const nonFinite = typeof value === 'number' && !Number.isFinite(value) && NUMBER_KEYWORDS.has(e.keyword) && (e.keyword !== 'type' || p.type === 'number' || p.type === 'integer');
    switch (nonFinite ? 'nonFinite' : e.keyword) {
      case 'nonFinite':
        err = new SpecError(join(), value, rangeText(e.parentSchema as Record<string, unknown> | undefined));
        break;
      case 'additionalProperties': {
        const key = String(p.additionalProperty);
        const allowed = allowedKeys(e.instancePath, root);
        err = new SpecError(join(key), (value as Record<string, unknown>)[key], `one of the keys ${allowed.join(', ')}${didYouMean(key, allowed)}`, undefined, true);
        break;
      }
      case 'required':
        err = new SpecError(join(String(p.missingProperty)), undefined, 'a value (required)');
        break;
      case 'type':
        err = new SpecError(join(), value, `a value of type ${String(p.type)}`);
        break;
      case 'minimum':
      case 'maximum':
      case 'exclusiveMinimum':
      case 'exclusiveMaximum':
        err = new SpecError(join(), value, `a number ${String(p.comparison)} ${String(p.limit)}`);
        break;
      case 'const':
        err = new SpecError(join(), value, show(p.allowedValue));
        break;
      case 'pattern':
        err = new SpecError(join(), value, `a string matching ${String(p.pattern)}`);
        break;
      case 'minProperties':
        err = new SpecError(join(), value, `a mapping with at least ${String(p.limit)} key(s)`);
        break;
      case 'minItems':
        err = new SpecError(join(), value, `a list with at least ${String(p.limit)} item(s)`);
        break;
      case 'anyOf':
        continue; // its branches' errors say more
      default:
        err = new SpecError(join(), value, e.message ?? e.keyword);
    }
    // A union branch that is a constant (batch_size: 'full') also fails on its type ("must be
    // string"): the constant says it better.
    if (e.keyword === 'type' && errors.some((o) => o.keyword === 'const' && o.instancePath === e.instancePath && typeof o.params.allowedValue === p.type)) continue;
    if (!seen.has(err.message)) {
      seen.add(err.message);
      out.push(err);
    }
  }
  // A union (e.g. batch_size: 'full' | integer) reports each branch; merge them into one line per path.
  const byPath = new Map<string, SpecError[]>();
  for (const e of out) byPath.set(e.path, [...(byPath.get(e.path) ?? []), e]);
  return [...byPath.values()].map((es) => (es.length === 1 ? es[0]! : new SpecError(es[0]!.path, es[0]!.value, es.map((e) => e.expected).join(' or '), undefined, es[0]!.unknownKey)));
}

function validateObject(schema: TSchema, data: unknown, prefix: string): SpecError[] {
  const v = validator(schema);
  return v(data) ? [] : toSpecErrors(v.errors ?? [], data, prefix, schema);
}

/** Validates a discriminated union member by its `name` (problem, strategy). */
function validateNamed(kind: string, schemas: Record<string, TSchema>, data: unknown): SpecError[] {
  const names = Object.keys(schemas);
  if (data === undefined) return [new SpecError(kind, undefined, `an object with name: one of ${names.join(', ')}`)];
  if (data === null || typeof data !== 'object' || Array.isArray(data)) return [new SpecError(kind, data, `an object with name: one of ${names.join(', ')}`)];
  const name = (data as { name?: unknown }).name;
  const schema = typeof name === 'string' ? schemas[name] : undefined;
  if (!schema) {
    return [new SpecError(`${kind}.name`, name, `one of ${names.join(', ')}${typeof name === 'string' ? didYouMean(name, names) : ''}`)];
  }
  return validateObject(schema, data, kind);
}

const SeedSchema = Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1 });

/**
 * Validates one trial config in place, applying defaults. Returns the errors (empty = valid). A module
 * problem's section is checked against `modules` (by its path; `loadSweep`, `modulesFromBundles`).
 * Cross-field rules: batch_size ≤ n_collocation; snr_batches divides n_collocation when diagnostics
 * are on (science.md §5: B equal fixed batches); eval_every, diagnostics.every and
 * train.checkpoint_every are multiples of log_every.
 */
export function resolveTrialConfig(cfg: Record<string, unknown>, modules?: ReadonlyMap<string, SpecProblemModule>): SpecError[] {
  if (!modules) return checkTrial(cfg).errors;
  const outer = activeModules;
  activeModules = modules;
  try {
    return checkTrial(cfg).errors;
  } finally {
    activeModules = outer;
  }
}

/** What a trial check looked at: its cross-field rules, and the fields of problem and strategy (not when the name is bad). */
const CHECKED_RULES = 1;
const CHECKED_PROBLEM = 2;
const CHECKED_STRATEGY = 4;

/** resolveTrialConfig, also saying what was checked (CHECKED_* flags): an error not found where it was not looked for may still be there. */
function checkTrial(cfg: Record<string, unknown>): { errors: SpecError[]; checked: number } {
  const snrDefault = (cfg.diagnostics as Record<string, unknown> | null | undefined)?.snr_batches === undefined;
  const errors = checkTrialFields(cfg);
  const named = (kind: string) => !errors.some((e) => e.path === kind || e.path === `${kind}.name`);
  const checked = (named('problem') ? CHECKED_PROBLEM : 0) | (named('strategy') ? CHECKED_STRATEGY : 0);
  return errors.length ? { errors, checked } : { errors: checkTrialRules(cfg as unknown as TrialConfig, snrDefault), checked: checked | CHECKED_RULES };
}

/** The CHECKED_* flag a trial check needs to have found `e` (0: always looked for). */
function neededCheck(e: SpecError, rule: boolean): number {
  if (rule) return CHECKED_RULES;
  const head = e.path.split('.')[0];
  if (e.path === head || e.path === `${head}.name`) return 0;
  return head === 'problem' ? CHECKED_PROBLEM : head === 'strategy' ? CHECKED_STRATEGY : 0;
}

/** Keys, types and ranges of a trial config (defaults applied in place); the cross-field rules are not checked. */
function checkTrialFields(cfg: Record<string, unknown>): SpecError[] {
  const errs: SpecError[] = [];
  const topKeys = ['name', 'description', ...TRIAL_KEYS, 'grid'];
  for (const k of Object.keys(cfg))
    if (!(TRIAL_KEYS as readonly string[]).includes(k))
      errs.push(new SpecError(k, cfg[k], `one of the keys ${topKeys.join(', ')}${didYouMean(k, TRIAL_KEYS)}`, undefined, true));
  for (const k of ['model', 'train', 'diagnostics'] as const) if (cfg[k] === undefined) cfg[k] = {};
  if (cfg.strategy === undefined) cfg.strategy = { name: 'vanilla' };
  if (cfg.seed === undefined) cfg.seed = 0;
  errs.push(...validateProblem(cfg.problem));
  errs.push(...validateNamed('strategy', strategySchemas, cfg.strategy));
  errs.push(...validateObject(ModelSchema, cfg.model, 'model'));
  errs.push(...validateObject(TrainSchema, cfg.train, 'train'));
  errs.push(...validateObject(DiagnosticsSchema, cfg.diagnostics, 'diagnostics'));
  if (!validator(SeedSchema)(cfg.seed)) errs.push(new SpecError('seed', cfg.seed, 'an integer in [0, 2147483647]'));
  return errs;
}

/** The cross-field rules of a trial config whose fields are valid. `snrDefault`: snr_batches was left out. */
function checkTrialRules(c: TrialConfig, snrDefault: boolean): SpecError[] {
  const errs: SpecError[] = [];
  const n = c.problem.n_collocation;
  if (c.train.batch_size !== 'full' && c.train.batch_size > n)
    errs.push(new SpecError('train.batch_size', c.train.batch_size, `'full' or an integer <= problem.n_collocation (${n})`));
  // The SNR split exists only where diagnostics run (diagnostics.every > 0).
  if (c.diagnostics.every > 0 && n % c.diagnostics.snr_batches !== 0)
    errs.push(new SpecError('diagnostics.snr_batches', c.diagnostics.snr_batches, `a divisor of problem.n_collocation (${n}): the SNR split uses B equal batches${snrDefault ? ` (${c.diagnostics.snr_batches} is the default; set diagnostics.snr_batches)` : ''}`));
  if (c.train.eval_every % c.train.log_every !== 0)
    errs.push(new SpecError('train.eval_every', c.train.eval_every, `a multiple of train.log_every (${c.train.log_every})`));
  if (c.diagnostics.every % c.train.log_every !== 0)
    errs.push(new SpecError('diagnostics.every', c.diagnostics.every, `0 or a multiple of train.log_every (${c.train.log_every})`));
  if (c.train.checkpoint_every % c.train.log_every !== 0)
    errs.push(new SpecError('train.checkpoint_every', c.train.checkpoint_every, `0 or a multiple of train.log_every (${c.train.log_every}): a checkpoint holds the state a logged row was computed from`));
  return errs;
}

/**
 * Stable content hash of a resolved trial config: `t` + first 16 hex digits of SHA-256 over its RFC 8785
 * canonical JSON. `train.checkpoint_every` = 0 (the default) is left out of the hash, so adding that key
 * changed no existing trial id; a non-zero value is part of the id (a trial that writes checkpoints).
 */
export function trialId(config: TrialConfig): string {
  const hashed =
    config.train.checkpoint_every === 0 || config.train.checkpoint_every === undefined
      ? { ...config, train: Object.fromEntries(Object.entries(config.train).filter(([k]) => k !== 'checkpoint_every')) }
      : config;
  const canon = canonicalize(hashed);
  if (canon === undefined) throw new Error('trial config cannot be canonicalized');
  return `t${createHash('sha256').update(canon).digest('hex').slice(0, 16)}`;
}

/** Sets the value at a dotted path (a copy of it), making objects on the way; own properties only (a `__proto__` key is data, never the prototype). */
function setPath(obj: Record<string, unknown>, segs: string[], value: unknown): void {
  const put = (o: Record<string, unknown>, k: string, v: unknown) => Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
  let o = obj;
  for (const s of segs.slice(0, -1)) {
    const cur = Object.hasOwn(o, s) ? o[s] : undefined;
    if (cur === undefined || cur === null || typeof cur !== 'object' || Array.isArray(cur)) put(o, s, {});
    o = o[s] as Record<string, unknown>;
  }
  put(o, segs[segs.length - 1]!, structuredClone(value));
}

/** Cartesian product of the grid, in spec order (the last key varies fastest). */
function* product(entries: [string, unknown[]][]): Generator<Record<string, unknown>> {
  const idx = entries.map(() => 0);
  if (entries.length === 0) {
    yield {};
    return;
  }
  for (;;) {
    yield Object.fromEntries(entries.map(([k, vs], i) => [k, vs[idx[i]!]]));
    let i = entries.length - 1;
    while (i >= 0 && ++idx[i]! === entries[i]![1].length) idx[i--] = 0;
    if (i < 0) return;
  }
}

/** The schemas a trial config's section is checked against (problem and strategy: each name's). */
const SECTION_SCHEMAS: Record<string, readonly TSchema[]> = {
  problem: Object.values(problemSchemas),
  strategy: Object.values(strategySchemas),
  model: [ModelSchema],
  train: [TrainSchema],
  diagnostics: [DiagnosticsSchema],
  seed: [SeedSchema],
};

/** The schemas of the field at a dotted path of a trial config (one per problem or strategy that has it; [] when none has). */
function leafSchemas(path: string): TSchema[] {
  const [head, ...rest] = path.split('.');
  let ss: TSchema[] = [...(SECTION_SCHEMAS[head!] ?? [])];
  for (const seg of rest) ss = ss.flatMap((s) => (s.properties && Object.hasOwn(s.properties, seg) ? [s.properties[seg] as TSchema] : []));
  return ss;
}

/**
 * ` (did you mean 'S.KEY'?)` for a grid or sample path whose first segment is not a section of the
 * trial config: the section whose schema has that key (`lr` → `train.lr`), else the nearest section
 * by edit distance (`trian.lr` → `train.lr`); '' when neither.
 */
function sectionHint(path: string): string {
  const [head, ...rest] = path.split('.');
  const owner = TRIAL_KEYS.find((k) => leafSchemas(`${k}.${head}`).length > 0);
  const near = owner ? `${owner}.${head}` : suggest(head!, TRIAL_KEYS);
  return near ? ` (did you mean '${[near, ...rest].join('.')}'?)` : '';
}

/** The number branches of a schema (itself, or those of a union). */
const numberBranches = (s: TSchema): TSchema[] =>
  Array.isArray(s.anyOf) ? (s.anyOf as TSchema[]).flatMap(numberBranches) : s.type === 'integer' || s.type === 'number' ? [s] : [];

/** Whether the field at `path` takes integers only where it takes numbers (batch_size, seed, width, n_collocation …). */
function isIntegerPath(path: string): boolean {
  const nums = leafSchemas(path).flatMap(numberBranches);
  return nums.length > 0 && nums.every((s) => s.type === 'integer');
}

/** A grid list written as a range, checked (not yet computed). */
interface RangeSpec {
  kind: RangeKind;
  a: number;
  b: number;
  n: number;
  integer: boolean;
  written: unknown;
}

const isMapping = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The error of a number argument of a range or distribution that is not a finite number (or integer). */
function numberArg(path: string, v: unknown, what: string, integer = false): SpecError | undefined {
  if (typeof v === 'number' && Number.isFinite(v) && (!integer || Number.isInteger(v))) return undefined;
  return new SpecError(path, v, `${integer ? 'an integer' : 'a finite number'} (${what})`);
}

/**
 * Reads a grid value written as a mapping: one of `{linspace|logspace|geomspace: [start, stop, n]}`,
 * n an integer >= 1, start <= stop, finite; geomspace's ends > 0; logspace's 10^stop finite.
 */
function readRange(key: string, v: Record<string, unknown>): { range?: RangeSpec; errors: SpecError[] } {
  const at = `grid.${key}`;
  const forms = `${RANGE_KINDS.join(', ')}`;
  const note = 'a grid value is a list of values (one object: [{…}]) or a range {linspace|logspace|geomspace: [start, stop, n]}';
  const keys = Object.keys(v);
  const unknown = keys.filter((k) => !(RANGE_KINDS as readonly string[]).includes(k));
  if (unknown.length) return { errors: unknown.map((k) => new SpecError(`${at}.${k}`, v[k], `one of the range forms ${forms}${didYouMean(k, RANGE_KINDS)}`, undefined, true, note)) };
  if (keys.length !== 1) return { errors: [new SpecError(at, v, `one range form: {linspace|logspace|geomspace: [start, stop, n]}`, undefined, false, note)] };
  const kind = keys[0] as RangeKind;
  const args = v[kind];
  const p = `${at}.${kind}`;
  if (!Array.isArray(args) || args.length !== 3) return { errors: [new SpecError(p, args, `a list [start, stop, n] (${kind === 'logspace' ? 'exponents of 10' : 'values'}, both included; n values)`)] };
  const [a, b, n] = args as unknown[];
  const errors = [
    numberArg(`${p}[0]`, a, kind === 'logspace' ? 'start, an exponent of 10' : 'start'),
    numberArg(`${p}[1]`, b, kind === 'logspace' ? 'stop, an exponent of 10' : 'stop'),
    numberArg(`${p}[2]`, n, 'n, the number of values, >= 1', true) ?? ((n as number) < 1 ? new SpecError(`${p}[2]`, n, 'an integer >= 1 (n, the number of values)') : undefined),
  ].filter((e): e is SpecError => e !== undefined);
  if (errors.length) return { errors };
  const [sa, sb, sn] = [a as number, b as number, n as number];
  if (sb < sa) errors.push(new SpecError(p, args, `stop >= start (a range runs upwards: [${show(sb)}, ${show(sa)}, ${sn}])`));
  if (kind === 'geomspace' && sa <= 0) errors.push(new SpecError(`${p}[0]`, sa, 'a number > 0 (geomspace spaces values on a log scale; for exponents of 10 use logspace)'));
  if (kind === 'geomspace' && sb <= 0 && sa > 0) errors.push(new SpecError(`${p}[1]`, sb, 'a number > 0 (geomspace spaces values on a log scale)'));
  if (kind === 'logspace' && !Number.isFinite(10 ** sb)) errors.push(new SpecError(`${p}[1]`, sb, 'an exponent <= 308 (10^stop must be a finite number)'));
  if (errors.length) return { errors };
  return { range: { kind, a: sa, b: sb, n: sn, integer: isIntegerPath(key), written: v }, errors };
}

/**
 * A range's values as the grid list they stand for (rounded; at an integer key rounded to integers and
 * merged), and an error naming the values rounding left invalid for that key.
 */
function expandRange(key: string, r: RangeSpec): { values: number[]; errors: SpecError[] } {
  const values = stableRange(r.kind, r.a, r.b, r.n, r.integer);
  if (!r.integer) return { values, errors: [] };
  const schemas = leafSchemas(key);
  const bad = values.filter((x) => !schemas.some((s) => validator(s)(x)));
  if (!bad.length) return { values, errors: [] };
  const range = numberBranches(schemas[0]!).map((s) => rangeText(s as Record<string, unknown>))[0] ?? 'a valid value';
  return {
    values,
    errors: [
      new SpecError(`grid.${key}`, r.written, range, undefined, false, `${key} takes integers, so range values are rounded to integers`, `got ${show(r.written)}, which rounds to ${bad.slice(0, MAX_LISTED).join(', ')}${bad.length > MAX_LISTED ? ', …' : ''}`),
    ],
  };
}

/**
 * Takes the ranges out of a spec's grid: a copy of the spec whose grid has a one-item list in place
 * of each mapping (so the schema checks the rest as before), the ranges read, and their errors.
 */
function readGridRanges(raw: Record<string, unknown>): { checkable: Record<string, unknown>; ranges: Map<string, RangeSpec>; errors: SpecError[] } {
  const ranges = new Map<string, RangeSpec>();
  const errors: SpecError[] = [];
  if (!isMapping(raw.grid)) return { checkable: raw, ranges, errors };
  const grid: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(raw.grid)) {
    if (!isMapping(v)) {
      Object.defineProperty(grid, k, { value: v, writable: true, enumerable: true, configurable: true });
      continue;
    }
    Object.defineProperty(grid, k, { value: [null], writable: true, enumerable: true, configurable: true });
    const r = readRange(k, v);
    errors.push(...r.errors);
    if (r.range) ranges.set(k, r.range);
  }
  return { checkable: { ...raw, grid }, ranges, errors };
}

/** `sample:` checked: its count, seed and params ([path, distribution, integer key]). */
interface SampleSpec {
  count: number;
  seed: number;
  params: Array<[string, SampleParam, boolean]>;
}

/** The shape of `sample:` the schema checks (each param's distribution is read by readSample). */
const SampleShapeSchema = Type.Object(
  {
    count: SampleSchema.properties.count,
    seed: SampleSchema.properties.seed,
    params: Type.Record(Type.String({ pattern: '^[a-z_][a-z0-9_]*(\\.[a-z_][a-z0-9_]*)*$' }), Type.Unknown(), { minProperties: 1 }),
  },
  { additionalProperties: false },
);

/** Reads one `sample.params` entry: `{uniform|loguniform|int_uniform|int_loguniform: [low, high]}` (low < high) or `{choice: [v, …]}`. */
function readDistribution(path: string, v: unknown): { param?: SampleParam; errors: SpecError[] } {
  const at = `sample.params.${path}`;
  const shape = `a distribution {${DISTRIBUTIONS.join('|')}: …}`;
  if (!isMapping(v)) return { errors: [new SpecError(at, v, shape)] };
  const keys = Object.keys(v);
  const unknown = keys.filter((k) => !(DISTRIBUTIONS as readonly string[]).includes(k));
  if (unknown.length) return { errors: unknown.map((k) => new SpecError(`${at}.${k}`, v[k], `one of the distributions ${DISTRIBUTIONS.join(', ')}${didYouMean(k, DISTRIBUTIONS)}`, undefined, true)) };
  if (keys.length !== 1) return { errors: [new SpecError(at, v, `one distribution: ${shape}`)] };
  const dist = keys[0] as Distribution;
  const args = v[dist];
  const p = `${at}.${dist}`;
  if (dist === 'choice') {
    if (!Array.isArray(args) || args.length === 0) return { errors: [new SpecError(p, args, 'a non-empty list of values')] };
    return { param: { dist, values: args }, errors: [] };
  }
  const integer = dist === 'int_uniform' || dist === 'int_loguniform';
  if (!Array.isArray(args) || args.length !== 2) return { errors: [new SpecError(p, args, `a list [low, high]${integer ? ' of integers' : ''}`)] };
  const errors = [numberArg(`${p}[0]`, args[0], 'low', integer), numberArg(`${p}[1]`, args[1], 'high', integer)].filter((e): e is SpecError => e !== undefined);
  if (errors.length) return { errors };
  const [a, b] = args as [number, number];
  if (!(a < b)) errors.push(new SpecError(p, args, 'low < high'));
  if (dist === 'loguniform' && a <= 0) errors.push(new SpecError(`${p}[0]`, a, 'a number > 0 (loguniform draws on a log scale)'));
  if (dist === 'int_loguniform' && a < 1) errors.push(new SpecError(`${p}[0]`, a, 'an integer >= 1 (int_loguniform draws on a log scale)'));
  return errors.length ? { errors } : { param: { dist, a, b }, errors };
}

/** Checks the spec's `sample:` block (absent: no sample) against the grid's keys (a path may not be in both). */
function readSample(raw: unknown, gridKeys: readonly string[]): { sample?: SampleSpec; errors: SpecError[] } {
  if (raw === undefined) return { errors: [] };
  const value = structuredClone(raw) as Record<string, unknown>;
  const errors = validateObject(SampleShapeSchema, value, 'sample');
  if (errors.length) return { errors };
  const params: Array<[string, SampleParam, boolean]> = [];
  for (const [path, d] of Object.entries(value.params as Record<string, unknown>)) {
    const [head, ...rest] = path.split('.');
    if (!(TRIAL_KEYS as readonly string[]).includes(head!)) {
      errors.push(new SpecError(`sample.params.${path}`, path, `a dotted path into one of ${TRIAL_KEYS.join(', ')}${sectionHint(path)}`));
      continue;
    }
    if (rest.includes('__proto__')) {
      errors.push(new SpecError(`sample.params.${path}`, path, "a dotted path of the trial config's keys (__proto__ is none)"));
      continue;
    }
    if (gridKeys.includes(path))
      errors.push(new SpecError(`sample.params.${path}`, path, 'a path either in grid or in sample, not both', undefined, false, undefined, `also a grid key (grid.${path})`));
    const r = readDistribution(path, d);
    errors.push(...r.errors);
    if (r.param) params.push([path, r.param, isIntegerPath(path)]);
  }
  return errors.length ? { errors } : { sample: { count: value.count as number, seed: (value.seed as number | undefined) ?? 0, params }, errors };
}

/** The spec's schema as resolveSweep checks it: the grid a mapping of lists (ranges are read apart). */
const SpecCheckSchema = Type.Object({ ...SweepSpecSchema.properties, grid: Type.Optional(GridListsSchema) }, { additionalProperties: false, title: 'phasemap sweep spec' });

/** The pseudo grid key of the sampled points (it is no trial config key, so no grid key can be it). */
const SAMPLE_AXIS = 'sample';

/**
 * Expands and validates a parsed spec. Errors name the path; one that comes from grid values names
 * them too (`grid.train.lr[1] → train.lr: …`, `grid.strategy (all 2 values) → …`, or
 * `grid.problem.n_collocation[0] × grid.train.batch_size[1] → …` for a combination), and is reported
 * once however many trials it occurs in. A base value that the grid overrides in every trial is
 * checked as well (keys, types, ranges), its error saying so. Order: the spec's top-level errors,
 * then errors of the base config (by section: problem, strategy, model, train, diagnostics, seed),
 * then errors of grid values in the grid's order (key, then index). Duplicate trials (same resolved
 * config) are kept once.
 * @throws SpecErrors listing every problem found.
 */
export function resolveSweep(raw: unknown, source?: string, modules?: ReadonlyMap<string, SpecProblemModule>): ResolvedSweep {
  const outer = activeModules;
  activeModules = modules ?? null;
  try {
    const r = resolveSweepWith(raw, source);
    if (modules?.size) {
      const errors = checkModuleParams(r.trials, modules);
      if (errors.length) throw new SpecErrors(errors.map((e) => e.relocated({ source })));
      const used = new Set(r.trials.map((t) => (t.config.problem as { module_hash?: string }).module_hash));
      r.problem_modules = Object.fromEntries([...modules.values()].filter((m) => used.has(m.bundle.hash)).map((m) => [m.bundle.hash, m.bundle]));
      r.module_warnings = Object.fromEntries([...modules.entries()].map(([path, m]) => [path, m.warnings]));
    }
    return r;
  } finally {
    activeModules = outer;
  }
}

function resolveSweepWith(raw: unknown, source?: string): ResolvedSweep {
  const fail = (errs: SpecError[]) => {
    throw new SpecErrors(errs.map((e) => e.relocated({ source })));
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail([new SpecError('(spec)', raw, 'a mapping with name, problem, model, train, strategy, diagnostics, seed, grid')]);
  // Top-level errors (unknown keys, the name, the grid's shape) are reported together with the
  // trials' errors where the grid can still be expanded, so a user fixes everything in one round.
  // Ranges are read first; the schema then checks a grid of lists (a range stands as a one-item list).
  const pre = readGridRanges(raw as Record<string, unknown>);
  const errors = validateObject(SpecCheckSchema, pre.checkable, '');
  errors.push(...pre.errors);
  const spec = raw as SweepSpec;
  const analysis = resolveAnalysis(spec.analysis);
  errors.push(...analysis.errors);
  const refine = resolveRefine(spec.refine);
  errors.push(...refine.errors);
  const maxAttempts = spec.max_attempts === undefined ? 3 : spec.max_attempts;
  if (!Number.isInteger(maxAttempts) || (maxAttempts as number) < 1 || (maxAttempts as number) > 10)
    errors.push(new SpecError('max_attempts', maxAttempts, 'an integer from 1 to 10'));
  const maxTrials = spec.max_trials === undefined ? MAX_TRIALS_DEFAULT : spec.max_trials;
  const maxTrialsOk = Number.isInteger(maxTrials) && (maxTrials as number) >= 1 && (maxTrials as number) <= MAX_TRIALS_LIMIT;
  if (!maxTrialsOk) errors.push(new SpecError('max_trials', maxTrials, `an integer from 1 to ${MAX_TRIALS_LIMIT}`));
  const gridOk = !errors.some((e) => e.path === 'grid' || e.path.startsWith('grid.'));
  const written = gridOk ? Object.entries((pre.checkable.grid ?? {}) as Record<string, unknown[]>) : [];
  for (const [key] of written) {
    const [head, ...rest] = key.split('.');
    if (!(TRIAL_KEYS as readonly string[]).includes(head!)) {
      errors.push(new SpecError(`grid.${key}`, key, `a dotted path into one of ${TRIAL_KEYS.join(', ')}${sectionHint(key)}`));
    } else if (rest.includes('__proto__')) errors.push(new SpecError(`grid.${key}`, key, 'a dotted path of the trial config\'s keys (__proto__ is none)'));
  }
  const sampled = readSample(spec.sample, written.map(([k]) => k));
  errors.push(...sampled.errors);
  const sample = sampled.sample;
  const samplePaths = sample ? sample.params.map(([p]) => p) : [];
  const base: Record<string, unknown> = {};
  for (const k of TRIAL_KEYS) if ((spec as Record<string, unknown>)[k] !== undefined) base[k] = structuredClone((spec as Record<string, unknown>)[k]);
  const stops = (e: SpecError) => e.path === 'grid' || e.path.startsWith('grid.') || e.path === 'sample' || e.path.startsWith('sample.');
  if (gridOk) {
    errors.push(...inapplicableGridPaths(base, written.map(([k]) => k)));
    // The sweep's size before anything is expanded (a range counts its n, also where integer
    // rounding will merge values; the sample its count): too large is refused at once (an invalid
    // max_trials: the default).
    const limit = maxTrialsOk ? (maxTrials as number) : MAX_TRIALS_DEFAULT;
    const sizes: [string, number][] = written.map(([k, vs]) => {
      const r = pre.ranges.get(k);
      return [k, r ? r.n : vs.length];
    });
    if (sample) sizes.push([SAMPLE_AXIS, sample.count]);
    const size = gridSize(sizes);
    if (size > BigInt(limit)) errors.push(gridTooLarge(sizes, size, limit, maxTrialsOk && spec.max_trials !== undefined));
  }
  if (!gridOk || errors.some(stops)) fail(errors);

  const grid: [string, unknown[]][] = written.map(([k, vs]) => {
    const r = pre.ranges.get(k);
    if (!r) return [k, vs];
    const x = expandRange(k, r);
    errors.push(...x.errors);
    return [k, x.values];
  });
  if (errors.some(stops)) fail(errors);
  const points = sample ? drawSample(sample.params, sample.count, sample.seed) : [];
  const axes: [string, unknown[]][] = sample ? [...grid, [SAMPLE_AXIS, points]] : grid;

  // Each distinct error (by its message) with the grid combinations it occurs in, by ordinal in
  // product order; `seq` is the order it was first met in. `checked`: what each combination's check looked at.
  const found = new Map<string, { err: SpecError; ordinals: number[]; seq: number; needs: number }>();
  const checked = new Uint8Array(axes.reduce((n, [, vs]) => n * vs.length, 1));
  const trials: ResolvedTrial[] = [];
  const ids = new Set<string>();
  let duplicates = 0;
  let ordinal = 0;
  for (const combo of product(axes)) {
    const o = ordinal++;
    const cfg = structuredClone(base);
    // The sampled point's values, by path, after the grid's (the grid may set a whole section they lie in).
    const { [SAMPLE_AXIS]: point, ...values } = combo;
    if (point !== undefined) Object.assign(values, point);
    for (const [k, v] of Object.entries(values)) setPath(cfg, k.split('.'), v);
    const check = checkTrial(cfg);
    checked[o] = check.checked;
    if (check.errors.length) {
      const rules = (check.checked & CHECKED_RULES) !== 0;
      for (const e of check.errors) {
        let f = found.get(e.message);
        if (!f) found.set(e.message, (f = { err: e, ordinals: [], seq: found.size, needs: neededCheck(e, rules) }));
        f.ordinals.push(o);
      }
      continue;
    }
    const config = cfg as unknown as TrialConfig;
    const id = trialId(config);
    if (ids.has(id)) {
      duplicates++;
      continue;
    }
    ids.add(id);
    trials.push({ trial_id: id, config, grid_values: values });
  }
  const located = [
    ...overriddenBaseErrors(base, grid.map(([k]) => k), samplePaths).map((err, i) => ({ err, rank: [] as number[], seq: i - 1e9 })),
    ...[...found.values()].map((f) => ({ ...locateInGrid(f.err, f.ordinals, axes, (o) => (checked[o]! & f.needs) === f.needs, samplePaths), seq: f.seq })),
  ];
  located.sort((a, b) => compareRanks(a.rank, b.rank) || sectionRank(a.err) - sectionRank(b.err) || a.seq - b.seq);
  for (const { err } of located) if (!errors.some((x) => x.message === err.message)) errors.push(err);
  if (errors.length) fail(errors);
  return {
    name: spec.name,
    description: spec.description,
    spec,
    grid: Object.fromEntries(grid),
    ...(sample ? { sample: points } : {}),
    analysis: analysis.value,
    max_attempts: maxAttempts as number,
    trials,
    duplicates,
    refine: refine.value,
  };
}

/** The number of grid combinations (the product of the axes' sizes: grid keys, and the sample's count), exact however large. */
function gridSize(sizes: [string, number][]): bigint {
  return sizes.reduce((n, [, c]) => n * BigInt(c), 1n);
}

/** `50,000,000`. */
const count = (n: bigint | number) => n.toLocaleString('en-US');

/**
 * The error of a grid with more combinations than `limit`: the count and the grid keys with more than
 * one value, with their sizes (at most MAX_LISTED keys named). `raised`: the spec set max_trials.
 */
function gridTooLarge(sizes: [string, number][], size: bigint, limit: number, raised: boolean): SpecError {
  const factors = sizes.filter(([, c]) => c > 1);
  let keys = factors.slice(0, MAX_LISTED).map(([k, c]) => `${k} ${count(c)}`).join(' × ');
  if (factors.length > MAX_LISTED) keys += ` × ${factors.length - MAX_LISTED} more key(s)`;
  return new SpecError(
    'grid',
    undefined,
    `at most ${count(limit)} trial(s) (max_trials${raised ? '' : `, default ${count(MAX_TRIALS_DEFAULT)}`})`,
    undefined,
    false,
    `shrink the grid, or raise max_trials (top-level key, up to ${count(MAX_TRIALS_LIMIT)}) if you mean it`,
    `got ${count(size)} trials (${keys})`,
  );
}

/** The union-typed sections whose `name` picks the schema, and those schemas. */
const NAMED_SECTIONS: Record<string, Record<string, TSchema>> = { problem: problemSchemas, strategy: strategySchemas };

/**
 * Grid keys into a problem or strategy field that the section's name (the base's, not varied by the
 * grid; for strategy, vanilla when the spec gives none) does not have, e.g. `strategy.eta` over
 * vanilla: each names the grid key, the name it does not apply to and the names it applies to.
 */
function inapplicableGridPaths(base: Record<string, unknown>, gridKeys: string[]): SpecError[] {
  const out: SpecError[] = [];
  for (const key of gridKeys) {
    const [head, field, ...rest] = key.split('.');
    const schemas = NAMED_SECTIONS[head!];
    if (!schemas || field === undefined || field === 'name') continue;
    // The grid picks the name: each combination is checked on its own.
    if (gridKeys.includes(head!) || gridKeys.includes(`${head}.name`)) continue;
    const b = base[head!];
    let name: string;
    let isDefault = false;
    if (b === undefined && head === 'strategy') {
      name = 'vanilla';
      isDefault = true;
    } else if (b !== null && typeof b === 'object' && !Array.isArray(b) && typeof (b as { name?: unknown }).name === 'string') name = (b as { name: string }).name;
    else continue; // no name: that error is reported on its own
    const schema = schemas[name];
    const props = (schema?.properties ?? {}) as Record<string, TSchema>;
    if (!schema || Object.hasOwn(props, field)) continue;
    const applies = Object.entries(schemas)
      .filter(([, sc]) => Object.hasOwn((sc.properties ?? {}) as object, field))
      .map(([n]) => n);
    const keys = Object.keys(props);
    out.push(
      new SpecError(
        `grid.${key}`,
        key,
        `a key of ${head} ${name} (${keys.join(', ')})${rest.length ? '' : didYouMean(field, keys)}`,
        undefined,
        false,
        applies.length
          ? `${head}.${field} applies to ${head} ${applies.join(', ')} only: set ${head}: {name: ${applies[0]}} or vary grid.${head}`
          : `no ${head} has the key ${field}`,
        `does not apply to ${head} ${name}${isDefault ? ' (the default strategy: the spec sets none)' : ''}`,
      ),
    );
  }
  return out;
}

/** Sections of a trial config in the order they are checked; errors of the base config are listed in it. */
const SECTION_ORDER: readonly string[] = ['problem', 'strategy', 'model', 'train', 'diagnostics', 'seed'];

function sectionRank(e: SpecError): number {
  const i = SECTION_ORDER.indexOf(e.path.split('.')[0]!);
  return i < 0 ? SECTION_ORDER.length : i;
}

/** Lexicographic order of number lists, a prefix first. */
function compareRanks(a: number[], b: number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i]! - b[i]!;
  return a.length - b.length;
}

/** At most this many grid values (or combinations) are listed in one error; the rest are counted. */
const MAX_LISTED = 20;

/**
 * Names the grid values an error of the trial configs comes from, given the combinations it occurs
 * in (ordinals in product order) and those where it was looked for (`lookedFor`: e.g. the
 * cross-field rules only where the fields are valid). A grid key is named when the error's path lies
 * under it (or it under the path), or when the error depends on its value: some combination with the
 * error, with that key's value changed, is looked at and has no error. An error no grid key is named
 * for is the base config's own. `rank` orders errors in the grid's order. The sample's points are the
 * axis SAMPLE_AXIS (named `sample[i]`), lying at each of `samplePaths`.
 */
function locateInGrid(e: SpecError, ordinals: number[], grid: [string, unknown[]][], lookedFor: (ordinal: number) => boolean, samplePaths: readonly string[] = []): { err: SpecError; rank: number[] } {
  const sizes = grid.map(([, vs]) => vs.length);
  const strides = sizes.map((_, i) => sizes.slice(i + 1).reduce((a, b) => a * b, 1));
  const indexAt = (o: number, i: number) => Math.floor(o / strides[i]!) % sizes[i]!;
  const occurs = new Set(ordinals);
  const dependsOn = (i: number) =>
    ordinals.some((o) => {
      const rest = o - indexAt(o, i) * strides[i]!;
      for (let v = 0; v < sizes[i]!; v++) if (!occurs.has(rest + v * strides[i]!) && lookedFor(rest + v * strides[i]!)) return true;
      return false;
    });
  const under = (k: string) => e.path === k || e.path.startsWith(`${k}.`) || k.startsWith(`${e.path}.`);
  // The sample's axis (its points, `sample[i]`) lies at each of its params' paths.
  const keys = grid.flatMap(([k], i) => ((k === SAMPLE_AXIS ? samplePaths.some(under) : under(k)) || dependsOn(i) ? [i] : []));
  const label = (i: number) => (grid[i]![0] === SAMPLE_AXIS ? SAMPLE_AXIS : `grid.${grid[i]![0]}`);
  if (keys.length === 0) return { err: e, rank: [] };
  const tuples = new Map<string, number[]>();
  for (const o of ordinals) {
    const t = keys.map((i) => indexAt(o, i));
    tuples.set(t.join(','), t);
  }
  const list = [...tuples.values()].sort(compareRanks);
  let where: string;
  if (keys.length === 1 && list.length > 1 && list.length === sizes[keys[0]!]) where = `${label(keys[0]!)} (all ${list.length} ${grid[keys[0]!]![0] === SAMPLE_AXIS ? 'points' : 'values'})`;
  else {
    where = list
      .slice(0, MAX_LISTED)
      .map((t) => t.map((ix, j) => `${label(keys[j]!)}[${ix}]`).join(' × '))
      .join(', ');
    if (list.length > MAX_LISTED) where += ` and ${list.length - MAX_LISTED} more`;
  }
  return { err: e.relocated({ path: `${where} → ${e.path}` }), rank: [keys[0]!, ...list[0]!] };
}

/**
 * Errors of base values that the grid (or the sample: `samplePaths`) overrides in every trial, which no trial config shows: the
 * keys, types and ranges of a base value at a grid key's path, and a base value that is not an
 * object where a grid key sets a field inside it (setPath replaces it). Cross-field rules are not
 * applied to the base alone.
 */
function overriddenBaseErrors(base: Record<string, unknown>, keys: string[], samplePaths: readonly string[] = []): SpecError[] {
  const gridKeys = [...keys, ...samplePaths];
  /** The grid key that makes the base value at `path` unused, and whether it sets a field inside a non-object (replacing it). */
  const unusedBy = (path: string): { key: string; replaces: boolean } | undefined => {
    for (const k of gridKeys) {
      if ((path === k || path.startsWith(`${k}.`)) && getAt(base, k.split('.')) !== undefined) return { key: k, replaces: false };
      if (k.startsWith(`${path}.`)) {
        const v = getAt(base, path.split('.'));
        if (v !== undefined && (v === null || typeof v !== 'object' || Array.isArray(v))) return { key: k, replaces: true };
      }
    }
    return undefined;
  };
  const touched = gridKeys.some((k) => {
    const segs = k.split('.');
    return segs.some((_, i) => unusedBy(segs.slice(0, i + 1).join('.')) !== undefined);
  });
  if (!touched) return [];
  return checkTrialFields(structuredClone(base)).flatMap((e) => {
    const by = unusedBy(e.path);
    if (by === undefined) return [];
    const note = `${samplePaths.includes(by.key) ? 'sample.params' : 'grid'}.${by.key} ${by.replaces ? 'replaces' : 'overrides'} this base value in every trial, so it is never used: fix it or remove it`;
    return [e.relocated({ note })];
  });
}

/** Validates the spec's `refine:` block (absent = null) into a new object with defaults applied. */
function resolveRefine(raw: unknown): { value: RefineConfig | null; errors: SpecError[] } {
  if (raw === undefined) return { value: null, errors: [] };
  const value = raw !== null && typeof raw === 'object' && !Array.isArray(raw) ? { ...(raw as object) } : raw;
  const errors = validateObject(RefineSchema, value, 'refine');
  const r = value as RefineConfig;
  if (!errors.length && r.x === r.y) errors.push(new SpecError('refine.y', r.y, `an axis other than refine.x (${r.x})`));
  if (!errors.length && r.facet !== undefined) {
    const columns = TRIAL_COLUMNS.map((c) => c.name);
    if (!columns.includes(r.facet)) errors.push(new SpecError('refine.facet', r.facet, `a trials.parquet column, e.g. strategy, problem, seed, width, depth${didYouMean(r.facet, columns)}`));
    else if (r.facet === r.x || r.facet === r.y) errors.push(new SpecError('refine.facet', r.facet, `a column other than the refined axes (${r.x}, ${r.y})`));
  }
  return { value: errors.length ? null : r, errors };
}

/** Validates the spec's `analysis:` block (absent = all defaults) into a new object with defaults applied. */
function resolveAnalysis(raw: unknown): { value: AnalysisConfig; errors: SpecError[] } {
  const value = (raw === undefined ? {} : structuredClone(raw)) as AnalysisConfig;
  const errors = validateObject(AnalysisSchema, value, 'analysis');
  if (errors.length) return { value, errors };
  if (value.smooth_window % 2 === 0)
    errors.push(new SpecError('analysis.smooth_window', value.smooth_window, 'an odd integer (a centered running median)'));
  // In the schema's order (sweep.json reads the same whatever order the spec wrote them in).
  const ordered = Object.fromEntries(Object.keys(AnalysisSchema.properties).map((k) => [k, (value as Record<string, unknown>)[k]]));
  return { value: ordered as AnalysisConfig, errors };
}

/** Default of the most alias expansion a spec's YAML may do (yaml's maxAliasCount); PHASEMAP_MAX_YAML_ALIASES sets another. */
export const MAX_YAML_ALIASES_DEFAULT = 100;
/** Default of the largest spec file read, in bytes (1 MiB); PHASEMAP_MAX_SPEC_BYTES sets another. */
export const MAX_SPEC_BYTES_DEFAULT = 1024 * 1024;

/**
 * A limit from the environment variable `name` (a positive integer), else `dflt`.
 * @throws SpecErrors naming the variable and its value when it is set to anything else.
 */
function envLimit(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return dflt;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 1) throw new SpecErrors([new SpecError(name, v, 'a positive integer (environment variable)')]);
  return n;
}

/** The spec limits in force: alias expansion (yaml maxAliasCount) and file size (bytes). */
export function specLimits(): { maxAliases: number; maxBytes: number } {
  return { maxAliases: envLimit('PHASEMAP_MAX_YAML_ALIASES', MAX_YAML_ALIASES_DEFAULT), maxBytes: envLimit('PHASEMAP_MAX_SPEC_BYTES', MAX_SPEC_BYTES_DEFAULT) };
}

/**
 * Parses YAML (JSON is accepted: it is YAML). A syntax error reads `SOURCE:LINE:COLUMN: ` and the
 * parser's whole message, then the spec's lines it points at. An alias without its anchor and an
 * alias inside the node it names (a cycle) are errors at their line; aliases that expand too much
 * (an alias bomb: yaml's maxAliasCount, `maxAliases`, default PHASEMAP_MAX_YAML_ALIASES or 100)
 * are an error of the file.
 * @throws SpecErrors of SpecSyntaxError, one per error the parser found.
 */
export function parseSpecText(text: string, source = 'spec', maxAliases = specLimits().maxAliases): unknown {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true, lineCounter });
  if (doc.errors.length) throw new SpecErrors(doc.errors.map((e) => syntaxError(e, source)));
  // One pass over the nodes in document order (an alias names the last anchor of its name before
  // it): an alias with no anchor yet, or one whose anchor is a node it lies in (a cycle).
  const anchors = new Map<string, unknown>();
  let bad: { node: YamlNode; what: string } | undefined;
  visit(doc, (_key, node, path) => {
    if (isNode(node) && !isAlias(node) && node.anchor) anchors.set(node.anchor, node);
    if (!isAlias(node)) return undefined;
    const target = anchors.get(node.source);
    if (target === undefined) bad = { node, what: `Unresolved alias (the anchor must be set before the alias): ${node.source}` };
    else if ((path as readonly unknown[]).includes(target)) bad = { node, what: `Recursive alias: *${node.source} lies inside the node &${node.source} names; a spec cannot contain itself` };
    return bad ? visit.BREAK : undefined;
  });
  if (bad) {
    const at = bad.node.range ? lineCounter.linePos(bad.node.range[0]) : undefined;
    throw new SpecErrors([new SpecSyntaxError(bad.what, source, at?.line, at?.col)]);
  }
  try {
    return doc.toJS({ maxAliasCount: maxAliases });
  } catch (e) {
    const msg = (e as Error).message;
    if (/Excessive alias count/.test(msg))
      throw new SpecErrors([
        new SpecSyntaxError(
          `YAML aliases expand too much: more than ${maxAliases} alias expansion(s) (a "billion laughs" alias bomb?): write the values out, or raise the limit with PHASEMAP_MAX_YAML_ALIASES`,
          source,
        ),
      ]);
    throw new SpecErrors([new SpecSyntaxError(msg, source)]);
  }
}

/** A SpecSyntaxError from one of the `yaml` parser's errors (made with prettyErrors). */
function syntaxError(e: YAMLError, source: string): SpecSyntaxError {
  const [first = '', ...rest] = e.message.split('\n');
  const pos = e.linePos?.[0];
  // prettyErrors appends ` at line L, column C:` and an excerpt; the location goes in front instead.
  const detail = pos ? first.replace(/ at line \d+, column \d+:?$/, '') : first;
  while (rest.length && rest[0]!.trim() === '') rest.shift();
  while (rest.length && rest[rest.length - 1]!.trim() === '') rest.pop();
  return new SpecSyntaxError(detail, source, pos?.line, pos?.col, rest.map((l) => `    ${l}`.trimEnd()).join('\n') || undefined);
}

/**
 * Reads a spec file of at most `maxBytes` bytes (a pipe or device too: reading stops there).
 * @throws SpecErrors naming the file and its size when it is larger; an fs error (code and path) when it cannot be read.
 */
export async function readSpecFile(file: string, maxBytes = specLimits().maxBytes): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read '${file}'`), { code: 'EISDIR', path: file, syscall: 'read' });
    const tooLarge = (size: string) =>
      new SpecErrors([new SpecSyntaxError(`the file is ${size}: a spec is at most ${count(maxBytes)} bytes (${mib(maxBytes)}; PHASEMAP_MAX_SPEC_BYTES raises it)`, file)]);
    if (st.isFile() && st.size > maxBytes) throw tooLarge(`${count(st.size)} bytes (${mib(st.size)})`);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.alloc(Math.min(64 * 1024, maxBytes + 1 - total));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      chunks.push(buf.subarray(0, bytesRead));
      total += bytesRead;
      if (total > maxBytes) throw tooLarge(`more than ${count(maxBytes)} bytes`);
    }
    return Buffer.concat(chunks).toString('utf8');
  } finally {
    await fh.close();
  }
}

/** `1.5 MiB`. */
const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(bytes % (1024 * 1024) === 0 ? 0 : 1)} MiB`;

/**
 * Reads, parses and resolves a spec file.
 * @throws SpecErrors, or an fs error (code and path) for a file that cannot be read.
 */
export async function loadSweep(file: string): Promise<ResolvedSweep> {
  const limits = specLimits();
  const text = await readSpecFile(file, limits.maxBytes);
  const raw = parseSpecText(text, file, limits.maxAliases);
  const paths = modulePaths(raw);
  if (!paths.length) return resolveSweep(raw, file);
  return resolveSweep(raw, file, await loadSpecModules(file, paths));
}

/**
 * The conformance check of each module with the parameter values of the trials (the defaults were
 * checked when the module was loaded): the first MODULE_CHECKS_MAX distinct sets per module.
 */
function checkModuleParams(trials: readonly ResolvedTrial[], modules: ReadonlyMap<string, SpecProblemModule>): SpecError[] {
  const errors: SpecError[] = [];
  const seen = new Map<string, Set<string>>();
  for (const t of trials) {
    const p = t.config.problem as unknown as Record<string, unknown>;
    const m = typeof p.module === 'string' ? modules.get(p.module) : undefined;
    if (!m) continue;
    const params: Record<string, number> = {};
    for (const [k, v] of Object.entries(p)) if (typeof v === 'number' && !MODULE_COMMON_KEYS.has(k)) params[k] = v;
    const key = JSON.stringify(params);
    const done = seen.get(m.bundle.hash) ?? new Set<string>();
    seen.set(m.bundle.hash, done);
    if (done.has(key) || done.size >= MODULE_CHECKS_MAX) continue;
    done.add(key);
    for (const msg of m.check(params)) {
      const e = new SpecError('problem.module', p.module, 'a problem module that passes the conformance check with every parameter set of the grid (docs/problems.md)', undefined, false, `with ${key}: ${msg}`);
      if (!errors.some((x) => x.message === e.message)) errors.push(e);
    }
  }
  return errors;
}

/** Keys of a module problem's config section that are not its parameters. */
const MODULE_COMMON_KEYS = new Set(['name', 'module', 'module_hash', 'n_collocation', 'n_boundary', 'w_bc', 'eval_grid', 'n_initial', 'w_ic']);

/** The problem module paths a spec names: `problem.module` and the values of a grid key `problem.module`. */
function modulePaths(raw: unknown): string[] {
  if (!isMapping(raw)) return [];
  const out = new Set<string>();
  const p = raw.problem;
  if (isMapping(p) && typeof p.module === 'string') out.add(p.module);
  const g = isMapping(raw.grid) ? raw.grid['problem.module'] : undefined;
  if (Array.isArray(g)) for (const v of g) if (typeof v === 'string') out.add(v);
  return [...out];
}

/**
 * Reads, loads and checks a spec's problem modules (worker/trainer/problem-module.ts): each module's files
 * are read relative to the spec, imported in this process, and run through the conformance check
 * (`checkProblem` with the default parameters), so that a broken module is reported before anything is
 * queued.
 * @throws SpecErrors: one `problem.module` error per module that cannot be read, loaded or checked.
 */
async function loadSpecModules(file: string, paths: string[]): Promise<Map<string, SpecProblemModule>> {
  const { readProblemModule } = await import('../worker/trainer/problem-module.js');
  const out = new Map<string, SpecProblemModule>();
  const errors: SpecError[] = [];
  for (const path of paths) {
    try {
      const m = await specModule(await readProblemModule(file, path), file, errors);
      if (m) out.set(path, m);
    } catch (e) {
      errors.push(new SpecError('problem.module', path, MODULE_EXPECTED, file, false, (e as Error).message));
    }
  }
  if (errors.length) throw new SpecErrors(errors);
  return out;
}

const MODULE_EXPECTED = 'a problem module that loads and passes the conformance check (docs/problems.md)';

/**
 * Loads one module's sources in this process and runs its conformance check with the default
 * parameters. @returns its SpecProblemModule, or null with the check's errors added to `errors`.
 * @throws Error when it cannot be loaded.
 */
async function specModule(bundle: ProblemModuleBundle, file: string, errors: SpecError[]): Promise<SpecProblemModule | null> {
  const { loadProblemModule, conformanceCheck, conformanceCheckSync } = await import('../worker/trainer/problem-module.js');
  const { hasInitial } = await import('../worker/trainer/problem-api.js');
  const path = bundle.path;
  const def = await loadProblemModule(bundle);
  const where = `problem module ${path}`;
  const msgs = await conformanceCheck(def, where);
  const bad = msgs.filter((m) => m.level === 'error');
  if (bad.length) {
    for (const m of bad) errors.push(new SpecError('problem.module', path, MODULE_EXPECTED, file, false, m.message));
    return null;
  }
  return {
    bundle, name: def.name, schema: moduleConfigSchema(def.name, { ...(def.params ?? {}) }, hasInitial(def)), warnings: msgs.map((m) => m.message),
    check: (params) => conformanceCheckSync(def, where, params).filter((m) => m.level === 'error').map((m) => m.message),
  };
}

/**
 * The modules of a sweep from the sources DIR/sweep.json keeps (`phasemap refine`), by the path its
 * spec writes: loaded and checked as `loadSweep` does with the files.
 * @throws SpecErrors naming each module that fails.
 */
export async function modulesFromBundles(bundles: ProblemModuleBundle[], file: string): Promise<Map<string, SpecProblemModule>> {
  const out = new Map<string, SpecProblemModule>();
  const errors: SpecError[] = [];
  for (const b of bundles) {
    try {
      const m = await specModule(b, file, errors);
      if (m) out.set(b.path, m);
    } catch (e) {
      errors.push(new SpecError('problem.module', b.path, MODULE_EXPECTED, file, false, (e as Error).message));
    }
  }
  if (errors.length) throw new SpecErrors(errors);
  return out;
}
