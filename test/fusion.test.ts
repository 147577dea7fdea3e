/**
 * Trial fusion (worker/trainer/fused.ts): K trials trained as one batched computation give each trial
 * what it gets alone — its rows (loss, rel_l2, every diagnostic), checkpoints and summary — bit for bit
 * on wasm (to float32 tolerance elsewhere), also over hundreds of high-lr steps where any rounding
 * difference would grow; a trial that diverges, stops or whose hooks throw leaves the group without disturbing the others.
 */
import test from 'ava';
import type { MetricRow } from '../schemas/metrics.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { fusionKey, trainTrial, trainTrials, type CheckpointData, type TrainHooks, type TrainSummary } from '../worker/trainer/index.js';
import { testBackend, tinyConfig } from './trainer-helpers.js';

interface Record_ {
  rows: MetricRow[];
  ckpts: CheckpointData[];
  progress: number[];
}

function recorder(stopAt?: number): { rec: Record_; hooks: TrainHooks } {
  const rec: Record_ = { rows: [], ckpts: [], progress: [] };
  let steps = 0;
  return {
    rec,
    hooks: {
      onRows: (r) => void rec.rows.push(...r),
      onCheckpoint: (c) => void rec.ckpts.push(c),
      onProgress: (s) => {
        steps = s;
        rec.progress.push(s);
      },
      ...(stopAt !== undefined ? { shouldStop: () => steps >= stopAt } : {}),
    },
  };
}

/** Largest relative difference over every numeric value of two row lists (same steps required). */
function rowsDiff(t: import('ava').ExecutionContext, a: MetricRow[], b: MetricRow[]): number {
  t.deepEqual(a.map((r) => r.step), b.map((r) => r.step));
  let worst = 0;
  const cmp = (x: unknown, y: unknown, what: string) => {
    if (x === null || y === null) return t.is(x, y, what);
    if (Array.isArray(x)) return (x as number[]).forEach((v, i) => cmp(v, (y as number[])[i], `${what}[${i}]`));
    const [u, v] = [x as number, y as number];
    if (!Number.isFinite(u) || !Number.isFinite(v)) return t.is(String(u), String(v), what);
    worst = Math.max(worst, Math.abs(u - v) / Math.max(Math.abs(u), Math.abs(v), 1e-6));
  };
  a.forEach((r, i) => {
    for (const k of Object.keys(r) as Array<keyof MetricRow>) if (k !== 'wall_seconds') cmp(r[k], b[i]![k], `step ${r.step} ${k}`);
  });
  return worst;
}

async function alone(configs: TrialConfig[], stopAt: Array<number | undefined> = []) {
  const out: Array<{ rec: Record_; summary: TrainSummary }> = [];
  for (const [i, c] of configs.entries()) {
    const { rec, hooks } = recorder(stopAt[i]);
    out.push({ rec, summary: await trainTrial(c, hooks, { divergence: { factor: 1e3, rows: 3 } }) });
  }
  return out;
}

async function fused(configs: TrialConfig[], stopAt: Array<number | undefined> = []) {
  const recs = configs.map((_, i) => recorder(stopAt[i]));
  const res = await trainTrials(configs, recs.map((r) => r.hooks), configs.map(() => ({ divergence: { factor: 1e3, rows: 3 } })));
  return res.map((summary, i) => ({ rec: recs[i]!.rec, summary }));
}

const group = (over: Parameters<typeof tinyConfig>[0] = {}): TrialConfig[] => [
  tinyConfig({ ...over, strategy: { name: 'vanilla' }, seed: 1, train: { ...over.train, lr: 1e-2 } }),
  tinyConfig({ ...over, strategy: { name: 'rba', eta: 1e-2, gamma: 0.99, normalization: 'max', init: 'zero' }, seed: 2, train: { ...over.train, lr: 3e-3 } }),
  tinyConfig({ ...over, strategy: { name: 'sa', lr: 5e-3, freeze_step: null }, seed: 3, train: { ...over.train, lr: 5e-3, lr_decay: { rate: 0.5, every: 7 } } }),
];

for (const [name, over] of [
  ['full batch', { train: { checkpoint_every: 10 } }],
  ['mini-batches of 16', { train: { batch_size: 16, checkpoint_every: 10 } }],
] as const) {
  test.serial(`fused = alone, ${name}: vanilla, rba and sa trials with their own lr, schedule and seed`, async (t) => {
    const backend = await testBackend();
    const configs = group(over as Parameters<typeof tinyConfig>[0]);
    t.is(new Set(configs.map(fusionKey)).size, 1);
    const a = await alone(configs);
    const f = await fused(configs);
    for (let i = 0; i < configs.length; i++) {
      const fs = f[i]!.summary as TrainSummary;
      t.false(fs instanceof Error, String(fs));
      const worst = rowsDiff(t, a[i]!.rec.rows, f[i]!.rec.rows);
      t.log(`trial ${i} (${configs[i]!.strategy.name}): ${a[i]!.rec.rows.length} rows, largest relative difference ${worst.toExponential(2)}`);
      // On wasm a fused trial runs the very same kernels per trial as alone: bit for bit the same numbers.
      if (backend === 'wasm') t.is(worst, 0, `trial ${i}`);
      else t.true(worst < 1e-3, `trial ${i}: ${worst}`);
      t.is(fs.steps_done, a[i]!.summary.steps_done);
      t.deepEqual(f[i]!.rec.ckpts.map((c) => [c.step, c.final]), a[i]!.rec.ckpts.map((c) => [c.step, c.final]));
      // The final checkpoint's tensors: every parameter, Adam moment, λ and its SA Adam state.
      const fc = f[i]!.rec.ckpts.at(-1)!;
      const ac = a[i]!.rec.ckpts.at(-1)!;
      t.deepEqual(fc.tensors.map((x) => [x.name, x.shape]), ac.tensors.map((x) => [x.name, x.shape]));
      let cw = 0;
      fc.tensors.forEach((x, j) => x.data.forEach((v, k) => (cw = Math.max(cw, Math.abs(v - ac.tensors[j]!.data[k]!) / Math.max(1e-3, Math.abs(v))))));
      if (backend === 'wasm') t.is(cw, 0, `trial ${i} final checkpoint`);
      else t.true(cw < 1e-3, `trial ${i} final checkpoint differs by ${cw}`);
      t.is(fc.tensors.find((x) => x.name === 'adam.step')!.data[0], ac.tensors.find((x) => x.name === 'adam.step')!.data[0]);
    }
  });
}

test.serial('a trial that diverges or is stopped leaves the group; the others train as alone', async (t) => {
  await testBackend();
  const configs = group();
  configs[0] = { ...configs[0]!, train: { ...configs[0]!.train, lr: 1e30 } }; // overflows: loss Inf
  const stopAt = [undefined, 10, undefined];
  const a = await alone(configs, stopAt);
  const f = await fused(configs, stopAt);
  t.true(a[0]!.summary.diverged, 'the lr = 1e30 trial diverges alone');
  for (let i = 0; i < 3; i++) {
    const fs = f[i]!.summary as TrainSummary;
    t.is(fs.diverged, a[i]!.summary.diverged);
    t.is(fs.stopped, a[i]!.summary.stopped);
    t.is(fs.steps_done, a[i]!.summary.steps_done);
    t.true(rowsDiff(t, a[i]!.rec.rows, f[i]!.rec.rows) < 1e-3);
  }
  t.true((f[1]!.summary as TrainSummary).stopped);
  t.is((f[2]!.summary as TrainSummary).steps_done, 30);
});

test.serial('a trial whose hook throws gets its error; its group-mates finish', async (t) => {
  await testBackend();
  const configs = group();
  const recs = configs.map(() => recorder());
  const hooks = recs.map((r) => r.hooks);
  let calls = 0;
  hooks[1] = { ...hooks[1]!, onRows: () => { if (++calls >= 1) throw new Error('disk full'); } };
  const res = await trainTrials(configs, hooks, configs.map(() => ({})));
  t.true(res[1] instanceof Error);
  t.regex((res[1] as Error).message, /disk full/);
  t.is((res[0] as TrainSummary).steps_done, 30);
  t.is((res[2] as TrainSummary).steps_done, 30);
  t.is(recs[0]!.rec.rows.at(-1)!.step, 29);
});

test.serial('trials with different fusion keys are refused; a resuming trial does not fuse', async (t) => {
  await testBackend();
  const configs = [tinyConfig(), tinyConfig({ model: { width: 9 } })];
  await t.throwsAsync(() => trainTrials(configs, configs.map(() => recorder().hooks), [{}, {}]), { message: /fusion key/ });
  const two = group().slice(0, 2);
  const res = await trainTrials(two, two.map(() => recorder().hooks), [{ resume: { checkpoint: new Uint8Array(8), trialId: 'x' } }, {}]);
  t.regex((res[0] as Error).message, /trains alone/);
  t.is((res[1] as TrainSummary).steps_done, 30);
});

test.serial('fused = alone bit for bit over 300 high-lr steps (where rounding differences would grow)', async (t) => {
  const backend = await testBackend();
  const mk = (strategy: TrialConfig['strategy'], seed: number, lr: number) =>
    tinyConfig({ problem: { a2: 2, n_collocation: 128, n_boundary: 32 }, model: { width: 20, depth: 3 }, strategy, seed, train: { steps: 300, lr, log_every: 10, eval_every: 50, lr_decay: { rate: 0.9, every: 1000 } }, diagnostics: { every: 50, snr_batches: 8 } });
  const configs = [mk({ name: 'rba', eta: 1e-3, gamma: 0.999, normalization: 'max', init: 'zero' }, 0, 0.01), mk({ name: 'vanilla' }, 0, 0.01), mk({ name: 'rba', eta: 1e-3, gamma: 0.999, normalization: 'max', init: 'zero' }, 1, 0.001)];
  const a = await alone(configs);
  const f = await fused(configs);
  for (let i = 0; i < configs.length; i++) {
    const worst = rowsDiff(t, a[i]!.rec.rows, f[i]!.rec.rows);
    t.log(`trial ${i}: ${a[i]!.rec.rows.length} rows, final loss ${a[i]!.summary.final_loss.toExponential(4)}, largest relative difference ${worst.toExponential(2)}`);
    if (backend === 'wasm') t.is(worst, 0, `trial ${i}`);
    else t.true(worst < 1e-2, `trial ${i}: ${worst}`);
  }
});
