/**
 * Sweep spec loading: parse (YAML or JSON), validate, expand the grid, apply defaults and give
 * every resolved trial its id. Nothing runs before this has passed.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import canonicalizeModule from 'canonicalize';
import { parseDocument } from 'yaml';
import { Type, type TSchema } from '@sinclair/typebox';
import {
  AnalysisSchema,
  DiagnosticsSchema,
  ModelSchema,
  SweepSpecSchema,
  TrainSchema,
  problemSchemas,
  strategySchemas,
  type AnalysisConfig,
  type SweepSpec,
  type TrialConfig,
} from '../schemas/sweep.js';

/**
 * A spec error: names the field path, the value found and what was expected. An unknown key reads
 * `PATH: unknown key, expected one of the keys … (did you mean …?)`, since its value is not what is wrong.
 */
export class SpecError extends Error {
  constructor(
    readonly path: string,
    readonly value: unknown,
    readonly expected: string,
    readonly source?: string,
    readonly unknownKey = false,
  ) {
    super(`${source ? `${source}: ` : ''}${path}: ${unknownKey ? 'unknown key' : `got ${show(value)}`}, expected ${expected}`);
    this.name = 'SpecError';
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
  /** The grid values that made this trial, by dotted path. */
  grid_values: Record<string, unknown>;
}

export interface ResolvedSweep {
  name: string;
  description?: string;
  spec: SweepSpec;
  /** The `analysis:` block with defaults applied: thresholds of the phase record (not part of any trial). */
  analysis: AnalysisConfig;
  /** `max_attempts` (default 3): attempts of a throwing trial per run before it is failed. */
  max_attempts: number;
  trials: ResolvedTrial[];
  /** Grid combinations that resolved to a trial already in `trials` (same config, same id), dropped. */
  duplicates: number;
}

/** RFC 8785 (JCS) canonical JSON; the package is CommonJS with an ESM-style default in its types. */
const canonicalize = ((canonicalizeModule as unknown as { default?: unknown }).default ?? canonicalizeModule) as unknown as (v: unknown) => string | undefined;

const TRIAL_KEYS = ['problem', 'model', 'train', 'strategy', 'diagnostics', 'seed'] as const;

function show(v: unknown): string {
  if (v === undefined) return '(missing)';
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: false });
const compiled = new Map<TSchema, ValidateFunction>();
function validator(schema: TSchema): ValidateFunction {
  let v = compiled.get(schema);
  if (!v) {
    v = ajv.compile(schema);
    compiled.set(schema, v);
  }
  return v;
}

function levenshtein(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++)
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
  return d[a.length]![b.length]!;
}

function allowedKeys(instancePath: string, root: TSchema): string[] {
  let s: TSchema | undefined = root;
  for (const seg of instancePath.split('/').filter(Boolean)) s = s?.properties?.[seg] as TSchema | undefined;
  return Object.keys((s?.properties as object | undefined) ?? {});
}

function getAt(obj: unknown, segs: string[]): unknown {
  let o = obj;
  for (const s of segs) o = o !== null && typeof o === 'object' ? (o as Record<string, unknown>)[s] : undefined;
  return o;
}

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
    switch (e.keyword) {
      case 'additionalProperties': {
        const key = String(p.additionalProperty);
        const allowed = allowedKeys(e.instancePath, root);
        const near = allowed.filter((k) => levenshtein(k, key) <= 2);
        err = new SpecError(join(key), (value as Record<string, unknown>)[key],
          `one of the keys ${allowed.join(', ')}${near.length ? ` (did you mean '${near[0]}'?)` : ''}`, undefined, true);
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
    const near = typeof name === 'string' ? names.filter((n) => levenshtein(n, name) <= 3) : [];
    return [new SpecError(`${kind}.name`, name, `one of ${names.join(', ')}${near.length ? ` (did you mean '${near[0]}'?)` : ''}`)];
  }
  return validateObject(schema, data, kind);
}

const SeedSchema = Type.Integer({ minimum: 0, maximum: 2 ** 31 - 1 });

/**
 * Validates one trial config in place, applying defaults. Returns the errors (empty = valid).
 * Cross-field rules: batch_size ≤ n_collocation; snr_batches divides n_collocation (science.md §5:
 * B equal fixed batches); eval_every, diagnostics.every and train.checkpoint_every are multiples of log_every.
 */
export function resolveTrialConfig(cfg: Record<string, unknown>): SpecError[] {
  const errs: SpecError[] = [];
  for (const k of Object.keys(cfg))
    if (!(TRIAL_KEYS as readonly string[]).includes(k))
      errs.push(new SpecError(k, cfg[k], `one of the keys name, description, ${TRIAL_KEYS.join(', ')}, grid`, undefined, true));
  for (const k of ['model', 'train', 'diagnostics'] as const) if (cfg[k] === undefined) cfg[k] = {};
  if (cfg.strategy === undefined) cfg.strategy = { name: 'vanilla' };
  if (cfg.seed === undefined) cfg.seed = 0;
  errs.push(...validateNamed('problem', problemSchemas, cfg.problem));
  errs.push(...validateNamed('strategy', strategySchemas, cfg.strategy));
  errs.push(...validateObject(ModelSchema, cfg.model, 'model'));
  errs.push(...validateObject(TrainSchema, cfg.train, 'train'));
  const snrDefault = (cfg.diagnostics as Record<string, unknown> | null)?.snr_batches === undefined;
  errs.push(...validateObject(DiagnosticsSchema, cfg.diagnostics, 'diagnostics'));
  if (!validator(SeedSchema)(cfg.seed)) errs.push(new SpecError('seed', cfg.seed, 'an integer in [0, 2147483647]'));
  if (errs.length) return errs;
  const c = cfg as unknown as TrialConfig;
  const n = c.problem.n_collocation;
  if (c.train.batch_size !== 'full' && c.train.batch_size > n)
    errs.push(new SpecError('train.batch_size', c.train.batch_size, `'full' or an integer <= problem.n_collocation (${n})`));
  if (n % c.diagnostics.snr_batches !== 0)
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

function setPath(obj: Record<string, unknown>, segs: string[], value: unknown): void {
  let o = obj;
  for (const s of segs.slice(0, -1)) {
    if (o[s] === undefined || o[s] === null || typeof o[s] !== 'object' || Array.isArray(o[s])) o[s] = {};
    o = o[s] as Record<string, unknown>;
  }
  o[segs[segs.length - 1]!] = structuredClone(value);
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

/**
 * Expands and validates a parsed spec. Errors name the path (a grid value's error names the grid
 * key and index as well). Duplicate trials (same resolved config) are kept once.
 * @throws SpecErrors listing every problem found.
 */
export function resolveSweep(raw: unknown, source?: string): ResolvedSweep {
  const fail = (errs: SpecError[]) => {
    throw new SpecErrors(errs.map((e) => new SpecError(e.path, e.value, e.expected, source, e.unknownKey)));
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) fail([new SpecError('(spec)', raw, 'a mapping with name, problem, model, train, strategy, diagnostics, seed, grid')]);
  // Top-level errors (unknown keys, the name, the grid's shape) are reported together with the
  // trials' errors where the grid can still be expanded, so a user fixes everything in one round.
  const errors = validateObject(SweepSpecSchema, raw, '');
  const spec = raw as SweepSpec;
  const analysis = resolveAnalysis(spec.analysis);
  errors.push(...analysis.errors);
  const maxAttempts = spec.max_attempts === undefined ? 3 : spec.max_attempts;
  if (!Number.isInteger(maxAttempts) || (maxAttempts as number) < 1 || (maxAttempts as number) > 10)
    errors.push(new SpecError('max_attempts', maxAttempts, 'an integer from 1 to 10'));
  const gridOk = !errors.some((e) => e.path === 'grid' || e.path.startsWith('grid.'));
  const grid = gridOk ? Object.entries(spec.grid ?? {}) : [];
  for (const [key] of grid) {
    const head = key.split('.')[0]!;
    if (!(TRIAL_KEYS as readonly string[]).includes(head))
      errors.push(new SpecError(`grid.${key}`, key, `a dotted path into one of ${TRIAL_KEYS.join(', ')}`));
  }
  if (!gridOk || errors.some((e) => e.path.startsWith('grid.'))) fail(errors);
  const base: Record<string, unknown> = {};
  for (const k of TRIAL_KEYS) if ((spec as Record<string, unknown>)[k] !== undefined) base[k] = structuredClone((spec as Record<string, unknown>)[k]);

  const trials: ResolvedTrial[] = [];
  const ids = new Set<string>();
  let duplicates = 0;
  for (const combo of product(grid)) {
    const cfg = structuredClone(base);
    for (const [k, v] of Object.entries(combo)) setPath(cfg, k.split('.'), v);
    const errs = resolveTrialConfig(cfg);
    if (errs.length) {
      for (const e of errs) {
        const g = grid.find(([k]) => e.path === k || e.path.startsWith(`${k}.`) || k.startsWith(`${e.path}.`));
        const at = g ? `grid.${g[0]}[${g[1].indexOf(combo[g[0]])}] → ${e.path}` : e.path;
        const err = new SpecError(at, e.value, e.expected, undefined, e.unknownKey);
        if (!errors.some((x) => x.message === err.message)) errors.push(err);
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
    trials.push({ trial_id: id, config, grid_values: combo });
  }
  if (errors.length) fail(errors);
  return { name: spec.name, description: spec.description, spec, analysis: analysis.value, max_attempts: maxAttempts as number, trials, duplicates };
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

/** Parses YAML (JSON is accepted: it is YAML) with line numbers in syntax errors. */
export function parseSpecText(text: string, source = 'spec'): unknown {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) throw new SpecErrors(doc.errors.map((e) => new SpecError('(syntax)', e.message.split('\n')[0], 'valid YAML or JSON', source)));
  return doc.toJS({ maxAliasCount: 100 });
}

/** Reads, parses and resolves a spec file. @throws SpecErrors, or an fs error for a missing file. */
export async function loadSweep(file: string): Promise<ResolvedSweep> {
  const text = await readFile(file, 'utf8');
  return resolveSweep(parseSpecText(text, file), file);
}
