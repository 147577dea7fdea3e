/**
 * Trial fusion (issue 5): K same-shaped trials trained as one batched computation with a leading trial
 * axis (the group axis G of network.ts), each trial keeping its own optimizer state, learning-rate
 * schedule, strategy state, mini-batches and metrics stream.
 */
import type { TrialConfig } from '../../schemas/sweep.js';
import type { BackendName } from './backend.js';
import { trainTrial, type TrainHooks, type TrainOptions, type TrainSummary } from './train.js';

/**
 * The part of a trial config fused trials share: the whole problem (its collocation/boundary counts,
 * coefficients), the model, the batch size and the step schedule (steps, log_every, eval_every,
 * checkpoint_every) and the diagnostics settings. What may differ: lr, lr_decay, strategy, seed.
 */
export function fusionKey(config: TrialConfig): string {
  const { steps, batch_size, log_every, eval_every, checkpoint_every } = config.train;
  return JSON.stringify([config.problem, config.model, { steps, batch_size, log_every, eval_every, checkpoint_every }, config.diagnostics]);
}

/**
 * How many trials of this config a slot should train fused on `backend` (1 = never fuse). Measured
 * rule, see `FUSION_RULE`.
 */
export function fusionLimit(config: TrialConfig, backend: BackendName): number {
  if (backend !== 'wasm' && backend !== 'cpu') return 1;
  const n = config.train.batch_size === 'full' ? config.problem.n_collocation : Math.min(config.train.batch_size, config.problem.n_collocation);
  return n * config.model.width <= FUSION_RULE.maxPointsTimesWidth ? FUSION_RULE.maxTrials : 1;
}

/** The measured fusion rule (placeholder values until measured). */
export const FUSION_RULE = { maxPointsTimesWidth: 16_384, maxTrials: 4 };

/**
 * Trains trials `configs[i]` with `hooks[i]`, `opts[i]` (all with the same `fusionKey`; no `resume`
 * when there is more than one). A trial whose setup or hooks throw gets its Error in the result
 * array; the others go on.
 */
export async function trainTrials(configs: TrialConfig[], hooks: TrainHooks[], opts: TrainOptions[]): Promise<Array<TrainSummary | Error>> {
  const out: Array<TrainSummary | Error> = [];
  for (let i = 0; i < configs.length; i++) {
    try {
      out.push(await trainTrial(configs[i]!, hooks[i]!, opts[i] ?? {}));
    } catch (e) {
      out.push(e instanceof Error ? e : new Error(String(e)));
    }
  }
  return out;
}
