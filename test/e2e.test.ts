/**
 * End to end: the real CLI, a real nats-server (embedded, and external via --nats), real worker
 * threads training real PINNs, Parquet read back through DuckDB.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import test from 'ava';
import { transportNames } from '../schemas/transport.js';
import { DEFAULT_PHASE_PARAMS } from '../analysis/phases.js';
import { duck, runCli, startNats, tempDir } from './helpers.js';

const tiny = (lrs: string, name = 'tiny') => `
name: ${name}
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 20, log_every: 5, eval_every: 10}
diagnostics: {every: 10, snr_batches: 4}
grid:
  train.lr: ${lrs}
  strategy: [{name: vanilla}, {name: rba, eta: 0.01, gamma: 0.99}]
`;

async function partFiles(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  const walk = async (d: string): Promise<void> => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.set(p, (await stat(p)).mtimeMs);
    }
  };
  await walk(join(dir, 'metrics'));
  return out;
}

test.serial('phasemap run: a tiny sweep end to end, re-run runs nothing, a grown grid runs only the new trials', async (t) => {
  const work = await tempDir('e2e');
  const spec = join(work, 'tiny.yaml');
  const out = join(work, 'out');
  await writeFile(spec, tiny('[0.001, 0.01]'));

  const r1 = await runCli(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm']);
  t.is(r1.code, 0, r1.stderr);
  t.regex(r1.stderr, /4 to run/);
  // The phase diagram is printed and written at the end of the sweep.
  t.regex(r1.stdout, /strategy = rba\n[\s\S]*batch_size \\ lr[\s\S]*strategy = vanilla/);
  const cells = await duck(`SELECT strategy, lr, batch_size, trials FROM '${out}/phase_diagram.parquet' ORDER BY strategy, lr`);
  t.deepEqual(cells.map((c) => [c.strategy, c.lr, c.batch_size, c.trials]), [['rba', 0.001, 64, 1], ['rba', 0.01, 64, 1], ['vanilla', 0.001, 64, 1], ['vanilla', 0.01, 64, 1]]);

  const trials = await duck(`SELECT trial_id, status, attempts, backend, device, host, lr, strategy, batch_size, final_rel_l2, error FROM '${out}/trials.parquet' ORDER BY lr, strategy`);
  t.is(trials.length, 4);
  t.deepEqual(trials.map((r) => r.status), ['done', 'done', 'done', 'done']);
  t.deepEqual(trials.map((r) => `${r.lr}/${r.strategy}`), ['0.001/rba', '0.001/vanilla', '0.01/rba', '0.01/vanilla']);
  for (const r of trials) {
    t.is(r.attempts, 1);
    t.is(r.backend, 'wasm');
    t.is(r.device, 'cpu');
    t.is(r.batch_size, 64);
    t.is(r.error, null);
    t.true(typeof r.host === 'string' && r.host.length > 0);
    t.true(Number.isFinite(r.final_rel_l2 as number));
  }

  const m = await duck(`
    SELECT trial_id, count(*) AS n, count(snr) AS n_snr, count(rel_l2) AS n_rel,
           list(step ORDER BY step) AS steps, list(step ORDER BY step) FILTER (WHERE snr IS NOT NULL) AS snr_steps,
           bool_and(isfinite(snr)) AS snr_finite, bool_and(isfinite(rel_l2)) AS rel_finite,
           min(len(snr_layers)) AS layers_min, max(len(snr_layers)) AS layers_max, max(attempt) AS attempt
    FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY trial_id`);
  t.is(m.length, 4);
  for (const r of m) {
    t.is(Number(r.n), 5);
    t.deepEqual((r.steps as { items: number[] }).items, [0, 5, 10, 15, 19]);
    t.is(Number(r.n_snr), 3);
    t.is(Number(r.n_rel), 3);
    t.true(r.snr_finite as boolean);
    t.true(r.rel_finite as boolean);
    t.is(Number(r.layers_min), 3);
    t.is(Number(r.layers_max), 3);
    t.is(Number(r.attempt), 1);
  }

  // The phase record: three typed columns; with 3 SNR points per trial (fewer than sustain_points)
  // no transition can be read, so every trial ends in 'fitting' (or 'diverged').
  const phaseTypes = await duck(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '${out}/trials.parquet') WHERE column_name IN ('t_diffusion', 't_equilibrium', 'final_phase')`);
  t.deepEqual(phaseTypes.map((r) => `${r.column_name} ${r.column_type}`), ['t_diffusion INTEGER', 't_equilibrium INTEGER', 'final_phase VARCHAR']);
  const phases = await duck(`SELECT t_diffusion, t_equilibrium, final_phase, diverged FROM '${out}/trials.parquet'`);
  for (const r of phases) t.deepEqual([r.t_diffusion, r.t_equilibrium, r.final_phase], [null, null, r.diverged ? 'diverged' : 'fitting']);
  const sweepFile = JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as { analysis: unknown };
  t.deepEqual(sweepFile.analysis, { ...DEFAULT_PHASE_PARAMS });

  const joined = await duck(`
    SELECT t.lr, t.batch_size, t.strategy, m.step, m.snr, m.rel_l2
    FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m
    JOIN '${out}/trials.parquet' t USING (trial_id)`);
  t.is(joined.length, 20);

  // Re-run with other analysis thresholds: the same trial ids (nothing runs), phases re-read from disk.
  const before = await partFiles(out);
  await writeFile(spec, `${tiny('[0.001, 0.01]')}analysis: {sustain_points: 2}\n`);
  const r2 = await runCli(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm']);
  t.is(r2.code, 0, r2.stderr);
  t.regex(r2.stderr, /4 trial\(s\), 4 already done in .*, 0 to run/);
  t.regex(r2.stderr, /phases of 4 done trial\(s\) re-read/);
  t.deepEqual(await partFiles(out), before);
  t.is((JSON.parse(await readFile(join(out, 'sweep.json'), 'utf8')) as { analysis: { sustain_points: number } }).analysis.sustain_points, 2);
  const reread = await duck(`SELECT final_phase FROM '${out}/trials.parquet'`);
  for (const r of reread) t.true(['fitting', 'steady', 'diffusion', 'equilibrium', 'diverged'].includes(r.final_phase as string));

  await writeFile(spec, tiny('[0.001, 0.01, 0.03]'));
  const r3 = await runCli(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm']);
  t.is(r3.code, 0, r3.stderr);
  t.regex(r3.stderr, /6 trial\(s\), 4 already done in .*, 2 to run/);
  const after = await partFiles(out);
  for (const [p, mtime] of before) t.is(after.get(p), mtime, `${p} rewritten`);
  const counts = await duck(`SELECT status, count(*) AS n FROM '${out}/trials.parquet' GROUP BY status`);
  t.deepEqual(counts.map((r) => [r.status, Number(r.n)]), [['done', 6]]);
  const rows = await duck(`SELECT count(*) AS n FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true)`);
  t.is(Number(rows[0]!.n), 30);
});

test.serial('phasemap run --nats: against a server it did not start', async (t) => {
  const work = await tempDir('e2e-nats');
  const nats = await startNats(join(work, 'store'));
  try {
    const spec = join(work, 'one.yaml');
    await writeFile(spec, tiny('[0.001]', 'ext').replace(/strategy: \[.*\]/, 'strategy: [{name: vanilla}]'));
    const r = await runCli(['run', spec, '--out', join(work, 'out'), '--nats', nats.url, '--slots', '1', '--backend', 'wasm']);
    t.is(r.code, 0, r.stderr);
    t.notRegex(r.stderr, /embedded nats-server/);
    const rows = await duck(`SELECT count(*) AS n FROM read_parquet('${work}/out/metrics/**/*.parquet', hive_partitioning = true)`);
    t.is(Number(rows[0]!.n), 5);
    const [trial] = await duck(`SELECT trial_id FROM '${work}/out/trials.parquet'`);
    const nc = await connect({ servers: nats.url });
    try {
      const kv = await new Kvm(jetstream(nc)).open(transportNames().stateBucket);
      const state = (await kv.get(`ext.${trial!.trial_id as string}`))?.json<{ status: string; attempt: number }>();
      t.deepEqual([state?.status, state?.attempt], ['done', 1]);
    } finally {
      await nc.close();
    }
  } finally {
    await nats.stop();
  }
});

test('a spec with a typo fails before anything runs and names the key', async (t) => {
  const work = await tempDir('e2e-typo');
  const spec = join(work, 'typo.yaml');
  await writeFile(spec, tiny('[0.001]').replace('log_every', 'log_evrey'));
  const r = await runCli(['run', spec, '--out', join(work, 'out')]);
  t.is(r.code, 2);
  t.regex(r.stderr, /train\.log_evrey: unknown key, expected one of the keys steps, .* \(did you mean 'log_every'\?\)/);
  t.false(existsSync(join(work, 'out')));
});

test('a missing nats-server binary says how to install it', async (t) => {
  const work = await tempDir('e2e-nobin');
  const spec = join(work, 's.yaml');
  await writeFile(spec, tiny('[0.001]'));
  const r = await runCli(['run', spec, '--out', join(work, 'out')], { env: { PHASEMAP_NATS_SERVER: '/nonexistent/nats-server' } });
  t.is(r.code, 3);
  t.regex(r.stderr, /nats-server not found.*\n.*apt-get install nats-server/);
});

test('trials that throw are retried up to max_attempts, then recorded failed with their error; the run exits 1 with a summary', async (t) => {
  // The tensorflow backend is not installed here: every attempt fails in its slot process at start.
  const work = await tempDir('e2e-fail');
  const spec = join(work, 'f.yaml');
  const out = join(work, 'out');
  await writeFile(spec, `${tiny('[0.001]', 'fails')}max_attempts: 2\n`);
  const r = await runCli(['run', spec, '--out', out, '--slots', '1', '--backend', 'tensorflow']);
  t.is(r.code, 1, r.stderr);
  t.regex(r.stderr, /2 of 2 trial\(s\) failed/);
  const rows = await duck(`SELECT status, attempts, error, backend, t_diffusion, t_equilibrium, final_phase FROM '${out}/trials.parquet'`);
  t.is(rows.length, 2);
  for (const row of rows) {
    t.is(row.status, 'failed');
    t.deepEqual([row.t_diffusion, row.t_equilibrium, row.final_phase], [null, null, null]);
    t.is(row.attempts, 2);
    t.regex(row.error as string, /tensorflow/);
    t.true((r.stderr as string).includes((row.error as string).split('\n')[0]!));
  }
});

test.serial('Ctrl-C mid-sweep, then the same command again: resumes, and the completed attempts are whole', async (t) => {
  const work = await tempDir('e2e-int');
  const spec = join(work, 'int.yaml');
  const out = join(work, 'out');
  await writeFile(spec, tiny('[0.001]', 'interrupt').replace('steps: 20', 'steps: 4000'));
  const first = runCli(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm']);
  // Interrupt once some metrics are on disk.
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && first.child.exitCode === null) {
    if (existsSync(join(out, 'metrics')) && (await partFiles(out)).size > 0) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  first.child.kill('SIGINT');
  const r1 = await first;
  t.is(r1.code, 130, r1.stderr);
  t.regex(r1.stderr, /interrupted: 0\/2 trial\(s\) of this run done/);

  const r2 = await runCli(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm']);
  t.is(r2.code, 0, r2.stderr);
  const trials = await duck(`SELECT trial_id, status, attempts FROM '${out}/trials.parquet'`);
  t.deepEqual(trials.map((r) => r.status), ['done', 'done']);
  for (const tr of trials) t.true((tr.attempts as number) >= 2, `trial ${tr.trial_id as string} ran again as a new attempt`);
  const expected = [...Array(800).keys()].map((i) => i * 5).concat([3999]);
  const complete = await duck(`
    SELECT m.trial_id, list(step ORDER BY step) AS steps
    FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m
    JOIN '${out}/trials.parquet' t ON m.trial_id = t.trial_id AND m.attempt = t.attempts
    GROUP BY m.trial_id`);
  t.is(complete.length, 2);
  for (const c of complete) t.deepEqual((c.steps as { items: number[] }).items, expected);
  const dups = await duck(`
    SELECT count(*) AS n FROM (SELECT trial_id, attempt, step, count(*) AS c
      FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY ALL HAVING c > 1)`);
  t.is(Number(dups[0]!.n), 0);
  // phasemap query: `metrics` holds the completed attempts only, one row per (trial, logged step);
  // `metrics_all` also the interrupted attempts' rows.
  const q = await runCli(['query', out, `SELECT (SELECT count(*) FROM metrics) AS n, (SELECT count(DISTINCT (trial_id, step)) FROM metrics) AS distinct_steps, (SELECT count(*) FROM metrics_all) AS n_all`, '--format', 'json']);
  t.is(q.code, 0, q.stderr);
  const [counts] = JSON.parse(q.stdout) as Array<{ n: number; distinct_steps: number; n_all: number }>;
  t.deepEqual([counts!.n, counts!.distinct_steps], [2 * expected.length, 2 * expected.length]);
  t.true(counts!.n_all > counts!.n, `metrics_all (${counts!.n_all} rows) also holds the interrupted attempts' rows`);
});
