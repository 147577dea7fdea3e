/**
 * A full results disk and a stuck JetStream, with the real CLI and its embedded nats-server:
 * - DIR on a small tmpfs that the sweep fills: the run says so in one line, writes and acknowledges
 *   nothing while the free space is under --min-free, and goes on by itself when the tmpfs is grown;
 *   every (trial, attempt, step) is on disk once and the embedded server is gone at the end;
 * - Ctrl-C returns within seconds and leaves no nats-server, also when the server is stopped (SIGSTOP);
 *   so does a SIGKILL of `phasemap run` (its guard stops the server);
 * - an embedded server whose JetStream stops answering ends the run with one clear error line; the same
 *   command then completes the sweep, each row once;
 * - `phasemap status` against a JetStream that does not answer: one clear line, no stack trace.
 * The tmpfs tests need root (mount -t tmpfs); elsewhere they are skipped with a message.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, statfsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import test, { type ExecutionContext } from 'ava';
import { DiskGuard, embeddedStoreLimit, parseMinFree, type DiskSpace } from '../orchestrator/disk-space.js';
import { duck, freePort, stderrOf, tempDir, trackedCli, until, type Cli } from './helpers.js';
import { pidAlive } from '../analysis/pid.js';

const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

const MiB = 2 ** 20;

test('--min-free values: sizes in powers of 1024 or 1000, a share, 0; bad ones name the flag', (t) => {
  t.deepEqual(parseMinFree('256MiB'), { bytes: 256 * MiB });
  t.deepEqual(parseMinFree('2G'), { bytes: 2 * 1024 * MiB });
  t.deepEqual(parseMinFree('500MB'), { bytes: 500e6 });
  t.deepEqual(parseMinFree('4096'), { bytes: 4096 });
  t.deepEqual(parseMinFree('0'), { bytes: 0 });
  t.deepEqual(parseMinFree('5%'), { percent: 5 });
  for (const bad of ['', 'lots', '-1G', '12 parsecs', '100%']) t.throws(() => parseMinFree(bad, 'PHASEMAP_MIN_FREE'), { message: /^PHASEMAP_MIN_FREE: got .*, expected a size like 256MiB/ });
  // The store cap: half of what the reserve leaves after the block slack, at least 1 MiB.
  t.is(embeddedStoreLimit(100 * 1024 * MiB, 256 * MiB), 120 * MiB);
  t.is(embeddedStoreLimit(40 * MiB, 256 * MiB), 12 * MiB);
  t.is(embeddedStoreLimit(100 * 1024 * MiB, 6 * MiB), MiB);
});

test('DiskGuard: low under the threshold, ok again only above the margin, each change heard once; ENOSPC holds it low', async (t) => {
  let free = 100 * MiB;
  const space = async (): Promise<DiskSpace> => ({ free, total: 1000 * MiB });
  const g = new DiskGuard('/nowhere', { percent: 5 }, { space, fullHoldMs: 200 });
  const changes: boolean[] = [];
  g.onChange((low) => changes.push(low));
  t.true(await g.check());
  t.is(g.minFreeBytes, 50 * MiB);
  t.is(g.resumeAt, 62.5 * MiB);
  free = 49 * MiB;
  t.false(await g.check());
  t.false(await g.check());
  free = 60 * MiB; // above the threshold, under the margin
  t.false(await g.check());
  free = 63 * MiB;
  t.true(await g.check());
  t.deepEqual(changes, [true, false]);
  g.full();
  t.false(await g.check(), 'held low right after ENOSPC although statfs shows room');
  await new Promise((r) => setTimeout(r, 250));
  t.true(await g.check());
  t.deepEqual(changes, [true, false, true, false]);
  t.regex(g.pauseLine('the store'), /^disk: .*free.*: results are no longer written or acknowledged, they wait in the store\. Free space there and the run goes on by itself \(at 62\.5 MiB free\)/);
});

test.serial('bad --min-free or PHASEMAP_MIN_FREE: exit 2 before anything runs, naming it', async (t) => {
  const work = await tempDir('diskfull-flag');
  const spec = join(work, 's.yaml');
  await writeFile(spec, longSpec('flag'));
  const a = await cli(['run', spec, '--out', join(work, 'out'), '--min-free', 'lots']);
  t.is(a.code, 2, a.stderr);
  t.regex(a.stderr, /--min-free: got "lots", expected a size/);
  const b = await cli(['run', spec, '--out', join(work, 'out')], { env: { PHASEMAP_MIN_FREE: '150%' } });
  t.is(b.code, 2, b.stderr);
  t.regex(b.stderr, /PHASEMAP_MIN_FREE: got "150%", expected a size/);
  t.false(existsSync(join(work, 'out')));
});

/** The embedded nats-server's pid, from the run's log line. */
function serverPid(stderr: string): number | null {
  const m = /embedded nats-server on \S+ \(pid (\d+);/.exec(stderr);
  return m ? Number(m[1]) : null;
}

/** Waits until the process is gone (at most `ms`). @returns whether it is gone. */
async function gone(pid: number, ms: number): Promise<boolean> {
  await until(() => !pidAlive(pid), ms, `pid ${pid} to exit`, 50).catch(() => undefined);
  return !pidAlive(pid);
}

/**
 * SIGSTOP, then waits until the kernel shows the process stopped (state T in /proc/PID/stat): on a
 * loaded machine, or in a sandboxed kernel, a process can run on briefly after the signal is sent.
 */
async function stopProcess(pid: number): Promise<void> {
  process.kill(pid, 'SIGSTOP');
  const state = () => / ([A-Za-z]) /.exec(readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\)/, ''))?.[1];
  await until(() => /^[Tt]$/.test(state() ?? ''), 5000, `pid ${pid} to be stopped`, 5);
}

/**
 * A tmpfs of `sizeMiB` mounted on a fresh folder, unmounted after the test; null (the test logs why and
 * passes) where mounting is not permitted.
 */
async function tmpfs(t: ExecutionContext, sizeMiB: number): Promise<string | null> {
  const mnt = join(await tempDir('diskfull'), 'mnt');
  await mkdir(mnt);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', mnt], { stdio: 'pipe' });
  } catch (e) {
    t.log(`SKIPPED: cannot mount a tmpfs here (${String((e as { stderr?: Buffer }).stderr ?? (e as Error).message).trim()}); this test needs root`);
    return null;
  }
  t.teardown(() => {
    try {
      execFileSync('umount', [mnt], { stdio: 'pipe' });
    } catch {
      execFileSync('umount', ['-l', mnt], { stdio: 'pipe' });
    }
  });
  return mnt;
}

const freeBytes = (path: string) => {
  const s = statfsSync(path);
  return s.bavail * s.bsize;
};

/** Four trials logging every step, with a checkpoint every 25 steps: about 3 MB through a small store. */
const fillingSpec = (name: string, steps: number) => `
name: ${name}
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 256, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${steps}, log_every: 1, eval_every: 100, checkpoint_every: 25}
diagnostics: {every: 0, snr_batches: 4}
grid:
  train.lr: [0.001, 0.002]
  strategy: [{name: vanilla}, {name: rba, eta: 0.01, gamma: 0.99}]
`;

/** Two long trials (4,000 steps): running when they are interrupted. */
const longSpec = (name: string) => `
name: ${name}
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 4000, log_every: 5, eval_every: 100}
diagnostics: {every: 100, snr_batches: 4}
grid:
  train.lr: [0.001]
  strategy: [{name: vanilla}, {name: rba, eta: 0.01, gamma: 0.99}]
`;

/** Rows per (trial, attempt, step) over 1, and the completed attempts' steps per trial. */
async function rowsOf(out: string): Promise<{ duplicates: number; complete: Array<{ trial_id: string; status: string; n: number; distinct: number; lo: number; hi: number }> }> {
  const [d] = await duck(`
    SELECT count(*) AS n FROM (SELECT trial_id, attempt, step, count(*) AS c
      FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY ALL HAVING c > 1)`);
  const complete = await duck(`
    SELECT t.trial_id, t.status, count(m.step) AS n, count(DISTINCT m.step) AS distinct, min(m.step) AS lo, max(m.step) AS hi
    FROM '${out}/trials.parquet' t
    LEFT JOIN read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m ON m.trial_id = t.trial_id AND m.attempt = t.attempts
    GROUP BY ALL ORDER BY t.trial_id`);
  return {
    duplicates: Number(d!.n),
    complete: complete.map((r) => ({ trial_id: r.trial_id as string, status: r.status as string, n: Number(r.n), distinct: Number(r.distinct), lo: Number(r.lo), hi: Number(r.hi) })),
  };
}

/** Starts `phasemap run` and waits until its embedded server's pid is logged. */
async function startRun(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ p: Cli; err: () => string; pid: number }> {
  const p = cli(args, { env, timeoutMs: 300_000 });
  const err = stderrOf(p);
  await until(() => serverPid(err()) !== null || p.child.exitCode !== null, 60_000, 'the embedded nats-server', 50);
  const pid = serverPid(err());
  if (pid === null) throw new Error(`no embedded server (exit ${p.child.exitCode}):\n${err()}`);
  return { p, err, pid };
}

const PAUSE_LINE = /\[warn\] disk: [\d.]+ \S+ free on the filesystem of \S+, under the --min-free threshold of 6 MiB: results are no longer written or acknowledged/g;
const RESUME_LINE = /\[info\] disk: [\d.]+ \S+ free on the filesystem of \S+ again: results are written again/g;

test.serial('a disk that fills mid-sweep: one clear line, nothing written while under --min-free, and the run goes on by itself when the disk grows; every row once, no nats-server left', async (t) => {
  const mnt = await tmpfs(t, 32);
  if (!mnt) return t.pass();
  // 7 MiB free under a 6 MiB threshold: the sweep's own writes (store, checkpoints, metrics) cross it.
  await writeFile(join(mnt, 'filler'), Buffer.alloc(freeBytes(mnt) - 7 * MiB));
  const work = await tempDir('diskfull-spec');
  const spec = join(work, 'fill.yaml');
  await writeFile(spec, fillingSpec('diskfill', 1500));
  const out = join(mnt, 'out');
  const { p, err, pid } = await startRun(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm', '--min-free', '6MiB']);

  await until(() => (err().match(PAUSE_LINE) ?? []).length > 0 || p.child.exitCode !== null, 90_000, 'the pause line', 100);
  t.is(p.child.exitCode, null, `the run ended before the disk filled:\n${err()}`);
  const pausedAt = Date.now();
  // Paused for a while: the free space stays above zero (the store is capped), and nothing repeats.
  let lowest = Infinity;
  while (Date.now() - pausedAt < 6000) {
    lowest = Math.min(lowest, freeBytes(mnt));
    await new Promise((r) => setTimeout(r, 250));
  }
  const during = err();
  t.is((during.match(PAUSE_LINE) ?? []).length, 1, during);
  t.notRegex(during, /flush failed|ENOSPC|no space left|pull failed|has not answered/i);
  t.true(lowest > 1 * MiB, `free space went down to ${lowest} bytes while paused`);
  t.log(`paused ${((Date.now() - pausedAt) / 1000).toFixed(1)} s before the disk grew; lowest free ${(lowest / MiB).toFixed(2)} MiB`);

  execFileSync('mount', ['-o', 'remount,size=96m', mnt]);
  const grownAt = Date.now();
  const r = await p;
  t.is(r.code, 0, r.stderr);
  t.is((r.stderr.match(RESUME_LINE) ?? []).length, 1, r.stderr);
  t.is((r.stderr.match(PAUSE_LINE) ?? []).length, 1, r.stderr);
  t.notRegex(r.stderr, /flush failed|no space left|pull failed|\n\s+at /);
  t.log(`completed ${((Date.now() - grownAt) / 1000).toFixed(1)} s after the disk grew`);

  const { duplicates, complete } = await rowsOf(out);
  t.is(duplicates, 0);
  t.is(complete.length, 4);
  for (const c of complete) t.deepEqual([c.status, c.n, c.distinct, c.lo, c.hi], ['done', 1500, 1500, 0, 1499], c.trial_id);
  t.true(await gone(pid, 5000), `nats-server pid ${pid} still running`);
  // Its log is in DIR/.nats, and it never met the full disk.
  const log = await readFile(join(out, '.nats', 'server.log'), 'utf8');
  t.regex(log, /Server is ready/);
  t.notRegex(log, /no space left/i);
});

test.serial('Ctrl-C returns within seconds and leaves no nats-server, also when the server is stuck (SIGSTOP)', async (t) => {
  for (const stuck of [false, true]) {
    const work = await tempDir(`diskfull-int-${stuck ? 'stuck' : 'plain'}`);
    const spec = join(work, 's.yaml');
    const out = join(work, 'out');
    await writeFile(spec, longSpec(stuck ? 'int-stuck' : 'int-plain'));
    const { p, err, pid } = await startRun(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm']);
    await until(() => existsSync(join(out, 'metrics')) || p.child.exitCode !== null, 120_000, 'metrics on disk', 100);
    t.is(p.child.exitCode, null, err());
    if (stuck) await stopProcess(pid);
    const t0 = Date.now();
    p.child.kill('SIGINT');
    const r = await p;
    const s = (Date.now() - t0) / 1000;
    // The shutdown itself: from the SIGINT line to the summary line (the final report is written after it).
    const at = (re: RegExp) => Date.parse(/^(\S+) .*$/m.exec(r.stderr.split('\n').find((l) => re.test(l)) ?? '')?.[1] ?? '');
    const shutdown = (at(/\] interrupted: /) - at(/\] SIGINT: stopping/)) / 1000;
    t.log(`${stuck ? 'stopped server' : 'running server'}: shutdown ${shutdown.toFixed(1)} s; exit ${r.code} ${s.toFixed(1)} s after SIGINT (the final report included)`);
    t.is(r.code, 130, r.stderr);
    t.true(s < 20, `${s} s`);
    t.true(await gone(pid, 1000), `nats-server pid ${pid} still running`);
    t.notRegex(r.stderr, /\n\s+at /);
    if (stuck) t.regex(r.stderr, /JetStream does not answer/);
  }
});

test.serial('phasemap run killed (SIGKILL) while its server is stopped (SIGSTOP): the guard kills the server within seconds', async (t) => {
  const work = await tempDir('diskfull-kill');
  const spec = join(work, 's.yaml');
  const out = join(work, 'out');
  await writeFile(spec, longSpec('killed'));
  const { p, err, pid } = await startRun(['run', spec, '--out', out, '--slots', '1', '--backend', 'wasm']);
  await until(() => /queued 2 trial/.test(err()) || p.child.exitCode !== null, 60_000, 'the trials to be queued', 100);
  t.is(p.child.exitCode, null, err());
  await stopProcess(pid);
  p.child.kill('SIGKILL');
  await p;
  const t0 = Date.now();
  t.true(await gone(pid, 10_000), `nats-server pid ${pid} still running`);
  t.log(`nats-server gone ${((Date.now() - t0) / 1000).toFixed(1)} s after phasemap run was killed`);
});

test.serial('an embedded JetStream that stops answering ends the run with one clear error and kills the server; the same command completes the sweep, each row once', async (t) => {
  const work = await tempDir('diskfull-wedged');
  const spec = join(work, 's.yaml');
  const out = join(work, 'out');
  await writeFile(spec, fillingSpec('wedged', 1500).replace('checkpoint_every: 25', 'checkpoint_every: 100').replace('[0.001, 0.002]', '[0.001]'));
  const args = ['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm'];
  // A short trial ack wait: the trials the stopped run could not hand back are redelivered to the next run after it.
  const env = { PHASEMAP_JETSTREAM_STUCK_S: '4', PHASEMAP_TRIAL_ACK_WAIT_S: '5' };
  const { p, err, pid } = await startRun(args, env);
  await until(() => existsSync(join(out, 'metrics')) || p.child.exitCode !== null, 120_000, 'metrics on disk', 100);
  t.is(p.child.exitCode, null, err());
  // A server that answers nothing, as one whose store met a full disk (which also ignores SIGTERM).
  await stopProcess(pid);
  const t0 = Date.now();
  const r = await p;
  t.log(`exit ${r.code} ${((Date.now() - t0) / 1000).toFixed(1)} s after the server stopped answering`);
  t.is(r.code, 3, r.stderr);
  const errors = r.stderr.split('\n').filter((l) => l.includes('[error]'));
  t.is(errors.length, 1, r.stderr);
  t.regex(errors[0]!, /the embedded nats-server's JetStream \(pid \d+\) has not answered for \d+ s: stopping\. .* run the same command again/i);
  t.notRegex(r.stderr, /\n\s+at |TimeoutError/);
  t.true(await gone(pid, 1000), `nats-server pid ${pid} still running`);

  const again = await cli(args, { env });
  t.is(again.code, 0, again.stderr);
  const { duplicates, complete } = await rowsOf(out);
  t.is(duplicates, 0);
  t.is(complete.length, 2);
  for (const c of complete) t.deepEqual([c.status, c.n, c.distinct, c.lo, c.hi], ['done', 1500, 1500, 0, 1499], c.trial_id);
});

test.serial('phasemap status against a JetStream that does not answer: one clear line, no stack trace', async (t) => {
  // A nats-server without JetStream, and a client that takes every JetStream request and never answers.
  const port = await freePort();
  const url = `nats://127.0.0.1:${port}`;
  const srv = spawn(process.env.PHASEMAP_NATS_SERVER ?? 'nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
  t.teardown(() => void srv.kill('SIGKILL'));
  let nc: Awaited<ReturnType<typeof connect>> | null = null;
  await until(async () => {
    nc = await connect({ servers: url, reconnect: false }).catch(() => null);
    return nc !== null;
  }, 10_000, 'the server');
  t.teardown(() => nc!.close());
  nc!.subscribe('$JS.API.>', { callback: () => undefined });
  await nc!.flush();

  const r = await cli(['status', '--nats', url]);
  t.is(r.code, 3, r.stderr);
  const lines = r.stderr.trim().split('\n');
  t.is(lines.length, 1, r.stderr);
  t.regex(lines[0]!, /\[error\] --nats nats:\/\/127\.0\.0\.1:\d+: JetStream did not answer \(.*timeout.*\)/i);

  // A results DIR whose run.json names that server (and a live pid): states from DIR, with a note.
  const dir = await tempDir('diskfull-status');
  await writeFile(join(dir, 'sweep.json'), JSON.stringify({ name: 'stuck', trials: [] }));
  await writeFile(join(dir, 'run.json'), JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), sweep: 'stuck', namespace: 'phasemap', started_at: new Date().toISOString(), url, nats: null }));
  const d = await cli(['status', dir]);
  t.is(d.code, 0, d.stderr);
  t.regex(d.stdout, /note: no trial states on the server \(.*JetStream did not answer/);
  t.notRegex(d.stderr + d.stdout, /\n\s+at |TimeoutError:/);
});
