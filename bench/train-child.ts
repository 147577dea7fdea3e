/**
 * Child process of the train-step, snr-cost and memory benchmarks (bench/train.ts): one process per
 * measurement, so that each starts from a fresh wasm heap (the wasm memory never shrinks) and its peak
 * RSS is its own. Input: one JSON argument (ChildInput); output: one JSON line on stdout (ChildOutput).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TrialConfig } from '../schemas/sweep.js';
import type { TrialMessage } from '../schemas/trial.js';
import { runSlotTask } from '../worker/slot-task.js';
import { evalDiagnostics, evalSnr, initBackend, lossAndGrads, setupTrial, staircaseLr, type TrialSetup } from '../worker/trainer/index.js';
import { peakRssBytes } from './lib.js';

export type ChildInput =
  | {
      mode: 'step';
      config: TrialConfig;
      /** Untimed steps first. */
      warmup: number;
      runs: number;
      stepsPerRun: number;
      /** Also time evalSnr and evalDiagnostics once per run, right after that run's steps. */
      snr?: boolean;
    }
  | { mode: 'slot'; config: TrialConfig; trialId: string };

export interface ChildOutput {
  /** ms per step of each run. */
  msPerStep: number[];
  /** Per run: evalSnr ms, evalDiagnostics ms (mode step with snr). */
  snrMs?: number[];
  diagMs?: number[];
  /** mode slot: what runSlotTask returned. */
  outcome?: { status: string; error: string | null; steps_done: number; wall_seconds: number; rows: number };
  peakRssBytes: number;
  /** Wall seconds of the whole child body (setup included). */
  wallSeconds: number;
  error?: string;
}

/** One training step as trainTrial runs it: batch, λ update + loss + gradients, loss readback, Adam update. */
function trainStep(s: TrialSetup, k: number): void {
  const { lr: lr0, lr_decay } = s.config.train;
  const lr = staircaseLr(lr0, lr_decay.rate, lr_decay.every, k);
  const idxArr = s.sampler ? s.sampler.next() : null;
  const idx = idxArr ? tf.tensor1d(idxArr, 'int32') : null;
  const step = lossAndGrads(s, idx);
  try {
    step.loss.dataSync(); // what a logged step reads back; on wasm every kernel has already run
    s.adam.step(step.grads, lr);
  } finally {
    tf.dispose([step.loss, step.lossResidual, step.lossBoundary, ...step.grads]);
    idx?.dispose();
  }
}

async function main(input: ChildInput): Promise<ChildOutput> {
  const t0 = performance.now();
  const out: ChildOutput = { msPerStep: [], peakRssBytes: 0, wallSeconds: 0 };
  try {
    await initBackend('wasm');
    if (input.mode === 'slot') {
      const trial: TrialMessage = { sweep: 'bench', trial_id: input.trialId, config: input.config, backend: 'wasm', attempt_base: 0 };
      let bytes = 0;
      const o = await runSlotTask({ trial, attempt: 1, backend: 'wasm', maxBytes: 1024 * 1024 - 4096 }, (e) => {
        if (e.type === 'metrics' || e.type === 'checkpoint') bytes += e.bytes.length;
      });
      out.outcome = { status: o.status, error: o.error, steps_done: o.steps_done, wall_seconds: o.wall_seconds, rows: o.rows };
      if (o.status !== 'done') out.error = o.error ?? o.status;
      void bytes;
    } else {
      const s = setupTrial(input.config);
      try {
        let k = 0;
        for (let i = 0; i < input.warmup; i++) trainStep(s, k++);
        if (input.snr) {
          evalSnr(s); // warm-up of the diagnostic's kernels and shapes
          evalDiagnostics(s);
          out.snrMs = [];
          out.diagMs = [];
        }
        for (let r = 0; r < input.runs; r++) {
          const a = performance.now();
          for (let i = 0; i < input.stepsPerRun; i++) trainStep(s, k++);
          out.msPerStep.push((performance.now() - a) / input.stepsPerRun);
          if (input.snr) {
            const b = performance.now();
            evalSnr(s);
            const c = performance.now();
            evalDiagnostics(s);
            out.diagMs!.push(performance.now() - c);
            out.snrMs!.push(c - b);
          }
        }
      } finally {
        s.dispose();
      }
    }
  } catch (e) {
    out.error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  }
  out.peakRssBytes = peakRssBytes();
  out.wallSeconds = (performance.now() - t0) / 1000;
  return out;
}

const result = await main(JSON.parse(process.argv[2]!) as ChildInput);
process.stdout.write(`\n${JSON.stringify(result)}\n`);
process.exit(0);
