/**
 * `phasemap status DIR`: during a run (DIR/run.json names the embedded server; trials with their grid
 * values and their step from the metrics on disk), after it (read from trials.parquet), with a stale
 * run file; trial names from grid values; the ETA counts running trials; ISO time on log lines.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import test from 'ava';
import { dirStatus, type DirStatus } from '../orchestrator/dir-status.js';
import { logLine, plainLogger, SweepProgress, sweepEta } from '../orchestrator/progress.js';
import { RUN_FILE } from '../orchestrator/run-file.js';
import { labelIds, shortNumber, trialLabels, withTrialLabels } from '../orchestrator/trial-names.js';
import { duck, stderrOf, tempDir, trackedCli, until } from './helpers.js';

const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

const ISO_LINE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \[(info|warn|error)\] /;

test('short numbers and trial labels: only the varying grid axes, strategies by name', (t) => {
  t.deepEqual([0.001, 0.003, 5e-4, 0.015, 256, 1, 0.5, 0.25, 1000, 1234.5, 2e6].map(shortNumber), ['1e-3', '3e-3', '5e-4', '1.5e-2', '256', '1', '0.5', '0.25', '1000', '1.23e3', '2e6']);
  const trials: Array<{ trial_id: string; grid_values: Record<string, unknown> }> = [];
  for (const lr of [0.001, 0.003])
    for (const batch of ['full', 256])
      for (const strategy of [{ name: 'vanilla' }, { name: 'rba', eta: 0.001, gamma: 0.999 }])
        for (const seed of [0, 1]) trials.push({ trial_id: `t${trials.length.toString(16).padStart(16, '0')}`, grid_values: { 'train.lr': lr, 'train.batch_size': batch, strategy, seed, 'model.width': 20 } });
  const labels = trialLabels(trials);
  t.is(labels.get(trials[0]!.trial_id), 'lr=1e-3 batch=full vanilla seed=0');
  t.is(labels.get(trials[15]!.trial_id), 'lr=3e-3 batch=256 rba seed=1');
  // Values of one strategy name are told apart by the fields that differ; a single-valued axis is left out.
  const rba = trialLabels([
    { trial_id: 'a', grid_values: { strategy: { name: 'rba', eta: 0.01, gamma: 0.99 }, 'problem.a2': 2 } },
    { trial_id: 'b', grid_values: { strategy: { name: 'rba', eta: 0.001, gamma: 0.99 }, 'problem.a2': 2 } },
    { trial_id: 'c', grid_values: { strategy: { name: 'vanilla' }, 'problem.a2': 2 } },
  ]);
  t.deepEqual([...rba.values()], ['rba(eta=1e-2)', 'rba(eta=1e-3)', 'vanilla']);
  t.deepEqual([...trialLabels([{ trial_id: 'x', grid_values: { seed: 0 } }]).values()], ['']);
  // In log lines: beside the id (and its #attempt), not inside paths, never twice.
  const id = trials[0]!.trial_id;
  t.is(labelIds(`trial ${id} done; ${id}#2; metrics/trial_id=${id}/attempt=1`, labels), `trial ${id} (lr=1e-3 batch=full vanilla seed=0) done; ${id}#2 (lr=1e-3 batch=full vanilla seed=0); metrics/trial_id=${id}/attempt=1`);
  t.is(labelIds(`${id} (lr=1e-3 batch=full vanilla seed=0)`, labels), `${id} (lr=1e-3 batch=full vanilla seed=0)`);
});

test('log lines start with an ISO timestamp and name trials by their grid values', (t) => {
  const out = new PassThrough();
  let text = '';
  out.on('data', (d: Buffer) => (text += d.toString()));
  const log = withTrialLabels(plainLogger(out), new Map([['t0123456789abcdef', 'lr=1e-3 rba seed=0']]));
  log.info('trial t0123456789abcdef done');
  log.warn('careful');
  log.error('bad');
  const lines = text.trimEnd().split('\n');
  t.is(lines.length, 3);
  for (const l of lines) t.regex(l, ISO_LINE);
  t.regex(lines[0]!, /\[info\] trial t0123456789abcdef \(lr=1e-3 rba seed=0\) done$/);
  t.is(logLine('warn', 'x', new Date(Date.UTC(2025, 0, 31, 12))), '2025-01-31T12:00:00.000Z [warn] x');
});

test('the ETA counts the steps left of running trials, not only of queued ones', (t) => {
  // Three trials running, none queued: the ETA is their remaining steps over their speed, not 0.
  const e = sweepEta([
    { steps: 400, step: 99, rate: 10 },
    { steps: 400, step: 199, rate: 10 },
    { steps: 400, step: 299, rate: null }, // not measured yet: counts at the others' mean speed
  ]);
  t.is(e.remaining, 300 + 200 + 100);
  t.is(e.rate, 30);
  t.is(e.eta_s, 20);
  // Queued trials add their steps, not speed; no speed known at all: no ETA.
  t.is(sweepEta([{ steps: 100, step: 49, rate: 5 }, { steps: 100, step: null }]).eta_s, 150 / 5);
  t.is(sweepEta([{ steps: 100, step: null }]).eta_s, null);

  const lines: string[] = [];
  const base = { info: (m: string) => lines.push(m), warn: (m: string) => lines.push(m), error: (m: string) => lines.push(m) };
  const ids = ['t000000000000000a', 't000000000000000b', 't000000000000000c'];
  const p = new SweepProgress(ids.map((id, i) => ({ trial_id: id, steps: 4000, label: `lr=${i + 1}e-3` })), false, base);
  try {
    const t0 = 1_000_000;
    // One trial resumes from a checkpoint at step 3000: its first message counts no steps done.
    p.onProgress({ trial_id: ids[0]!, attempt: 2, step: 3000, steps: 4000, worker: 'w' }, t0);
    p.onProgress({ trial_id: ids[1]!, attempt: 1, step: 0, steps: 4000, worker: 'w' }, t0);
    p.onProgress({ trial_id: ids[0]!, attempt: 2, step: 3100, steps: 4000, worker: 'w' }, t0 + 2000);
    p.onProgress({ trial_id: ids[1]!, attempt: 1, step: 100, steps: 4000, worker: 'w' }, t0 + 2000);
    const s = p.snapshot(t0 + 2000);
    t.deepEqual(s.running.map((r) => [r.trial_id, r.step, r.label]), [[ids[0], 3100, 'lr=1e-3'], [ids[1], 100, 'lr=2e-3']]);
    t.is(s.rate, 100);
    // 899 + 3899 left of the running ones, 4000 of the queued one, at 100 steps/s.
    t.is(s.eta_s, (899 + 3899 + 4000) / 100);
    // A finished trial leaves the ETA; the running one still counts.
    p.onFinished(ids[0]!, 'done', 4000, 40);
    t.true(p.snapshot(t0 + 2000).eta_s! > 0);
    t.regex(lines.at(-1)!, /^progress: 1\/3 trials done, 1 running, 0 failed, \d+ steps\/s, ETA (?!0s)\S+; running: t000000… lr=2e-3 100\/4000$/);
    // Its last step trained, the trial still waits for its results to be written: not "ETA 0s".
    p.onProgress({ trial_id: ids[1]!, attempt: 1, step: 3999, steps: 4000, worker: 'w' }, t0 + 4000);
    p.onFinished(ids[2]!, 'failed', 0, 0);
    t.is(p.snapshot(t0 + 4000).eta_s, 0);
    (p as unknown as { tick(): void }).tick();
    t.regex(lines.at(-1)!, /^progress: 1\/3 trials done, 1 running, 1 failed, \d+ steps\/s, ETA -- \(training done; writing the results of 1 trial\(s\)\); running: t000000… lr=2e-3 3999\/4000$/);
  } finally {
    p.stop();
  }
});

const spec = (steps: number) => `
name: stat
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${steps}, log_every: 10, eval_every: 100}
diagnostics: {every: 20, snr_batches: 4}
grid:
  train.lr: [0.001, 0.01]
  strategy: [{name: vanilla}]
`;

const statusJson = async (dir: string, cwd?: string): Promise<DirStatus> => {
  const r = await cli(['status', ...(cwd ? [] : [dir]), '--json'], { cwd, timeoutMs: 60_000 });
  if (r.code !== 0) throw new Error(`status exited ${r.code}: ${r.stderr}`);
  return JSON.parse(r.stdout) as DirStatus;
};

test.serial('phasemap status DIR: from the run\'s embedded server while it runs, from trials.parquet after it', async (t) => {
  const work = await tempDir('status');
  const file = join(work, 'stat.yaml');
  const out = join(work, 'out');
  await writeFile(file, spec(4000));
  // One slot (the two trials run fused on it, or one after the other).
  const run = cli(['run', file, '--out', out, '--slots', '1', '--backend', 'wasm'], { timeoutMs: 240_000 });
  const err = stderrOf(run);

  // During the run: DIR/run.json names the embedded server; a running trial shows its step from its
  // metrics (the collector writes them every 5 s). Polled in this process (the CLI's own code), then
  // through the CLI.
  let seen: DirStatus | null = null;
  await until(async () => {
    if (run.child.exitCode !== null) return true;
    if (!existsSync(join(out, RUN_FILE))) return false;
    const s = await dirStatus(out).catch(() => null);
    if (s?.source === 'server' && s.trials.some((x) => x.status === 'running' && (x.step ?? 0) > 0)) seen = s;
    return seen !== null;
  }, 120_000, 'a running trial with metrics on disk', 200);
  t.not(seen, null, 'the run ended before status saw a running trial with metrics');
  const cliDuring = await statusJson(out);
  const runFile = JSON.parse(await readFile(join(out, RUN_FILE), 'utf8').catch(() => '{}')) as { url?: string; pid?: number };
  const table = await cli(['status', out]);
  const during = seen!;
  t.is(during.run?.pid, run.child.pid!);
  t.true(during.run?.alive);
  t.regex(during.run?.url ?? '', /^nats:\/\/127\.0\.0\.1:\d+$/);
  if (runFile.pid !== undefined) t.is(runFile.pid, run.child.pid!);
  t.deepEqual(during.trials.map((x) => x.label), ['lr=1e-3', 'lr=1e-2']);
  const running = during.trials.find((x) => x.status === 'running' && (x.step ?? 0) > 0)!;
  // From a logged metrics row (every 10 steps, and the last), with its rel. L2 and phase so far.
  t.true(running.step! % 10 === 0 || running.step === 3999, `step ${running.step}`);
  t.true(running.rel_l2 !== null && Number.isFinite(running.rel_l2));
  t.true(typeof running.phase === 'string');
  t.is(running.steps, 4000);
  t.true(running.steps_per_s! > 0);
  // The ETA counts the running trials' steps left (and a queued one's, when one waits).
  t.true(during.eta_s! >= (4000 - 1 - running.step!) / during.steps_per_s!);
  t.true(during.eta_s! > 0);
  // The CLI a moment later: the same view (the run may have moved on meanwhile).
  t.deepEqual(cliDuring.trials.map((x) => x.label), ['lr=1e-3', 'lr=1e-2']);
  t.true(cliDuring.trials.some((x) => (x.step ?? 0) > 0));
  if (cliDuring.source === 'server') t.true(cliDuring.run?.alive);
  // The table view names the trials by their grid values.
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /sweep stat in .*: 2 trial\(s\)/);
  t.regex(table.stdout, /t[0-9a-f]{16} +│ lr=1e-3 +│/);

  // The sweep is done once the run says so (it goes on writing the report meanwhile).
  await until(() => run.child.exitCode !== null || /\[info\] done: /.test(err()), 120_000, 'the end of the sweep');
  t.false(existsSync(join(out, RUN_FILE)), 'run.json is removed at the end');

  // After the run, from the DIR itself (here: as the current directory).
  const after = await statusJson(out, out);
  t.is(after.source, 'dir');
  t.is(after.run, null);
  t.is(after.eta_s, null);
  t.deepEqual(after.counts, { queued: 0, running: 0, done: 2, failed: 0, cancelled: 0 });
  const phases = await duck(`SELECT trial_id, final_phase, final_rel_l2 FROM '${out}/trials.parquet'`);
  const byId = new Map(phases.map((p) => [p.trial_id as string, p]));
  for (const x of after.trials) {
    t.is(x.status, 'done');
    t.is(x.phase, byId.get(x.trial_id)!.final_phase as string);
    t.is(x.rel_l2, byId.get(x.trial_id)!.final_rel_l2 as number | null);
    t.is(x.step, 3999);
  }
  const text = await cli(['status'], { cwd: out });
  t.is(text.code, 0, text.stderr);
  t.regex(text.stdout, /2 trial\(s\) — done 2; no run \(read from trials\.parquet\)/);
  t.regex(text.stdout, /│ lr=1e-2 +│ done +│ \w+ +│ 4000\/4000 │/);

  // A run file left by a killed run (dead pid), and one whose server refuses: read from DIR, with a note.
  const dead = spawnSync(process.execPath, ['-e', '0']).pid;
  await writeFile(join(out, RUN_FILE), JSON.stringify({ pid: dead, host: hostname(), sweep: 'stat', namespace: 'phasemap', started_at: new Date().toISOString(), url: 'nats://127.0.0.1:1', nats: null }));
  const stale = await statusJson(out);
  t.is(stale.source, 'dir');
  t.false(stale.run?.alive);
  t.regex(stale.note ?? '', /not running/);
  t.is(stale.counts.done, 2);
  await writeFile(join(out, RUN_FILE), JSON.stringify({ pid: process.pid, host: hostname(), sweep: 'stat', namespace: 'phasemap', started_at: new Date().toISOString(), url: 'nats://127.0.0.1:1', nats: null }));
  const refused = await statusJson(out);
  t.is(refused.source, 'dir');
  t.regex(refused.note ?? '', /did not answer/);
  t.is(refused.counts.done, 2);

  // Not a results DIR: exit 2, saying what to give.
  const bad = await cli(['status'], { cwd: work });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /not a results DIR.*--nats URL/);

  const r = await run;
  t.is(r.code, 0, r.stderr);
  // Every log line starts with its ISO time; trials are named by grid values beside their ids.
  for (const line of r.stderr.split('\n').filter(Boolean)) t.regex(line, ISO_LINE);
  t.regex(r.stderr, /trial t[0-9a-f]{16} \(lr=1e-3\) done \(attempt 1/);
  t.regex(r.stderr, /progress: .*running: t[0-9a-f]{6}… lr=1e-[23] \d+\/4000/);
});
