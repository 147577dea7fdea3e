/**
 * Training of one PINN trial (science.md §2–§5) from a resolved TrialConfig, emitting MetricRows.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { DiagnosticValues, MetricRow } from '../../schemas/metrics.js';
import type { TrialConfig } from '../../schemas/sweep.js';
import { Adam, staircaseLr } from './adam.js';
import { currentBackend, detectBackend, initBackend, type BackendName } from './backend.js';
import {
  adamSnr, gradientSnr, gradientSnrWithResidual, gridCells, hiddenLayerStats, lambdaStats, makeSnrSplit, residualHomogeneity,
  conditionTermsOf, type BoundaryData, type SnrResult, type SnrSplit,
} from './diagnostics.js';
import { conditionsLoss, residualLoss, sqError, type ConditionTerm } from './loss.js';
import { Mlp, mlpForward } from './network.js';
import { makeProblem, problemConditions, type Problem } from './problems.js';
import { BatchSampler, Rng } from './rng.js';
import { makeStrategy, type Strategy, type StrategyState } from './strategies.js';
import { captureCheckpoint, type CheckpointData } from './checkpoint.js';
import { restoreTrial, type ResumeOptions } from './resume.js';
import { isSystemProblem, systemGradientSnr, systemResidualLoss, systemResiduals, systemStrategy, type SystemProblem, type SystemStrategyState } from './system.js';
import { outputSelector, selectOutputs, systemValue } from './system-forward.js';

/** Summary returned by `trainTrial`. */
export interface TrainSummary {
  /** Adam updates applied (== train.steps unless stopped or diverged). */
  steps_done: number;
  /** Loss of the last logged row (NaN/Inf if diverged). */
  final_loss: number;
  /** rel_l2 of the last row that computed it (always the last step unless stopped/diverged). */
  final_rel_l2: number | null;
  /** True if a logged loss was NaN/Inf (that row is logged, training stops). */
  diverged: boolean;
  /** True if `hooks.shouldStop` stopped the run early. */
  stopped: boolean;
  backend: BackendName;
  /** Seconds spent in training (after setup; for a resumed run, plus the checkpoint's wall_seconds). */
  wall_seconds: number;
  /**
   * The first step this run logged a row for: 0, or for a run resumed from a periodic checkpoint its
   * step s, or train.steps for one resumed from a `final` checkpoint (nothing left to train). The rows
   * of the earlier attempt with step < first_step complete this run's rows.
   */
  first_step: number;
}

/** Callbacks of `trainTrial`. */
export interface TrainHooks {
  /** Receives logged rows in order, in chunks (~100 rows or ~1 s, and at the end); awaited. */
  onRows(rows: MetricRow[]): void | Promise<void>;
  /** Progress: `step` steps done out of `steps` (called on logged steps and at the end). */
  onProgress?(step: number, steps: number): void;
  /** Polled before every step; returning true ends the run after flushing rows (no extra row). */
  shouldStop?(): boolean;
  /**
   * Receives checkpoints (science.md §7; `checkpoint.ts`) in step order: every train.checkpoint_every
   * steps (on logged steps: the state that step's row was computed from) and a final one (`final`:
   * the state after the last update, step = steps done; its loss is not logged). Awaited. Every row
   * logged before a checkpoint is handed to `onRows` before it. Without this hook no checkpoint is read back.
   */
  onCheckpoint?(c: CheckpointData): void | Promise<void>;
}

/** Options of `trainTrial`. */
export interface TrainOptions {
  /** Backend to use; default: the active one if it is wasm/cpu/tensorflow, else `detectBackend()`. */
  backend?: BackendName;
  /** Flush rows after this many (default 100). */
  flushRows?: number;
  /** Flush rows after this many ms (default 1000). */
  flushMs?: number;
  /**
   * Early stop on an exploding loss (science.md §6 "grew by orders of magnitude"): training stops,
   * with diverged = true, once the logged loss has been ≥ `factor` × its running minimum on `rows`
   * consecutive logged rows. Absent: only NaN/Inf stops a trial.
   */
  divergence?: { factor: number; rows: number };
  /**
   * Resume from a checkpoint of this trial (science.md §7; worker/trainer/resume.ts): the run restores
   * the state of the checkpoint's step s and trains steps s..steps−1, logging rows from step s on (the
   * row of step s recomputed from the restored state: identical to the uninterrupted run's), and sends
   * no checkpoint for step s itself (it exists). A `final` checkpoint: nothing is trained, no row is
   * logged, the summary is the stored one. Throws `ResumeError` (before any hook is called) for a
   * checkpoint that does not fit this trial, e.g. another config (the error names the field).
   */
  resume?: ResumeOptions;
}

/**
 * Everything one trial trains on, built deterministically from the config (seeded streams
 * 'weights', 'collocation', 'batches', 'snr_split' of `config.seed`). All tensors carry a leading
 * group axis of 1. Call `dispose()` when done.
 */
export interface TrialSetup {
  config: TrialConfig;
  problem: Problem;
  /** N collocation points, row-major float64 [N, d] (checkpoint `collocation`, original order). */
  points: Float64Array;
  n: number;
  d: number;
  /** Collocation points [1, N, d] and forcing [1, N]. */
  xColl: tf.Tensor;
  qColl: tf.Tensor;
  /**
   * The boundary set (x, g, wBc; `points`, `values` = checkpoint `boundary.*`) and, in `terms`, every
   * condition term of the loss (boundary, then initial for time-dependent problems): their weighted
   * sum is the boundary/initial term of L (science.md §2) and of each SNR batch loss (§5).
   */
  bc: BoundaryData & { points: Float64Array; values: Float64Array; terms: ConditionTerm[] };
  /** The initial set (checkpoint `initial.points`, `initial.values`; weight w_ic), or null. */
  initial: { points: Float64Array; values: Float64Array; wIc: number } | null;
  /** Evaluation grid [1, M, d], reference u* [M] and Σ u*² (float64). */
  hasReference: boolean;
  xEval: tf.Tensor;
  uStar: tf.Tensor;
  uStarNorm2: number;
  net: Mlp;
  adam: Adam;
  strategy: Strategy;
  state: StrategyState;
  /** Mini-batch sampler, or null for full batch. */
  sampler: BatchSampler | null;
  /** The fixed SNR split, or null when diagnostics are off. */
  split: SnrSplit | null;
  /**
   * For a system of equations (several outputs or residual terms; worker/trainer/system.ts): the problem,
   * K outputs, E equations and the one-hot output selector [1, M, K] of the evaluation set (`xEval`,
   * `uStar`: any point set, each value of one output). `state` is then a `SystemStrategyState` (λ [N, E]).
   * Null on the single-output fast path.
   */
  system: { problem: SystemProblem; K: number; E: number; evalSel: tf.Tensor } | null;
  /**
   * res_homogeneity grid cell (`gridCells`, 10 × 10 over `problem.domain`) of each collocation point,
   * Int32Array [N] in the original order; null when diagnostics are off or the inputs are not 2-D.
   */
  cells: Int32Array | null;
  dispose(): void;
}

/**
 * Build the problem data, network (Xavier-normal), Adam state, strategy state, mini-batch sampler and
 * SNR split of a trial on the active backend.
 * @throws Error on an unknown problem/strategy or if snr_batches does not divide N (diagnostics on).
 */
export function setupTrial(config: TrialConfig): TrialSetup {
  const problem = makeProblem(config.problem);
  const d = problem.inputOrder.length;
  const n = config.problem.n_collocation;
  const points = problem.collocation(n, Rng.stream(config.seed, 'collocation'));
  const q = problem.forcing(points, n);
  const conds = problemConditions(problem, config.problem);
  const bcSet = conds[0]!.set;
  const icSpec = conds.find((c) => c.name === 'ic') ?? null;
  const sysProblem = isSystemProblem(problem) ? problem : null;
  const K = sysProblem ? sysProblem.outputs.length : 1;
  const E = sysProblem ? sysProblem.equations.length : 1;
  // A system's evaluation set may be any point set, each value of one output (problem-api.ts evaluationSet).
  // A single-output problem with an explicit `evaluation` set takes it too (problem-api.ts).
  const explicitEval = typeof (problem as { definition?: { evaluation?: unknown } }).definition?.evaluation === 'function';
  const evalSet = sysProblem || explicitEval ? (problem as unknown as { evaluationSet(perAxis: number): { points: Float64Array; count: number; values: Float64Array; output: Int32Array } }).evaluationSet(config.problem.eval_grid) : null;
  const grid = evalSet ?? problem.evalGrid(config.problem.eval_grid);
  // A problem without a reference solution (problem-api.ts: neither solution nor reference) logs no rel_l2.
  const hasReference = (problem as { hasReference?: boolean }).hasReference !== false;
  const uStarArr = evalSet ? evalSet.values : problem.reference(grid.points, grid.count);
  let uStarNorm2 = 0;
  for (const v of uStarArr) uStarNorm2 += v * v;
  const strategy = sysProblem ? systemStrategy(makeStrategy(config.strategy, config.seed), E) : makeStrategy(config.strategy, config.seed);
  const bs = config.train.batch_size;
  const sampler = bs !== 'full' && bs < n ? new BatchSampler(n, bs, Rng.stream(config.seed, 'batches')) : null;
  // The split validates snr_batches; build it before any other tensor so a bad config leaks nothing.
  const split = config.diagnostics.every > 0 ? makeSnrSplit(points, q, n, d, config.diagnostics.snr_batches, Rng.stream(config.seed, 'snr_split')) : null;
  const cells = split ? gridCells(points, n, problem.domain) : null;
  const net = sysProblem ? Mlp.xavier(d, config.model.width, config.model.depth, Rng.stream(config.seed, 'weights'), K) : Mlp.xavier(d, config.model.width, config.model.depth, Rng.stream(config.seed, 'weights'));
  const adam = new Adam(net.variables());
  const state = strategy.init(n);
  const xColl = tf.tensor3d(Float32Array.from(points), [1, n, d]);
  const qColl = tf.tensor2d(Float32Array.from(q), [1, n]);
  const bcX = tf.tensor3d(Float32Array.from(bcSet.points), [1, bcSet.count, d]);
  const bcG = tf.tensor2d(Float32Array.from(bcSet.values), [1, bcSet.count]);
  const terms: ConditionTerm[] = conds.map((c, j) => ({
    name: c.name,
    kind: c.set.kind ?? 'value',
    x: j === 0 ? bcX : tf.tensor3d(Float32Array.from(c.set.points), [1, c.set.count, d]),
    g: j === 0 ? bcG : tf.tensor2d(Float32Array.from(c.set.values), [1, c.set.count]),
    w: c.w,
    ...(c.set.axis !== undefined ? { axis: c.set.axis } : {}),
    ...(sysProblem ? { sel: outputSelector(c.set.output ?? new Int32Array(c.set.count), K) } : {}),
  }));
  const bc = { x: bcX, g: bcG, wBc: config.problem.w_bc, points: bcSet.points, values: bcSet.values, terms };
  const initial = icSpec ? { points: icSpec.set.points, values: icSpec.set.values, wIc: icSpec.w } : null;
  const xEval = tf.tensor3d(Float32Array.from(grid.points), [1, grid.count, d]);
  const uStar = tf.tensor1d(Float32Array.from(uStarArr));
  const system = sysProblem ? { problem: sysProblem, K, E, evalSel: outputSelector(evalSet!.output, K) } : null;
  return {
    config, problem, points, n, d, xColl, qColl, bc, initial, hasReference, xEval, uStar, uStarNorm2, net, adam, strategy, state, sampler, split, cells, system,
    dispose() {
      tf.dispose([xColl, qColl, bc.x, bc.g, xEval, uStar, ...terms.slice(1).flatMap((t) => [t.x, t.g])]);
      if (system) tf.dispose([system.evalSel, ...terms.flatMap((t) => (t.sel ? [t.sel] : []))]);
      split?.dispose();
      this.state.dispose(); // the current one: a resumed trial replaces it (resume.ts)
      adam.dispose();
      net.dispose();
    },
  };
}

/** Loss tensors of one step (scalars, kept; caller disposes). */
export interface StepLoss {
  loss: tf.Tensor;
  lossResidual: tf.Tensor;
  lossBoundary: tf.Tensor;
}

/**
 * One gradient evaluation at the current parameters on the batch `idx` (int32 [n_b] or null = all
 * N points): applies the strategy's λ update for this batch (science.md §4; committed before
 * returning; for SA: applies the previous step's λ ascent and records this step's), forms L = mean (λ r)² + the condition terms (w_bc·mean bc² [+ w_ic·mean ic²], or the
 * periodic boundary term; science.md §2) and its gradients w.r.t. the
 * network variables (weights then biases). Does not update parameters.
 */
export function lossAndGrads(s: TrialSetup, idx: tf.Tensor | null): StepLoss & { grads: tf.Tensor[] } {
  if (s.system) {
    // A system (worker/trainer/system.ts): the E residual terms from the general forward pass, λ per
    // point per equation, Σ_e mean_i (λ_{e,i} r_{e,i})² (science.md §2).
    const sys = s.system;
    const state = s.state as SystemStrategyState;
    return stepLoss(s, idx, (x, q) => {
      const rs = systemResiduals(sys.problem, s.net.params(), x, q); // E × [1, n_b]
      return systemResidualLoss(rs, state.batchWeightsSystem(rs, idx));
    });
  }
  return stepLoss(s, idx, (x, q) => {
    const f = mlpForward(s.net.params(), x, s.problem.derivs, s.problem.inputOrder);
    const r = s.problem.residual(f, q, x); // [1, n_b]
    return residualLoss(r, s.state.batchWeights(r, idx));
  });
}

/**
 * One step's L = (the residual part `residualPart` forms from the batch's points x and sources q) +
 * the condition terms, and its gradients w.r.t. the network variables (weights then biases); then
 * commits the strategy state's λ update.
 */
function stepLoss(s: TrialSetup, idx: tf.Tensor | null, residualPart: (x: tf.Tensor, q: tf.Tensor) => tf.Tensor): StepLoss & { grads: tf.Tensor[] } {
  const vars = s.net.variables();
  let lossResidual: tf.Tensor | null = null;
  let lossBoundary: tf.Tensor | null = null;
  const { value, grads } = tf.variableGrads(() => {
    const x = idx ? tf.gather(s.xColl, idx, 1) : s.xColl;
    const q = idx ? tf.gather(s.qColl, idx, 1) : s.qColl;
    const lr = tf.sum(residualPart(x, q));
    const lb = tf.sum(conditionsLoss(s.net.params(), conditionTermsOf(s.bc), s.problem.inputOrder));
    lossResidual = tf.keep(lr);
    lossBoundary = tf.keep(lb);
    return tf.add(lr, lb) as tf.Scalar;
  }, vars);
  s.state.commit();
  return { loss: value, lossResidual: lossResidual!, lossBoundary: lossBoundary!, grads: vars.map((v) => grads[v.name]!) };
}

/**
 * rel_l2 = ‖u − u*‖₂ / ‖u*‖₂ on the evaluation grid (science.md §2), current parameters. For a system:
 * over every value of its evaluation set, each compared with the output it is of.
 */
export function evalRelL2(s: TrialSetup): number {
  if (s.system) {
    const es = tf.tidy(() => tf.sum(tf.square(tf.sub(selectOutputs(systemValue(s.net.params(), s.xEval), s.system!.evalSel), s.uStar))));
    const v = es.dataSync()[0]!;
    es.dispose();
    return Math.sqrt(v / s.uStarNorm2);
  }
  const e = sqError(s.net.params(), s.xEval, s.uStar);
  const v = e.dataSync()[0]!;
  e.dispose();
  return Math.sqrt(v / s.uStarNorm2);
}

/** snr, snr_layers, grad_order (science.md §5) at the current parameters and current λ. */
export function evalSnr(s: TrialSetup): SnrResult {
  if (!s.split) throw new Error('diagnostics are off (diagnostics.every = 0)');
  if (s.system) {
    const { residual: _r, ...snr } = evalSystemSnr(s);
    return snr;
  }
  return gradientSnr(s.problem, s.net.params(), s.split, s.state.lambda(), s.bc);
}

/** Every diagnostic column null: the values of a row off the diagnostics cadence. */
export function nullDiagnostics(): DiagnosticValues {
  return {
    snr: null, snr_layers: null, grad_order: null, snr_adam: null, res_homogeneity: null,
    saturation_layers: null, entropy_layers: null, lambda_mean: null, lambda_max: null,
  };
}

/**
 * All diagnostic columns (science.md §5) at the current parameters, λ and Adam state:
 * snr, snr_layers, grad_order and — from the same one-pass per-batch gradients — the residual r at
 * all N points for res_homogeneity (null for non-2-D inputs); snr_adam from Adam's moments (null at
 * t = 0); saturation_layers, entropy_layers from one value-only forward pass over the N points, read
 * back a hidden layer at a time; lambda_mean, lambda_max over the N points (1, 1 for vanilla).
 */
export function evalDiagnostics(s: TrialSetup): DiagnosticValues {
  if (!s.split) throw new Error('diagnostics are off (diagnostics.every = 0)');
  const lambda = s.state.lambda();
  const g = s.system ? evalSystemSnr(s) : gradientSnrWithResidual(s.problem, s.net.params(), s.split, lambda, s.bc);
  const layers = hiddenLayerStats(s.net.params(), s.xColl);
  return {
    snr: g.snr,
    snr_layers: g.snr_layers,
    grad_order: g.grad_order,
    snr_adam: adamSnr(s.adam),
    res_homogeneity: s.cells ? residualHomogeneity(g.residual, s.cells) : null,
    saturation_layers: layers.saturation_layers,
    entropy_layers: layers.entropy_layers,
    ...lambdaStats(lambda),
  };
}

/** snr etc. of a system's total loss and |r_i| = sqrt(Σ_e r_{e,i}²) at the N points (worker/trainer/system.ts). */
function evalSystemSnr(s: TrialSetup): SnrResult & { residual: Float32Array } {
  const st = s.state as SystemStrategyState;
  const lambdas = Array.from({ length: s.system!.E }, (_, e) => st.lambdaOf(e));
  return systemGradientSnr(s.system!.problem, s.net.params(), s.split!, lambdas, conditionTermsOf(s.bc));
}

/** The backend to train on: `want` (initialised if it is not the active one), else the active one, else `detectBackend()`. */
export async function resolveBackend(want?: BackendName): Promise<BackendName> {
  const cur = currentBackend();
  if (want) return cur === want ? want : initBackend(want);
  return cur ?? detectBackend();
}

/**
 * Train one trial (science.md §2–§5).
 *
 * Steps k = 0..steps−1. For each step: lr_k (staircase), the batch, λ update (strategy), loss and
 * gradients, then — on logged steps (k % log_every == 0 and the last step) — a MetricRow of the state
 * BEFORE step k's update (for RBA with λ after step k's update; for SA with λ^k, before the ascent that
 * step k's gradient gives, which is applied when step k+1 forms its loss): loss, loss_residual, loss_boundary,
 * wall_seconds (since training start), rel_l2 when k % eval_every == 0 or last, the diagnostic columns
 * (`evalDiagnostics`: snr, snr_layers, grad_order, snr_adam, res_homogeneity, saturation_layers,
 * entropy_layers, lambda_mean, lambda_max) when diagnostics.every > 0 and (k % every == 0 or last),
 * else null; then the Adam update.
 * Checkpoints (`hooks.onCheckpoint`, science.md §7): on logged steps k with train.checkpoint_every > 0
 * and k % checkpoint_every == 0, captured right after the row (same state: before step k's update, λ
 * after step k's update), and a final one after the loop (step = steps_done, the state after the last
 * update; no row is logged for it), unless stopped early.
 * Losses are read back on logged steps only, so a NaN/Inf loss is detected at the next logged step:
 * that row is logged, training stops, and the summary has diverged = true (no exception). With
 * `opts.divergence`, a loss that stays ≥ factor × its running minimum for that many logged rows stops
 * the trial the same way.
 * Deterministic: same config + same backend → identical numbers.
 *
 * @throws Error on an invalid config (unknown problem/strategy, snr_batches not dividing N) or an
 *   unavailable backend; errors thrown by `hooks.onRows` propagate.
 */
export async function trainTrial(config: TrialConfig, hooks: TrainHooks, opts: TrainOptions = {}): Promise<TrainSummary> {
  const backend = await resolveBackend(opts.backend);
  const s = setupTrial(config);
  try {
    const run = new TrialRun(s, hooks, opts, backend);
    for (let k = run.start; k < s.config.train.steps && run.active; k++) {
      if (!run.beforeStep()) break;
      const lr = run.lrAt(k);
      const idxArr = s.sampler ? s.sampler.next() : null;
      const idx = idxArr ? tf.tensor1d(idxArr, 'int32') : null;
      const step = lossAndGrads(s, idx);
      const logged = run.isLogged(k);
      try {
        if (logged) {
          const [loss, lres, lbc] = [step.loss, step.lossResidual, step.lossBoundary].map((t) => t.dataSync()[0]!) as [number, number, number];
          if (!run.logRow(k, lr, idxArr, loss, lres, lbc, s)) break;
        }
        s.adam.step(step.grads, lr);
        run.updated(k);
      } finally {
        tf.dispose([step.loss, step.lossResidual, step.lossBoundary, ...step.grads]);
        idx?.dispose();
      }
      await run.afterStep(logged);
    }
    return await run.finish(s);
  } finally {
    s.dispose();
  }
}

/**
 * The bookkeeping of one trial's run, apart from how its gradients are computed (so `trainTrial` and the
 * fused `trainTrials`, worker/trainer/fused.ts, share it): the learning-rate schedule, logged rows and
 * their flushes, rel_l2 and the diagnostics of logged steps, divergence, checkpoints, progress, the
 * stop hook, resume, and the summary. The caller drives it per step k:
 * `beforeStep()` (false: stopped) → gradients → on logged steps `logRow(…)` (false: diverged, no
 * update) → the Adam update → `updated(k)` → `await afterStep(logged)`; at the end `await finish(s)`.
 * Every method that reads state takes the trial's setup `s` as it is at that point (for a fused trial:
 * its member setup, synchronised from the fused tensors).
 */
export class TrialRun {
  readonly start: number;
  /** False once the trial diverged or was stopped: no more steps. */
  active = true;
  private buffer: MetricRow[] = [];
  private lastFlush = performance.now();
  private readonly flushRows: number;
  private readonly flushMs: number;
  private stepsDone = 0;
  private finalLoss = NaN;
  private finalRel: number | null = null;
  private diverged = false;
  private stopped = false;
  private minLoss = Infinity;
  private explodingRows = 0;
  private t0 = performance.now();
  private ckpt: CheckpointData | null = null;
  private lastCkptStep = -1;
  private readonly ckptEvery: number;
  private readonly cfg: TrialConfig;

  /** Restores `opts.resume` into `s` (throws ResumeError before any hook is called). */
  constructor(
    s: TrialSetup,
    private readonly hooks: TrainHooks,
    private readonly opts: TrainOptions,
    private readonly backend: BackendName,
  ) {
    this.flushRows = opts.flushRows ?? 100;
    this.flushMs = opts.flushMs ?? 1000;
    this.ckptEvery = s.config.train.checkpoint_every ?? 0;
    this.cfg = s.config;
    let start = 0;
    if (opts.resume) {
      const r = restoreTrial(s, opts.resume);
      start = this.stepsDone = this.lastCkptStep = r.step; // the checkpoint of step s exists: not sent again
      if (r.wallSeconds !== null) this.t0 -= r.wallSeconds * 1000;
      if (r.divergence) ({ minLoss: this.minLoss, explodingRows: this.explodingRows } = r.divergence);
      if (r.final) {
        start = s.config.train.steps; // nothing left to train
        ({ loss: this.finalLoss, relL2: this.finalRel, diverged: this.diverged } = r.final);
      }
    }
    this.start = start;
  }

  /** lr of step k (science.md §2 staircase). */
  lrAt(k: number): number {
    const { lr, lr_decay } = this.cfg.train;
    return staircaseLr(lr, lr_decay.rate, lr_decay.every, k);
  }

  /** Whether step k logs a row (k % log_every == 0, or the last step). */
  isLogged(k: number): boolean {
    return k % this.cfg.train.log_every === 0 || k === this.cfg.train.steps - 1;
  }

  /** Polls the stop hook; false (and inactive, stopped) when it says stop. */
  beforeStep(): boolean {
    if (this.hooks.shouldStop?.()) {
      this.stopped = true;
      this.active = false;
    }
    return this.active;
  }

  private async flush(): Promise<void> {
    if (this.buffer.length === 0) return;
    const rows = this.buffer;
    this.buffer = [];
    this.lastFlush = performance.now();
    await this.hooks.onRows(rows);
  }

  /**
   * The row of logged step k from its losses and the state `s` before step k's update (rel_l2 and the
   * diagnostics computed here when due), the checkpoint of that state when due, and the divergence
   * rules. `relL2`: rel_l2 of this state computed by the caller (fused trials evaluate theirs in one
   * pass); used when rel_l2 is due, else ignored; absent: computed here (`evalRelL2`) when due.
   * @returns false when the trial diverged (it is then inactive; step k is not applied).
   */
  logRow(k: number, lr: number, idxArr: Int32Array | null, loss: number, lres: number, lbc: number, s: TrialSetup, relL2?: number): boolean {
    const { steps, eval_every } = this.cfg.train;
    const diagEvery = this.cfg.diagnostics.every;
    const last = k === steps - 1;
    const finite = Number.isFinite(loss);
    const rel_l2 = !s.hasReference ? null : k % eval_every === 0 || last || !finite ? (relL2 ?? evalRelL2(s)) : null;
    const diag = diagEvery > 0 && (k % diagEvery === 0 || last) && finite ? evalDiagnostics(s) : nullDiagnostics();
    this.buffer.push({ step: k, lr, loss, loss_residual: lres, loss_boundary: lbc, wall_seconds: (performance.now() - this.t0) / 1000, rel_l2, ...diag });
    if (this.hooks.onCheckpoint && this.ckptEvery > 0 && k % this.ckptEvery === 0 && k !== this.lastCkptStep) {
      // Resume bookkeeping (resume.ts): this row's wall clock and the divergence tracking before it.
      const divergence = JSON.stringify({ min_loss: Number.isFinite(this.minLoss) ? this.minLoss : null, exploding_rows: this.explodingRows });
      this.ckpt = captureCheckpoint(s, k, { final: false, lr, batch: idxArr, extra: { wall_seconds: String(this.buffer[this.buffer.length - 1]!.wall_seconds), divergence } });
    }
    this.finalLoss = loss;
    if (rel_l2 !== null) this.finalRel = rel_l2;
    const div = this.opts.divergence;
    if (finite) {
      this.minLoss = Math.min(this.minLoss, loss);
      this.explodingRows = div && loss >= div.factor * this.minLoss ? this.explodingRows + 1 : 0;
    }
    if (!finite || (div && this.explodingRows >= div.rows)) {
      this.diverged = true;
      this.active = false;
      return false;
    }
    return true;
  }

  /** Step k's update was applied. */
  updated(k: number): void {
    this.stepsDone = k + 1;
  }

  /** After step k: a checkpoint captured there goes out (after every row before it), progress, flushes. */
  async afterStep(logged: boolean): Promise<void> {
    if (this.ckpt) {
      const c = this.ckpt;
      this.ckpt = null;
      this.lastCkptStep = c.step;
      // Every row up to this step goes out before the checkpoint: a run killed after sending it has sent
      // every row a resume from it does not recompute (the collector copies them, steps < s).
      await this.flush();
      await this.hooks.onCheckpoint!(c);
    }
    if (logged && this.active) {
      this.hooks.onProgress?.(this.stepsDone, this.cfg.train.steps);
      if (this.buffer.length >= this.flushRows || performance.now() - this.lastFlush >= this.flushMs) await this.flush();
    }
  }

  /** Flushes, sends a pending and the final checkpoint (state `s` after the last update) and returns the summary. */
  async finish(s: TrialSetup): Promise<TrainSummary> {
    await this.flush();
    // A checkpoint captured on the step that diverged (the loop broke before sending it).
    if (this.ckpt) {
      const c = this.ckpt;
      this.ckpt = null;
      this.lastCkptStep = c.step;
      await this.hooks.onCheckpoint!(c);
    }
    // The final checkpoint: the state after the last update (not a logged row), unless stopped early or
    // already sent (divergence at a checkpoint step: nothing was updated after it).
    if (this.hooks.onCheckpoint && !this.stopped && this.lastCkptStep !== this.stepsDone) {
      // The summary rides along: a run resumed from this checkpoint has nothing to train and reports it (resume.ts).
      const extra = { final_loss: String(this.finalLoss), final_rel_l2: this.finalRel === null ? '' : String(this.finalRel), diverged: String(this.diverged) };
      await this.hooks.onCheckpoint(captureCheckpoint(s, this.stepsDone, { final: true, lr: this.lrAt(this.stepsDone), batch: null, extra }));
    }
    this.hooks.onProgress?.(this.stepsDone, this.cfg.train.steps);
    this.active = false;
    return {
      steps_done: this.stepsDone,
      final_loss: this.finalLoss,
      final_rel_l2: this.finalRel,
      diverged: this.diverged,
      stopped: this.stopped,
      backend: this.backend,
      wall_seconds: (performance.now() - this.t0) / 1000,
      first_step: this.start,
    };
  }
}
