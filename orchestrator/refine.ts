/**
 * `phasemap refine DIR`: rounds of adaptive refinement of the phase boundaries of a results DIR. Each
 * round reads DIR's done trials, plans new points between neighbouring cells whose phases differ
 * (analysis/refine.ts), and runs them through runSweep like any trial: content-hash ids, idempotent.
 * sweep.json records the round that added each refinement trial (`refine_round`); a killed refine
 * resumes by running the same command (its recorded, unfinished trials run first).
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { planRefinement, type RefinePoint, type RefineSample } from '../analysis/refine.js';
import type { Phase } from '../analysis/diagram.js';
import { SWEEP_FILE } from '../schemas/parquet.js';
import { RefineSchema, type RefineConfig, type TrialConfig } from '../schemas/sweep.js';
import { WordedError } from './errors.js';
import { readTrialsParquet } from './parquet-store.js';
import { plainLogger } from './progress.js';
import { runSweep, type RunOptions, type RunSummary, type SweepFile, type SweepFileTrial } from './run.js';
import { modulesFromBundles, resolveSweep, resolveTrialConfig, trialId, type ResolvedTrial } from './spec.js';

/** The axes refinement can split, with their place in the trial config; all logarithmic. */
const AXES: Record<RefineConfig['x'], { path: string[]; integer: boolean; powersOfTwo: boolean }> = {
  lr: { path: ['train', 'lr'], integer: false, powersOfTwo: false },
  batch_size: { path: ['train', 'batch_size'], integer: true, powersOfTwo: true },
  steps: { path: ['train', 'steps'], integer: true, powersOfTwo: false },
  width: { path: ['model', 'width'], integer: true, powersOfTwo: false },
  depth: { path: ['model', 'depth'], integer: true, powersOfTwo: false },
};

/** A trial's config value on a refinement axis, as written (a full batch is 'full'). */
function rawAxisValue(config: TrialConfig, axis: RefineConfig['x']): unknown {
  const [a, b] = AXES[axis].path as [string, string];
  return (config as unknown as Record<string, Record<string, unknown>>)[a]![b];
}

/** A trial's value on a refinement axis; a full batch is its size N (problem.n_collocation). */
export function axisValue(config: TrialConfig, axis: RefineConfig['x']): number {
  const v = rawAxisValue(config, axis);
  return v === 'full' ? config.problem.n_collocation : (v as number);
}

function setAxis(config: TrialConfig, axis: RefineConfig['x'], v: number): void {
  const [a, b] = AXES[axis].path as [string, string];
  (config as unknown as Record<string, Record<string, unknown>>)[a]![b] = axis === 'batch_size' && v >= config.problem.n_collocation ? 'full' : v;
}

/** JSON with object keys sorted: the same text for the same value, whatever order its keys were written in. */
function stableJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v);
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`;
  return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stableJson((v as Record<string, unknown>)[k])}`).join(',')}}`;
}

/** A trial's refinement group: its config without the two axes and the seed. */
export function refineGroup(config: TrialConfig, cfg: Pick<RefineConfig, 'x' | 'y'>): string {
  const c = structuredClone(config) as unknown as Record<string, Record<string, unknown>> & { seed?: number };
  for (const axis of [cfg.x, cfg.y]) delete c[AXES[axis].path[0]!]![AXES[axis].path[1]!];
  delete c.seed;
  return stableJson(c);
}

export interface RefineRunOptions extends Omit<RunOptions, 'spec' | 'resolved' | 'out'> {
  /** The results DIR (holds sweep.json). */
  out: string;
  /** Override the spec's refine.rounds: the round to reach (rounds recorded in sweep.json count). */
  rounds?: number;
  /** Override the spec's refine.budget: most refinement trials in the sweep, over all rounds. */
  budget?: number;
}

export interface RefineSummary {
  dir: string;
  /** The refinement settings used (the spec's block with defaults, and the flags over it). */
  refine: RefineConfig;
  /** New trials this call added, by round. */
  added: Array<{ round: number; trials: number }>;
  /** The runs this call made, summed (total = trials of the sweep after the last run). */
  total: number;
  queued: number;
  done: number;
  failed: RunSummary['failed'];
  cancelled: number;
  interrupted: boolean;
  error: string | null;
}

/** DIR's sweep.json. @throws WordedError when DIR has none or it is not JSON. */
async function readSweepFile(dir: string): Promise<SweepFile> {
  const path = join(dir, SWEEP_FILE);
  if (!existsSync(path)) throw new WordedError(`${dir}: no ${SWEEP_FILE} (run a sweep with --out ${dir} first)`);
  try {
    return JSON.parse(await readFile(path, 'utf8')) as SweepFile;
  } catch (e) {
    throw new WordedError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** The `refine:` block's defaults (a spec without one). */
export function refineDefaults(): RefineConfig {
  return Object.fromEntries(Object.entries(RefineSchema.properties).map(([k, v]) => [k, (v as { default: unknown }).default])) as RefineConfig;
}

const asResolved = (t: SweepFileTrial): ResolvedTrial => ({ trial_id: t.trial_id, config: t.config, grid_values: t.grid_values ?? {}, ...(t.refine_round === undefined ? {} : { refine_round: t.refine_round }) });

/**
 * Runs the refinement rounds of DIR's sweep up to `rounds` (sweep.json's recorded rounds count: a
 * second call with the same options adds nothing). Never throws for a trial's failure.
 * @throws WordedError when DIR holds no sweep; SpecErrors when its recorded spec no longer resolves.
 */
export async function refineSweep(opts: RefineRunOptions): Promise<RefineSummary> {
  const log = opts.log ?? plainLogger();
  const dir = resolve(opts.out);
  let file = await readSweepFile(dir);
  // A module sweep resolves again from the module sources sweep.json keeps (the spec's paths are relative to a file elsewhere).
  const modules = file.problem_modules ? await modulesFromBundles(Object.values(file.problem_modules), join(dir, SWEEP_FILE)) : undefined;
  const sweep = resolveSweep(file.spec, join(dir, SWEEP_FILE), modules);
  const cfg: RefineConfig = { ...(sweep.refine ?? refineDefaults()) };
  if (opts.rounds !== undefined) cfg.rounds = opts.rounds;
  if (opts.budget !== undefined) cfg.budget = opts.budget;
  const summary: RefineSummary = { dir, refine: cfg, added: [], total: file.trials.length, queued: 0, done: 0, failed: [], cancelled: 0, interrupted: false, error: null };
  const runWith = async (extra: ResolvedTrial[]): Promise<boolean> => {
    const trials = new Map(sweep.trials.map((t) => [t.trial_id, t]));
    for (const t of file.trials) if (t.refine_round !== undefined && !trials.has(t.trial_id)) trials.set(t.trial_id, asResolved(t));
    for (const t of extra) if (!trials.has(t.trial_id)) trials.set(t.trial_id, t);
    const s = await runSweep({ ...opts, spec: join(dir, SWEEP_FILE), out: dir, resolved: { ...sweep, trials: [...trials.values()] }, log, liveReportWaitS: 0 });
    summary.total = s.total;
    summary.queued += s.queued;
    summary.done += s.done;
    summary.failed.push(...s.failed);
    summary.cancelled += s.cancelled;
    summary.interrupted = s.interrupted;
    summary.error = s.error;
    return !s.interrupted && s.error === null && s.cancelled === 0;
  };
  const status = async () => new Map((await readTrialsParquet(dir)).map((r) => [r.trial_id, r]));
  const recorded = () => file.trials.filter((t) => t.refine_round !== undefined);
  let round = Math.max(0, ...recorded().map((t) => t.refine_round!));
  // A killed refine: the trials its last round recorded and did not finish run first.
  let rows = await status();
  const pending = recorded().filter((t) => !['done', 'failed'].includes(String(rows.get(t.trial_id)?.status)));
  if (pending.length) {
    log.info(`refine: ${pending.length} trial(s) of round ${round} not done yet: running them first`);
    if (!(await runWith([]))) return summary;
  }
  while (round < cfg.rounds) {
    file = await readSweepFile(dir);
    rows = await status();
    const left = cfg.budget - recorded().length;
    if (left <= 0) {
      log.info(`refine: budget of ${cfg.budget} trial(s) spent`);
      break;
    }
    const samples: RefineSample[] = [];
    const points: RefinePoint[] = [];
    const templates = new Map<string, SweepFileTrial>();
    for (const t of file.trials) {
      const group = refineGroup(t.config, cfg);
      if (!templates.has(group)) templates.set(group, t);
      const p = { group, x: axisValue(t.config, cfg.x), y: axisValue(t.config, cfg.y), seed: t.config.seed };
      points.push(p);
      const row = rows.get(t.trial_id);
      if (row?.status === 'done' && row.final_phase) samples.push({ ...p, phase: row.final_phase as Phase });
    }
    const plan = planRefinement(
      samples,
      { resolution: cfg.resolution, explore: cfg.explore, budget: left, xInteger: AXES[cfg.x].integer, yInteger: AXES[cfg.y].integer, xPowersOfTwo: AXES[cfg.x].powersOfTwo, yPowersOfTwo: AXES[cfg.y].powersOfTwo },
      points,
    );
    if (plan.length === 0) {
      log.info(
        `refine: round ${round + 1}: no neighbouring cells that differ and are further apart than ${cfg.resolution}x${cfg.explore ? `, nor cells of one phase beside a boundary further apart than ${cfg.explore}x` : ''}: nothing to refine`,
      );
      break;
    }
    round++;
    const extra: ResolvedTrial[] = plan.map((p) => {
      const tpl = templates.get(p.group)!;
      const config = structuredClone(tpl.config);
      setAxis(config, cfg.x, p.x);
      setAxis(config, cfg.y, p.y);
      config.seed = p.seed;
      const errors = resolveTrialConfig(config as unknown as Record<string, unknown>, modules);
      if (errors.length) throw new WordedError(`refine: a planned trial is not valid: ${errors.map((e) => e.message).join('; ')}`, 3);
      // Its grid values: the template's, with the axes it moved on (and its seed) set, so that labels name them.
      const grid_values: Record<string, unknown> = { ...tpl.grid_values };
      for (const axis of [cfg.x, cfg.y]) {
        const key = AXES[axis].path.join('.');
        if (key in grid_values || rawAxisValue(config, axis) !== rawAxisValue(tpl.config, axis)) grid_values[key] = rawAxisValue(config, axis);
      }
      if ('seed' in grid_values || p.seed !== tpl.config.seed) grid_values.seed = p.seed;
      return { trial_id: trialId(config), config, grid_values, refine_round: round };
    });
    summary.added.push({ round, trials: extra.length });
    log.info(
      plan.some((p) => p.explore)
        ? `refine: round ${round} of ${cfg.rounds}: no boundary left to split; ${extra.length} new trial(s) between neighbouring cells of one phase beside a boundary, more than ${cfg.explore}x apart (explore)`
        : `refine: round ${round} of ${cfg.rounds}: ${extra.length} new trial(s) between neighbouring cells whose phases differ`,
    );
    if (!(await runWith(extra))) return summary;
  }
  return summary;
}
