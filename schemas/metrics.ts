/**
 * The per-step metrics contract: the Arrow schema of every metrics message on the wire, and of the
 * Parquet files under `DIR/metrics/trial_id=<id>/attempt=<n>/` (which omit `trial_id` and `attempt`:
 * those come from the hive partition path). Column definitions: science.md §2 and §5.
 *
 * A wire message may hold rows of several trials (a slot that trains several same-shaped trials as
 * one batched computation publishes them together): rows are keyed by (trial_id, attempt, step).
 */
import { Field, Float64, Int32, List, Schema, Utf8 } from 'apache-arrow';

/** One logged row of one trial. Nullable columns are null on steps where they were not computed. */
export interface MetricRow {
  /** Adam step k (0-based): the state before the update of step k. */
  step: number;
  /** Learning rate used by step k's update (staircase decay, science.md §2). */
  lr: number;
  /** Total loss L (science.md §2). */
  loss: number;
  /** mean_i (λ_i r_i)² over the step's batch. */
  loss_residual: number;
  /**
   * The whole boundary/initial term as it enters L (weighted): w_bc · mean_j (u(x_j) − g(x_j))², plus
   * w_ic · mean_k (u(x_k, 0) − u0(x_k))² for time-dependent problems (for allen_cahn1d the boundary
   * part is the periodic term). loss = loss_residual + loss_boundary.
   */
  loss_boundary: number;
  /** Seconds since the attempt started training. */
  wall_seconds: number;
  /** Relative L2 test error, every `train.eval_every` steps. */
  rel_l2: number | null;
  /** Gradient SNR over the fixed batches, every `diagnostics.every` steps (science.md §5). */
  snr: number | null;
  /** Per weight matrix SNR, input layer first. */
  snr_layers: number[] | null;
  /** ‖μ‖ / ‖RMS‖ in [0, 1]. */
  grad_order: number | null;
  /**
   * ‖m̂‖₂ / ‖sqrt(v̂) + ε‖₂ over all parameters (weights and biases) from Adam's bias-corrected
   * moments before step k's update; null at t = 0 (no update yet, the moments are zero) and off the
   * diagnostics cadence.
   */
  snr_adam: number | null;
  /**
   * φ_R = mean_k c_k / sqrt(mean_k c_k²), c_k = mean |r_i| (no λ) over the collocation points in cell
   * k of a 10 × 10 grid over the 2-D input domain, empty cells skipped; in (0, 1]. Null for inputs
   * that are not 2-D.
   */
  res_homogeneity: number | null;
  /** Per hidden layer, input side first: % (0–100) of samples in a unit's lowest or highest activation bin, mean over units. */
  saturation_layers: number[] | null;
  /** Per hidden layer, input side first: entropy in bits of the binned activation vectors over the N points. */
  entropy_layers: number[] | null;
  /** mean_i λ_i over the N collocation points (1 for vanilla, λ ≡ 1). */
  lambda_mean: number | null;
  /** max_i λ_i over the N collocation points (1 for vanilla). */
  lambda_max: number | null;
}

/** Columns of a row, in order, excluding the keys. */
export const METRIC_COLUMNS = [
  'step', 'lr', 'loss', 'loss_residual', 'loss_boundary', 'wall_seconds', 'rel_l2', 'snr', 'snr_layers', 'grad_order',
  'snr_adam', 'res_homogeneity', 'saturation_layers', 'entropy_layers', 'lambda_mean', 'lambda_max',
] as const;

/** The columns computed on the diagnostics cadence (`diagnostics.every` steps and the last step), null elsewhere. */
export const DIAGNOSTIC_COLUMNS = [
  'snr', 'snr_layers', 'grad_order', 'snr_adam', 'res_homogeneity', 'saturation_layers', 'entropy_layers', 'lambda_mean', 'lambda_max',
] as const;

/** Values of the diagnostic columns of one row. */
export type DiagnosticValues = Pick<MetricRow, (typeof DIAGNOSTIC_COLUMNS)[number]>;

/** A per-layer column: List<Float64> (DuckDB DOUBLE[]), items non-null. */
function float64List(): List<Float64> {
  return new List(new Field('item', new Float64(), true));
}

function rowFields(): Field[] {
  return [
    new Field('step', new Int32(), false),
    new Field('lr', new Float64(), false),
    new Field('loss', new Float64(), false),
    new Field('loss_residual', new Float64(), false),
    new Field('loss_boundary', new Float64(), false),
    new Field('wall_seconds', new Float64(), false),
    new Field('rel_l2', new Float64(), true),
    new Field('snr', new Float64(), true),
    new Field('snr_layers', float64List(), true),
    new Field('grad_order', new Float64(), true),
    new Field('snr_adam', new Float64(), true),
    new Field('res_homogeneity', new Float64(), true),
    new Field('saturation_layers', float64List(), true),
    new Field('entropy_layers', float64List(), true),
    new Field('lambda_mean', new Float64(), true),
    new Field('lambda_max', new Float64(), true),
  ];
}

/** Schema of a metrics message on the wire: keys first, then the row columns. */
export function wireMetricsSchema(): Schema {
  return new Schema([new Field('trial_id', new Utf8(), false), new Field('attempt', new Int32(), false), ...rowFields()]);
}

/** Schema of a metrics Parquet part (the keys live in the hive path). */
export function partMetricsSchema(): Schema {
  return new Schema(rowFields());
}

/** Largest payload we put in one NATS message by default (server default max_payload is 1 MiB). */
export const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;
