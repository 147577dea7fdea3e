/**
 * The MLP's stream loops in C (worker/trainer/native/streams.c, backend.ts `nativeStreams`) compute
 * what the generated JS loops compute (network.ts), bit for bit: every row (loss, rel_l2, every
 * diagnostic) and checkpoint of training runs on each problem (their derivative layouts: two second
 * derivatives; burgers' first in x and t, second in x only; periodic conditions), alone and fused
 * (per-trial weights and biases), with the C loops on and off in the same process. Bad arguments are
 * a RangeError, not a write out of bounds.
 */
import test from 'ava';
import type { MetricRow } from '../schemas/metrics.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { nativeStreams, setNativeStreams } from '../worker/trainer/backend.js';
import { trainTrial, trainTrials, type CheckpointData, type TrainHooks } from '../worker/trainer/index.js';
import { resolved, testBackend } from './trainer-helpers.js';

process.env.PHASEMAP_REFERENCE_CACHE = 'off';

test.before(async () => {
  await testBackend();
});

function config(problem: Record<string, unknown>, over: Record<string, unknown> = {}): TrialConfig {
  return resolved({
    problem,
    model: { width: 12, depth: 3 },
    train: { steps: 40, lr: 1e-2, log_every: 4, eval_every: 8, checkpoint_every: 20, lr_decay: { rate: 0.9, every: 10 } },
    strategy: { name: 'rba', eta: 0.01, gamma: 0.99 },
    diagnostics: { every: 8, snr_batches: 4 },
    seed: 5,
    ...over,
  });
}

interface Run {
  rows: MetricRow[];
  ckpts: CheckpointData[];
}

function recorder(): { run: Run; hooks: TrainHooks } {
  const run: Run = { rows: [], ckpts: [] };
  return { run, hooks: { onRows: (r) => void run.rows.push(...r), onCheckpoint: (c) => void run.ckpts.push(c) } };
}

/** The rows without wall time, and the checkpoints' tensors, as plain values for deepEqual. */
function plain(r: Run): unknown {
  return {
    rows: r.rows.map(({ wall_seconds: _w, ...rest }) => rest),
    ckpts: r.ckpts.map((c) =>
      JSON.stringify({ ...c, metadata: { ...c.metadata, wall_seconds: '' } }, (_k, v) => (ArrayBuffer.isView(v) ? Array.from(v as Float32Array) : v)),
    ),
  };
}

async function trainBoth(cfgs: TrialConfig[], fused: boolean): Promise<[Run[], Run[]]> {
  const out: Run[][] = [];
  for (const on of [true, false]) {
    setNativeStreams(on);
    try {
      const recs = cfgs.map(() => recorder());
      if (fused) {
        const res = await trainTrials(cfgs, recs.map((r) => r.hooks), cfgs.map(() => ({})));
        for (const x of res) if (x instanceof Error) throw x;
      } else for (const [i, c] of cfgs.entries()) await trainTrial(c, recs[i]!.hooks);
      out.push(recs.map((r) => r.run));
    } finally {
      setNativeStreams(true);
    }
  }
  return [out[0]!, out[1]!];
}

test('the C stream loops are loaded (the addon is built)', (t) => {
  t.not(nativeStreams(), null);
});

const problems: Array<[string, Record<string, unknown>]> = [
  ['helmholtz2d', { name: 'helmholtz2d', a1: 1, a2: 2, n_collocation: 96, n_boundary: 8, eval_grid: 11 }],
  ['poisson2d', { name: 'poisson2d', n_collocation: 96, n_boundary: 8, eval_grid: 11 }],
  ['burgers1d', { name: 'burgers1d', n_collocation: 96, n_boundary: 8, n_initial: 16, eval_grid: 11 }],
  ['allen_cahn1d', { name: 'allen_cahn1d', n_collocation: 96, n_boundary: 8, n_initial: 16, eval_grid: 11 }],
];

for (const [name, problem] of problems) {
  test(`C loops = JS loops bit for bit: ${name}, rows, diagnostics and checkpoints`, async (t) => {
    const [c, js] = await trainBoth([config(problem)], false);
    t.true(c[0]!.rows.length >= 10 && c[0]!.ckpts.length >= 1);
    t.true(c[0]!.rows.some((r) => r.snr !== null && r.rel_l2 !== null));
    t.deepEqual(plain(c[0]!), plain(js[0]!));
  });
}

test('C loops = JS loops bit for bit: 3 fused trials (per-trial weights and biases), mini-batches', async (t) => {
  const base = config(problems[0]![1], { train: { steps: 30, lr: 1e-2, batch_size: 32, log_every: 4, eval_every: 8, lr_decay: { rate: 0.9, every: 10 } } });
  const cfgs = [0, 1, 2].map((i) => ({ ...base, seed: 10 + i, train: { ...base.train, lr: 1e-2 * (i + 1) } }));
  const [c, js] = await trainBoth(cfgs, true);
  for (let i = 0; i < 3; i++) t.deepEqual(plain(c[i]!), plain(js[i]!), `trial ${i}`);
});

test('bad arguments to the C loops are RangeErrors naming what is wrong', (t) => {
  const s = nativeStreams()!;
  const layout = Int32Array.from([1, 4, 3, 0, 1, 0, 0]); // G = 1, n = 4, w = 3, S = 1
  const z = new Float32Array(12);
  const out = new Float32Array(12);
  s.fwdHidden(layout, 0, z, new Float32Array(3), null, out); // the right sizes work
  t.deepEqual(Array.from(out), new Array(12).fill(0)); // tanh(0 + 0)
  t.throws(() => s.fwdHidden(layout, 0, z, new Float32Array(3), null, new Float32Array(11)), { instanceOf: RangeError, message: /ao must be a Float32Array/ });
  const two = Int32Array.from([2, 4, 3, 0, 1, 0, 0]); // G = 2: per-group biases are [2, 3]
  t.throws(() => s.fwdHidden(two, 1, new Float32Array(24), new Float32Array(3), null, new Float32Array(24)), { instanceOf: RangeError, message: /B must be/ });
  t.throws(() => s.fwdHidden(Int32Array.from([1, 4, 3, 0, 2, 0, 0]), 0, z, new Float32Array(3), null, out), { instanceOf: RangeError, message: /bad layout/ });
  t.throws(() => s.bwdHidden(layout, 0, z, z, null, out, new Float64Array(2)), { instanceOf: RangeError, message: /db must be a Float64Array/ });
});
