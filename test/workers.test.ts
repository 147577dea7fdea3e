/**
 * Stand-alone workers: `phasemap worker` processes join a nats-server, the orchestrator runs with
 * `--slots 0`, and the sweep completes on the workers; SIGTERM hands a running trial back.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { duck, runCli, startNats, stderrOf, tempDir, until } from './helpers.js';

const spec = (name: string, steps: number, lrs: string) => `
name: ${name}
problem: {name: poisson2d, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${steps}, log_every: 50, eval_every: 50}
diagnostics: {every: 100, snr_batches: 4}
grid:
  train.lr: ${lrs}
`;

/** Live stderr of a CLI child. */
test.serial('two phasemap worker processes run a sweep whose orchestrator has no slots; SIGTERM stops them cleanly', async (t) => {
  const work = await tempDir('workers');
  const nats = await startNats(join(work, 'store'));
  try {
    // One trial per slot (--fuse 1): with trial fusion the first worker to see the streams could take
    // all four same-shaped trials in one group before the other pulls (test/fusion-agent.test.ts covers fusion).
    const w1 = runCli(['worker', '--nats', nats.url, '--slots', '1', '--fuse', '1', '--backend', 'wasm', '--name', 'w1']);
    const w2 = runCli(['worker', '--nats', nats.url, '--slots', '1', '--fuse', '1', '--backend', 'wasm', '--name', 'w2']);
    const e1 = stderrOf(w1);
    const e2 = stderrOf(w2);
    // Both wait for an orchestrator to create the streams.
    await until(() => /waiting for an orchestrator/.test(e1()) && /waiting for an orchestrator/.test(e2()), 30_000, 'workers to connect', 100);
    const file = join(work, 'w.yaml');
    await writeFile(file, spec('two-workers', 1500, '[0.001, 0.002, 0.003, 0.004]'));
    const r = await runCli(['run', file, '--out', join(work, 'out'), '--nats', nats.url, '--slots', '0']);
    t.is(r.code, 0, r.stderr);
    t.regex(r.stderr, /no local worker/);
    const rows = await duck(`SELECT status, count(*) AS n FROM '${work}/out/trials.parquet' GROUP BY status`);
    t.deepEqual(rows.map((x) => [x.status, Number(x.n)]), [['done', 4]]);
    const done = (s: string) => (s.match(/trial t[0-9a-f]{16}(?: \([^)]*\))? attempt 1 done/g) ?? []).length;
    t.is(done(e1()) + done(e2()), 4);
    t.true(done(e1()) >= 1 && done(e2()) >= 1, `both workers ran trials: w1 ${done(e1())}, w2 ${done(e2())}`);
    w1.child.kill('SIGTERM');
    w2.child.kill('SIGTERM');
    const [x1, x2] = await Promise.all([w1, w2]);
    t.deepEqual([x1.code, x2.code], [0, 0]);
  } finally {
    await nats.stop();
  }
});

test.serial('SIGTERM to a worker mid-trial hands the trial back at once; another worker finishes it as attempt 2', async (t) => {
  const work = await tempDir('handback');
  const nats = await startNats(join(work, 'store'));
  try {
    const file = join(work, 'h.yaml');
    await writeFile(file, spec('handback', 6000, '[0.001]'));
    const w1 = runCli(['worker', '--nats', nats.url, '--slots', '1', '--backend', 'wasm', '--name', 'w1']);
    const e1 = stderrOf(w1);
    const run = runCli(['run', file, '--out', join(work, 'out'), '--nats', nats.url, '--slots', '0']);
    // Let w1 train for a while (the trial takes ~20 s), then stop it.
    await until(() => /pulling trials/.test(e1()), 30_000, 'w1 to start', 100);
    await new Promise((r) => setTimeout(r, 3000));
    const t0 = Date.now();
    w1.child.kill('SIGTERM');
    const x1 = await w1;
    t.is(x1.code, 0);
    t.true(Date.now() - t0 < 10_000, `w1 stopped in ${Date.now() - t0} ms`);
    t.regex(e1(), /SIGTERM: handing 1 running trial\(s\) back/);
    const w2 = runCli(['worker', '--nats', nats.url, '--slots', '1', '--backend', 'wasm', '--name', 'w2']);
    const r = await run;
    t.is(r.code, 0, r.stderr);
    const [row] = await duck(`SELECT status, attempts FROM '${work}/out/trials.parquet'`);
    t.deepEqual([row!.status, row!.attempts], ['done', 2]);
    const steps = await duck(`
      SELECT count(*) AS n, count(DISTINCT step) AS d, min(step) AS lo, max(step) AS hi
      FROM read_parquet('${work}/out/metrics/trial_id=*/attempt=2/*.parquet')`);
    t.deepEqual(steps.map((s) => [Number(s.n), Number(s.d), s.lo, s.hi]), [[121, 121, 0, 5999]]);
    w2.child.kill('SIGTERM');
    t.is((await w2).code, 0);
  } finally {
    await nats.stop();
  }
});
