/**
 * train-step, snr-cost and memory (slot) benchmarks. Each measurement runs in its own child process
 * (bench/train-child.ts) on the wasm backend.
 */
import type { TrialConfig } from '../schemas/sweep.js';
import type { ChildInput, ChildOutput } from './train-child.js';
import { benchEntry, figure, runJsonChild, stepFlops, trialConfig, type Figure } from './lib.js';

export interface BenchOptions {
  runs: number;
  quick: boolean;
  log: (msg: string) => void;
}

interface StepCase {
  name: string;
  config: TrialConfig;
  warmup: number;
  stepsPerRun: number;
  target: boolean;
  snr?: boolean;
}

const GiB = 2 ** 30;

function describe(c: TrialConfig): Record<string, unknown> {
  const bs = c.train.batch_size === 'full' ? c.problem.n_collocation : c.train.batch_size;
  return {
    problem: c.problem.name,
    width: c.model.width,
    depth: c.model.depth,
    n_collocation: c.problem.n_collocation,
    batch: c.train.batch_size === 'full' ? `full (${bs})` : bs,
    boundary_points: 4 * c.problem.n_boundary,
    strategy: c.strategy.name,
    backend: 'wasm',
  };
}

function flopsOf(c: TrialConfig): ReturnType<typeof stepFlops> {
  const batch = c.train.batch_size === 'full' ? c.problem.n_collocation : c.train.batch_size;
  // poisson2d / helmholtz2d: d = 2 inputs, streams u, u_x, u_y, u_xx, u_yy.
  return stepFlops({ d: 2, width: c.model.width, depth: c.model.depth, streams: 5, batch, boundary: 4 * c.problem.n_boundary });
}

/** The paper-size trial (science.md §3: 6 × 128 tanh, N = 25,600, full batch; 100 SNR batches). */
export function paperConfig(quick: boolean, extra = ''): TrialConfig {
  const n = quick ? 2500 : 25_600;
  return trialConfig(`problem: {name: helmholtz2d, a1: 6, a2: 6, k: 1, n_collocation: ${n}}
model: {width: 128, depth: 6}
diagnostics: {every: 100, snr_batches: 100}
${extra}`);
}

export async function benchTrainStep(o: BenchOptions, withSnr: boolean, withSteps: boolean): Promise<Figure[]> {
  const q = o.quick;
  const poisson = trialConfig(`problem: {name: poisson2d, n_collocation: 1000}
model: {width: 50, depth: 3}
diagnostics: {every: 100, snr_batches: 100}`);
  const helmholtz = trialConfig(`problem: {name: helmholtz2d, a1: 1, a2: 1, k: 1, n_collocation: 2560}
model: {width: 32, depth: 4}
diagnostics: {every: 50, snr_batches: 10}`);
  const paper = paperConfig(q);
  const paperBatch = paperConfig(q, `train: {batch_size: ${q ? 250 : 2560}}`);
  const cases: StepCase[] = [
    { name: 'poisson2d 3x50 N=1000', config: poisson, warmup: q ? 3 : 20, stepsPerRun: q ? 3 : 20, target: true, snr: withSnr },
  ];
  if (withSteps) {
    cases.push(
      { name: 'helmholtz2d 4x32 N=2560', config: helmholtz, warmup: q ? 2 : 10, stepsPerRun: q ? 2 : 10, target: false },
      { name: `helmholtz2d 6x128 N=${paper.problem.n_collocation} (paper size${q ? ' /10, --quick' : ''})`, config: paper, warmup: 1, stepsPerRun: 1, target: false },
      { name: `helmholtz2d 6x128 N=${paper.problem.n_collocation} batch ${paperBatch.train.batch_size}`, config: paperBatch, warmup: q ? 1 : 2, stepsPerRun: q ? 1 : 2, target: false },
    );
  }
  const figs: Figure[] = [];
  for (const c of cases) {
    o.log(`train-step: ${c.name} (${c.warmup} warm-up step(s), ${o.runs} run(s) × ${c.stepsPerRun} step(s)${c.snr ? ', SNR B = 100 after each run' : ''})`);
    const input: ChildInput = { mode: 'step', config: c.config, warmup: c.warmup, runs: o.runs, stepsPerRun: c.stepsPerRun, snr: c.snr };
    let out: ChildOutput;
    try {
      out = await runJsonChild<ChildOutput>(benchEntry('train-child.js'), input, { timeoutMs: 900_000 });
    } catch (e) {
      out = { msPerStep: [], peakRssBytes: 0, wallSeconds: 0, error: (e as Error).message };
    }
    const fl = flopsOf(c.config);
    const config = { ...describe(c.config), warmup_steps: c.warmup, steps_per_run: c.stepsPerRun, child_peak_rss_gib: +(out.peakRssBytes / GiB).toFixed(2) };
    const err = out.error ? { error: out.error } : {};
    if (withSteps) {
      figs.push(
        figure({
          bench: 'train-step',
          figure: `train-step ${c.name}`,
          unit: 'ms/step',
          samples: out.msPerStep,
          target: c.target ? { op: '<=', value: 19.6, text: '≤ 19.6 (PyTorch 1.13 CPU, 1 thread; aim 9.8)' } : null,
          config,
          method: 'mean wall ms of a run of steps (λ update + loss + grads + loss readback + Adam), after warm-up steps, in a child process',
          ...err,
        }),
        figure({
          bench: 'train-step',
          figure: `train-step ${c.name} GFLOP/s`,
          unit: 'GFLOP/s',
          samples: out.msPerStep.map((ms) => fl.total / (ms / 1000) / 1e9),
          target: null,
          config: { ...config, matmul_flops_per_step: fl.total, forward_flops: fl.forward },
          method: 'analytic matmul FLOPs of a step (forward 5 streams + boundary, backward = 2 × forward; bench/README.md) ÷ ms/step',
          ...err,
        }),
      );
    }
    if (c.snr && withSnr) {
      const ratios = (out.snrMs ?? []).map((ms, i) => ms / out.msPerStep[i]!);
      const dratios = (out.diagMs ?? []).map((ms, i) => ms / out.msPerStep[i]!);
      const sconfig = { ...describe(c.config), snr_batches: c.config.diagnostics.snr_batches, per_batch_points: c.config.problem.n_collocation / c.config.diagnostics.snr_batches };
      figs.push(
        figure({
          bench: 'snr-cost',
          figure: `snr-cost ${c.name}, B=100 (evalSnr)`,
          unit: '× step',
          samples: ratios,
          target: { op: '<=', value: 2, text: '≤ 2.0 (science.md §5)' },
          config: { ...sconfig, snr_ms: out.snrMs },
          method: 'ms of one evalSnr (snr, snr_layers, grad_order; one batched backward) ÷ ms/step of the steps just before it, per run',
          ...err,
        }),
        figure({
          bench: 'snr-cost',
          figure: `snr-cost ${c.name}, B=100, all §5 columns (evalDiagnostics)`,
          unit: '× step',
          samples: dratios,
          target: null,
          config: { ...sconfig, diagnostics_ms: out.diagMs },
          method: 'ms of one evalDiagnostics (every §5 diagnostic column of a logged row) ÷ ms/step of the same run',
          ...err,
        }),
      );
    }
  }
  return figs;
}

/**
 * Peak RSS of one slot on the paper-size trial: a child process runs the real slot code
 * (worker/slot-task.ts runSlotTask, as a CPU slot thread does) on a 3-step paper-size trial with its
 * diagnostics (rows at steps 0 and 2 with rel_l2 and every §5 column) and reports its VmHWM.
 */
export async function benchSlotMemory(o: BenchOptions): Promise<Figure[]> {
  const config = paperConfig(o.quick, 'train: {steps: 3}');
  const samples: number[] = [];
  const errors: string[] = [];
  const runs = o.quick ? 1 : Math.min(o.runs, 3);
  const walls: number[] = [];
  for (let r = 0; r < runs; r++) {
    o.log(`memory: slot on ${config.model.depth}x${config.model.width} N=${config.problem.n_collocation}, run ${r + 1}/${runs}`);
    try {
      const out = await runJsonChild<ChildOutput>(benchEntry('train-child.js'), { mode: 'slot', config, trialId: 't00000000000000aa' } satisfies ChildInput, { timeoutMs: 900_000 });
      samples.push(out.peakRssBytes / 2 ** 20);
      walls.push(out.wallSeconds);
      if (out.error) errors.push(out.error);
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  return [
    figure({
      bench: 'memory',
      figure: `memory slot, paper-size trial (6x128 N=${config.problem.n_collocation}${o.quick ? ', --quick' : ''})`,
      unit: 'MiB',
      samples,
      target: { op: '<=', value: 2048, text: '≤ 2048 (2 GiB)' },
      config: { ...describe(config), steps: 3, snr_batches: 100, child_wall_seconds: walls, trial_status: errors.length ? `failed: ${[...new Set(errors)].join('; ')}` : 'done' },
      method: 'peak RSS (VmHWM) of a process running worker/slot-task.ts runSlotTask on a 3-step trial (rows at steps 0 and 2 with rel_l2 and all diagnostics); runs ≤ 3',
      ...(errors.length ? { error: `trial did not finish: ${[...new Set(errors)].join('; ')}` } : {}),
    }),
  ];
}
