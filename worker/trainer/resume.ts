/**
 * Resuming a trial from one of its checkpoints (science.md §7; written by worker/trainer/checkpoint.ts).
 *
 * A periodic checkpoint of step s holds the state step s's logged row was computed from: parameters,
 * Adam moments and step count t = s (before step s's update), λ as used in step s's loss (for `rba`:
 * after step s's λ update; for `sa`: λ^s, before the ascent step s's gradient gives) and, for `sa`, the
 * λ Adam's moments and per-point counts (`sa.adam.*`). `restoreTrial` puts a freshly built TrialSetup
 * (`setupTrial`, same config) into that state so that `trainTrial` continues with step s:
 *
 *  - parameters and Adam m, v, t: assigned from the float32 / int32 tensors (exact);
 *  - λ: `rba` — λ is taken as is for step s (its update of step s is already in it: the first
 *    `batchWeights` after a resume returns the checkpoint λ of the batch, not γλ + η*·|r|/max|r|), then
 *    updates as usual from step s + 1; `sa` — λ^s with the λ Adam state and step count restored, so the
 *    ascent of step s and later is the uninterrupted run's (without the `sa.adam.*` tensors, e.g. a
 *    checkpoint from an older phasemap, the λ Adam restarts from m = v = 0, t = 0: λ then follows a
 *    different trajectory from step s + 1 on, the row of step s itself is still exact); `vanilla` — λ ≡ 1;
 *  - the learning-rate schedule: lr_k depends on k only (staircase, science.md §2), so nothing to restore;
 *  - mini-batches: the seeded sampler (stream 'batches') skips the s batches of steps 0..s−1
 *    (`BatchSampler.skip`), and the batch it will draw for step s must equal the checkpoint's `batch`;
 *  - the SNR split, collocation/boundary data, evaluation grid: rebuilt from the config by `setupTrial`
 *    (deterministic); the checkpoint's `collocation` must equal them bit for bit;
 *  - divergence tracking (`TrainOptions.divergence`): the running minimum loss and the count of
 *    exploding rows before step s's row (metadata `divergence`, absent: start afresh);
 *  - wall clock: the row's `wall_seconds` continues from the checkpoint's (metadata `wall_seconds`).
 *
 * Hence on the same backend a resumed run reproduces the uninterrupted run's rows from step s on bit for
 * bit (every number is the same float32 op sequence on the same float32 inputs); `wall_seconds` aside.
 *
 * A `final` checkpoint (state after the last update, step = steps done) leaves nothing to train: the
 * resumed run logs no row and reports the summary stored in its metadata (final_loss, final_rel_l2,
 * diverged); its `first_step` is train.steps, so every row of the earlier attempt is carried over.
 */
import * as tf from '@tensorflow/tfjs-core';
import { decodeSafetensors, type DecodedSafetensors, type SafetensorsTensor } from '../../schemas/safetensors.js';
import type { TrialConfig } from '../../schemas/sweep.js';
import type { StrategyResume, StrategyState } from './strategies.js';
import type { TrialSetup } from './train.js';

/** Where a trial resumes from (`TrainOptions.resume`). */
export interface ResumeOptions {
  /** The checkpoint: safetensors bytes (DIR/checkpoints/<trial_id>/step-<n>.safetensors) or already decoded. */
  checkpoint: Uint8Array | DecodedSafetensors;
  /** When given, the checkpoint's `trial_id` metadata (if set) must equal it. */
  trialId?: string;
}

/**
 * A checkpoint that cannot resume this trial: not a checkpoint, another trial or config, tensors of the
 * wrong shape, a sampler position that does not match. Thrown before any row is logged, so the caller
 * may train the trial from step 0 instead.
 */
export class ResumeError extends Error {
  override name = 'ResumeError';
}

/** What `restoreTrial` restored, for `trainTrial`. */
export interface RestoredState {
  /** The checkpoint's step s: the first step the resumed run trains and logs. */
  step: number;
  /** For a `final` checkpoint: the finished run's summary (nothing is trained); else null. */
  final: { loss: number; relL2: number | null; diverged: boolean } | null;
  /** `wall_seconds` of step s's row in the run that wrote the checkpoint, or null if not recorded. */
  wallSeconds: number | null;
  /** Divergence tracking before step s's row (minLoss = +Infinity before the first row), or null. */
  divergence: { minLoss: number; explodingRows: number } | null;
}

/**
 * The first difference between two JSON values, as `path: checkpoint …, trial …`, or null when equal.
 * A missing key and an `undefined` one are the same.
 */
export function configDifference(ckpt: unknown, trial: unknown, path = 'config'): string | null {
  if (ckpt === trial) return null;
  const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null;
  if (isObj(ckpt) && isObj(trial) && Array.isArray(ckpt) === Array.isArray(trial)) {
    const keys = new Set([...Object.keys(ckpt), ...Object.keys(trial)]);
    for (const k of [...keys].sort()) {
      const d = configDifference(ckpt[k], trial[k], Array.isArray(ckpt) ? `${path}[${k}]` : path === 'config' ? k : `${path}.${k}`);
      if (d) return d;
    }
    return null;
  }
  const show = (v: unknown) => (v === undefined ? '(absent)' : JSON.stringify(v));
  return `${path}: checkpoint ${show(ckpt)}, trial ${show(trial)}`;
}

/** RBA state resumed at a step whose λ update is already in λ: that step uses λ as is (see module comment). */
function resumedRba(inner: StrategyState): StrategyState {
  let skip = true;
  return {
    batchWeights(r: tf.Tensor, idx: tf.Tensor | null): tf.Tensor | null {
      if (!skip) return inner.batchWeights(r, idx);
      const lam = inner.lambda();
      if (!lam) return null;
      const nb = r.shape[r.shape.length - 1]!;
      const lamB = idx ? tf.gather(lam, idx) : lam;
      return tf.broadcastTo(tf.reshape(lamB, [1, nb]), r.shape);
    },
    commit(): void {
      if (skip) {
        skip = false;
        return;
      }
      inner.commit();
    },
    lambda: () => inner.lambda(),
    dispose: () => inner.dispose(),
  };
}

const nonNeg = /^[0-9]{1,15}$/;

/**
 * Puts a freshly built TrialSetup (`setupTrial(config)`, nothing trained yet) into the state of the
 * checkpoint `resume.checkpoint` (science.md §7; see the module comment for what is restored and how):
 * assigns the parameters and Adam state, replaces `s.state` (the strategy state, λ) and skips the
 * mini-batch sampler to step s.
 *
 * @returns the step s to continue with and the bookkeeping `trainTrial` restores.
 * @throws ResumeError (nothing trained or logged yet; `s` may be partly restored: dispose it) when the
 *   bytes are not a checkpoint; its `trial_id` is not `resume.trialId`; its `config` differs from
 *   `s.config` (the message names the first differing field, e.g. `train.lr: checkpoint 0.01, trial
 *   0.02`); its step is not an integer in [0, train.steps] (< steps unless final); a tensor is missing or
 *   has another shape; adam.step ≠ step (periodic checkpoints); its collocation points differ from the
 *   rebuilt ones; or its `batch` is not the batch the seeded sampler draws at step s.
 */
export function restoreTrial(s: TrialSetup, resume: ResumeOptions): RestoredState {
  let ck: DecodedSafetensors;
  if (resume.checkpoint instanceof Uint8Array) {
    try {
      ck = decodeSafetensors(resume.checkpoint);
    } catch (e) {
      throw new ResumeError(`resume: not a checkpoint (${(e as Error).message})`);
    }
  } else ck = resume.checkpoint;
  const meta = ck.metadata;
  const { config } = s;
  const steps = config.train.steps;
  if (resume.trialId !== undefined && meta.trial_id && meta.trial_id !== resume.trialId)
    throw new ResumeError(`resume: the checkpoint is of trial ${meta.trial_id}, not ${resume.trialId}`);
  if (meta.config === undefined) throw new ResumeError('resume: the checkpoint has no config metadata');
  let ckConfig: TrialConfig;
  try {
    ckConfig = JSON.parse(meta.config) as TrialConfig;
  } catch (e) {
    throw new ResumeError(`resume: the checkpoint's config metadata is not JSON (${(e as Error).message})`);
  }
  const diff = configDifference(ckConfig, config);
  if (diff) throw new ResumeError(`resume: the checkpoint's config does not match the trial's: ${diff}`);
  const final = meta.final === 'true';
  if (meta.step === undefined || !nonNeg.test(meta.step)) throw new ResumeError(`resume: checkpoint step ${JSON.stringify(meta.step)} is not an integer >= 0`);
  const step = Number(meta.step);
  if (step > steps || (!final && step >= steps)) throw new ResumeError(`resume: checkpoint step ${step} is outside the trial's ${steps} steps`);

  const get = (name: string, shape: readonly number[], dtype: SafetensorsTensor['dtype'] = 'F32'): SafetensorsTensor => {
    const t = ck.tensors.get(name);
    if (!t) throw new ResumeError(`resume: the checkpoint has no tensor ${name}`);
    if (t.dtype !== dtype || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new ResumeError(`resume: tensor ${name} is ${t.dtype}[${t.shape}], expected ${dtype}[${shape}]`);
    return t;
  };

  // Problem data: rebuilt from the config; the checkpoint's must be the same points.
  const coll = get('collocation', [s.n, s.d]).data;
  const mine = Float32Array.from(s.points);
  for (let i = 0; i < mine.length; i++)
    if (!Object.is(coll[i], mine[i])) throw new ResumeError(`resume: the checkpoint's collocation point ${Math.floor(i / s.d)} differs from the trial's (another phasemap build?)`);

  // Parameters, then Adam (same order as net.variables(): weights then biases).
  const names = [...s.net.weights.map((_w, l) => `net.${l}.weight`), ...s.net.biases.map((_b, l) => `net.${l}.bias`)];
  const vars = s.net.variables();
  const values = vars.map((v, i) => get(names[i]!, v.shape).data);
  const ms = vars.map((v, i) => get(`adam.m.${names[i]!}`, v.shape).data);
  const vs = vars.map((v, i) => get(`adam.v.${names[i]!}`, v.shape).data);
  const t = get('adam.step', [1], 'I32').data[0]!;
  if (!final && t !== step) throw new ResumeError(`resume: adam.step ${t} differs from the checkpoint step ${step}`);
  const lambda = get('lambda', s.system ? [s.n, s.system.E] : [s.n]).data as Float32Array;
  tf.tidy(() => {
    vars.forEach((v, i) => v.assign(tf.tensor(values[i]!, v.shape, 'float32')));
    s.adam.m.forEach((m, i) => m.assign(tf.tensor(ms[i]!, m.shape, 'float32')));
    s.adam.v.forEach((m, i) => m.assign(tf.tensor(vs[i]!, m.shape, 'float32')));
  });
  s.adam.t = t;

  // Strategy state (λ).
  const name = config.strategy.name;
  if (name !== 'vanilla') {
    const sr: StrategyResume = { steps: step };
    if (name === 'sa' && ck.tensors.has('sa.adam.m')) {
      sr.lambdaAdam = {
        m: get('sa.adam.m', [s.n]).data as Float32Array,
        v: get('sa.adam.v', [s.n]).data as Float32Array,
        t: get('sa.adam.t', [s.n], 'I32').data as Int32Array,
      };
    }
    const next = s.strategy.init(s.n, Float32Array.from(lambda), sr);
    s.state.dispose();
    // A system's state skips the resumed rba step per equation itself (system.ts systemStrategy).
    s.state = name === 'rba' && !s.system ? resumedRba(next) : next;
  }

  // Mini-batch stream: at step s, and drawing step s's batch next.
  if (s.sampler && !final) {
    s.sampler.skip(step);
    const want = ck.tensors.get('batch');
    if (want) {
      const got = s.sampler.peek();
      if (want.data.length !== got.length || got.some((x, i) => x !== want.data[i]))
        throw new ResumeError(`resume: the checkpoint's batch of step ${step} is not the one the seeded sampler draws (another phasemap build?)`);
    }
  }

  const num = (k: string): number | null => {
    const v = meta[k];
    if (v === undefined || v === '') return null;
    const x = Number(v);
    return Number.isNaN(x) && v !== 'NaN' ? null : x;
  };
  let divergence: RestoredState['divergence'] = null;
  if (meta.divergence) {
    try {
      const d = JSON.parse(meta.divergence) as { min_loss: number | null; exploding_rows: number };
      divergence = { minLoss: d.min_loss ?? Infinity, explodingRows: d.exploding_rows ?? 0 };
    } catch {
      divergence = null;
    }
  }
  return {
    step,
    final: final
      ? { loss: num('final_loss') ?? NaN, relL2: num('final_rel_l2'), diverged: meta.diverged !== undefined ? meta.diverged === 'true' : step < steps }
      : null,
    wallSeconds: num('wall_seconds'),
    divergence,
  };
}
