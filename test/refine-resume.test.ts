/**
 * `phasemap run` with a refine: block, SIGKILLed while a refinement trial runs: its embedded
 * nats-server goes with it (the guard), and the same command finishes the refinement — the same
 * trials, rounds and metrics as a run that was never interrupted.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { duck, stderrOf, tempDir, trackedCli, until } from './helpers.js';
import { pidAlive } from '../analysis/pid.js';

// After 600 steps lr 1e-3 and 3 are still fitting, lr 10 diverges (stopped early): round 1 runs lr 5.48, round 2
// the midpoint on the side where the phase changes. Each round runs on an embedded nats-server of its own.
const STEPS = 600;
const SPEC = `
name: refine-kill
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${STEPS}, log_every: 50, eval_every: 100, checkpoint_every: 100}
diagnostics: {every: 100, snr_batches: 4}
analysis: {divergence_factor: 1.5}
refine: {rounds: 2, budget: 10}
grid:
  train.lr: [0.001, 3, 10]
`;

// A trial of a killed run is redelivered to the next one within seconds.
const ENV = { PHASEMAP_TRIAL_ACK_WAIT_S: '4' };

const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

interface SweepJson { trials: Array<{ trial_id: string; refine_round?: number }> }
const sweepJson = async (out: string) => JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as SweepJson;
const rounds = (s: SweepJson) => new Map(s.trials.map((x) => [x.trial_id, x.refine_round ?? 0]));

test.serial('phasemap run with refine: SIGKILLed while a refinement trial runs takes its nats-server down; the same command finishes with the trials of an uninterrupted run, each once', async (t) => {
  const work = await tempDir('refine-kill');
  const spec = join(work, 'spec.yaml');
  await writeFile(spec, SPEC);
  const flags = ['--slots', '2', '--backend', 'wasm'];
  const t0 = Date.now();

  // An uninterrupted run of the same spec in another DIR, alongside (refinement is deterministic: the same trials).
  const ref = join(work, 'ref');
  const o3 = cli(['run', spec, '--out', ref, ...flags], { env: ENV, timeoutMs: 150_000 });

  // The killed run: SIGKILLed once a trial that a refinement round recorded has started (its step-0
  // checkpoint is on disk) and its worker has not finished it (diverged trials stop early: a short window).
  const out = join(work, 'out');
  const args = ['run', spec, '--out', out, ...flags];
  const o1 = cli(args, { env: ENV, timeoutMs: 120_000 });
  const err1 = stderrOf(o1);
  let victim = '';
  await until(async () => {
    if (o1.child.exitCode !== null) throw new Error(`the run ended (${o1.child.exitCode}) before a refinement trial was caught running`);
    const s = await sweepJson(out).catch(() => null);
    const log = err1();
    victim = s?.trials.find((x) => (x.refine_round ?? 0) >= 1 && existsSync(join(out, 'checkpoints', x.trial_id, 'step-0.safetensors')) && !new RegExp(`trial ${x.trial_id}\\b[^\\n]* done`).test(log))?.trial_id ?? '';
    return victim !== '';
  }, 90_000, 'a refinement trial running', 25).catch((e: Error) => {
    throw new Error(`${e.message}\n${err1()}`);
  });
  const before = rounds(await sweepJson(out));
  const runFile = JSON.parse(await readFile(join(out, 'run.json'), 'utf8')) as { pid: number };
  t.is(runFile.pid, o1.child.pid ?? -1);
  // The server of the round that runs now: the last one started.
  const natsPid = Number([...err1().matchAll(/embedded nats-server on \S+ \(pid (\d+);/g)].at(-1)?.[1]);
  t.true(natsPid > 0 && pidAlive(natsPid), `nats-server pid ${natsPid}: ${err1()}`);
  o1.child.kill('SIGKILL');
  await o1;
  const killedAt = Date.now();
  await until(() => !pidAlive(natsPid), 10_000, `nats-server pid ${natsPid} to exit`, 50).catch(() => undefined);
  t.false(pidAlive(natsPid), `nats-server pid ${natsPid} still running after its orchestrator was killed`);
  t.log(`killed after ${((killedAt - t0) / 1000).toFixed(1)} s during round ${before.get(victim)} (${before.size} trials recorded); nats-server gone ${((Date.now() - killedAt) / 1000).toFixed(1)} s later`);

  // The same command: finishes.
  const r2 = await cli(args, { env: ENV, timeoutMs: 120_000 });
  t.is(r2.code, 0, r2.stderr);
  const t2 = Date.now();
  const after = await sweepJson(out);
  // Rounds recorded before the kill are kept.
  for (const [id, round] of before) t.is(rounds(after).get(id) ?? -1, round, `trial ${id}`);
  t.true(Math.max(...rounds(after).values()) === 2, JSON.stringify([...rounds(after)]));

  const r3 = await o3;
  t.is(r3.code, 0, r3.stderr);
  const sorted = (m: Map<string, number>) => [...m].sort((a, b) => a[0].localeCompare(b[0]));
  t.deepEqual(sorted(rounds(after)), sorted(rounds(await sweepJson(ref))));

  // Every trial done exactly once, its completed attempt with the steps of the uninterrupted run's, each once.
  const steps = async (dir: string) =>
    duck(`
    SELECT t.trial_id, t.status, t.attempts, t.final_phase, t.resumed_from_attempt, t.resumed_from_step,
      (SELECT list(m.step ORDER BY m.step) FROM read_parquet('${dir}/metrics/**/*.parquet', hive_partitioning = true) m
        WHERE m.trial_id = t.trial_id AND m.attempt = t.attempts) AS steps
    FROM '${dir}/trials.parquet' t ORDER BY t.trial_id`);
  const rows = await steps(out);
  const refRows = new Map((await steps(ref)).map((r) => [r.trial_id as string, r]));
  t.deepEqual(rows.map((r) => r.trial_id), [...rounds(after).keys()].sort());
  for (const r of rows) {
    t.is(r.status, 'done', `trial ${r.trial_id as string}`);
    const items = (r.steps as { items: number[] }).items;
    t.deepEqual(items, (refRows.get(r.trial_id as string)?.steps as { items: number[] } | undefined)?.items, `trial ${r.trial_id as string} attempt ${r.attempts as number}: the steps of the uninterrupted run`);
    t.is(items[0], 0);
    t.is(r.final_phase, refRows.get(r.trial_id as string)?.final_phase, `trial ${r.trial_id as string}: the phase of the uninterrupted run`);
  }
  const dups = await duck(`
    SELECT count(*) AS n FROM (SELECT trial_id, attempt, step, count(*) AS c
      FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY ALL HAVING c > 1)`);
  t.is(Number(dups[0]!.n), 0);
  t.log(`resumed run ${((t2 - killedAt) / 1000).toFixed(1)} s; uninterrupted run alongside; total ${((Date.now() - t0) / 1000).toFixed(1)} s; ${rows.length} trials; the killed one finished as attempt ${String(rows.find((r) => r.trial_id === victim)?.attempts)}, resumed from attempt ${String(rows.find((r) => r.trial_id === victim)?.resumed_from_attempt)} step ${String(rows.find((r) => r.trial_id === victim)?.resumed_from_step)}`);
});
