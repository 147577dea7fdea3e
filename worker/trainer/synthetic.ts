/**
 * The synthetic phase field: a stand-in trainer whose phase is a known function of the learning rate
 * and the batch size, for testing what reads phases — refinement rounds, the diagram, the report —
 * through the real orchestrator, NATS, workers and collector, in seconds instead of hours.
 *
 * It is switched on for a whole worker process by the environment variable `PHASEMAP_SYNTHETIC_FIELD`
 * (a JSON `SyntheticField`, `{}` for the defaults); every trial that worker runs is then synthetic,
 * and its rows say so in nothing but their values: a test or a benchmark sets it, never a user.
 *
 * The field: a trial at learning rate lr and effective batch size b (N for a full batch) lies above the
 * boundary when lr > lr_star · (b / batch_ref)^exponent. Above it the trial's SNR falls from 10^2 to
 * 10^−1.5 at step steps/20 and stays there (`diffusion`); below it SNR stays at 10^0.2 (`steady`).
 * With `above: 'diverged'` the loss turns NaN at step steps/2 instead (the row is logged, the trial
 * stops). The phase record (analysis/phases.ts, default thresholds) reads exactly these phases. With
 * `row_ms` each logged row takes that many milliseconds (a trial long enough to be interrupted).
 */
import type { MetricRow } from '../../schemas/metrics.js';
import type { TrialConfig } from '../../schemas/sweep.js';
import type { BackendName } from './backend.js';
import type { TrainHooks, TrainSummary } from './train.js';

/** Parameters of the synthetic phase field. */
export interface SyntheticField {
  /** The boundary's learning rate at batch_ref. Default 3e-3. */
  lr_star?: number;
  /** The batch size at which the boundary is at lr_star. Default 64. */
  batch_ref?: number;
  /** How the boundary moves with the batch size: lr* ∝ b^exponent. Default 0.5. */
  exponent?: number;
  /** The phase above the boundary. Default 'diffusion'. */
  above?: 'diffusion' | 'diverged';
  /** Milliseconds of wall time each logged row takes (a trial that runs long enough to be interrupted). Default 0. */
  row_ms?: number;
}

/** The field of this process, from `PHASEMAP_SYNTHETIC_FIELD`, or null when it is not set. */
export function syntheticField(): Required<SyntheticField> | null {
  const raw = process.env.PHASEMAP_SYNTHETIC_FIELD;
  if (raw === undefined || raw === '') return null;
  let f: SyntheticField;
  try {
    f = JSON.parse(raw) as SyntheticField;
  } catch (e) {
    throw new Error(`PHASEMAP_SYNTHETIC_FIELD: got ${JSON.stringify(raw)}, expected JSON like {"lr_star": 3e-3} (${(e as Error).message})`);
  }
  return { lr_star: f.lr_star ?? 3e-3, batch_ref: f.batch_ref ?? 64, exponent: f.exponent ?? 0.5, above: f.above ?? 'diffusion', row_ms: f.row_ms ?? 0 };
}

/** The learning rate of the boundary at effective batch size `b` (> 0). */
export function syntheticBoundary(field: Required<SyntheticField>, b: number): number {
  return field.lr_star * (b / field.batch_ref) ** field.exponent;
}

/** Whether a trial config lies above the field's boundary. */
export function syntheticAbove(field: Required<SyntheticField>, config: TrialConfig): boolean {
  const b = config.train.batch_size === 'full' ? config.problem.n_collocation : config.train.batch_size;
  return config.train.lr > syntheticBoundary(field, b);
}

/**
 * "Trains" one trial on the synthetic field: hands `hooks.onRows` one row per `train.log_every`
 * steps (and the last step), with loss, lr, rel_l2 on `train.eval_every` steps and snr on
 * `diagnostics.every` steps; other diagnostics are null. No checkpoint. Honours `hooks.shouldStop`.
 */
export async function trainSynthetic(config: TrialConfig, hooks: TrainHooks, field: Required<SyntheticField>, backend: BackendName): Promise<TrainSummary> {
  const t0 = Date.now();
  const { steps, log_every, eval_every } = config.train;
  const every = config.diagnostics?.every ?? 0;
  const above = syntheticAbove(field, config);
  const divergeAt = above && field.above === 'diverged' ? Math.floor(steps / 2) : Infinity;
  const rows: MetricRow[] = [];
  let last: MetricRow | null = null;
  let stopped = false;
  let done = 0;
  for (let k = 0; k < steps; k++) {
    if (hooks.shouldStop?.()) {
      stopped = true;
      break;
    }
    const logged = k % log_every === 0 || k === steps - 1;
    if (logged) {
      const diverged = k >= divergeAt;
      const loss = diverged ? NaN : 1 / (1 + k / 100);
      const snr = every > 0 && k % every === 0 ? 10 ** (above && field.above === 'diffusion' && k >= steps / 20 ? -1.5 : k === 0 ? 2 : 0.2) : null;
      const row: MetricRow = {
        step: k, lr: config.train.lr, loss, loss_residual: loss / 2, loss_boundary: loss / 2, wall_seconds: (Date.now() - t0) / 1000,
        rel_l2: k % eval_every === 0 || k === steps - 1 ? (above ? 0.5 : 0.05) : null,
        snr, snr_layers: null, grad_order: null, snr_adam: null, res_homogeneity: null, saturation_layers: null, entropy_layers: null,
        lambda_mean: null, lambda_max: null,
      };
      rows.push(row);
      last = row;
      hooks.onProgress?.(k, steps);
      if (field.row_ms > 0) await new Promise((r) => setTimeout(r, field.row_ms));
      if (diverged) {
        done = k;
        break;
      }
    }
    done = k + 1;
    if (rows.length >= 100) await hooks.onRows(rows.splice(0));
  }
  if (rows.length) await hooks.onRows(rows.splice(0));
  hooks.onProgress?.(done, steps);
  return {
    steps_done: done, final_loss: last?.loss ?? NaN, final_rel_l2: last?.rel_l2 ?? null, diverged: Number.isNaN(last?.loss ?? 0),
    stopped, backend, wall_seconds: (Date.now() - t0) / 1000, first_step: 0,
  };
}
