/**
 * Worker-thread producer of the ingest benchmark: one "trial stream", as a CPU slot thread is one.
 * Builds realistic metric rows (every science.md §5 column filled, list columns of a 4 × 32 network:
 * snr_layers 5 values, saturation_layers and entropy_layers 4), encodes them in chunks of
 * `chunkRows` rows (trainTrial's flush size) with worker/metrics-encoder.ts encodeMetricChunks and
 * posts each message to the main thread (transferred), which publishes it as the worker agent does.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { KeyedMetricRow } from '../worker/metrics-encoder.js';
import { encodeMetricChunks } from '../worker/metrics-encoder.js';

export interface ProducerData {
  chunkRows: number;
  maxBytes: number;
}

/** A row with every column set (a logged step on the diagnostics cadence: the widest row there is). */
export function realisticRow(trialId: string, i: number, rnd: () => number): KeyedMetricRow {
  const step = i * 10;
  return {
    trial_id: trialId,
    attempt: 1,
    step,
    lr: 1e-3 * Math.pow(0.9, Math.floor(step / 5000)),
    loss: rnd(),
    loss_residual: rnd(),
    loss_boundary: rnd(),
    wall_seconds: step * 0.02 + rnd() * 1e-3,
    rel_l2: rnd(),
    snr: rnd() * 10,
    snr_layers: [rnd(), rnd(), rnd(), rnd(), rnd()],
    grad_order: rnd(),
    snr_adam: rnd(),
    res_homogeneity: rnd(),
    saturation_layers: [rnd() * 100, rnd() * 100, rnd() * 100, rnd() * 100],
    entropy_layers: [rnd() * 10, rnd() * 10, rnd() * 10, rnd() * 10],
    lambda_mean: rnd(),
    lambda_max: rnd(),
  };
}

/** A run's work for this thread: `rows` rows of trial `trialId`. */
export interface ProducerRun {
  trialId: string;
  rows: number;
}

if (parentPort) {
  const d = workerData as ProducerData;
  // The thread lives for all runs of one stream count (a slot thread lives across its trials), so the
  // warm-up run also warms its JIT.
  parentPort.on('message', (run: ProducerRun) => {
    let seed = 1;
    for (const c of run.trialId) seed = (seed * 31 + c.charCodeAt(0)) >>> 0;
    const rnd = () => {
      // xorshift32: cheap, deterministic, incompressible enough to be realistic for zstd
      seed ^= seed << 13;
      seed >>>= 0;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      seed >>>= 0;
      return seed / 2 ** 32;
    };
    let encodeMs = 0;
    let messages = 0;
    for (let lo = 0; lo < run.rows; lo += d.chunkRows) {
      const rows: KeyedMetricRow[] = [];
      for (let i = lo; i < Math.min(run.rows, lo + d.chunkRows); i++) rows.push(realisticRow(run.trialId, i, rnd));
      const t = performance.now();
      const chunks = encodeMetricChunks(rows, d.maxBytes);
      encodeMs += performance.now() - t;
      for (const bytes of chunks) {
        messages++;
        parentPort!.postMessage({ kind: 'chunk', bytes }, [bytes.buffer as ArrayBuffer]);
      }
    }
    parentPort!.postMessage({ kind: 'end', encodeMs, messages });
  });
}
