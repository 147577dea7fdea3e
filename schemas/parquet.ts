/**
 * Output layout of a sweep directory DIR and the columns of `DIR/trials.parquet`.
 *
 *   DIR/sweep.json                                           the spec as resolved (+ trial ids)
 *   DIR/trials.parquet                                       one row per trial (TRIAL_COLUMNS)
 *   DIR/metrics/trial_id=<id>/attempt=<n>/part-<k>.parquet   per-step rows (schemas/metrics.ts)
 *   DIR/checkpoints/<id>/step-<n>.safetensors                checkpoints (science.md §7, schemas/safetensors.ts)
 */
import { Bool, Field, Float64, Int32, Schema, TimestampMillisecond, Utf8, type DataType } from 'apache-arrow';
import type { TrialConfig } from './sweep.js';
import type { FinalPhase } from './trial.js';

export const SWEEP_FILE = 'sweep.json';
export const TRIALS_FILE = 'trials.parquet';
export const METRICS_DIR = 'metrics';
export const CHECKPOINTS_DIR = 'checkpoints';

/** Trial ids are `t` + 16 lowercase hex digits: safe as a path segment and never read as a number by hive partitioning. */
export const TRIAL_ID_PATTERN = /^t[0-9a-f]{16}$/;

/** Relative path of one metrics part. Throws on a trial id that is not a trial id (never steers a path outside DIR). */
export function metricsPartPath(trialId: string, attempt: number, part: number): string {
  if (!TRIAL_ID_PATTERN.test(trialId)) throw new Error(`trial_id: got ${JSON.stringify(trialId)}, expected t + 16 hex digits`);
  if (!Number.isInteger(attempt) || attempt < 1) throw new Error(`attempt: got ${attempt}, expected an integer >= 1`);
  if (!Number.isInteger(part) || part < 0) throw new Error(`part: got ${part}, expected an integer >= 0`);
  return `${METRICS_DIR}/trial_id=${trialId}/attempt=${attempt}/part-${String(part).padStart(5, '0')}.parquet`;
}

/** Relative path of one checkpoint. Throws on a trial id that is not a trial id or a step that is not an integer ≥ 0. */
export function checkpointPath(trialId: string, step: number): string {
  if (!TRIAL_ID_PATTERN.test(trialId)) throw new Error(`trial_id: got ${JSON.stringify(trialId)}, expected t + 16 hex digits`);
  if (!Number.isSafeInteger(step) || step < 0) throw new Error(`step: got ${step}, expected an integer >= 0`);
  return `${CHECKPOINTS_DIR}/${trialId}/step-${step}.safetensors`;
}

/** What the orchestrator knows of a trial's run (filled from result messages). */
export interface TrialRecord {
  trial_id: string;
  sweep: string;
  config: TrialConfig;
  status: 'queued' | 'running' | 'done' | 'failed' | 'cancelled';
  attempts: number;
  started_at: Date | null;
  finished_at: Date | null;
  wall_seconds: number | null;
  final_loss: number | null;
  final_rel_l2: number | null;
  diverged: boolean | null;
  host: string | null;
  device: string | null;
  backend: string | null;
  /** Worker name, slot and CUDA_VISIBLE_DEVICES of the slot process (TrialResultMessage). */
  worker: string | null;
  slot: string | null;
  visible_devices: string | null;
  /** The attempt and step this trial's finished attempt resumed from (null when it started from step 0). */
  resumed_from_attempt: number | null;
  resumed_from_step: number | null;
  /** How many trials trained together in the finished attempt's slot run (trial fusion; 1 = alone); null when it never trained. */
  fused: number | null;
  error: string | null;
  /** Phase record of the finished attempt (science.md §6, analysis/phases.ts); null until done, and for a failed trial. */
  t_diffusion: number | null;
  t_equilibrium: number | null;
  final_phase: FinalPhase | null;
}

interface Column {
  name: string;
  type: DataType;
  get: (r: TrialRecord) => unknown;
}

const num = (v: unknown): number | null => (typeof v === 'number' ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const cfg = (r: TrialRecord) => r.config;

/**
 * Columns of trials.parquet, in order: every trial parameter as its own column (null where a
 * problem or strategy lacks it), then the run record, then the phase record (t_diffusion,
 * t_equilibrium: steps; final_phase). `batch_size` is the effective batch (N for `full`),
 * `batch_full` says whether it was `full`.
 */
export const TRIAL_COLUMNS: Column[] = [
  { name: 'trial_id', type: new Utf8(), get: (r) => r.trial_id },
  { name: 'sweep', type: new Utf8(), get: (r) => r.sweep },
  { name: 'problem', type: new Utf8(), get: (r) => cfg(r).problem.name },
  { name: 'problem_a1', type: new Float64(), get: (r) => num((cfg(r).problem as { a1?: number }).a1) },
  { name: 'problem_a2', type: new Float64(), get: (r) => num((cfg(r).problem as { a2?: number }).a2) },
  { name: 'problem_k', type: new Float64(), get: (r) => num((cfg(r).problem as { k?: number }).k) },
  { name: 'problem_nu', type: new Float64(), get: (r) => num((cfg(r).problem as { nu?: number }).nu) },
  { name: 'problem_d', type: new Float64(), get: (r) => num((cfg(r).problem as { d?: number }).d) },
  { name: 'n_collocation', type: new Int32(), get: (r) => cfg(r).problem.n_collocation },
  { name: 'n_boundary', type: new Int32(), get: (r) => cfg(r).problem.n_boundary },
  { name: 'w_bc', type: new Float64(), get: (r) => cfg(r).problem.w_bc },
  { name: 'n_initial', type: new Int32(), get: (r) => num((cfg(r).problem as { n_initial?: number }).n_initial) },
  { name: 'w_ic', type: new Float64(), get: (r) => num((cfg(r).problem as { w_ic?: number }).w_ic) },
  { name: 'eval_grid', type: new Int32(), get: (r) => cfg(r).problem.eval_grid },
  { name: 'width', type: new Int32(), get: (r) => cfg(r).model.width },
  { name: 'depth', type: new Int32(), get: (r) => cfg(r).model.depth },
  { name: 'steps', type: new Int32(), get: (r) => cfg(r).train.steps },
  { name: 'lr', type: new Float64(), get: (r) => cfg(r).train.lr },
  { name: 'batch_size', type: new Int32(), get: (r) => (cfg(r).train.batch_size === 'full' ? cfg(r).problem.n_collocation : cfg(r).train.batch_size) },
  { name: 'batch_full', type: new Bool(), get: (r) => cfg(r).train.batch_size === 'full' },
  { name: 'lr_decay_rate', type: new Float64(), get: (r) => cfg(r).train.lr_decay.rate },
  { name: 'lr_decay_every', type: new Int32(), get: (r) => cfg(r).train.lr_decay.every },
  { name: 'log_every', type: new Int32(), get: (r) => cfg(r).train.log_every },
  { name: 'eval_every', type: new Int32(), get: (r) => cfg(r).train.eval_every },
  { name: 'strategy', type: new Utf8(), get: (r) => cfg(r).strategy.name },
  { name: 'strategy_eta', type: new Float64(), get: (r) => num((cfg(r).strategy as { eta?: number }).eta) },
  { name: 'strategy_gamma', type: new Float64(), get: (r) => num((cfg(r).strategy as { gamma?: number }).gamma) },
  { name: 'strategy_normalization', type: new Utf8(), get: (r) => str((cfg(r).strategy as { normalization?: string }).normalization) },
  { name: 'strategy_init', type: new Utf8(), get: (r) => str((cfg(r).strategy as { init?: string }).init) },
  { name: 'strategy_lr', type: new Float64(), get: (r) => num((cfg(r).strategy as { lr?: number }).lr) },
  { name: 'strategy_freeze_step', type: new Int32(), get: (r) => num((cfg(r).strategy as { freeze_step?: number | null }).freeze_step) },
  { name: 'diagnostics_every', type: new Int32(), get: (r) => cfg(r).diagnostics.every },
  { name: 'snr_batches', type: new Int32(), get: (r) => cfg(r).diagnostics.snr_batches },
  { name: 'seed', type: new Int32(), get: (r) => cfg(r).seed },
  { name: 'status', type: new Utf8(), get: (r) => r.status },
  { name: 'attempts', type: new Int32(), get: (r) => r.attempts },
  { name: 'started_at', type: new TimestampMillisecond(), get: (r) => r.started_at },
  { name: 'finished_at', type: new TimestampMillisecond(), get: (r) => r.finished_at },
  { name: 'wall_seconds', type: new Float64(), get: (r) => r.wall_seconds },
  { name: 'final_loss', type: new Float64(), get: (r) => r.final_loss },
  { name: 'final_rel_l2', type: new Float64(), get: (r) => r.final_rel_l2 },
  { name: 'diverged', type: new Bool(), get: (r) => r.diverged },
  { name: 'host', type: new Utf8(), get: (r) => r.host },
  { name: 'device', type: new Utf8(), get: (r) => r.device },
  { name: 'backend', type: new Utf8(), get: (r) => r.backend },
  { name: 'worker', type: new Utf8(), get: (r) => r.worker },
  { name: 'slot', type: new Utf8(), get: (r) => r.slot },
  { name: 'visible_devices', type: new Utf8(), get: (r) => r.visible_devices },
  { name: 'resumed_from_attempt', type: new Int32(), get: (r) => r.resumed_from_attempt },
  { name: 'resumed_from_step', type: new Int32(), get: (r) => r.resumed_from_step },
  { name: 'fused', type: new Int32(), get: (r) => r.fused },
  { name: 'error', type: new Utf8(), get: (r) => r.error },
  { name: 't_diffusion', type: new Int32(), get: (r) => r.t_diffusion },
  { name: 't_equilibrium', type: new Int32(), get: (r) => r.t_equilibrium },
  { name: 'final_phase', type: new Utf8(), get: (r) => r.final_phase },
];

/** Arrow schema of trials.parquet (all columns nullable except trial_id, sweep, status, attempts). */
export function trialsSchema(): Schema {
  const required = new Set(['trial_id', 'sweep', 'status', 'attempts']);
  return new Schema(TRIAL_COLUMNS.map((c) => new Field(c.name, c.type, !required.has(c.name))));
}
