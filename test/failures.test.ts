/**
 * Failures against a real nats-server and real processes (issue 4): a worker and the orchestrator
 * killed with SIGKILL, nats-server restarted with its store kept, trials that throw, `phasemap cancel`,
 * `phasemap status`, namespaces and the sweep owner. Trial ack wait 4 s (PHASEMAP_TRIAL_ACK_WAIT_S) so
 * that a dead worker's trial is redelivered within seconds.
 */
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { startEmbeddedNats } from '../orchestrator/nats-server.js';
import { loadSweep } from '../orchestrator/spec.js';
import { duck, stderrOf, tempDir, trackedCli, trialStates, until, type Cli } from './helpers.js';

const ENV = { PHASEMAP_TRIAL_ACK_WAIT_S: '4' };

const spec = (name: string, steps: number, lrs: string, extra = '') => `
name: ${name}
problem: {name: poisson2d, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${steps}, log_every: 50, eval_every: 50${extra}}
diagnostics: {every: 100, snr_batches: 4}
grid:
  train.lr: ${lrs}
`;

/** Every CLI process a test starts, killed when the test ends (a failed assertion must not leave one running). */
const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

/** Steps logged for `steps` steps at log_every 50: 0, 50, …, and the last step. */
const expectedSteps = (steps: number) => [...Array(Math.ceil(steps / 50)).keys()].map((i) => i * 50).concat(steps - 1 > (Math.ceil(steps / 50) - 1) * 50 ? [steps - 1] : []);

/** Per trial: the steps of its completed attempt (the one trials.parquet names), and how many attempts reached the last step. */
async function completedAttempts(out: string, lastStep: number) {
  const rows = await duck(`
    SELECT t.trial_id, t.status, t.attempts, t.resumed_from_attempt, t.resumed_from_step,
      (SELECT list(m.step ORDER BY m.step) FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m
        WHERE m.trial_id = t.trial_id AND m.attempt = t.attempts) AS steps,
      (SELECT count(DISTINCT m.attempt) FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m
        WHERE m.trial_id = t.trial_id AND m.step = ${lastStep}) AS finished_attempts
    FROM '${out}/trials.parquet' t ORDER BY t.trial_id`);
  const dups = await duck(`
    SELECT count(*) AS n FROM (SELECT trial_id, attempt, step, count(*) AS c
      FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY ALL HAVING c > 1)`);
  return { rows, duplicates: Number(dups[0]!.n) };
}

test.serial('SIGKILL of a worker mid-trial and of the orchestrator: the trial resumes from its checkpoint elsewhere, a restarted orchestrator finishes the sweep, nothing lost or doubled', async (t) => {
  const work = await tempDir('kill');
  const nats = await startEmbeddedNats(join(work, 'store'));
  const out = join(work, 'out');
  const file = join(work, 'k.yaml');
  const steps = 3000;
  await writeFile(file, spec('kill', steps, '[0.001, 0.002, 0.003]', ', checkpoint_every: 500'));
  const workers: Cli[] = [];
  try {
    const w1 = cli(['worker', '--nats', nats.url, '--slots', '1', '--backend', 'wasm', '--name', 'w1'], { env: ENV });
    const w2 = cli(['worker', '--nats', nats.url, '--slots', '1', '--backend', 'wasm', '--name', 'w2'], { env: ENV });
    workers.push(w1, w2);
    const e1 = stderrOf(w1);
    const e2 = stderrOf(w2);
    const runArgs = ['run', file, '--out', out, '--nats', nats.url, '--slots', '0'];
    const o1 = cli(runArgs, { env: ENV });
    // Kill a worker once its trial is past a checkpoint that the orchestrator has on disk.
    let victim = '';
    let owner = '';
    let seen = '';
    await until(async () => {
      const all = await trialStates(nats.url, 'kill');
      seen = JSON.stringify([...all].map(([id, st]) => [id, st.status, st.owner, st.step]));
      for (const [id, st] of all)
        if (st.status === 'running' && (st.step ?? 0) >= 700 && existsSync(join(out, 'checkpoints', id, 'step-500.safetensors'))) [victim, owner] = [id, st.owner!];
      return victim !== '';
    }, 150_000, 'a trial past step 700').catch((e: Error) => {
      throw new Error(`${e.message}; states ${seen}`);
    });
    const dead = owner === 'w1' ? w1 : w2;
    const survivor = owner === 'w1' ? e2 : e1;
    dead.child.kill('SIGKILL');
    await dead;
    // And the orchestrator, a moment later.
    await new Promise((r) => setTimeout(r, 1000));
    o1.child.kill('SIGKILL');
    await o1;
    // `phasemap status` sees the dead worker's trial as stale until it is redelivered.
    const o2 = cli(runArgs, { env: ENV, timeoutMs: 300_000 });
    const r2 = await o2;
    t.is(r2.code, 0, `${r2.stderr.split('\n').filter((l) => !/progress:/.test(l)).join('\n')}\n--- w1:\n${e1()}\n--- w2:\n${e2()}`);
    t.regex(r2.stderr, /still queued or running from an earlier run|already done/);

    const { rows, duplicates } = await completedAttempts(out, steps - 1);
    t.is(duplicates, 0);
    t.is(rows.length, 3);
    for (const r of rows) {
      t.is(r.status, 'done', `trial ${r.trial_id as string}`);
      t.deepEqual((r.steps as { items: number[] }).items, expectedSteps(steps), `trial ${r.trial_id as string} attempt ${r.attempts as number}: every step once`);
      t.is(Number(r.finished_attempts), 1, `trial ${r.trial_id as string} ran to completion once`);
    }
    const killed = rows.find((r) => r.trial_id === victim)!;
    t.true((killed.attempts as number) >= 2, `the killed trial finished as attempt ${killed.attempts as number}`);
    t.is(killed.resumed_from_attempt, 1);
    t.true((killed.resumed_from_step as number) >= 500 && (killed.resumed_from_step as number) % 500 === 0, `resumed from step ${killed.resumed_from_step as number}`);
    t.regex(survivor(), new RegExp(`trial ${victim}(?: \\([^)]*\\))? attempt \\d+ resumes from step \\d+`));
    // Every trial ends done in the bucket too: none is left `running` by its dead worker.
    t.deepEqual([...(await trialStates(nats.url, 'kill')).values()].map((s) => s.status), ['done', 'done', 'done']);
  } finally {
    for (const w of workers) w.child.kill('SIGKILL');
    await nats.stop();
  }
});

test.serial('nats-server restarted mid-sweep with its store kept: workers and collector reconnect and the sweep completes', async (t) => {
  const work = await tempDir('restart');
  const store = join(work, 'store');
  let nats = await startEmbeddedNats(store);
  const port = Number(new URL(nats.url.replace('nats:', 'http:')).port);
  const out = join(work, 'out');
  const file = join(work, 'r.yaml');
  const steps = 2000;
  await writeFile(file, spec('restart', steps, '[0.001, 0.002, 0.003]'));
  const w = cli(['worker', '--nats', nats.url, '--slots', '2', '--backend', 'wasm', '--name', 'w'], { env: ENV });
  const ew = stderrOf(w);
  try {
    const o = cli(['run', file, '--out', out, '--nats', nats.url, '--slots', '0'], { env: ENV, timeoutMs: 300_000 });
    const eo = stderrOf(o);
    let seen = '';
    await until(async () => {
      const all = await trialStates(nats.url, 'restart');
      seen = JSON.stringify([...all].map(([id, st]) => [id, st.status, st.owner, st.step]));
      return [...all.values()].some((s) => s.status === 'running' && (s.step ?? 0) >= 300);
    }, 120_000, 'a trial past step 300').catch((e: Error) => {
      // What the run and the worker said, to tell a slow machine from a stuck sweep.
      throw new Error(`${e.message}; states ${seen}\n--- run:\n${eo().slice(-3000)}\n--- worker:\n${ew().slice(-3000)}`);
    });
    await nats.stop();
    await new Promise((r) => setTimeout(r, 2000));
    nats = await startEmbeddedNats(store, undefined, { port });
    const r = await o;
    t.is(r.code, 0, r.stderr);
    const { rows, duplicates } = await completedAttempts(out, steps - 1);
    t.is(duplicates, 0);
    t.deepEqual(rows.map((x) => x.status), ['done', 'done', 'done']);
    for (const x of rows) t.deepEqual((x.steps as { items: number[] }).items, expectedSteps(steps));
  } finally {
    w.child.kill('SIGKILL');
    await nats.stop();
  }
});

test.serial('a trial that throws is retried up to max_attempts, then failed with its error; the others go on', async (t) => {
  const work = await tempDir('throw');
  const file = join(work, 't.yaml');
  const out = join(work, 'out');
  await writeFile(file, `${spec('throws', 100, '[0.001, 0.002, 0.003]')}max_attempts: 3\n`);
  const ids = (await loadSweep(file)).trials.map((x) => x.trial_id);
  // Fault injection (worker/slot-task.ts): trial 0 throws on attempts 1-2, trial 1 on every attempt.
  const faults = `${ids[0]}:2,${ids[1]}:99`;
  const r = await cli(['run', file, '--out', out, '--slots', '2', '--backend', 'wasm'], { env: { PHASEMAP_FAULT_THROW: faults } });
  t.is(r.code, 1, r.stderr);
  const rows = await duck(`SELECT trial_id, status, attempts, error FROM '${out}/trials.parquet'`);
  const by = new Map(rows.map((x) => [x.trial_id as string, x]));
  t.deepEqual([by.get(ids[0]!)!.status, by.get(ids[0]!)!.attempts, by.get(ids[0]!)!.error], ['done', 3, null]);
  t.deepEqual([by.get(ids[1]!)!.status, by.get(ids[1]!)!.attempts], ['failed', 3]);
  t.regex(by.get(ids[1]!)!.error as string, /injected fault \(PHASEMAP_FAULT_THROW\) in attempt 3/);
  t.deepEqual([by.get(ids[2]!)!.status, by.get(ids[2]!)!.attempts], ['done', 1]);
  t.regex(r.stderr, /1 of 3 trial\(s\) failed/);
});

test.serial('phasemap status shows who runs what; phasemap cancel stops a sweep; other namespaces and a second owner are kept apart', async (t) => {
  const work = await tempDir('cancel');
  const nats = await startEmbeddedNats(join(work, 'store'));
  const out = join(work, 'out');
  const file = join(work, 'c.yaml');
  await writeFile(file, spec('cancelme', 200_000, '[0.001, 0.002, 0.003, 0.004]'));
  // --fuse 1: two slots run two of the four trials (fused, one slot could take all four).
  const w = cli(['worker', '--nats', nats.url, '--slots', '2', '--fuse', '1', '--backend', 'wasm', '--name', 'wc'], { env: ENV });
  const ew = stderrOf(w);
  const other = cli(['worker', '--nats', nats.url, '--slots', '1', '--backend', 'wasm', '--name', 'wo', '--namespace', 'other'], { env: ENV });
  const eo = stderrOf(other);
  try {
    const o = cli(['run', file, '--out', out, '--nats', nats.url, '--slots', '0'], { env: ENV, timeoutMs: 300_000 });
    let seen = '';
    await until(async () => {
      const all = [...(await trialStates(nats.url, 'cancelme')).values()];
      seen = JSON.stringify(all.map((x) => [x.status, x.owner, x.step, x.heartbeat_at]));
      return all.filter((x) => x.status === 'running' && (x.step ?? 0) > 0).length === 2;
    }, 120_000, 'two running trials').catch((e: Error) => {
      throw new Error(`${e.message}; states ${seen}; wc: ${ew()}`);
    });

    const st = await cli(['status', 'cancelme', '--nats', nats.url, '--json']);
    t.is(st.code, 0, st.stderr);
    const s = JSON.parse(st.stdout) as { namespace: string; sweeps: Array<{ sweep: string; counts: Record<string, number>; running: Array<{ owner: string; slot: string; device: string; backend: string }>; owner: { dir: string } }> };
    t.is(s.namespace, 'phasemap');
    t.deepEqual(s.sweeps.map((x) => [x.sweep, x.counts.running, x.counts.queued]), [['cancelme', 2, 2]]);
    t.deepEqual(s.sweeps[0]!.running.map((x) => [x.owner, x.backend, x.device]), [['wc', 'wasm', 'cpu'], ['wc', 'wasm', 'cpu']]);
    t.deepEqual(s.sweeps[0]!.running.map((x) => x.slot).sort(), ['cpu0', 'cpu1']);
    t.is(s.sweeps[0]!.owner.dir, out);
    const table = await cli(['status', '--nats', nats.url]);
    t.regex(table.stdout, /sweep cancelme \(namespace phasemap\): 4 trial\(s\) — queued 2, running 2, done 0/);

    // The same sweep name with another DIR: refused while this orchestrator runs.
    const second = await cli(['run', file, '--out', join(work, 'out2'), '--nats', nats.url, '--slots', '0'], { env: ENV });
    t.is(second.code, 3);
    t.regex(second.stderr, /sweep 'cancelme' \(namespace phasemap\) is being run by another orchestrator/);

    // A mistyped sweep name cancels nothing and says so.
    const typo = await cli(['cancel', 'cancelmee', '--nats', nats.url], { env: ENV });
    t.is(typo.code, 2);
    t.regex(typo.stderr, /sweep 'cancelmee': no trials in namespace phasemap on this server; nothing was cancelled/);
    const c = await cli(['cancel', 'cancelme', '--nats', nats.url], { env: ENV });
    t.is(c.code, 0, c.stderr);
    t.regex(c.stderr, /cancelled 2 queued and 2 running trial\(s\)/);
    const r = await o;
    t.is(r.code, 1, r.stderr);
    t.regex(r.stderr, /sweep cancelled \(phasemap cancel\): 4 of 4 trial\(s\) cancelled/);
    const rows = await duck(`SELECT status, count(*) AS n FROM '${out}/trials.parquet' GROUP BY status`);
    t.deepEqual(rows.map((x) => [x.status, Number(x.n)]), [['cancelled', 4]]);
    const maxStep = await duck(`SELECT max(step) AS s FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true)`);
    t.true((maxStep[0]!.s as number) < 199_999);
    // The worker of the other namespace never saw a trial of this one.
    t.notRegex(eo(), /trial t[0-9a-f]{16}/);
  } finally {
    w.child.kill('SIGKILL');
    other.child.kill('SIGKILL');
    await nats.stop();
  }
});

test.serial('two sweeps with the same trial configs, one after the other in one namespace, both complete (message ids are unique per run)', async (t) => {
  const work = await tempDir('twins');
  const nats = await startEmbeddedNats(join(work, 'store'));
  try {
    for (const name of ['twin-a', 'twin-b', 'twin-a']) {
      const file = join(work, `${name}.yaml`);
      await writeFile(file, spec(name, 100, '[0.001, 0.002]'));
      // The third run is twin-a again into a fresh DIR: same sweep, same trial ids, attempts from 1 again.
      const out = join(work, `${name}-${Date.now()}`);
      const r = await cli(['run', file, '--out', out, '--nats', nats.url, '--slots', '2', '--backend', 'wasm'], { env: ENV, timeoutMs: 120_000 });
      t.is(r.code, 0, `${name}: ${r.stderr}`);
      const rows = await duck(`SELECT count(*) AS n FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true)`);
      t.is(Number(rows[0]!.n), 2 * expectedSteps(100).length, name);
    }
  } finally {
    await nats.stop();
  }
});
