/**
 * Trials on one slot: runs the trainer, turns its rows into Arrow IPC chunks (≤ maxBytes each) and
 * posts them to the agent. `runSlotTask` trains one trial; `runSlotTasks` trains a group of
 * same-shaped trials fused into one batched computation (worker/trainer/fused.ts, issue 5), each with
 * its own events, stop flag and outcome. The same code runs in a piscina worker thread (CPU slots)
 * and in a child process (tensorflow / GPU slots); only `post` differs.
 */
import { hostname } from 'node:os';
import type { MetricRow } from '../schemas/metrics.js';
import { DIVERGENCE_ROWS, type BackendName, type TrialMessage } from '../schemas/trial.js';
import { encodeSafetensors } from '../schemas/safetensors.js';
import { encodeMetricChunks } from './metrics-encoder.js';
import { loadProblemModule } from './trainer/problem-module.js';
import { fusionKey, initBackend, ResumeError, trainTrial, trainTrials, type TrainHooks, type TrainOptions, type TrainSummary } from './trainer/index.js';

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
  /** Trials the slot ran together in this run (`runSlotTasks` group size; 1 = alone, `runSlotTask`). */
  fused: number;
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

/** Where a group of fused trials runs (`runSlotTasks`): as SlotContext, with a stop flag per trial. */
export interface SlotGroupContext {
  slot: string;
  visibleDevices: string | null;
  /** Polled before every training step with the trial's index in the group; true stops that trial only. Must be cheap. */
  shouldStop?: (i: number) => boolean;
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
    if (task.trial.problem_module) await loadProblemModule(task.trial.problem_module);
    const summary = await trainWithResume(task, resume, slotHooks(task, post, (n) => (rows += n), ctx.shouldStop), {
      backend,
      divergence: task.trial.divergence_factor ? { factor: task.trial.divergence_factor, rows: DIVERGENCE_ROWS } : undefined,
    });
    const t1 = Date.now();
    return {
      ...base, status: summary.stopped ? 'cancelled' : 'done', error: null, backend, device: slotDevice(backend), rows, fused: 1,
      resumed_from: resume.from, resume_error: resume.error,
      steps_done: summary.steps_done, final_loss: summary.final_loss, final_rel_l2: summary.final_rel_l2, diverged: summary.diverged,
      finished_at: new Date(t1).toISOString(), wall_seconds: (t1 - t0) / 1000,
    };
  } catch (e) {
    const t1 = Date.now();
    const err = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return {
      ...base, status: 'failed', error: err, backend, device: slotDevice(backend), rows, fused: 1,
      resumed_from: resume.from, resume_error: resume.error,
      steps_done: 0, final_loss: null, final_rel_l2: null, diverged: false,
      finished_at: new Date(t1).toISOString(), wall_seconds: (t1 - t0) / 1000,
    };
  } finally {
    post({ type: 'end' });
  }
}

/**
 * A slot trial's trainer hooks: rows keyed by its trial_id and attempt, encoded as Arrow IPC chunks
 * (≤ task.maxBytes) and posted as `metrics` (`count` gets the rows per batch); checkpoints encoded as
 * safetensors and posted whole; progress posted at most once a second and at the last step.
 */
function slotHooks(task: SlotTask, post: (e: SlotEvent, transfer?: ArrayBuffer[]) => void, count: (rows: number) => void, shouldStop?: () => boolean): TrainHooks {
  let lastProgress = 0;
  return {
    onRows: (batch: MetricRow[]) => {
      const keyed = batch.map((r) => ({ trial_id: task.trial.trial_id, attempt: task.attempt, ...r }));
      for (const bytes of encodeMetricChunks(keyed, task.maxBytes)) post({ type: 'metrics', bytes }, [bytes.buffer as ArrayBuffer]);
      count(batch.length);
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
    ...(shouldStop ? { shouldStop } : {}),
  };
}

/** Error text of a trial's failure, as SlotOutcome.error has it. */
const errorText = (e: unknown) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

/**
 * Trains a group of trials on one slot, fused into one batched computation (`trainTrials`,
 * worker/trainer/fused.ts). Every task gets what `runSlotTask` gives one trial, tagged with its index
 * `i` in `tasks`: its own `start`, metrics chunks (rows keyed by its trial_id and attempt), checkpoints,
 * progress and, last, its `end` (posted once the whole group has trained); and its own outcome
 * (`result[i]`, `fused` = tasks.length). A task listed in PHASEMAP_FAULT_THROW fails at its start and the
 * others train; a trial whose setup or hooks throw is `failed` with its error and the others go on;
 * `ctx.shouldStop(i)` stops trial i only (`cancelled`, its rows flushed). All trials share
 * `started_at`/`finished_at` of the group run. One task is exactly `runSlotTask` (resume included).
 * Never rejects for a trial's own error; a backend that does not start fails every trial.
 * @param tasks trials with equal `fusionKey(trial.config)` and the same backend; none with a `resume`
 *   when there is more than one (a resuming trial runs alone).
 * @throws Error (before anything is posted) for an empty group, a resume in a group of several,
 *   differing fusion keys or backends.
 */
export async function runSlotTasks(
  tasks: SlotTask[],
  post: (i: number, e: SlotEvent, transfer?: ArrayBuffer[]) => void,
  ctx: SlotGroupContext = { slot: '', visibleDevices: null },
): Promise<SlotOutcome[]> {
  if (!tasks.length) throw new Error('runSlotTasks: no tasks');
  if (tasks.length === 1) {
    const stop = ctx.shouldStop;
    return [await runSlotTask(tasks[0]!, (e, transfer) => post(0, e, transfer), { slot: ctx.slot, visibleDevices: ctx.visibleDevices, ...(stop ? { shouldStop: () => stop(0) } : {}) })];
  }
  const key = fusionKey(tasks[0]!.trial.config);
  for (const t of tasks) {
    if (t.resume) throw new Error(`runSlotTasks: trial ${t.trial.trial_id} resumes from a checkpoint: a resuming trial runs alone`);
    if (t.backend !== tasks[0]!.backend) throw new Error(`runSlotTasks: trial ${t.trial.trial_id} wants backend ${t.backend}, the group ${tasks[0]!.backend}`);
    if (fusionKey(t.trial.config) !== key) throw new Error(`runSlotTasks: trial ${t.trial.trial_id} is not of the group's shape (fusionKey differs)`);
  }
  const t0 = Date.now();
  const started_at = new Date(t0).toISOString();
  const rows = tasks.map(() => 0);
  const errors: (string | null)[] = tasks.map(() => null);
  const summaries: (TrainSummary | null)[] = tasks.map(() => null);
  let backend: BackendName = tasks[0]!.backend;
  const base = { host: hostname(), started_at, slot: ctx.slot, visible_devices: ctx.visibleDevices, resumed_from: null, resume_error: null, fused: tasks.length };
  try {
    backendReady ??= initBackend(backend);
    backend = await backendReady;
    const live: number[] = [];
    for (const [i, task] of tasks.entries()) {
      post(i, { type: 'start', slot: ctx.slot, device: slotDevice(backend), backend, visible_devices: ctx.visibleDevices });
      try {
        injectedFault(task);
        if (task.trial.problem_module) await loadProblemModule(task.trial.problem_module);
        live.push(i);
      } catch (e) {
        errors[i] = errorText(e);
      }
    }
    const stop = ctx.shouldStop;
    const hooks = live.map((i) => slotHooks(tasks[i]!, (e, transfer) => post(i, e, transfer), (n) => (rows[i]! += n), stop && (() => stop(i))));
    const opts = live.map((i): TrainOptions => {
      const f = tasks[i]!.trial.divergence_factor;
      return { backend, divergence: f ? { factor: f, rows: DIVERGENCE_ROWS } : undefined };
    });
    const got = live.length ? await trainTrials(live.map((i) => tasks[i]!.trial.config), hooks, opts) : [];
    live.forEach((i, j) => {
      const g = got[j];
      if (g instanceof Error) errors[i] = errorText(g);
      else if (g) summaries[i] = g;
      else errors[i] = 'Error: the fused trainer returned no result for this trial';
    });
  } catch (e) {
    // The backend did not start, or the fused trainer itself threw: every trial not settled fails with it.
    for (let i = 0; i < tasks.length; i++) if (!summaries[i] && errors[i] === null) errors[i] = errorText(e);
  }
  const t1 = Date.now();
  const end = { finished_at: new Date(t1).toISOString(), wall_seconds: (t1 - t0) / 1000, backend, device: slotDevice(backend) };
  const outs = tasks.map((_, i): SlotOutcome => {
    const s = summaries[i];
    return s
      ? { ...base, ...end, status: s.stopped ? 'cancelled' : 'done', error: null, rows: rows[i]!, steps_done: s.steps_done, final_loss: s.final_loss, final_rel_l2: s.final_rel_l2, diverged: s.diverged }
      : { ...base, ...end, status: 'failed', error: errors[i] ?? 'Error: not trained', rows: rows[i]!, steps_done: 0, final_loss: null, final_rel_l2: null, diverged: false };
  });
  for (let i = 0; i < tasks.length; i++) post(i, { type: 'end' });
  return outs;
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
