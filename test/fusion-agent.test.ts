/**
 * Trial fusion in the worker (issue 5): slots that train a group of same-shaped trials at once
 * (pool runGroup, slot-task.ts runSlotTasks) and the agent that forms the groups — against real slot
 * threads and processes, a real nats-server and the real CLI. Each trial of a group keeps its own
 * events, stop flag, claim, rows, retries, cancel and result (`fused` = the group's size).
 */
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { loadSweep } from '../orchestrator/spec.js';
import type { TrialConfig } from '../schemas/sweep.js';
import type { TrialMessage } from '../schemas/trial.js';
import { balancedGroupSize, parseFuse, planGroups } from '../worker/agent.js';
import { makeSlotPool, ThreadPool, type SlotPool } from '../worker/pool.js';
import type { SlotEvent, SlotOutcome, SlotTask } from '../worker/slot-task.js';
import { duck, runCli, startNats, stderrOf, tempDir, trackedCli, trialStates, until } from './helpers.js';
import { tinyConfig } from './trainer-helpers.js';

/** Every CLI process a test starts, killed when the test ends (a failed assertion must not leave one running). */
const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

// ---------------------------------------------------------------------------------------------
// Slots: runGroup

const task = (id: string, config: TrialConfig): SlotTask => ({ trial: { sweep: 'fusion-test', trial_id: id, config } as TrialMessage, attempt: 1, backend: 'wasm', maxBytes: 1 << 20 });
const GROUP_STEPS = 400;
const groupConfig = (seed: number, lr = 1e-2) => tinyConfig({ train: { steps: GROUP_STEPS, lr, log_every: 10, eval_every: 100 }, diagnostics: { every: 0 }, seed });

/**
 * A group of three same-shaped trials with their own lr and seed on one slot: trial 0 is stopped after
 * its first progress report, trial 1's signal has aborted before the run, trial 2 trains to the end.
 * Each trial's events are its own (start first, end last, metrics only for trials that logged).
 */
async function groupTest(t: import('ava').ExecutionContext, pool: SlotPool): Promise<void> {
  const tasks = [task('g0', groupConfig(1, 1e-2)), task('g1', groupConfig(2, 3e-3)), task('g2', groupConfig(3, 1e-3))];
  const events: SlotEvent[][] = tasks.map(() => []);
  const stops = tasks.map(() => new AbortController());
  stops[1]!.abort();
  const outs = await pool.runGroup(tasks, (i, e) => {
    events[i]!.push(e);
    if (i === 0 && e.type === 'progress') stops[0]!.abort();
  }, stops.map((s) => s.signal));
  t.is(outs.length, 3);
  t.deepEqual(outs.map((o) => o.status), ['cancelled', 'cancelled', 'done'], outs.map((o) => o.error).join('; '));
  t.deepEqual(outs.map((o) => o.fused), [3, 3, 3]);
  t.true(outs[0]!.steps_done < GROUP_STEPS, `trial 0 stopped at ${outs[0]!.steps_done}`);
  t.is(outs[1]!.steps_done, 0);
  t.is(outs[2]!.steps_done, GROUP_STEPS);
  t.is(outs[2]!.rows, GROUP_STEPS / 10 + 1);
  t.is(new Set(outs.map((o) => o.slot)).size, 1, 'one slot');
  for (const [i, ev] of events.entries()) {
    t.is(ev[0]!.type, 'start', `trial ${i}: start first`);
    t.is(ev.at(-1)!.type, 'end', `trial ${i}: end last`);
    t.is(ev.filter((e) => e.type === 'end').length, 1);
  }
  t.true(events[2]!.some((e) => e.type === 'metrics'));
  t.true(events[0]!.some((e) => e.type === 'metrics'), 'the stopped trial flushed its rows');

  // A group of two shapes is refused; the slot is free again afterwards.
  await t.throwsAsync(pool.runGroup([task('a', groupConfig(1)), task('b', tinyConfig({ train: { steps: 7 } }))], () => {}), { message: /fusionKey|shape/ });
  const [alone] = await pool.runGroup([task('c', groupConfig(4))], () => {});
  t.is(alone!.status, 'done');
  t.is(alone!.fused, 1);
}

test.serial('runGroup on a thread slot: per-trial stop flags, events and outcomes', async (t) => {
  const pool = new ThreadPool(1);
  try {
    await groupTest(t, pool);
  } finally {
    await pool.close();
  }
});

test.serial('runGroup on a slot process: the stop pipe carries the trial index', async (t) => {
  const pool = await makeSlotPool('wasm', { slots: 1, gpus: '3' });
  try {
    t.deepEqual(pool.slotIds, ['gpu3.0']);
    await groupTest(t, pool);
  } finally {
    await pool.close();
  }
});

// ---------------------------------------------------------------------------------------------
// The agent's group planning (pure)

test('balancedGroupSize spreads trials evenly over slots and rounds', (t) => {
  // [trials, limit, slots] → size, by hand: rounds = ⌈⌈n/limit⌉/slots⌉, size = ⌈n/(rounds·slots)⌉ ≤ limit.
  const cases: Array<[number, number, number, number]> = [
    [8, 4, 2, 4], // quick start: two groups of 4, one per slot
    [12, 4, 2, 3], // 4 groups of 3 in 2 rounds, not 4 + 4 + 4 with a slot idle
    [6, 4, 1, 3], // 3 + 3, not 4 + 2
    [4, 4, 2, 2], // both slots busy
    [5, 4, 1, 3],
    [1000, 4, 2, 4],
    [3, 1, 2, 1], // limit 1: never fused
    [1, 4, 2, 1],
    [7, 8, 3, 3],
  ];
  for (const [n, limit, slots, size] of cases) t.is(balancedGroupSize(n, limit, slots), size, `n ${n}, limit ${limit}, slots ${slots}`);
});

test('planGroups cuts an interleaved queue into one group per key, in queue order, at most one per free slot', (t) => {
  const A = { key: 'A', size: 4 };
  const B = { key: 'B', size: 4 };
  // Quick start: two shapes interleaved in the stream → one group per shape.
  t.deepEqual(planGroups([A, B, A, B, A, B, A, B], 2), [[0, 2, 4, 6], [1, 3, 5, 7]]);
  // One free slot: the oldest trial's group; the others stay queued.
  t.deepEqual(planGroups([A, B, A, B, A, B, A, B], 1), [[0, 2, 4, 6]]);
  // Groups cut at the size; a trial that runs alone (null key or size 1) is its own group.
  const A2 = { key: 'A', size: 2 };
  t.deepEqual(planGroups([A2, { key: null, size: 4 }, A2, A2, { key: 'C', size: 1 }, A2], 5), [[0, 2], [1], [3, 5], [4]]);
  t.deepEqual(planGroups([A, A], 0), []);
  t.deepEqual(planGroups([], 2), []);
});

// ---------------------------------------------------------------------------------------------
// The agent: groups over JetStream

const spec = (name: string, steps: number, lrs: string) => `
name: ${name}
problem: {name: poisson2d, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${steps}, log_every: 10, eval_every: 50}
diagnostics: {every: 0, snr_batches: 4}
grid:
  train.lr: ${lrs}
`;

/** Logged steps of a trial of `steps` steps at log_every 10. */
const loggedSteps = (steps: number) => [...Array(Math.ceil(steps / 10)).keys()].map((i) => i * 10).concat((steps - 1) % 10 ? [steps - 1] : []);

test.serial('a worker with 1 slot and --fuse 4 trains 6 queued trials in balanced fused groups (3 + 3, not 4 + 2); a faulted group-mate retries while the others finish', async (t) => {
  const work = await tempDir('fuse-agent');
  const nats = await startNats(join(work, 'store'));
  try {
    const file = join(work, 'f.yaml');
    const steps = 100;
    await writeFile(file, spec('fused', steps, '[0.001, 0.002, 0.003, 0.004, 0.005, 0.006]'));
    const ids = (await loadSweep(file)).trials.map((x) => x.trial_id);
    const out = join(work, 'out');
    // The orchestrator queues every trial first; the worker comes up after, so its first group is full.
    const o = cli(['run', file, '--out', out, '--nats', nats.url, '--slots', '0']);
    await until(async () => [...(await trialStates(nats.url, 'fused')).values()].filter((s) => s.status === 'queued').length === 6, 60_000, '6 queued trials');
    const faulted = ids[1]!;
    const w = cli(['worker', '--nats', nats.url, '--slots', '1', '--fuse', '4', '--backend', 'wasm', '--name', 'wf'], { env: { PHASEMAP_FAULT_THROW: `${faulted}:1` } });
    const ew = stderrOf(w);
    const r = await o;
    t.is(r.code, 0, `${r.stderr}\n--- worker:\n${ew()}`);

    // (a) every trial done, with its own rows: every logged step once, in its finished attempt.
    const trials = await duck(`SELECT trial_id, status, attempts, slot, fused, epoch_ms(started_at) AS t0, epoch_ms(finished_at) AS t1 FROM '${out}/trials.parquet' ORDER BY trial_id`);
    t.is(trials.length, 6);
    for (const x of trials) t.is(x.status, 'done', `trial ${x.trial_id as string}`);
    const rows = await duck(`
      SELECT trial_id, attempt, count(*) AS n, count(DISTINCT step) AS d, list(step ORDER BY step) AS steps
      FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY trial_id, attempt ORDER BY trial_id, attempt`);
    const byTrial = new Map(trials.map((x) => [x.trial_id as string, x]));
    for (const m of rows) {
      const tr = byTrial.get(m.trial_id as string)!;
      if (Number(m.attempt) !== tr.attempts) continue;
      t.is(Number(m.n), Number(m.d), `trial ${m.trial_id as string}: no step twice`);
      t.deepEqual((m.steps as { items: number[] }).items, loggedSteps(steps), `trial ${m.trial_id as string} attempt ${m.attempt as number}: its logged steps, contiguous`);
    }
    t.is(rows.filter((m) => Number(m.attempt) === byTrial.get(m.trial_id as string)!.attempts).length, 6);

    // (b) they ran fused: results say how many trained together; group-mates overlap in time on the one slot.
    const st = await trialStates(nats.url, 'fused');
    const fused = ids.map((id) => st.get(id)?.result?.fused);
    t.true(fused.every((f) => typeof f === 'number' && f >= 1 && f <= 4), `fused ${JSON.stringify(fused)}`);
    t.true(fused.filter((f) => f === 3).length >= 4, `groups of 3 ran: fused ${JSON.stringify(fused)}`);
    // trials.parquet records it too (the finished attempt's group size).
    t.deepEqual(ids.map((id) => Number(byTrial.get(id)!.fused)), fused);
    t.deepEqual([...new Set(trials.map((x) => x.slot))], ['cpu0']);
    const first = trials.filter((x) => st.get(x.trial_id as string)?.result?.fused === 3 && x.attempts === 1);
    const overlap = first.some((a) => first.some((b) => a !== b && Number(a.t0) < Number(b.t1) && Number(b.t0) < Number(a.t1)));
    t.true(overlap, 'fused trials overlap in time on one slot');
    t.regex(ew(), /\d trials fused on one slot/);

    // (c) the faulted trial failed its first attempt and finished as attempt 2; its group-mates as attempt 1.
    t.is(byTrial.get(faulted)!.attempts, 2);
    for (const id of ids.filter((x) => x !== faulted)) t.is(byTrial.get(id)!.attempts, 1, `trial ${id}`);
    t.regex(ew(), new RegExp(`trial ${faulted}(?: \\([^)]*\\))? attempt 1 failed \\(1/3\\), retrying: .*injected fault`));
    w.child.kill('SIGTERM');
    t.is((await w).code, 0);
  } finally {
    await nats.stop();
  }
});

test.serial('cancelling one sweep stops only its trials in a fused group; the other sweep finishes; --fuse 1 runs trials alone', async (t) => {
  const work = await tempDir('fuse-cancel');
  const nats = await startNats(join(work, 'store'));
  try {
    const steps = 1500;
    const fa = join(work, 'a.yaml');
    const fb = join(work, 'b.yaml');
    // Same shape (steps, model, problem): the four trials of both sweeps may be fused together.
    await writeFile(fa, spec('fuse-a', steps, '[0.001, 0.002]'));
    await writeFile(fb, spec('fuse-b', steps, '[0.003, 0.004]'));
    const oa = cli(['run', fa, '--out', join(work, 'out-a'), '--nats', nats.url, '--slots', '0'], { timeoutMs: 300_000 });
    const ob = cli(['run', fb, '--out', join(work, 'out-b'), '--nats', nats.url, '--slots', '0'], { timeoutMs: 300_000 });
    const queued = async (sweep: string) => [...(await trialStates(nats.url, sweep)).values()].filter((s) => s.status === 'queued').length;
    await until(async () => (await queued('fuse-a')) === 2 && (await queued('fuse-b')) === 2, 60_000, 'both sweeps queued');
    const w = cli(['worker', '--nats', nats.url, '--slots', '1', '--fuse', '4', '--backend', 'wasm', '--name', 'wg']);
    const ew = stderrOf(w);
    await until(async () => [...(await trialStates(nats.url, 'fuse-a')).values(), ...(await trialStates(nats.url, 'fuse-b')).values()].filter((s) => s.status === 'running').length === 4, 60_000, '4 running trials (one group)');
    await new Promise((r) => setTimeout(r, 1000));
    const c = await cli(['cancel', 'fuse-a', '--nats', nats.url]);
    t.is(c.code, 0, c.stderr);
    const [ra, rb] = await Promise.all([oa, ob]);
    t.is(ra.code, 1, ra.stderr);
    t.regex(ra.stderr, /sweep cancelled/);
    t.is(rb.code, 0, `${rb.stderr}\n--- worker:\n${ew()}`);
    const a = await duck(`SELECT status FROM '${work}/out-a/trials.parquet'`);
    t.deepEqual(a.map((x) => x.status), ['cancelled', 'cancelled']);
    const b = await duck(`SELECT trial_id, status, attempts FROM '${work}/out-b/trials.parquet'`);
    t.deepEqual(b.map((x) => [x.status, x.attempts]), [['done', 1], ['done', 1]]);
    const sb = await trialStates(nats.url, 'fuse-b');
    t.deepEqual([...sb.values()].map((s) => s.result?.fused), [4, 4], 'sweep b trained fused with sweep a');
    const rowsB = await duck(`SELECT trial_id, count(*) AS n FROM read_parquet('${work}/out-b/metrics/**/*.parquet', hive_partitioning = true) GROUP BY trial_id`);
    t.deepEqual(rowsB.map((x) => Number(x.n)), [loggedSteps(steps).length, loggedSteps(steps).length]);
    w.child.kill('SIGTERM');
    t.is((await w).code, 0);

    // --fuse 1 on `phasemap run`'s local worker: every trial alone.
    const f1 = join(work, 'one.yaml');
    await writeFile(f1, spec('fuse-one', 50, '[0.001, 0.002, 0.003]'));
    const r1 = await cli(['run', f1, '--out', join(work, 'out-1'), '--nats', nats.url, '--slots', '1', '--fuse', '1', '--backend', 'wasm']);
    t.is(r1.code, 0, r1.stderr);
    t.deepEqual([...(await trialStates(nats.url, 'fuse-one')).values()].map((s) => [s.status, s.result?.fused]), [['done', 1], ['done', 1], ['done', 1]]);
  } finally {
    await nats.stop();
  }
});

test('--fuse: a bad value exits 2 naming the flag, the value and what is expected', async (t) => {
  const bad = await Promise.all([
    runCli(['worker', '--nats', 'nats://127.0.0.1:1', '--fuse', '0']),
    runCli(['run', 'nonexistent.yaml', '--fuse', 'many']),
    // The environment's default is checked before anything starts (no server, nothing queued).
    runCli(['run', 'sweeps/quickstart.yaml', '--out', join(tmpdir(), `phasemap-never-${process.pid}`)], { env: { PHASEMAP_FUSE: 'abc' } }),
  ]);
  t.deepEqual(bad.map((r) => r.code), [2, 2, 2]);
  t.regex(bad[2]!.stderr, /PHASEMAP_FUSE: got "abc", expected "auto" or an integer from 1 to 256/);
  t.notRegex(bad[2]!.stderr, /queued|at parseFuse/);
  t.regex(bad[0]!.stderr, /--fuse: got "0", expected "auto" or an integer from 1 to 256/);
  t.regex(bad[1]!.stderr, /--fuse: got "many", expected "auto" or an integer/);
  t.is(parseFuse('auto'), 'auto');
  t.is(parseFuse('3'), 3);
  t.throws(() => parseFuse('2.5', 'PHASEMAP_FUSE'), { message: /^PHASEMAP_FUSE: got "2.5"/ });
});
