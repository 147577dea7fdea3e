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
import { initBackend, trainTrial } from './trainer/index.js';

export interface SlotTask {
  trial: TrialMessage;
  attempt: number;
  backend: BackendName;
  /** Largest NATS payload allowed (bytes). */
  maxBytes: number;
}

/** Messages a slot posts while it trains; `end` is always the last one. */
export type SlotEvent =
  | { type: 'metrics'; bytes: Uint8Array }
  | { type: 'progress'; step: number; steps: number }
  /** One whole checkpoint file (safetensors, science.md §7) of step `step`; the agent chunks and publishes it. */
  | { type: 'checkpoint'; step: number; bytes: Uint8Array }
  | { type: 'end' };

export interface SlotOutcome {
  status: 'done' | 'failed';
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
}

let backendReady: Promise<BackendName> | null = null;

/** The device a slot computes on: `gpu:<CUDA_VISIBLE_DEVICES>` for tensorflow with a pinned GPU, else `cpu`. */
export function slotDevice(backend: BackendName): string {
  const cuda = process.env.CUDA_VISIBLE_DEVICES;
  return backend === 'tensorflow' && cuda && cuda !== '-1' ? `gpu:${cuda}` : 'cpu';
}

/**
 * Trains one trial. Never throws for a trial's own error: that becomes `status: 'failed'` with the
 * error text. Divergence is `status: 'done'` with `diverged: true` (a scientific result).
 */
export async function runSlotTask(task: SlotTask, post: (e: SlotEvent, transfer?: ArrayBuffer[]) => void): Promise<SlotOutcome> {
  const t0 = Date.now();
  const started_at = new Date(t0).toISOString();
  let rows = 0;
  let backend: BackendName = task.backend;
  const base = { host: hostname(), started_at };
  try {
    backendReady ??= initBackend(task.backend);
    backend = await backendReady;
    let lastProgress = 0;
    const summary = await trainTrial(task.trial.config, {
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
    }, {
      backend,
      divergence: task.trial.divergence_factor ? { factor: task.trial.divergence_factor, rows: DIVERGENCE_ROWS } : undefined,
    });
    const t1 = Date.now();
    return {
      ...base, status: 'done', error: null, backend, device: slotDevice(backend), rows,
      steps_done: summary.steps_done, final_loss: summary.final_loss, final_rel_l2: summary.final_rel_l2, diverged: summary.diverged,
      finished_at: new Date(t1).toISOString(), wall_seconds: (t1 - t0) / 1000,
    };
  } catch (e) {
    const t1 = Date.now();
    const err = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    return {
      ...base, status: 'failed', error: err, backend, device: slotDevice(backend), rows,
      steps_done: 0, final_loss: null, final_rel_l2: null, diverged: false,
      finished_at: new Date(t1).toISOString(), wall_seconds: (t1 - t0) / 1000,
    };
  } finally {
    post({ type: 'end' });
  }
}
