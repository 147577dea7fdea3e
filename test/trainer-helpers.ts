/** Shared helpers for the trainer tests (not a test file itself). */
import * as tf from '@tensorflow/tfjs-core';
import { resolveTrialConfig } from '../orchestrator/spec.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { initBackend, type BackendName } from '../worker/trainer/index.js';

let backend: BackendName | null = null;
/** wasm if it initialises in this process (ava child process), else cpu. */
export async function testBackend(): Promise<BackendName> {
  if (backend) return backend;
  try {
    backend = await initBackend('wasm');
  } catch {
    backend = await initBackend('cpu');
  }
  return backend;
}

/** A small resolved helmholtz2d trial config; `over` is merged one level deep. */
export function tinyConfig(over: { [K in keyof TrialConfig]?: Partial<TrialConfig[K]> } = {}): TrialConfig {
  const base: TrialConfig = {
    problem: { name: 'helmholtz2d', a1: 1, a2: 1, k: 1, n_collocation: 64, n_boundary: 8, w_bc: 1, eval_grid: 11 },
    model: { width: 8, depth: 2 },
    train: { steps: 30, lr: 1e-2, batch_size: 'full', lr_decay: { rate: 0.9, every: 10 }, log_every: 5, eval_every: 10, checkpoint_every: 0 },
    strategy: { name: 'vanilla' },
    diagnostics: { every: 10, snr_batches: 4 },
    seed: 7,
  };
  const out = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(over)) {
    const b = (base as unknown as Record<string, unknown>)[k];
    out[k] = typeof v === 'object' && v !== null && typeof b === 'object' && b !== null ? { ...b, ...v } : v;
  }
  return out as unknown as TrialConfig;
}

/**
 * `cfg` with the spec's defaults applied (orchestrator/spec.ts `resolveTrialConfig`, in place) as a
 * TrialConfig. @throws Error listing every problem found.
 */
export function resolved(cfg: Record<string, unknown>): TrialConfig {
  const errs = resolveTrialConfig(cfg);
  if (errs.length) throw new Error(errs.map((e) => e.message).join('; '));
  return cfg as unknown as TrialConfig;
}

/** Float64 copy of a tensor's values. */
export function f64(t: tf.Tensor): Float64Array {
  return Float64Array.from(t.dataSync());
}

export function relDiff(a: number, b: number): number {
  return Math.abs(a - b) / Math.max(Math.abs(a), Math.abs(b), 1e-30);
}
