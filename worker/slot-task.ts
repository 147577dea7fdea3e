/**
 * One trial on one slot: runs the trainer, turns its rows into Arrow IPC chunks (≤ maxBytes each) and
 * posts them to the agent. The same code runs in a piscina worker thread (CPU slots) and in a child
 * process (tensorflow / GPU slots); only `post` differs.
 */
import { hostname } from 'node:os';
import type { MetricRow } from '../schemas/metrics.js';
import { DIVERGENCE_ROWS, type BackendName, type TrialMessage } from '../schemas/trial.js';
import { encodeSafetensors } from '../schemas/safetensors.js';
import { encodeMetricChunks } from './metrics-encoder.js';
import { initBackend, ResumeError, trainTrial, type TrainHooks, type TrainOptions, type TrainSummary } from './trainer/index.js';

export interface SlotTask {
  trial: TrialMessage;
  attempt: number;
  backend: BackendName;
  /** Largest NATS payload allowed (bytes). */
  maxBytes: number;
  /**
   * A redelivered trial's resume point (worker/checkpoint-fetch.ts): the checkpoint file (safetensors
   * bytes, science.md §7) of step `step` written by attempt `attempt`. Training restores it and starts at
   * that step (worker/trainer/resume.ts); null/absent: from step 0.
   */
  resume?: { attempt: number; step: number; checkpoint: Uint8Array } | null;
}

/** Messages a slot posts while it trains; `end` is always the last one. */
export type SlotEvent =
  | { type: 'metrics'; bytes: Uint8Array }
  | { type: 'progress'; step: number; steps: number }
  /** One whole checkpoint file (safetensors, science.md §7) of step `step`; the agent chunks and publishes it. */
  | { type: 'checkpoint'; step: number; bytes: Uint8Array }
  /** Where the trial runs, posted once its backend is up (the agent shows it in the trial's state). */
  | { type: 'start'; slot: string; device: string; backend: BackendName; visible_devices: string | null }
  | { type: 'end' };

export interface SlotOutcome {
  /** `cancelled`: stopped by the pool's abort signal; its rows up to `steps_done` were posted. */
  status: 'done' | 'failed' | 'cancelled';
  error: string | null;
  backend: BackendName;
  device: string;
  host: string;
  steps_done: number;
  final_loss: number | null;
  final_rel_l2: number | null;
  diverged: boolean;
  rows: number;
  started_at: string;
  finished_at: string;
  wall_seconds: number;
  /** The slot it ran on: `cpu<i>` (thread), `proc<i>` (process) or `gpu<id>.<k>` (process pinned to GPU id). */
  slot: string;
  /** CUDA_VISIBLE_DEVICES as the slot's own process saw it; null for thread slots and when unset. */
  visible_devices: string | null;
  /**
   * Set when this attempt resumed from `task.resume`: that checkpoint's attempt, and the first step this
   * attempt logged (`TrainSummary.first_step`: the checkpoint step, or train.steps for a final
   * checkpoint). The earlier attempt's rows with step < `step` complete this attempt's rows (the
   * collector copies them: orchestrator/parquet-store.ts copyEarlierRows). Null: trained from step 0.
   */
  resumed_from: { attempt: number; step: number } | null;
  /** Why `task.resume` was not used (a ResumeError: e.g. a config mismatch); the trial then trained from step 0. */
  resume_error: string | null;
}

/** Where one trial runs; set by the slot entry (slot-thread.ts, slot-process.ts). */
export interface SlotContext {
  /** Slot id (see SlotOutcome.slot). */
  slot: string;
  /** CUDA_VISIBLE_DEVICES of the slot's own process (null for a thread slot: it shares the worker's env). */
  visibleDevices: string | null;
  /** Polled before every training step; true stops the trial there (`status: 'cancelled'`). Must be cheap. */
  shouldStop?: () => boolean;
}

/**
 * Fault injection for failure tests and drills: PHASEMAP_FAULT_THROW="<trial_id>:<n>,…" makes attempts
 * 1…n of those trials throw at their start, as a trial whose training throws would.
 * @throws Error "injected fault (PHASEMAP_FAULT_THROW) in attempt <a>" for a listed trial and attempt.
 */
function injectedFault(task: SlotTask): void {
  const spec = process.env.PHASEMAP_FAULT_THROW;
  if (!spec) return;
  for (const item of spec.split(',')) {
    const [id, n] = item.split(':');
    if (id === task.trial.trial_id && task.attempt <= Number(n)) throw new Error(`injected fault (PHASEMAP_FAULT_THROW) in attempt ${task.attempt}`);
  }
}

let backendReady: Promise<BackendName> | null = null;

/** The device a slot computes on: `gpu:<CUDA_VISIBLE_DEVICES>` for tensorflow with a pinned GPU, else `cpu`. */
export function slotDevice(backend: BackendName): string {
  const cuda = process.env.CUDA_VISIBLE_DEVICES;
  return backend === 'tensorflow' && cuda && cuda !== '-1' ? `gpu:${cuda}` : 'cpu';
}

/**
 * Trains one trial. Never throws for a trial's own error: that becomes `status: 'failed'` with the
 * error text. Divergence is `status: 'done'` with `diverged: true` (a scientific result). When
 * `ctx.shouldStop` turns true the trial ends before its next step, its rows are flushed, and the outcome
 * is `status: 'cancelled'` with `steps_done` = steps applied.
 */
export async function runSlotTask(
  task: SlotTask,
  post: (e: SlotEvent, transfer?: ArrayBuffer[]) => void,
  ctx: SlotContext = { slot: '', visibleDevices: null },
): Promise<SlotOutcome> {
  const t0 = Date.now();
  const started_at = new Date(t0).toISOString();
  let rows = 0;
  let backend: BackendName = task.backend;
  const base = { host: hostname(), started_at, slot: ctx.slot, visible_devices: ctx.visibleDevices };
  const resume: ResumeState = { from: null, error: null };
  try {
    backendReady ??= initBackend(task.backend);
    backend = await backendReady;
    post({ type: 'start', slot: ctx.slot, device: slotDevice(backend), backend, visible_devices: ctx.visibleDevices });
    injectedFault(task);
    let lastProgress = 0;
    const summary = await trainWithResume(task, resume, {
      onRows: (batch: MetricRow[]) => {
        const keyed = batch.map((r) => ({ trial_id: task.trial.trial_id, attempt: task.attempt, ...r }));
        for (const bytes of encodeMetricChunks(keyed, task.maxBytes)) post({ type: 'metrics', bytes }, [bytes.buffer as ArrayBuffer]);
        rows += batch.length;
      },
      onCheckpoint: (c) => {
        const metadata = { ...c.metadata, trial_id: task.trial.trial_id, attempt: String(task.attempt) };
        const bytes = encodeSafetensors(c.tensors, metadata);
        post({ type: 'checkpoint', step: c.step, bytes }, [bytes.buffer as ArrayBuffer]);
      },
      onProgress: (step: number, steps: number) => {
        const now = Date.now();
        if (now - lastProgress >= 1000 || step + 1 >= steps) {
          lastProgress = now;
          post({ type: 'progress', step, steps });
        }
      },
      ...(ctx.shouldStop ? { shouldStop: ctx.shouldStop } : {}),
    }, {
      backend,
      divergence: task.trial.divergence_factor ? { factor: task.trial.divergence_factor, rows: DIVERGENCE_ROWS } : undefined,
    });
    const t1 = Date.now();
    return {
      ...base, status: summary.stopped ? 'cancelled' : 'done', error: null, backend, device: slotDevice(backend), rows,
      resumed_from: resume.from, resume_error: resume.error,
      steps_done: summary.steps_done, final_loss: summary.final_loss, final_rel_l2: summary.final_rel_l2, diverged: summary.diverged,
      finished_at: new Date(t1).toISOString(), wall_seconds: (t1 - t0) / 1000,
    };
  } catch (e) {
    const t1 = Date.now();
    const err = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return {
      ...base, status: 'failed', error: err, backend, device: slotDevice(backend), rows,
      resumed_from: resume.from, resume_error: resume.error,
      steps_done: 0, final_loss: null, final_rel_l2: null, diverged: false,
      finished_at: new Date(t1).toISOString(), wall_seconds: (t1 - t0) / 1000,
    };
  } finally {
    post({ type: 'end' });
  }
}

/** Where a slot task's training started from (SlotOutcome.resumed_from, resume_error). */
interface ResumeState {
  from: SlotOutcome['resumed_from'];
  error: string | null;
}

/**
 * `trainTrial`, resumed from `task.resume`'s checkpoint when there is one (TrainOptions.resume). A
 * checkpoint that cannot resume this trial (ResumeError, thrown before any hook is called) is recorded in
 * `state.error` and the trial trains from step 0 instead. `state.from` is set while a resumed run trains
 * (its final value: the attempt and `first_step`).
 */
async function trainWithResume(task: SlotTask, state: ResumeState, hooks: TrainHooks, opts: TrainOptions): Promise<TrainSummary> {
  const r = task.resume;
  if (r) {
    state.from = { attempt: r.attempt, step: r.step };
    try {
      const summary = await trainTrial(task.trial.config, hooks, { ...opts, resume: { checkpoint: r.checkpoint, trialId: task.trial.trial_id } });
      state.from = { attempt: r.attempt, step: summary.first_step };
      return summary;
    } catch (e) {
      if (!(e instanceof ResumeError)) throw e;
      state.from = null;
      state.error = e.message;
    }
  }
  return trainTrial(task.trial.config, hooks, opts);
}
