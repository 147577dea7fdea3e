/**
 * The bit-level record of the built-in problems (not a test file itself): for each built-in problem a
 * short real trial (30 steps, rows every 5, diagnostics every 10, checkpoints every 10) — its trial id,
 * its logged rows (wall_seconds dropped) and the sha256 of each checkpoint's safetensors bytes (the
 * wall_seconds metadata entry dropped). test/fixtures/builtin-problems.json holds this record as made
 * by the code before the problems were re-expressed on the public problem API
 * (`PHASEMAP_RECORD_FIXTURE=1 npx ava dist/test/problem-builtins.test.js` rewrites it).
 */
import { createHash } from 'node:crypto';
import { trialId } from '../orchestrator/spec.js';
import { encodeSafetensors } from '../schemas/safetensors.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { trainTrial } from '../worker/trainer/index.js';
import { resolved } from './trainer-helpers.js';

/** One problem's record. */
export interface BuiltinRecord {
  problem: string;
  trial_id: string;
  rows: Array<Record<string, unknown>>;
  /** step → sha256 hex of the checkpoint bytes (metadata without wall_seconds). */
  checkpoints: Record<string, string>;
}

/** The problem sections of the recorded trials (small, with non-default parameters where a problem has them). */
export const RECORDED_PROBLEMS: Array<Record<string, unknown>> = [
  { name: 'helmholtz2d', a1: 1, a2: 2, k: 1.5, n_collocation: 64, n_boundary: 8, eval_grid: 11 },
  { name: 'poisson2d', n_collocation: 64, n_boundary: 8, eval_grid: 11 },
  { name: 'burgers1d', nu: 0.05, n_collocation: 64, n_boundary: 8, n_initial: 16, w_ic: 2, eval_grid: 11 },
  { name: 'allen_cahn1d', d: 1e-3, n_collocation: 64, n_boundary: 8, n_initial: 16, eval_grid: 11 },
];

/** The full resolved config of one recorded trial around a problem section (rba, to exercise λ). */
export function recordedConfig(problem: Record<string, unknown>): TrialConfig {
  return resolved({
    problem: structuredClone(problem),
    model: { width: 8, depth: 2 },
    train: { steps: 30, lr: 1e-2, batch_size: 'full', lr_decay: { rate: 0.9, every: 10 }, log_every: 5, eval_every: 10, checkpoint_every: 10 },
    strategy: { name: 'rba' },
    diagnostics: { every: 10, snr_batches: 4 },
    seed: 11,
  });
}

/** sha256 of a checkpoint's safetensors bytes, without its wall-clock entry. */
export function checkpointHash(tensors: Parameters<typeof encodeSafetensors>[0], metadata: Record<string, string>): string {
  const { wall_seconds: _w, ...meta } = metadata;
  return createHash('sha256').update(encodeSafetensors(tensors, meta)).digest('hex');
}

/** Trains `config` and returns its rows (wall_seconds dropped) and checkpoint hashes. */
export async function recordTrial(config: TrialConfig, opts: { metadata?: boolean } = {}): Promise<Omit<BuiltinRecord, 'problem' | 'trial_id'>> {
  const rows: Array<Record<string, unknown>> = [];
  const checkpoints: Record<string, string> = {};
  await trainTrial(config, {
    onRows: (rs) => {
      for (const r of rs) {
        const { wall_seconds: _w, ...rest } = r as unknown as Record<string, unknown>;
        rows.push(rest);
      }
    },
    onCheckpoint: (c) => {
      checkpoints[String(c.step)] = opts.metadata === false ? checkpointHash(c.tensors, {}) : checkpointHash(c.tensors, c.metadata);
    },
  });
  return { rows, checkpoints };
}

/** The record of every built-in problem. */
export async function recordBuiltins(): Promise<BuiltinRecord[]> {
  const out: BuiltinRecord[] = [];
  for (const p of RECORDED_PROBLEMS) {
    const config = recordedConfig(p);
    out.push({ problem: String(p.name), trial_id: trialId(config), ...(await recordTrial(config)) });
  }
  return out;
}
