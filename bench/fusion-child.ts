/**
 * Child process of the fusion benchmark (bench/fusion.ts): for one configuration, K trials (seeds
 * 1..K, learning rates 1e-3·(1..K), strategies alternating vanilla / rba) trained `steps` steps each,
 * alone one after the other (`trainTrial`) and fused (`trainTrials`), interleaved `runs` times after a
 * warm-up. Prints {alone_ms, fused_ms} per run: wall ms per trial-step.
 *
 *   node dist/bench/fusion-child.js '{"config": TrialConfig, "k": 4, "runs": 5}'
 */
import type { TrialConfig } from '../schemas/sweep.js';
import { initBackend, trainTrial, trainTrials, type TrainHooks } from '../worker/trainer/index.js';

export interface FusionChildInput {
  config: TrialConfig;
  k: number;
  runs: number;
}
export interface FusionChildOutput {
  alone_ms: number[];
  fused_ms: number[];
}

const input = JSON.parse(process.argv[2]!) as FusionChildInput;
await initBackend('wasm');
const configs: TrialConfig[] = Array.from({ length: input.k }, (_, i) => ({
  ...input.config,
  seed: i + 1,
  train: { ...input.config.train, lr: 1e-3 * (i + 1) },
  strategy: i % 2 ? { name: 'rba', eta: 1e-3, gamma: 0.999, normalization: 'max', init: 'zero' } : { name: 'vanilla' },
}));
const hooks = (): TrainHooks => ({ onRows() {} });
const trialSteps = input.k * input.config.train.steps;
const out: FusionChildOutput = { alone_ms: [], fused_ms: [] };
for (let r = 0; r <= input.runs; r++) {
  let t = performance.now();
  for (const c of configs) await trainTrial(c, hooks());
  const alone = (performance.now() - t) / trialSteps;
  t = performance.now();
  const res = await trainTrials(configs, configs.map(hooks), configs.map(() => ({})));
  const fused = (performance.now() - t) / trialSteps;
  const bad = res.find((x) => x instanceof Error);
  if (bad) throw bad;
  if (r > 0) {
    out.alone_ms.push(alone);
    out.fused_ms.push(fused);
  }
}
process.stdout.write(`${JSON.stringify(out)}\n`);
process.exit(0);
