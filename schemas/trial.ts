/**
 * Messages between the orchestrator and the workers (JetStream payloads, JSON).
 * Subjects and stream names live in orchestrator/ and worker/ transport modules; the payloads live here.
 */
import type { TrialConfig } from './sweep.js';

/** Backend names a user may request (`--backend`). `auto` resolves on the worker. */
export type BackendRequest = 'auto' | 'wasm' | 'cpu' | 'tensorflow';
/** A resolved tfjs backend. */
export type BackendName = 'wasm' | 'cpu' | 'tensorflow';

/**
 * The sources of a user problem module (docs/problems.md), shipped with each of its trials so that every
 * worker runs exactly that code (worker/trainer/problem-module.ts).
 */
export interface ProblemModuleBundle {
  /** The module path as the spec writes it (messages name the module by it). */
  path: string;
  /** The entry file, relative to the module's folder (`my_pde.mjs`). */
  entry: string;
  /** Every file of the module by its path relative to the module's folder ('/'-separated): its text. */
  files: Record<string, string>;
  /** `moduleHash(entry, files)`: equals the trial config's `problem.module_hash`. */
  hash: string;
}

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
  /**
   * Attempts of this trial in one run before it is recorded `failed`: a trial whose training throws is
   * handed back for a retry until its delivery count reaches this (the sweep's `max_attempts`, default 3).
   */
  max_attempts?: number;
  /** Unique per `phasemap run` that queued this message: prefixes the Nats-Msg-Ids of its attempts' metrics, checkpoints and result. */
  run_id?: string;
  /**
   * For a trial of a user problem module (`config.problem.module`): its sources. A worker runs it only
   * when started with --allow-modules. Not part of the trial id (the config's `problem.module_hash` is).
   */
  problem_module?: ProblemModuleBundle;
  /** The trial's grid values as text (`lr=1e-3 batch=full rba seed=0`): workers log it beside the id. Not part of the trial id. */
  label?: string;
}

/** Consecutive logged rows above `divergence_factor` × the running minimum loss that stop a trial early. */
export const DIVERGENCE_ROWS = 3;

/** Terminal status of one attempt as the worker reports it. */
export type AttemptStatus = 'done' | 'failed' | 'cancelled';

/** Trial status as the orchestrator records it in trials.parquet and the KV bucket. */
export type TrialStatus = 'queued' | 'running' | 'done' | 'failed' | 'cancelled';

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
  /** Where it computed: `cpu`, or `gpu:<id>` for the tensorflow backend on a pinned GPU slot. */
  device: string;
  backend: BackendName | '';
  /** Worker name (`--name`, default HOST:PID). */
  worker: string;
  /** The worker's slot: `cpu<i>` (thread) or `gpu<id>.<k>` (process pinned to GPU id, k-th slot of it). */
  slot: string;
  /** CUDA_VISIBLE_DEVICES as the slot's own process saw it (null for thread slots and when unset). */
  visible_devices: string | null;
  /**
   * Set when this attempt resumed from a checkpoint of an earlier attempt at `step`: it trained (and
   * logged) from `step` on; the collector copies that attempt's rows with step < `step` into this
   * attempt, so the completed attempt holds every step once.
   */
  resumed_from: { attempt: number; step: number } | null;
  error: string | null;
  /**
   * Trials the slot trained together in the run that produced this attempt (trial fusion, issue 5:
   * one batched computation of same-shaped trials; 1 = alone). Absent in results no slot produced
   * (recorded without training: cancelled before it started, failed on its last delivery, and the
   * orchestrator's own records).
   */
  fused?: number;
}

/**
 * Where a trial's training ended, read from its SNR and loss series (science.md §6; rules in
 * analysis/phases.ts, docs/phases.md): `diverged` (loss NaN/Inf or blew up), `equilibrium` (reached
 * diffusion equilibrium), `diffusion` (fell into diffusion, never left it), `steady` (settled at an
 * SNR around 1 or above without ever collapsing into diffusion: typical of mini-batch training),
 * `fitting` (still at or falling from its starting SNR when the run ended, including a trial
 * without SNR diagnostics).
 */
export type FinalPhase = 'diverged' | 'fitting' | 'steady' | 'diffusion' | 'equilibrium';

/** A trial's phase record: the steps of its transitions (null when not seen) and its final phase. */
export interface PhaseRecord {
  /** First step of the diffusion phase, or null. */
  t_diffusion: number | null;
  /** First step of diffusion equilibrium, or null. */
  t_equilibrium: number | null;
  final_phase: FinalPhase;
}

/**
 * Trial state kept in the KV bucket (key `<sweep>.<trial_id>`), changed only by compare-and-set on the
 * entry's revision: `queued → running → done | failed | cancelled` (running → queued when a throwing
 * trial is handed back for a retry; running → running when a redelivered trial is taken over from a
 * worker that stopped heart-beating). Only the owner of a running trial may end it.
 */
export interface TrialState {
  status: TrialStatus;
  /** The attempt this state is about (0 while never started). */
  attempt: number;
  /** Worker name of the running (or last) attempt. */
  owner: string | null;
  host?: string | null;
  device?: string | null;
  slot?: string | null;
  backend?: string | null;
  /** Last step reported by the owner's heartbeat, and the trial's steps. */
  step?: number | null;
  steps?: number | null;
  /** Last heartbeat of the owner (ISO-8601); a running trial whose heartbeat is older than the ack wait has lost its worker. */
  heartbeat_at?: string | null;
  updated_at: string;
  /** Attempts of this run that threw (reset when a run queues the trial); at max_attempts the trial is failed. */
  failures?: number;
  /** Error of the last failed attempt (kept while a retry runs). */
  error?: string | null;
  /** Terminal states: the result as published, so a worker that finds the trial redelivered can publish it again. */
  result?: TrialResultMessage | null;
}
