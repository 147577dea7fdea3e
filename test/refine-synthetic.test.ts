/**
 * Refinement through the real orchestrator, NATS, workers and collector, on the synthetic phase
 * field (worker/trainer/synthetic.ts: a trial is `diffusion` when lr > 3e-3 · (b / 64)^0.5, b its
 * effective batch size, else `steady`): the rounds bracket the known boundary to the asked
 * resolution within the budget; refining again adds nothing; `phasemap refine DIR` SIGKILLed in the
 * middle of a round finishes, run again, with the trials of an uninterrupted refine, each once.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { duck, stderrOf, tempDir, trackedCli, until } from './helpers.js';

/** The field's boundary (synthetic.ts defaults). */
const lrStar = (b: number) => 3e-3 * (b / 64) ** 0.5;
const N = 1024;

const spec = (refine: string, batches = '[16, 64, 256, full]') => `
name: synthetic-refine
problem: {name: poisson2d, n_collocation: ${N}, n_boundary: 32, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 400, log_every: 10, eval_every: 100}
diagnostics: {every: 10, snr_batches: 4}
grid:
  train.lr: {logspace: [-4, -1, 4]}
  train.batch_size: ${batches}
${refine}`;

const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

interface SweepJson { trials: Array<{ trial_id: string; refine_round?: number }> }
const sweepJson = async (out: string) => JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as SweepJson;
const trialsOf = (dir: string) =>
  duck(`SELECT trial_id, lr, batch_size AS b, status, final_phase, attempts FROM '${dir}/trials.parquet' ORDER BY trial_id`) as Promise<
    Array<{ trial_id: string; lr: number; b: number; status: string; final_phase: string; attempts: number }>
  >;

test.serial('refinement on a synthetic phase field brackets the known boundary to the resolution, within the budget; refining again adds nothing', async (t) => {
  const work = await tempDir('refine-synthetic');
  const file = join(work, 'spec.yaml');
  await writeFile(file, spec('refine: {rounds: 10, resolution: 1.25, budget: 100}'));
  const out = join(work, 'out');
  const env = { PHASEMAP_SYNTHETIC_FIELD: '{}' };
  const t0 = Date.now();
  const r = await cli(['run', file, '--out', out, '--slots', '2'], { env, timeoutMs: 180_000 });
  t.is(r.code, 0, r.stderr);
  t.log(`run with refinement: ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  const rows = await trialsOf(out);
  const grid = 16;
  t.true(rows.length > grid && rows.length - grid <= 100, `${rows.length - grid} refinement trials (budget 100)`);
  // Every trial has the phase the field gives it, read by the real phase record.
  for (const x of rows) {
    t.is(x.status, 'done');
    t.is(x.final_phase, Number(x.lr) > lrStar(x.b) ? 'diffusion' : 'steady', `lr ${x.lr} batch ${x.b}`);
  }
  // Along every batch size of the grid, the boundary is bracketed by samples within a factor 1.25.
  for (const b of [16, 64, 256, N]) {
    const at = rows.filter((x) => x.b === b);
    const below = Math.max(...at.filter((x) => Number(x.lr) <= lrStar(b)).map((x) => Number(x.lr)));
    const above = Math.min(...at.filter((x) => Number(x.lr) > lrStar(b)).map((x) => Number(x.lr)));
    t.true(above / below <= 1.25, `batch ${b}: lr* = ${lrStar(b).toPrecision(3)} bracketed by ${below} and ${above} (factor ${(above / below).toFixed(3)})`);
  }
  // The diagram prints the boundary estimates: batch 64, lr* = 3e-3.
  const d = await cli(['diagram', out]);
  t.is(d.code, 0, d.stderr);
  const line = d.stdout.split('\n').find((l) => l.includes('batch 64: steady → diffusion between lr'));
  t.truthy(line, d.stdout);
  const [lo, hi] = /between lr ([\d.e-]+) and ([\d.e-]+)/.exec(line!)!.slice(1).map(Number);
  t.true(lo! <= 3e-3 && 3e-3 <= hi! && hi! / lo! <= 1.25 * 1.01, line);

  // Refining again adds nothing.
  const before = (await sweepJson(out)).trials.length;
  const again = await cli(['refine', out], { env, timeoutMs: 60_000 });
  t.is(again.code, 0, again.stderr);
  t.is((await sweepJson(out)).trials.length, before);
  t.regex(again.stderr, /nothing to refine/);
});

test.serial('phasemap refine DIR SIGKILLed in the middle of a round: run again, it finishes with the trials of an uninterrupted refine, each once', async (t) => {
  const work = await tempDir('refine-synthetic-kill');
  const file = join(work, 'spec.yaml');
  await writeFile(file, spec('', '[16, 256]'));
  // 41 rows of 20 ms: a trial takes about a second, so a round is caught running.
  const env = { PHASEMAP_SYNTHETIC_FIELD: '{"row_ms": 20}', PHASEMAP_TRIAL_ACK_WAIT_S: '4' };
  const refineArgs = ['--rounds', '3', '--budget', '20', '--slots', '2'];
  const [out, ref] = [join(work, 'out'), join(work, 'ref')];
  for (const dir of [out, ref]) {
    const g = await cli(['run', file, '--out', dir, '--slots', '2'], { env, timeoutMs: 120_000 });
    t.is(g.code, 0, g.stderr);
  }
  // The uninterrupted refine.
  const r0 = await cli(['refine', ref, ...refineArgs], { env, timeoutMs: 120_000 });
  t.is(r0.code, 0, r0.stderr);

  // The killed one: SIGKILLed once round 2's trials are queued and the first of them is done.
  const o1 = cli(['refine', out, ...refineArgs], { env, timeoutMs: 120_000 });
  const err1 = stderrOf(o1);
  await until(() => {
    if (o1.child.exitCode !== null) throw new Error(`refine ended (${o1.child.exitCode}) before round 2 was caught running:\n${err1()}`);
    const log = err1();
    const at = log.indexOf('refine: round 2 of 3');
    return at >= 0 && / done \(attempt/.test(log.slice(at));
  }, 90_000, 'round 2 running', 20);
  o1.child.kill('SIGKILL');
  await o1;
  const killed = (await sweepJson(out)).trials.filter((x) => x.refine_round === 2).length;
  t.true(killed > 0);

  const r2 = await cli(['refine', out, ...refineArgs], { env, timeoutMs: 120_000 });
  t.is(r2.code, 0, r2.stderr);
  t.regex(r2.stderr, /trial\(s\) of round 2 not done yet: running them first/);
  const rounds = async (dir: string) => (await sweepJson(dir)).trials.map((x) => `${x.trial_id}:${x.refine_round ?? 0}`).sort();
  t.deepEqual(await rounds(out), await rounds(ref));
  const [a, b] = [await trialsOf(out), await trialsOf(ref)];
  t.deepEqual(a.map((x) => [x.trial_id, x.status, x.final_phase]), b.map((x) => [x.trial_id, x.status, x.final_phase]));
  const dups = await duck(`SELECT count(*) AS n FROM (SELECT trial_id, attempt, step, count(*) AS c FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY ALL HAVING c > 1)`);
  t.is(Number(dups[0]!.n), 0);
  const steps = await duck(`SELECT count(*) AS n FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m JOIN '${out}/trials.parquet' t ON m.trial_id = t.trial_id AND m.attempt = t.attempts`);
  t.is(Number(steps[0]!.n), a.length * 41, 'each trial: its 41 rows (steps 0, 10, …, 390, 399), once');
  t.log(`killed during round 2 (${killed} trials recorded in it); ${a.length} trials in all`);
});
