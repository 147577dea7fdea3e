/**
 * Hand-back on a stop: the trials that a stopped `phasemap run` (SIGINT, SIGTERM) or `phasemap worker`
 * (SIGTERM) hands back run again as soon as a run or worker is there to take them — not after the
 * trial ack wait (60 s). For `phasemap run` that holds across the restart of its embedded nats-server
 * (its store in DIR): the next run's server restores the consumer from the store.
 */
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { duck, startNats, stderrOf, tempDir, trackedCli, trialStates, until, type Cli } from './helpers.js';

const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

/** Two trials, long enough to be running when the run is stopped; a checkpoint every 100 steps. */
const spec = (name: string) => `
name: ${name}
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 2000, log_every: 20, eval_every: 500, checkpoint_every: 100}
diagnostics: {every: 500, snr_batches: 4}
grid:
  train.lr: [0.001]
  strategy: [{name: vanilla}, {name: rba, eta: 0.01, gamma: 0.99}]
`;

const TAKEN_OVER = /trial (t[0-9a-f]{16})\b[^\n]*? attempt (\d+): delivery \d+, taken over/g;
const HANDBACK_LIMIT_MS = 5000;

/** Highest checkpoint step of a trial in DIR (-1 when none). */
async function lastCheckpoint(dir: string, trialId: string): Promise<number> {
  try {
    const names = await readdir(join(dir, 'checkpoints', trialId));
    return Math.max(-1, ...names.map((n) => Number(/^step-(\d+)\.safetensors$/.exec(n)?.[1] ?? -1)));
  } catch {
    return -1;
  }
}

/** Time (Date.now()) at which `re` first matched the stderr of `p`, polled every 50 ms. */
function whenSeen(p: Cli, re: RegExp, ms: number, what: string): Promise<number> {
  const err = stderrOf(p);
  return until(() => re.test(err()) || p.child.exitCode !== null, ms, what, 50).then(() => {
    if (!re.test(err())) throw new Error(`${what}: the process exited first (code ${p.child.exitCode}):\n${err()}`);
    return Date.now();
  });
}

/**
 * Starts a sweep of two trials, stops it with `sig` once both trials have a checkpoint past step 0 on
 * disk, starts the same command again and measures how long the new run takes to run both trials again.
 * @returns the new run (still running), its stderr, DIR, the embedded server's URL and the times.
 */
async function stopAndRunAgain(t: import('ava').ExecutionContext, sig: NodeJS.Signals, name: string) {
  const work = await tempDir(`handback-${name}`);
  const file = join(work, 's.yaml');
  const out = join(work, 'out');
  await writeFile(file, spec(name));
  const args = ['run', file, '--out', out, '--slots', '2', '--fuse', '1', '--backend', 'wasm'];
  const first = cli(args);
  const e1 = stderrOf(first);
  await until(() => /queued 2 trial\(s\)/.test(e1()) || first.child.exitCode !== null, 60_000, 'the first run to queue its trials', 100);
  // Both trials train and have a checkpoint past step 0 in DIR: the next attempts resume from there.
  await until(async () => {
    if (first.child.exitCode !== null) return true;
    if (!existsSync(join(out, 'checkpoints'))) return false;
    const dirs = await readdir(join(out, 'checkpoints'));
    return dirs.length === 2 && (await Promise.all(dirs.map((d) => lastCheckpoint(out, d)))).every((s) => s >= 100);
  }, 120_000, 'checkpoints past step 0 of both trials', 100);
  t.is(first.child.exitCode, null, `the first run ended before it was stopped:\n${e1()}`);
  first.child.kill(sig);
  const r1 = await first;
  t.is(r1.code, 130, r1.stderr);
  t.regex(r1.stderr, new RegExp(`${sig}: stopping; running trials are handed back`));
  t.regex(r1.stderr, /interrupted: 0\/2 trial\(s\) of this run done/);
  // The slots torn down under the handed-back trials are not reported as a second hand-back.
  t.notRegex(r1.stderr, /handed back: Terminating worker thread/);
  const checkpointed = new Map(await Promise.all((await readdir(join(out, 'checkpoints'))).map(async (d) => [d, await lastCheckpoint(out, d)] as const)));

  const t0 = Date.now();
  const second = cli(args);
  const e2 = stderrOf(second);
  const started = whenSeen(second, /embedded nats-server on (nats:\/\/\S+)/, 60_000, 'the new run to start its server');
  const takenOver = whenSeen(second, /taken over[\s\S]*taken over/, 60_000 + HANDBACK_LIMIT_MS, 'both handed-back trials to run again');
  const [tStart, tTaken] = await Promise.all([started, takenOver]);
  const url = /embedded nats-server on (nats:\/\/\S+)/.exec(e2())![1]!;
  t.log(`${sig}: the new run started its server ${((tStart - t0) / 1000).toFixed(1)} s after its launch; both handed-back trials ran again ${((tTaken - tStart) / 1000).toFixed(1)} s later (${((tTaken - t0) / 1000).toFixed(1)} s after the launch)`);
  t.true(tTaken - tStart <= HANDBACK_LIMIT_MS, `handed-back trials ran again ${tTaken - tStart} ms after the new run started (limit ${HANDBACK_LIMIT_MS} ms; the ack wait is 60 s):\n${e2()}`);
  const taken = [...e2().matchAll(TAKEN_OVER)].map((m) => [m[1]!, Number(m[2])] as const);
  t.deepEqual(taken.map(([id]) => id).sort(), [...checkpointed.keys()].sort());
  for (const [, attempt] of taken) t.is(attempt, 2);
  // The trial state says so too: running again, attempt 2, under the new run's worker.
  const states = await trialStates(url, name);
  for (const id of checkpointed.keys()) {
    const st = states.get(id);
    t.truthy(st, `state of ${id}`);
    if (st && st.status === 'running') t.is(st.attempt, 2);
    else t.true(st?.status === 'done', `trial ${id}: ${JSON.stringify(st)}`);
  }
  return { second, e2, out, checkpointed };
}

test.serial('SIGINT (Ctrl-C) of phasemap run, then the same command again: the handed-back trials run again at once and resume from their checkpoints', async (t) => {
  const { second, e2, out, checkpointed } = await stopAndRunAgain(t, 'SIGINT', 'handback-int');
  await until(() => /resumes from step \d+[\s\S]*resumes from step \d+/.test(e2()), 30_000, 'both trials to resume');
  for (const m of e2().matchAll(/trial (t[0-9a-f]{16})\b[^\n]*? attempt 2 resumes from step (\d+)/g)) t.true(Number(m[2]) >= 100, `trial ${m[1]} resumes from step ${m[2]}`);
  const r2 = await second;
  t.is(r2.code, 0, r2.stderr);
  const rows = await duck(`SELECT trial_id, status, attempts, resumed_from_attempt, resumed_from_step FROM '${out}/trials.parquet' ORDER BY trial_id`);
  t.deepEqual(rows.map((r) => [r.trial_id, r.status, r.attempts, r.resumed_from_attempt]), [...checkpointed.keys()].sort().map((id) => [id, 'done', 2, 1]));
  for (const r of rows) t.true((r.resumed_from_step as number) >= 100, `trial ${r.trial_id as string} resumed from step ${r.resumed_from_step as number}`);
  // The completed attempts hold every logged step once.
  const complete = await duck(`
    SELECT m.trial_id, count(*) AS n, count(DISTINCT step) AS d, min(step) AS lo, max(step) AS hi
    FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m
    JOIN '${out}/trials.parquet' t ON m.trial_id = t.trial_id AND m.attempt = t.attempts GROUP BY m.trial_id`);
  t.deepEqual(complete.map((c) => [Number(c.n), Number(c.d), c.lo, c.hi]), [[101, 101, 0, 1999], [101, 101, 0, 1999]]);
});

test.serial('SIGTERM of phasemap run, then the same command again: the handed-back trials run again at once', async (t) => {
  const { second } = await stopAndRunAgain(t, 'SIGTERM', 'handback-term');
  second.child.kill('SIGKILL');
  await second;
});

test.serial('SIGTERM of a phasemap worker: a worker started afterwards takes its trial at once', async (t) => {
  const work = await tempDir('handback-worker');
  const nats = await startNats(join(work, 'store'));
  try {
    const file = join(work, 'w.yaml');
    // 10,000 steps (not 2,000): long enough that polling the trial states, slow on a loaded machine,
    // sees it running under w1 before it ends.
    await writeFile(file, spec('handback-worker').replace(/strategy: .*\n/, '').replace('steps: 2000', 'steps: 10000'));
    const w1 = cli(['worker', '--nats', nats.url, '--slots', '1', '--backend', 'wasm', '--name', 'w1']);
    const e1 = stderrOf(w1);
    const run = cli(['run', file, '--out', join(work, 'out'), '--nats', nats.url, '--slots', '0']);
    await until(async () => [...(await trialStates(nats.url, 'handback-worker')).values()].some((s) => s.status === 'running' && s.owner === 'w1'), 60_000, 'w1 to run the trial', 200);
    w1.child.kill('SIGTERM');
    t.is((await w1).code, 0);
    t.regex(e1(), /SIGTERM: handing 1 running trial\(s\) back/);
    const states = [...(await trialStates(nats.url, 'handback-worker')).values()];
    t.deepEqual(states.map((s) => [s.status, s.owner]), [['queued', null]]);
    const w2 = cli(['worker', '--nats', nats.url, '--slots', '1', '--backend', 'wasm', '--name', 'w2']);
    const [tReady, tTaken] = await Promise.all([whenSeen(w2, /pulling trials/, 60_000, 'w2 to start'), whenSeen(w2, /taken over/, 60_000 + HANDBACK_LIMIT_MS, 'w2 to take the trial over')]);
    t.log(`w2 took the handed-back trial ${((tTaken - tReady) / 1000).toFixed(1)} s after it started pulling`);
    t.true(tTaken - tReady <= HANDBACK_LIMIT_MS, `w2 took the trial ${tTaken - tReady} ms after it started pulling`);
    const r = await run;
    t.is(r.code, 0, r.stderr);
    const [row] = await duck(`SELECT status, attempts FROM '${work}/out/trials.parquet'`);
    t.deepEqual([row!.status, row!.attempts], ['done', 2]);
    w2.child.kill('SIGTERM');
    t.is((await w2).code, 0);
  } finally {
    await nats.stop();
  }
});
