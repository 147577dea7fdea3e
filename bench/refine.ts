/**
 * refine: what adaptive refinement buys against a dense grid (analysis/refine-benefit.ts), through
 * the real CLI, orchestrator, NATS and collector.
 *
 * - `refine` (in the default run, ~1–2 minutes): on the synthetic phase field
 *   (worker/trainer/synthetic.ts: `diffusion` above lr* = 3e-3 · (b/64)^0.5, `steady` below), a
 *   dense 16 lr × 6 batch-size grid against a 4 × 3 start refined to the dense spacing.
 * - `refine-poisson` and `refine-helmholtz` (only when named in `--only`; ~45 minutes each on 2
 *   cores): the real thing, sweeps/refine-benefit-dense.yaml against sweeps/refine-benefit.yaml, and
 *   sweeps/refine-benefit-helmholtz-dense.yaml against sweeps/refine-benefit-helmholtz.yaml
 *   (docs/results/refinement/).
 *
 * Figures: the share of dense points whose nearest refined sample has their phase (target ≥ 95 %),
 * and the refined sweep's trials as a share of the dense grid's (target ≤ 40 %). One run each: the
 * sweeps are deterministic (content-hash trials, bit-reproducible training).
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { refineBenefit, type RefineBenefit } from '../analysis/refine-benefit.js';
import { cliPath, figure, repoRoot, tempDir, type Figure } from './lib.js';
import type { BenchOptions } from './train.js';

function run(args: string[], env: Record<string, string>, log: (m: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [cliPath, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`phasemap ${args[0]} exited ${code}: ${err.trim().split('\n').slice(-3).join(' | ')}`))));
    log(`phasemap ${args.join(' ')}`);
  });
}

const SYNTHETIC = (lrs: string, batches: string, refine: string) => `
name: refine-bench
problem: {name: poisson2d, n_collocation: 1024, n_boundary: 32, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 400, log_every: 10, eval_every: 100}
diagnostics: {every: 10, snr_batches: 4}
grid:
  train.lr: ${lrs}
  train.batch_size: ${batches}
${refine}`;

function figures(name: string, r: RefineBenefit, config: Record<string, unknown>, wall: number): Figure[] {
  return [
    figure({
      bench: name, figure: `${name}: dense points whose nearest refined sample has their phase`, unit: '%', samples: [r.agreement.percent],
      target: { op: '>=', value: 95, text: '≥ 95 %' }, config: { ...config, points: r.agreement.points, coarse_start_percent: r.coarse_start_agreement.percent },
      method: 'analysis/refine-benefit.ts mapAgreement: nearest sample in (log10 lr, log10 batch) of the same strategy',
    }),
    figure({
      bench: name, figure: `${name}: refined sweep's trials as a share of the dense grid's`, unit: '%', samples: [100 * r.refined.share_of_dense],
      target: { op: '<=', value: 40, text: '≤ 40 % of the dense grid' }, config: { ...config, dense_trials: r.dense.trials, refined_trials: r.refined.trials, rounds: r.refined.rounds, wall_seconds: Math.round(wall) },
      method: 'done trials of the refined DIR (grid + refinement rounds) / done trials of the dense DIR',
    }),
  ];
}

/** The synthetic-field comparison (module header). */
export async function benchRefine(o: BenchOptions): Promise<Figure[]> {
  const dir = await tempDir('bench-refine');
  const env = { PHASEMAP_SYNTHETIC_FIELD: '{}' };
  const t0 = performance.now();
  const dense = join(dir, 'dense.yaml');
  const refined = join(dir, 'refined.yaml');
  await writeFile(dense, SYNTHETIC('{logspace: [-4, -1, 16]}', '[32, 64, 128, 256, 512, full]', ''));
  await writeFile(refined, SYNTHETIC('{logspace: [-4, -1, 4]}', '[32, 256, full]', 'refine: {rounds: 8, resolution: 1.6, budget: 26}'));
  await run(['run', dense, '--out', join(dir, 'dense'), '--slots', '2'], env, o.log);
  await run(['run', refined, '--out', join(dir, 'refined'), '--slots', '2'], env, o.log);
  const r = await refineBenefit(join(dir, 'dense'), join(dir, 'refined'));
  return figures('refine', r, { field: 'synthetic: diffusion above lr* = 3e-3·(b/64)^0.5', dense: '16 lr × 6 batch', start: '4 lr × 3 batch', resolution: 1.6, budget: 26 }, (performance.now() - t0) / 1000);
}

/** The real comparisons of docs/results/refinement/: a dense sweep and a refined one of the same problem (module header). */
const REAL = {
  'refine-poisson': ['sweeps/refine-benefit-dense.yaml', 'sweeps/refine-benefit.yaml'],
  'refine-helmholtz': ['sweeps/refine-benefit-helmholtz-dense.yaml', 'sweeps/refine-benefit-helmholtz.yaml'],
} as const;

/** One real comparison of docs/results/refinement/ (module header): runs both sweeps into a temporary folder. */
export async function benchRefineReal(name: keyof typeof REAL, o: BenchOptions): Promise<Figure[]> {
  const [denseSpec, refinedSpec] = REAL[name];
  const dir = await tempDir(`bench-${name}`);
  const t0 = performance.now();
  await run(['run', join(repoRoot, denseSpec), '--out', join(dir, 'dense'), '--slots', '2'], {}, o.log);
  await run(['run', join(repoRoot, refinedSpec), '--out', join(dir, 'refined'), '--slots', '2'], {}, o.log);
  const r = await refineBenefit(join(dir, 'dense'), join(dir, 'refined'));
  return figures(name, r, { sweeps: `${denseSpec} vs ${refinedSpec}` }, (performance.now() - t0) / 1000);
}
