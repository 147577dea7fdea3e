/**
 * Messages between the orchestrator and the workers (JetStream payloads, JSON).
 * Subjects and stream names live in orchestrator/ and worker/ transport modules; the payloads live here.
 */
import type { TrialConfig } from './sweep.js';

/** Backend names a user may request (`--backend`). `auto` resolves on the worker. */
export type BackendRequest = 'auto' | 'wasm' | 'cpu' | 'tensorflow';
/** A resolved tfjs backend. */
export type BackendName = 'wasm' | 'cpu' | 'tensorflow';

/** Published once per trial on the trials work queue, with `Nats-Msg-Id` = trial_id. */
export interface TrialMessage {
  sweep: string;
  trial_id: string;
  config: TrialConfig;
  /** Backend requested by the sweep's orchestrator; a worker's own --backend overrides it. */
  backend?: BackendRequest;
  /**
   * Attempts this trial already had in DIR (earlier runs, interrupted or failed). A worker numbers its
   * attempt `attempt_base + delivery count`, so an attempt number is never reused for a trial.
   */
  attempt_base?: number;
  /**
   * The sweep's `analysis.divergence_factor`: a worker stops a trial (recorded diverged) once its
   * loss stays ≥ this × its running minimum for DIVERGENCE_ROWS logged rows. Not part of the trial id.
   */
  divergence_factor?: number;
}

/** Consecutive logged rows above `divergence_factor` × the running minimum loss that stop a trial early. */
export const DIVERGENCE_ROWS = 3;

/** Terminal status of one attempt as the worker reports it. */
export type AttemptStatus = 'done' | 'failed';

/** Trial status as the orchestrator records it in trials.parquet and the KV bucket. */
export type TrialStatus = 'queued' | 'running' | 'done' | 'failed';

/** Published by a worker on the results subject after every metrics chunk of the attempt is acknowledged by JetStream. */
export interface TrialResultMessage {
  sweep: string;
  trial_id: string;
  attempt: number;
  status: AttemptStatus;
  /** ISO-8601 UTC. */
  started_at: string;
  finished_at: string;
  wall_seconds: number;
  /** Last logged loss (may be NaN when the trial diverged). */
  final_loss: number | null;
  final_rel_l2: number | null;
  /** True when the loss became NaN/Inf and training stopped early: a scientific result, not a failure. */
  diverged: boolean;
  steps_done: number;
  /** Metric rows published for this attempt (after chunking). */
  rows: number;
  host: string;
  device: string;
  backend: BackendName | '';
  error: string | null;
}

/**
 * Where a trial's training ended, read from its SNR and loss series (science.md §6; rules in
 * orchestrator/phases.ts): `diverged` (loss NaN/Inf or blew up), `equilibrium` (reached diffusion
 * equilibrium), `diffusion` (fell into diffusion, never left it), `fitting` (no diffusion seen,
 * including a trial without SNR diagnostics).
 */
export type FinalPhase = 'diverged' | 'fitting' | 'diffusion' | 'equilibrium';

/** A trial's phase record: the steps of its transitions (null when not seen) and its final phase. */
export interface PhaseRecord {
  /** First step of the diffusion phase, or null. */
  t_diffusion: number | null;
  /** First step of diffusion equilibrium, or null. */
  t_equilibrium: number | null;
  final_phase: FinalPhase;
}

/** Trial state kept in the KV bucket (key `<sweep>.<trial_id>`). */
export interface TrialState {
  status: TrialStatus;
  attempt: number;
  owner: string | null;
  updated_at: string;
  error?: string | null;
}
