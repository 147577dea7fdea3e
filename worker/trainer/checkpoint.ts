/**
 * Checkpoints (science.md §7): the tensors and metadata of one trial's state, read back from the
 * backend into plain typed arrays (the worker serialises them as safetensors, schemas/safetensors.ts).
 *
 * Tensor names (float32 unless noted), in this order:
 *   net.<l>.weight [in, out], net.<l>.bias [out]                    (l = 0 .. depth, input layer first)
 *   adam.m.net.<l>.weight, adam.m.net.<l>.bias, adam.v.… (as the parameter), adam.step [1] int32
 *   collocation [N, d] (original point order), lambda [N], snr_batch [N] int32 (only with diagnostics on)
 *   boundary.points [M, d], boundary.values [M], initial.points [K, d], initial.values [K] (time-dependent problems)
 *   batch [n_b] int32: step n's mini-batch (indices into collocation; only for a periodic checkpoint of a
 *     trial with batch_size < N — a phasemap extension of §7: the batch the logged loss was computed on)
 *   sa.adam.m [N], sa.adam.v [N], sa.adam.t [N] int32: for the `sa` strategy, the λ Adam's moments and
 *     per-point step counts as of `lambda` (phasemap extension of §7, read by a resumed trial)
 * Systems of equations (several outputs or residual terms, worker/trainer/system.ts): `lambda` is [N, E],
 *   one column per equation; `boundary.outputs` [M] int32 (and `initial.outputs` [K]) the output (index
 *   into `output_order`) each boundary (initial) target is of; metadata `output_order` (JSON list of the output names, the network's output
 *   columns in order) and `equations` (JSON list of the residual term names, λ's columns in order).
 * Metadata: trial_id, step, problem, problem_params, loss_weights, strategy, input_order (science.md §7),
 * and final ("true" for the end-of-training checkpoint), conditions (name, kind, weight of each condition
 * term: boundary `bc`, initial `ic`), lr (of step n), adam (β1, β2, ε), config (the
 * whole trial config), plus what `opts.extra` adds (the trainer: wall_seconds, divergence; final_loss,
 * final_rel_l2, diverged on a final checkpoint — see worker/trainer/resume.ts). The worker sets trial_id
 * (the trainer does not know it) and adds attempt.
 */
import type { TrialConfig } from '../../schemas/sweep.js';
import type { SafetensorsTensor } from '../../schemas/safetensors.js';
import type { TrialSetup } from './train.js';

/** One checkpoint, ready to serialise. */
export interface CheckpointData {
  /** Step n: the state before the update of step n (for `final`: after the last update, n = steps done). */
  step: number;
  final: boolean;
  tensors: SafetensorsTensor[];
  metadata: Record<string, string>;
}

const f32 = (name: string, shape: number[], data: ArrayLike<number>): SafetensorsTensor => ({
  name, dtype: 'F32', shape, data: data instanceof Float32Array ? data : Float32Array.from(data),
});
const i32 = (name: string, shape: number[], data: ArrayLike<number>): SafetensorsTensor => ({
  name, dtype: 'I32', shape, data: Int32Array.from(data),
});

/**
 * Reads the trial's current state into a CheckpointData (science.md §7). Call it where the state is the
 * one to record: in the trainer, after step n's loss and λ update and before its Adam update.
 * @param opts.batch step n's mini-batch indices (null for full batch or the final checkpoint).
 * @param opts.extra further metadata entries (string values), added after the standard ones.
 */
export function captureCheckpoint(s: TrialSetup, step: number, opts: { final: boolean; lr: number; batch: Int32Array | null; trialId?: string; extra?: Record<string, string> }): CheckpointData {
  const { net, adam, config, problem, n, d } = s;
  const tensors: SafetensorsTensor[] = [];
  const names: string[] = [];
  net.weights.forEach((w, l) => {
    names.push(`net.${l}.weight`);
    tensors.push(f32(`net.${l}.weight`, w.shape, w.dataSync() as Float32Array));
  });
  net.biases.forEach((b, l) => {
    names.push(`net.${l}.bias`);
    tensors.push(f32(`net.${l}.bias`, b.shape, b.dataSync() as Float32Array));
  });
  // Adam's parameters are net.variables() = weights then biases: the same order as `names`.
  for (const [kind, moments] of [['m', adam.m], ['v', adam.v]] as const)
    moments.forEach((t, i) => tensors.push(f32(`adam.${kind}.${names[i]!}`, t.shape, t.dataSync() as Float32Array)));
  tensors.push(i32('adam.step', [1], [adam.t]));
  tensors.push(f32('collocation', [n, d], s.points));
  const lam = s.state.lambda();
  // A system of E equations: λ [N, E], one column per equation (point-major), all ones for vanilla.
  const E = s.system?.E ?? 1;
  const lamShape = s.system ? [n, E] : [n];
  tensors.push(f32('lambda', lamShape, lam ? (lam.dataSync() as Float32Array) : new Float32Array(n * E).fill(1)));
  if (s.split) tensors.push(i32('snr_batch', [n], s.split.batchOf));
  tensors.push(f32('boundary.points', [s.bc.points.length / d, d], s.bc.points));
  tensors.push(f32('boundary.values', [s.bc.values.length], s.bc.values));
  const bcOut = s.system ? problem.boundary(config.problem.n_boundary).output : undefined;
  if (bcOut) tensors.push(i32('boundary.outputs', [bcOut.length], bcOut));
  const pc = config.problem as TrialConfig['problem'] & { n_initial?: number; w_ic?: number };
  // The initial set as the trainer built it (TrialSetup.initial), else from the problem itself.
  const built = (s as { initial?: { points: Float64Array; values: Float64Array } | null }).initial;
  const ic = built ?? (problem.initial && pc.n_initial !== undefined ? problem.initial(pc.n_initial) : null);
  if (ic) {
    tensors.push(f32('initial.points', [ic.values.length, d], ic.points));
    tensors.push(f32('initial.values', [ic.values.length], ic.values));
    const icOut = s.system && problem.initial && pc.n_initial !== undefined ? problem.initial(pc.n_initial)?.output : undefined;
    if (icOut) tensors.push(i32('initial.outputs', [icOut.length], icOut));
  }
  if (opts.batch) tensors.push(i32('batch', [opts.batch.length], opts.batch));
  const saAdam = (s.state as { adamState?: () => { m: { dataSync(): unknown }; v: { dataSync(): unknown }; t: Int32Array } }).adamState?.();
  if (saAdam) {
    tensors.push(f32('sa.adam.m', [n], saAdam.m.dataSync() as Float32Array));
    tensors.push(f32('sa.adam.v', [n], saAdam.v.dataSync() as Float32Array));
    tensors.push(i32('sa.adam.t', [n], saAdam.t));
  }
  const lossWeights: Record<string, number> = { bc: pc.w_bc };
  if (pc.w_ic !== undefined) lossWeights.ic = pc.w_ic;
  const metadata: Record<string, string> = {
    trial_id: opts.trialId ?? '',
    step: String(step),
    problem: problem.name,
    problem_params: JSON.stringify(problem.params),
    loss_weights: JSON.stringify(lossWeights),
    strategy: JSON.stringify(config.strategy),
    input_order: JSON.stringify(problem.inputOrder),
    // How each condition set enters the loss ('value': w·mean (u − g)²; 'periodic': pairs of points, see problems.ts).
    conditions: JSON.stringify(
      ((s.bc as { terms?: Array<{ name: string; kind?: string; w: number; axis?: number }> }).terms ?? [{ name: 'bc', kind: 'value', w: pc.w_bc }]).map((c) => ({
        name: c.name, kind: c.kind ?? 'value', w: c.w, ...(c.axis !== undefined ? { axis: c.axis } : {}),
      })),
    ),
    final: String(opts.final),
    lr: String(opts.lr),
    adam: JSON.stringify({ beta1: adam.beta1, beta2: adam.beta2, epsilon: adam.epsilon }),
    config: JSON.stringify(config),
    // A system: the network's output columns and the residual terms (λ's columns), in order.
    ...(s.system ? { output_order: JSON.stringify(s.system.problem.outputs), equations: JSON.stringify(s.system.problem.equations) } : {}),
    ...opts.extra,
  };
  return { step, final: opts.final, tensors, metadata };
}
