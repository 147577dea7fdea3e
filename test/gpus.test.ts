/**
 * GPU slots without GPUs: `--gpus` parsing and nvidia-smi discovery (a fake nvidia-smi via
 * PHASEMAP_NVIDIA_SMI), per-device slot processes (wasm backend, CUDA_VISIBLE_DEVICES per slot), slot
 * identity per trial, and the stop signal of running trials on thread and process slots.
 */
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import type { TrialConfig } from '../schemas/sweep.js';
import type { TrialMessage } from '../schemas/trial.js';
import { listGpus, NVIDIA_SMI_ENV, parseGpus, resolveGpus } from '../worker/gpus.js';
import { makeSlotPool, planSlots, ProcessPool, ThreadPool, type SlotPool } from '../worker/pool.js';
import type { SlotEvent, SlotOutcome } from '../worker/slot-task.js';
import { runCli, tempDir } from './helpers.js';
import { tinyConfig } from './trainer-helpers.js';

const trial = (id: string, config: TrialConfig): TrialMessage => ({ sweep: 'gpus-test', trial_id: id, config });

/** A trial of ~0.1 s on wasm (on an idle core). */
const SMALL_STEPS = 100;
const small = (seed: number) => tinyConfig({ train: { steps: SMALL_STEPS, log_every: 10, eval_every: 50 }, diagnostics: { every: 0 }, seed });

/**
 * A trial that would run for many minutes, logging only step 0 (and the last): its slot never yields
 * to its event loop while it trains, so a stop that needed an event-loop turn would not be seen.
 */
const LONG_STEPS = 2_000_000;
const long = () =>
  tinyConfig({ train: { steps: LONG_STEPS, log_every: LONG_STEPS, eval_every: LONG_STEPS, lr_decay: { rate: 1, every: 1000 } }, diagnostics: { every: 0 } });

/** Env var set for the duration of `fn` (tests using it are serial). */
async function withEnv<T>(key: string, value: string | undefined, fn: () => Promise<T>): Promise<T> {
  const old = process.env[key];
  if (value === undefined) delete process.env[key];
  else process.env[key] = value;
  try {
    return await fn();
  } finally {
    if (old === undefined) delete process.env[key];
    else process.env[key] = old;
  }
}

/** A fake nvidia-smi printing `out`, recording its arguments in `<dir>/args`. */
async function fakeSmi(name: string, out: string, code = 0): Promise<{ bin: string; args: () => Promise<string> }> {
  const dir = await tempDir(`smi-${name}`);
  const bin = join(dir, 'nvidia-smi');
  await writeFile(bin, `#!/bin/sh\necho "$@" > "${dir}/args"\nprintf '${out}'\n${code ? `echo 'NVIDIA-SMI has failed' >&2\nexit ${code}\n` : ''}`);
  await chmod(bin, 0o755);
  return { bin, args: () => readFile(join(dir, 'args'), 'utf8') };
}

test('parseGpus: all, none and lists of distinct non-negative ids', (t) => {
  t.is(parseGpus('all'), 'all');
  t.is(parseGpus('none'), 'none');
  t.deepEqual(parseGpus('0'), [0]);
  t.deepEqual(parseGpus('0,2'), [0, 2]);
  t.deepEqual(parseGpus(' 3, 1 '), [3, 1]);
  t.deepEqual(parseGpus('10,0,7'), [10, 0, 7]);
});

test('parseGpus: a bad value names --gpus, the value and what was expected', (t) => {
  const cases: [string, RegExp][] = [
    ['0,0', /GPU 0 is listed twice/],
    ['1,2,1', /GPU 1 is listed twice/],
    ['-1', /"-1" is not a GPU id/],
    ['1.5', /"1\.5" is not a GPU id/],
    ['gpu0', /"gpu0" is not a GPU id/],
    ['ALL', /"ALL" is not a GPU id/],
    ['0,', /an empty id/],
    ['', /empty/],
  ];
  for (const [v, why] of cases) {
    const e = t.throws(() => parseGpus(v), undefined, v);
    t.true(e!.message.startsWith(`--gpus: got ${JSON.stringify(v)}, expected "all", "none" or a comma-separated list of distinct GPU ids`), e!.message);
    t.regex(e!.message, why);
  }
});

test.serial('listGpus / resolveGpus: discovery with nvidia-smi (PHASEMAP_NVIDIA_SMI)', async (t) => {
  const two = await fakeSmi('two', '0\\n1\\n');
  await withEnv(NVIDIA_SMI_ENV, two.bin, async () => {
    t.deepEqual(await listGpus(), [0, 1]);
    t.is((await two.args()).trim(), '--query-gpu=index --format=csv,noheader');
    t.deepEqual(await resolveGpus('all', 'wasm'), [0, 1]);
    t.deepEqual(await resolveGpus('1', 'tensorflow'), [1]);
    t.deepEqual(await resolveGpus('none', 'tensorflow'), []);
    // Default: all GPUs for tensorflow, none for wasm/cpu.
    t.deepEqual(await resolveGpus(undefined, 'tensorflow'), [0, 1]);
    t.deepEqual(await resolveGpus(undefined, 'wasm'), []);
    t.deepEqual(await resolveGpus(undefined, 'cpu'), []);
  });

  const missing = join(await tempDir('smi-missing'), 'nvidia-smi');
  await withEnv(NVIDIA_SMI_ENV, missing, async () => {
    const e = await t.throwsAsync(resolveGpus('all', 'tensorflow'));
    t.true(e!.message.startsWith('--gpus all: nvidia-smi not found'), e!.message);
    t.true(e!.message.includes(missing) && e!.message.includes(NVIDIA_SMI_ENV), e!.message);
    t.deepEqual(await resolveGpus(undefined, 'tensorflow'), [], 'no nvidia-smi: the tensorflow default is none');
    t.deepEqual(await resolveGpus('0,1', 'tensorflow'), [0, 1], 'listed ids need no nvidia-smi');
  });

  const none = await fakeSmi('none', '');
  await withEnv(NVIDIA_SMI_ENV, none.bin, async () => {
    t.deepEqual(await listGpus(), []);
    await t.throwsAsync(resolveGpus('all', 'wasm'), { message: /^--gpus all: nvidia-smi lists no GPU/ });
    t.deepEqual(await resolveGpus(undefined, 'tensorflow'), []);
  });

  const broken = await fakeSmi('broken', '', 9);
  await withEnv(NVIDIA_SMI_ENV, broken.bin, async () => {
    await t.throwsAsync(listGpus(), { message: /^--gpus all: ".*nvidia-smi" failed \(exit code 9: NVIDIA-SMI has failed\)/ });
    t.deepEqual(await resolveGpus(undefined, 'tensorflow'), []);
  });

  const garbage = await fakeSmi('garbage', 'No devices were found\\n');
  await withEnv(NVIDIA_SMI_ENV, garbage.bin, async () => {
    await t.throwsAsync(listGpus(), { message: /^--gpus all: nvidia-smi printed "No devices were found", expected one GPU index a line/ });
  });
});

test.serial('planSlots / makeSlotPool: GPU slots replace --slots; tensorflow processes; wasm threads', async (t) => {
  const two = await fakeSmi('plan', '0\\n1\\n');
  await withEnv(NVIDIA_SMI_ENV, two.bin, async () => {
    t.deepEqual(await planSlots('wasm', { slots: 3, gpus: '0,2', slotsPerGpu: 2 }), {
      kind: 'processes',
      slots: [
        { id: 'gpu0.0', env: { CUDA_VISIBLE_DEVICES: '0' } },
        { id: 'gpu0.1', env: { CUDA_VISIBLE_DEVICES: '0' } },
        { id: 'gpu2.0', env: { CUDA_VISIBLE_DEVICES: '2' } },
        { id: 'gpu2.1', env: { CUDA_VISIBLE_DEVICES: '2' } },
      ],
    });
    const tf = await planSlots('tensorflow', { slots: 5 });
    t.deepEqual(tf.kind === 'processes' ? tf.slots.map((s) => s.id) : tf, ['gpu0.0', 'gpu1.0']);
    t.deepEqual(await planSlots('wasm', { slots: 2 }), { kind: 'threads', ids: ['cpu0', 'cpu1'] });
    t.deepEqual(await planSlots('cpu', { slots: 1, gpus: 'none' }), { kind: 'threads', ids: ['cpu0'] });
    t.deepEqual(await planSlots('tensorflow', { slots: 2, gpus: 'none' }), {
      kind: 'processes',
      slots: [
        { id: 'proc0', env: { CUDA_VISIBLE_DEVICES: '-1' } },
        { id: 'proc1', env: { CUDA_VISIBLE_DEVICES: '-1' } },
      ],
    });
    await t.throwsAsync(planSlots('wasm', { slots: 1, gpus: '0', slotsPerGpu: 0 }), { message: /^--slots-per-gpu: got 0, expected an integer >= 1/ });
    await t.throwsAsync(planSlots('wasm', { slots: 0 }), { message: /^--slots: got 0, expected an integer >= 1/ });
    await t.throwsAsync(planSlots('wasm', { slots: 1, gpus: '0,0' }), { message: /^--gpus: got "0,0"/ });
  });
  await withEnv(NVIDIA_SMI_ENV, join(await tempDir('smi-none'), 'nvidia-smi'), async () => {
    const tf = await planSlots('tensorflow', { slots: 2 });
    t.deepEqual(tf.kind === 'processes' ? tf.slots.map((s) => s.id) : tf, ['proc0', 'proc1'], 'tensorflow without GPUs: processes, --slots of them');
  });
  const pools = [await makeSlotPool('wasm', { slots: 2 }), await makeSlotPool('wasm', { slots: 7, gpus: '0,1', slotsPerGpu: 2 })];
  try {
    t.true(pools[0] instanceof ThreadPool);
    t.deepEqual([pools[0]!.size, pools[0]!.slotIds], [2, ['cpu0', 'cpu1']]);
    t.true(pools[1] instanceof ProcessPool);
    t.deepEqual([pools[1]!.size, pools[1]!.slotIds], [4, ['gpu0.0', 'gpu0.1', 'gpu1.0', 'gpu1.1']]);
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
});

test('CLI: a bad --gpus or --slots-per-gpu exits 2 naming the flag (worker and run)', async (t) => {
  const bad = await Promise.all([
    runCli(['worker', '--nats', 'nats://127.0.0.1:1', '--gpus', '0,0']),
    runCli(['worker', '--nats', 'nats://127.0.0.1:1', '--gpus', '1', '--slots-per-gpu', '0']),
    runCli(['run', 'nonexistent.yaml', '--gpus', 'some']),
  ]);
  t.deepEqual(bad.map((r) => r.code), [2, 2, 2]);
  t.regex(bad[0]!.stderr, /--gpus: got "0,0", expected "all", "none" or a comma-separated list of distinct GPU ids .*GPU 0 is listed twice/);
  t.regex(bad[1]!.stderr, /--slots-per-gpu: got "0", expected an integer >= 1/);
  t.regex(bad[2]!.stderr, /--gpus: got "some"/);
  const help = await runCli(['worker', '--help']);
  t.regex(help.stdout, /--gpus <list>/);
  t.regex(help.stdout, /--slots-per-gpu <k>/);
});

/** Runs trials concurrently on `pool`, collecting each one's outcome and events. */
async function runAll(pool: SlotPool, configs: TrialConfig[]): Promise<{ out: SlotOutcome; events: SlotEvent[] }[]> {
  return Promise.all(
    configs.map(async (config, i) => {
      const events: SlotEvent[] = [];
      const out = await pool.run({ trial: trial(`t${i}`, config), attempt: 1, backend: 'wasm', maxBytes: 1 << 20 }, (e) => events.push(e));
      return { out, events };
    }),
  );
}

/** Asserts that trials on the same slot never overlap in time. */
function assertNoSlotOverlap(t: import('ava').ExecutionContext, outs: SlotOutcome[]): void {
  const bySlot = new Map<string, SlotOutcome[]>();
  for (const o of outs) bySlot.set(o.slot, [...(bySlot.get(o.slot) ?? []), o]);
  for (const [slot, list] of bySlot) {
    list.sort((a, b) => a.started_at.localeCompare(b.started_at));
    for (let i = 1; i < list.length; i++)
      t.true(list[i - 1]!.finished_at <= list[i]!.started_at, `slot ${slot}: a trial ${list[i - 1]!.started_at}–${list[i - 1]!.finished_at} overlaps one starting ${list[i]!.started_at}`);
  }
}

test.serial('GPU slot processes without GPUs: 4 trials on --gpus 0,1 (wasm), each process sees only its own device', async (t) => {
  const pool = await makeSlotPool('wasm', { slots: 4, gpus: '0,1', slotsPerGpu: 1 });
  try {
    t.true(pool instanceof ProcessPool);
    const res = await runAll(pool, [1, 2, 3, 4].map(small));
    const outs = res.map((r) => r.out);
    for (const { out, events } of res) {
      t.is(out.status, 'done', out.error ?? '');
      t.is(out.steps_done, SMALL_STEPS);
      t.regex(out.slot, /^gpu[01]\.0$/);
      t.is(out.visible_devices, out.slot[3], `slot ${out.slot} saw CUDA_VISIBLE_DEVICES=${out.visible_devices}`);
      // wasm computes on the CPU whatever its slot is pinned to; only tensorflow on a GPU slot is gpu:<id>.
      t.is(out.device, 'cpu');
      t.is(out.backend, 'wasm');
      t.is(out.host, hostname());
      t.is(events.at(-1)!.type, 'end');
      t.true(events.some((e) => e.type === 'metrics'));
    }
    t.deepEqual([...new Set(outs.map((o) => o.slot))].sort(), ['gpu0.0', 'gpu1.0'], 'both device slots used');
    assertNoSlotOverlap(t, outs);
  } finally {
    await pool.close();
  }
});

test.serial('thread slots: concurrent trials get distinct slot ids, cpu<i>, visible_devices null', async (t) => {
  const pool = await makeSlotPool('wasm', { slots: 2 });
  try {
    t.true(pool instanceof ThreadPool);
    const outs = (await runAll(pool, [1, 2, 3, 4].map(small))).map((r) => r.out);
    for (const out of outs) {
      t.is(out.status, 'done', out.error ?? '');
      t.regex(out.slot, /^cpu[01]$/);
      t.is(out.visible_devices, null);
      t.is(out.device, 'cpu');
    }
    t.deepEqual([...new Set(outs.map((o) => o.slot))].sort(), ['cpu0', 'cpu1']);
    assertNoSlotOverlap(t, outs);
  } finally {
    await pool.close();
  }
});

/**
 * Starts a long trial, aborts it ~1 s after its first progress report, and checks it stops at once:
 * `cancelled`, 0 < steps_done ≪ steps, its row flushed. Then a new trial on the same pool runs to the end
 * (a stop is for one trial only), and one whose signal is already aborted stops before step 0.
 */
async function stopTest(t: import('ava').ExecutionContext, pool: SlotPool): Promise<void> {
  const ac = new AbortController();
  const events: SlotEvent[] = [];
  let started!: () => void;
  const firstProgress = new Promise<void>((r) => (started = r));
  const t0 = Date.now();
  const running = pool.run({ trial: trial('long', long()), attempt: 1, backend: 'wasm', maxBytes: 1 << 20 }, (e) => {
    events.push(e);
    if (e.type === 'progress') started();
  }, ac.signal);
  await Promise.race([firstProgress, running]);
  await new Promise((r) => setTimeout(r, 1000));
  const tAbort = Date.now();
  ac.abort();
  const out = await running;
  const stopMs = Date.now() - tAbort;
  t.is(out.status, 'cancelled', out.error ?? '');
  t.is(out.error, null);
  t.true(out.steps_done > 0 && out.steps_done < LONG_STEPS / 20, `steps_done ${out.steps_done} of ${LONG_STEPS}`);
  t.true(stopMs < 3000, `stopped ${stopMs} ms after the abort`);
  const perStepMs = (tAbort - t0) / out.steps_done;
  t.log(`${pool.slotIds[0]}: stopped after ${out.steps_done} steps, ${stopMs} ms after the abort; the whole trial would take ~${Math.round((perStepMs * LONG_STEPS) / 1000)} s`);
  t.is(out.rows, 1, 'the step-0 row was flushed');
  t.true(events.some((e) => e.type === 'metrics'));
  t.is(events.at(-1)!.type, 'end');
  const progress = events.filter((e): e is Extract<SlotEvent, { type: 'progress' }> => e.type === 'progress');
  t.is(progress.at(-1)!.step, out.steps_done, 'last progress = steps done');

  // The slot runs the next trial normally.
  const [next] = await runAll(pool, [small(9)]);
  t.is(next!.out.status, 'done');
  t.is(next!.out.steps_done, SMALL_STEPS);

  // Already aborted: stops before its first step.
  const pre = new AbortController();
  pre.abort();
  const cancelled = await pool.run({ trial: trial('pre', long()), attempt: 1, backend: 'wasm', maxBytes: 1 << 20 }, () => {}, pre.signal);
  t.is(cancelled.status, 'cancelled');
  t.is(cancelled.steps_done, 0);
}

test.serial('stop signal: a long trial on a thread slot is cancelled at its next step', async (t) => {
  const pool = new ThreadPool(1);
  try {
    await stopTest(t, pool);
  } finally {
    await pool.close();
  }
});

test.serial('stop signal: a long trial on a GPU slot process is cancelled at its next step (its loop never yields)', async (t) => {
  const pool = await makeSlotPool('wasm', { slots: 1, gpus: '3' });
  try {
    t.deepEqual(pool.slotIds, ['gpu3.0']);
    await stopTest(t, pool);
  } finally {
    await pool.close();
  }
});
