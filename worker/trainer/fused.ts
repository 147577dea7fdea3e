/**
 * Trial fusion (issue 5): K same-shaped trials trained as one batched computation with a leading trial
 * axis — the group axis G of network.ts, here G = K — each trial keeping its own optimizer state,
 * learning-rate schedule, strategy state (λ), mini-batches, diagnostics, checkpoints and metrics
 * stream.
 *
 * Trial i's parameters are slice i of the fused weights [K, in, out] and biases [K, out]; its loss
 * L_i (science.md §2) is computed on its own collocation, boundary and initial points, and the fused
 * step differentiates Σ_i L_i, whose gradient with respect to slice i is ∂L_i/∂θ_i: nothing mixes
 * across trials (every matmul is per trial, every reduction is over points). Adam is elementwise, with
 * trial i's learning rate on slice i. So a fused trial computes what it would alone, up to float32
 * rounding (per-trial batched matmuls may sum in another order).
 *
 * Logged rows, rel_l2, the diagnostics and checkpoints are the trial's own (`TrialRun`, train.ts), read
 * from its own setup after its parameters and Adam moments are copied back from the fused tensors.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { TrialConfig } from '../../schemas/sweep.js';
import { Adam } from './adam.js';
import { blasStatus, type BackendName } from './backend.js';
import { conditionsLoss, residualLoss, sqError, type ConditionTerm } from './loss.js';
import { mlpForward, type MlpParams } from './network.js';
import { stopGradient, vanilla } from './strategies.js';
import { configIsSystem } from './problems.js';
import { resolveBackend, setupTrial, trainTrial, TrialRun, type TrainHooks, type TrainOptions, type TrainSummary, type TrialSetup } from './train.js';

/**
 * The part of a trial config fused trials share: the whole problem (its collocation/boundary counts,
 * coefficients), the model, the batch size and the step schedule (steps, log_every, eval_every,
 * checkpoint_every) and the diagnostics settings. What may differ: lr, lr_decay, strategy, seed.
 */
export function fusionKey(config: TrialConfig): string {
  // A system of equations (several outputs or residual terms) trains alone: its key is its whole config.
  if (configIsSystem(config.problem)) return JSON.stringify(['system', config]);
  const { steps, batch_size, log_every, eval_every, checkpoint_every } = config.train;
  return JSON.stringify([config.problem, config.model, { steps, batch_size, log_every, eval_every, checkpoint_every }, config.diagnostics]);
}

/**
 * How many trials of this config a slot should train fused on `backend` (1 = never fuse). Measured
 * rule, see `FUSION_RULE`.
 */
export function fusionLimit(config: TrialConfig, backend: BackendName): number {
  if (backend !== 'wasm' && backend !== 'cpu') return 1;
  if (configIsSystem(config.problem)) return 1;
  const n = config.train.batch_size === 'full' ? config.problem.n_collocation : Math.min(config.train.batch_size, config.problem.n_collocation);
  const limit = backend === 'wasm' && blasStatus().available ? FUSION_RULE.maxPointsTimesWidthBlas : FUSION_RULE.maxPointsTimesWidth;
  return n * config.model.width <= limit ? FUSION_RULE.maxTrials : 1;
}

/**
 * The measured fusion rule (wasm/cpu): fuse up to `maxTrials` trials when batch points × width ≤
 * `maxPointsTimesWidthBlas` (wasm with the native BLAS matmuls, backend.ts) or `maxPointsTimesWidth`
 * (wasm's own matmuls, cpu). Measured with `npm run bench -- --only fusion` (2-core Xeon, K = 4,
 * helmholtz2d depth 3, full batch). Wasm matmuls: speed-up of fused over one-after-the-other
 * 1.1–1.25× at N × width ≤ 256 × 20, ~1.0× at 512 × 20 and 256 × 50, 0.8–0.95× above (the per-trial
 * matmuls and the per-point JS loops do not shrink when fused; what fusion saves is per-kernel
 * overhead, which dominates only small steps). Native addon (OpenBLAS matmuls, C stream loops), with a
 * fused step dispatching about as many tfjs kernels as an unfused one: 1.3–2.3× (medians) up to
 * 512 × 20 and at 256 × 32, 1.3–1.4× at 1,024 × 20, 512 × 32 and 256 × 50 (so the limit is
 * 20,480), 1.0–1.1× above (a fused step there is compute, which grows with the trials). On tensorflow (GPU) slots fusion
 * is not used (1): not measured there.
 */
export const FUSION_RULE = { maxPointsTimesWidth: 5_120, maxPointsTimesWidthBlas: 20_480, maxTrials: 4 };

/** One trial of a fused run. */
interface Member {
  s: TrialSetup;
  run: TrialRun;
  /** Set when its hooks threw: the trial ends with this error, the others go on. */
  error: Error | null;
  /** Its setup holds its final state (copied when it left the group: stopped, diverged). */
  settled: boolean;
}

/** The fused tensors of K trials (leading axis K everywhere). */
interface Fused {
  K: number;
  n: number;
  weights: tf.Variable[];
  biases: tf.Variable[];
  adam: Adam;
  xColl: tf.Tensor;
  qColl: tf.Tensor;
  /** xColl as [K·N, d] and qColl as [K·N] (the mini-batches' gathers). */
  xRows: tf.Tensor;
  qRows: tf.Tensor;
  terms: ConditionTerm[];
  dispose(): void;
}

/** Stacks the members' initial parameters, points and condition sets; a fresh Adam over the stack. */
function fuse(members: Member[]): Fused {
  const ss = members.map((m) => m.s);
  const s0 = ss[0]!;
  const K = ss.length;
  const weights = s0.net.weights.map((_, l) => tf.tidy(() => tf.variable(tf.stack(ss.map((s) => s.net.weights[l]!)), true)));
  const biases = s0.net.biases.map((_, l) => tf.tidy(() => tf.variable(tf.stack(ss.map((s) => s.net.biases[l]!)), true)));
  const adam = new Adam([...weights, ...biases]);
  const xColl = tf.concat(ss.map((s) => s.xColl), 0);
  const qColl = tf.concat(ss.map((s) => s.qColl), 0);
  const xRows = tf.reshape(xColl, [K * s0.n, s0.d]);
  const qRows = tf.reshape(qColl, [K * s0.n]);
  const terms = s0.bc.terms.map((t, j) => ({ ...t, x: tf.concat(ss.map((s) => s.bc.terms[j]!.x), 0), g: tf.concat(ss.map((s) => s.bc.terms[j]!.g), 0) }));
  return {
    K, n: s0.n, weights, biases, adam, xColl, qColl, xRows, qRows, terms,
    dispose() {
      tf.dispose([...weights, ...biases, xColl, qColl, xRows, qRows, ...terms.flatMap((t) => [t.x, t.g])]);
      adam.dispose();
    },
  };
}

/** Copies trial i's slice of the fused parameters (and, with `moments`, Adam's m, v and t) into its own setup. */
function syncMember(f: Fused, i: number, s: TrialSetup, moments: boolean): void {
  const sliceInto = (src: tf.Tensor, dst: tf.Variable) => dst.assign(tf.reshape(tf.slice(src, [i, ...src.shape.slice(1).map(() => 0)], [1, ...src.shape.slice(1)]), dst.shape));
  tf.tidy(() => {
    const own = s.net.variables();
    const fused = [...f.weights, ...f.biases];
    fused.forEach((v, j) => sliceInto(v, own[j]!));
    if (moments) {
      f.adam.m.forEach((v, j) => sliceInto(v, s.adam.m[j]!));
      f.adam.v.forEach((v, j) => sliceInto(v, s.adam.v[j]!));
    }
  });
  if (moments) s.adam.t = f.adam.t;
}

/**
 * rel_l2 (science.md §2) of every trial at the fused parameters, in one value-only pass over the
 * evaluation grid (the same grid and u* for every trial: they share the problem config).
 * @param s0 any member's setup (its xEval [1, M, d], uStar [M], Σ u*²). @returns K values.
 */
function fusedRelL2(f: Fused, s0: TrialSetup): number[] {
  const e = tf.tidy(() => sqError({ weights: f.weights, biases: f.biases }, tf.tile(s0.xEval, [f.K, 1, 1]), s0.uStar));
  const v = e.dataSync();
  e.dispose();
  return Array.from(v, (x) => Math.sqrt(x / s0.uStarNorm2));
}

/**
 * One fused gradient evaluation (`lossAndGrads` for K trials): each trial's strategy λ update on its
 * own batch (committed before returning), its loss L_i = mean (λ r)² + its condition terms, and the
 * gradients of Σ_i L_i with respect to the fused variables (weights then biases; slice i = ∂L_i/∂θ_i).
 *
 * Only what is differentiated runs on the gradient tape (every taped kernel also copies the inputs
 * its gradient needs): the batch's points are gathered before it, and the members' λ (each from its
 * own row of r) come from one stop-gradient op. A vanilla member's λ ≡ 1 needs no strategy call.
 * @param batches trial i's mini-batch indices (int32 [n_b], into its own N points) or null (full batch).
 * @returns losses [3, K] (rows: L, residual term, condition terms) and the gradients; caller disposes.
 */
function fusedLossAndGrads(f: Fused, members: Member[], batches: Array<Int32Array | null>): { losses: tf.Tensor; grads: tf.Tensor[] } {
  const K = f.K;
  const problem = members[0]!.s.problem;
  const params: MlpParams = { weights: f.weights, biases: f.biases };
  const weighted = members.map((m) => m.s.strategy !== vanilla);
  const idx = batches.map((b, i) => (b && weighted[i] ? tf.tensor1d(b, 'int32') : null));
  const points = batches[0] ? gatherBatches(f, batches as Int32Array[]) : null;
  const x = points ? points.x : f.xColl;
  const q = points ? points.q : f.qColl;
  let losses: tf.Tensor | null = null;
  try {
    const vars = [...f.weights, ...f.biases];
    const { value, grads } = tf.variableGrads(() => {
      const r = problem.residual(mlpForward(params, x, problem.derivs, problem.inputOrder), q, x); // [K, n_b]
      const lam = weighted.some((w) => w)
        ? stopGradient(r, (ri) => {
            const nb = ri.shape[1]!;
            const lams = members.map((m, i) => (weighted[i] ? m.s.state.batchWeights(K === 1 ? ri : tf.slice(ri, [i, 0], [1, -1]), idx[i]!) : null) ?? tf.ones([1, nb]));
            return K === 1 ? lams[0]! : tf.concat(lams, 0);
          })
        : null;
      const lr = residualLoss(r, lam); // [K]
      const lb = conditionsLoss(params, f.terms, problem.inputOrder); // [K]
      const total = tf.add(lr, lb);
      losses = tf.keep(tf.stack([total, lr, lb]));
      return tf.sum(total) as tf.Scalar;
    }, vars);
    value.dispose();
    for (const m of members) m.s.state.commit();
    return { losses: losses!, grads: vars.map((v) => grads[v.name]!) };
  } finally {
    for (const t of idx) t?.dispose();
    if (points) tf.dispose([points.x, points.q]);
  }
}

/**
 * Trial i's mini-batch `batches[i]` of its own points: x [K, n_b, d], q [K, n_b], one gather each from
 * the points as N·K rows by [K, n_b] indices (row i·N + j is trial i's point j).
 */
function gatherBatches(f: Fused, batches: Int32Array[]): { x: tf.Tensor; q: tf.Tensor } {
  const nb = batches[0]!.length;
  const flat = new Int32Array(f.K * nb);
  batches.forEach((b, i) => {
    for (let j = 0; j < nb; j++) flat[i * nb + j] = i * f.n + b[j]!;
  });
  return tf.tidy(() => {
    const rows = tf.tensor2d(flat, [f.K, nb], 'int32');
    return { x: tf.gather(f.xRows, rows), q: tf.gather(f.qRows, rows) };
  });
}

/**
 * Trains trials `configs[i]` with `hooks[i]`, `opts[i]` as one fused computation (module comment):
 * every trial gets exactly what `trainTrial` would give it (its rows, checkpoints, progress, stop hook,
 * divergence rule, summary), up to float32 rounding. One config: `trainTrial` itself (resume allowed).
 * A trial whose setup or hooks throw, or that asks for `resume` in a group, gets its Error in the
 * result array and leaves the group; a diverged or stopped trial leaves the group (the others go on).
 * @throws Error when the configs do not share one `fusionKey` (nothing is trained).
 */
export async function trainTrials(configs: TrialConfig[], hooks: TrainHooks[], opts: TrainOptions[]): Promise<Array<TrainSummary | Error>> {
  if (configs.length === 1) {
    try {
      return [await trainTrial(configs[0]!, hooks[0]!, opts[0] ?? {})];
    } catch (e) {
      return [asError(e)];
    }
  }
  if (configs.some((c) => configIsSystem(c.problem))) {
    // Systems of equations are never fused (their general path has no fused form): one after another.
    const out: Array<TrainSummary | Error> = [];
    for (let i = 0; i < configs.length; i++) {
      try {
        out.push(await trainTrial(configs[i]!, hooks[i]!, opts[i] ?? {}));
      } catch (e) {
        out.push(asError(e));
      }
    }
    return out;
  }
  const key = fusionKey(configs[0]!);
  configs.forEach((c, i) => {
    if (fusionKey(c) !== key) throw new Error(`trainTrials: trial ${i} does not share the fusion key of trial 0 (problem, model, batch size, step schedule, diagnostics)`);
  });
  const backend = await resolveBackend(opts[0]?.backend);
  const results: Array<TrainSummary | Error> = [];
  const members: Member[] = [];
  const slot: Array<Member | null> = [];
  try {
    for (let i = 0; i < configs.length; i++) {
      let s: TrialSetup | null = null;
      try {
        if (opts[i]?.resume) throw new Error('trainTrials: a trial resuming from a checkpoint trains alone, not fused');
        s = setupTrial(configs[i]!);
        const m: Member = { s, run: new TrialRun(s, hooks[i]!, opts[i] ?? {}, backend), error: null, settled: false };
        members.push(m);
        slot.push(m);
      } catch (e) {
        s?.dispose();
        slot.push(null);
        results[i] = asError(e);
      }
    }
    if (members.length > 0) await trainFused(members);
    for (let i = 0; i < configs.length; i++) {
      const m = slot[i];
      if (!m) continue;
      if (m.error) results[i] = m.error;
      else {
        try {
          results[i] = await m.run.finish(m.s);
        } catch (e) {
          results[i] = asError(e);
        }
      }
    }
    return results;
  } finally {
    for (const m of members) m.s.dispose();
  }
}

/** The fused training loop; leaves every member's setup synchronised to its final state. */
async function trainFused(members: Member[]): Promise<void> {
  const f = fuse(members);
  const cfg = members[0]!.s.config;
  const { steps, eval_every } = cfg.train;
  const diagEvery = cfg.diagnostics.every;
  const ckptEvery = cfg.train.checkpoint_every ?? 0;
  const live = (m: Member) => m.run.active && !m.error;
  const settle = (m: Member, i: number) => {
    if (!m.settled) syncMember(f, i, m.s, true);
    m.settled = true;
  };
  const fail = (m: Member, e: unknown) => {
    m.error = asError(e);
    m.run.active = false;
  };
  try {
    for (let k = 0; k < steps; k++) {
      // A trial that leaves the group keeps the state it left with (before step k's update).
      members.forEach((m, i) => {
        if (live(m) && !m.run.beforeStep()) settle(m, i);
      });
      const active = members.filter(live);
      if (active.length === 0) break;
      const lrs = members.map((m) => (live(m) ? m.run.lrAt(k) : 0));
      const batches = members.map((m) => (m.s.sampler ? m.s.sampler.next() : null));
      const step = fusedLossAndGrads(f, members, batches);
      const logged = members[0]!.run.isLogged(k);
      try {
        if (logged) {
          const v = step.losses.dataSync();
          const K = members.length;
          const last = k === steps - 1;
          // The member's own setup is read for its diagnostics and checkpoints only; rel_l2 of all in one pass.
          const due = (diagEvery > 0 && (k % diagEvery === 0 || last)) || (ckptEvery > 0 && k % ckptEvery === 0);
          const evalDue = k % eval_every === 0 || last || members.some((m, i) => live(m) && !Number.isFinite(v[i]!));
          const rel = evalDue ? fusedRelL2(f, members[0]!.s) : null;
          members.forEach((m, i) => {
            if (!live(m)) return;
            const loss = v[i]!;
            try {
              if (due) syncMember(f, i, m.s, true);
              if (!m.run.logRow(k, lrs[i]!, batches[i]!, loss, v[K + i]!, v[2 * K + i]!, m.s, rel?.[i])) settle(m, i);
            } catch (e) {
              fail(m, e);
            }
          });
        }
        // Trials that left the group keep their parameters (learning rate 0; their Adam moments still move, unread).
        const K = members.length;
        const lrv = members.map((m, i) => (live(m) ? lrs[i]! : 0));
        const wl = tf.tensor3d(lrv, [K, 1, 1]);
        const bl = tf.tensor2d(lrv, [K, 1]);
        f.adam.step(step.grads, [...f.weights.map(() => wl), ...f.biases.map(() => bl)]);
        tf.dispose([wl, bl]);
        for (const m of members) if (live(m)) m.run.updated(k);
      } finally {
        tf.dispose([step.losses, ...step.grads]);
      }
      for (const m of members) {
        if (!live(m)) continue;
        try {
          await m.run.afterStep(logged);
        } catch (e) {
          fail(m, e);
        }
      }
    }
    members.forEach((m, i) => settle(m, i));
  } finally {
    f.dispose();
  }
}

function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}
