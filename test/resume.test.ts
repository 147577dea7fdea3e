/**
 * A redelivered trial resumes from its last checkpoint (science.md §7): the trainer restores a
 * checkpoint and reproduces the uninterrupted run's rows bit for bit (vanilla, rba, sa; full batch and
 * mini-batch); the slot task passes the resume through; the orchestrator serves checkpoints to workers
 * slice by slice over a real nats-server; the collector's row carry-over completes the resumed attempt
 * (each step once, idempotent; read back with DuckDB).
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { connect, headers, type NatsConnection } from '@nats-io/transport-node';
import * as tf from '@tensorflow/tfjs-core';
import test, { type ExecutionContext } from 'ava';
import { checkpointSteps, serveCheckpoints } from '../orchestrator/checkpoints.js';
import { readAttemptSeries } from '../analysis/phases.js';
import { copyEarlierRows, MetricsStore } from '../orchestrator/parquet-store.js';
import { CKPT_REPLY_HEADERS } from '../schemas/checkpoint-request.js';
import type { MetricRow } from '../schemas/metrics.js';
import { checkpointPath } from '../schemas/parquet.js';
import { decodeSafetensors, encodeSafetensors } from '../schemas/safetensors.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { CKPT_HEADERS, transportNames } from '../schemas/transport.js';
import { fetchCheckpoint } from '../worker/checkpoint-fetch.js';
import { runSlotTask, type SlotEvent } from '../worker/slot-task.js';
import { ResumeError, trainTrial, type CheckpointData, type TrainSummary } from '../worker/trainer/index.js';
import { duck, startNats, tempDir } from './helpers.js';
import { testBackend, tinyConfig } from './trainer-helpers.js';

const TID = 't00112233445566ff';

/** A tiny trial that checkpoints every 10 steps and logs every 5 (diagnostics every 5: snr on every row). */
function cfgOf(strategy: TrialConfig['strategy'], batch: TrialConfig['train']['batch_size']): TrialConfig {
  return tinyConfig({
    train: { steps: 30, batch_size: batch, log_every: 5, eval_every: 10, checkpoint_every: 10 },
    strategy,
    diagnostics: { every: 5, snr_batches: 4 },
  });
}

/** The checkpoint as the slot task writes it (worker/slot-task.ts): trial_id and attempt added. */
function fileOf(c: CheckpointData, attempt = 1): Uint8Array {
  return encodeSafetensors(c.tensors, { ...c.metadata, trial_id: TID, attempt: String(attempt) });
}

interface Run {
  rows: MetricRow[];
  ckpts: Map<number, Uint8Array>;
  summary: TrainSummary;
}

async function train(cfg: TrialConfig, resume?: Uint8Array, divergence?: { factor: number; rows: number }): Promise<Run> {
  const backend = await testBackend();
  const rows: MetricRow[] = [];
  const ckpts = new Map<number, Uint8Array>();
  const summary = await trainTrial(cfg, {
    onRows: (r) => void rows.push(...r),
    onCheckpoint: (c) => void ckpts.set(c.step, fileOf(c)),
  }, { backend, ...(resume ? { resume: { checkpoint: resume, trialId: TID } } : {}), ...(divergence ? { divergence } : {}) });
  return { rows, ckpts, summary };
}

const strip = (rows: MetricRow[]) => rows.map(({ wall_seconds: _w, ...r }) => r);

/** Tensors equal bit for bit (as bytes); metadata equal except the wall clock. */
function sameCheckpoint(t: ExecutionContext, a: Uint8Array, b: Uint8Array, what: string): void {
  const x = decodeSafetensors(a);
  const y = decodeSafetensors(b);
  t.deepEqual([...x.tensors.keys()], [...y.tensors.keys()], what);
  for (const [name, tx] of x.tensors) {
    const ty = y.tensors.get(name)!;
    t.deepEqual(tx.shape, ty.shape, `${what} ${name}`);
    t.true(Buffer.from(tx.data.buffer, tx.data.byteOffset, tx.data.byteLength).equals(Buffer.from(ty.data.buffer, ty.data.byteOffset, ty.data.byteLength)), `${what} ${name} differs`);
  }
  const { wall_seconds: _a, ...mx } = x.metadata;
  const { wall_seconds: _b, ...my } = y.metadata;
  t.deepEqual(mx, my, `${what} metadata`);
}

// ---------------------------------------------------------------------------------------------
// (a) the trainer

const cases: Array<[string, TrialConfig['strategy'], TrialConfig['train']['batch_size']]> = [
  ['vanilla, full batch', { name: 'vanilla' }, 'full'],
  ['vanilla, mini-batch 16', { name: 'vanilla' }, 16],
  ['rba, full batch', { name: 'rba', eta: 0.01, gamma: 0.99, normalization: 'max', init: 'zero' }, 'full'],
  ['rba (init residual), mini-batch 32', { name: 'rba', eta: 0.01, gamma: 0.99, normalization: 'max', init: 'residual' }, 32],
  ['sa, mini-batch 32', { name: 'sa', lr: 5e-3, freeze_step: null }, 32],
];

for (const [label, strategy, batch] of cases) {
  test.serial(`resume (${label}): rows from the checkpoint step on are the uninterrupted run's, bit for bit; later checkpoints too`, async (t) => {
    const cfg = cfgOf(strategy, batch);
    await testBackend();
    const tensors = tf.memory().numTensors;
    const full = await train(cfg);
    t.deepEqual([...full.ckpts.keys()], [0, 10, 20, 30]);
    t.is(full.summary.first_step, 0);
    for (const s of [10, 20]) {
      const res = await train(cfg, full.ckpts.get(s)!);
      const want = full.rows.filter((r) => r.step >= s);
      t.is(res.rows[0]!.step, s, 'the row of the checkpoint step is recomputed');
      t.deepEqual(strip(res.rows), strip(want), `rows from step ${s}`);
      // loss and snr on every logged row, rel_l2 where evaluated: real numbers, not nulls.
      for (const r of res.rows) t.true(Number.isFinite(r.loss) && Number.isFinite(r.snr!), `step ${r.step}`);
      t.true(res.rows.some((r) => r.rel_l2 !== null));
      // Wall clock continues from the checkpoint's row.
      t.true(res.rows[0]!.wall_seconds >= full.rows.find((r) => r.step === s)!.wall_seconds);
      t.deepEqual({ ...res.summary, wall_seconds: 0, backend: '' }, { ...full.summary, wall_seconds: 0, backend: '', first_step: s });
      // It does not send the checkpoint it resumed from; the later ones equal the uninterrupted run's.
      t.deepEqual([...res.ckpts.keys()], [0, 10, 20, 30].filter((k) => k > s));
      for (const [k, bytes] of res.ckpts) sameCheckpoint(t, bytes, full.ckpts.get(k)!, `${label} resumed at ${s}: step ${k}`);
    }
    t.is(tf.memory().numTensors, tensors, 'no tensor leaked by the runs or their resumes');
  });
}

test.serial('resume from a final checkpoint: nothing to train, no row, the stored summary; first_step = steps', async (t) => {
  const cfg = cfgOf({ name: 'rba', eta: 0.01, gamma: 0.99, normalization: 'max', init: 'zero' }, 32);
  const full = await train(cfg);
  const res = await train(cfg, full.ckpts.get(30)!);
  t.deepEqual(res.rows, []);
  t.is(res.ckpts.size, 0);
  t.is(res.summary.first_step, 30);
  t.is(res.summary.steps_done, 30);
  t.is(res.summary.final_loss, full.summary.final_loss);
  t.is(res.summary.final_rel_l2, full.summary.final_rel_l2);
  t.false(res.summary.diverged);
});

test.serial('resume keeps the divergence tracking: a trial that stops diverged stops at the same row when resumed', async (t) => {
  // lr 0.5 on this tiny net: the loss falls to 75.2 (step 15), then 84.3 (step 20), 112 (step 25). With
  // factor 1.4 the row of step 25 stops the trial (112 ≥ 1.4 × 75.2); a resume from step 20 that forgot
  // the running minimum would compare 112 with 84.3 and train on.
  const cfg = tinyConfig({ train: { steps: 60, lr: 0.5, lr_decay: { rate: 1, every: 1000 }, log_every: 5, eval_every: 5, checkpoint_every: 10 }, diagnostics: { every: 0, snr_batches: 4 } });
  const div = { factor: 1.4, rows: 1 };
  const full = await train(cfg, undefined, div);
  t.true(full.summary.diverged, 'the uninterrupted run stops diverged');
  const last = full.rows[full.rows.length - 1]!.step;
  // The checkpoint just before the stop: the running minimum and the exploding-row count come with it.
  t.is(last, 25);
  const s = Math.max(...[...full.ckpts.keys()].filter((k) => k < last));
  t.is(s, 20);
  t.true(decodeSafetensors(full.ckpts.get(s)!).metadata.divergence !== undefined);
  const res = await train(cfg, full.ckpts.get(s)!, div);
  t.deepEqual(strip(res.rows), strip(full.rows.filter((r) => r.step >= s)));
  t.true(res.summary.diverged);
  t.is(res.summary.steps_done, full.summary.steps_done);
});

test.serial('every row up to a checkpoint is handed over before the checkpoint (a worker killed after it lost none of them)', async (t) => {
  const backend = await testBackend();
  const rows: number[] = [];
  const seen: Array<[number, number[]]> = [];
  await trainTrial(cfgOf({ name: 'vanilla' }, 'full'), {
    onRows: (r) => void rows.push(...r.map((x) => x.step)),
    onCheckpoint: (c) => void seen.push([c.step, rows.slice()]),
  }, { backend, flushRows: 1000, flushMs: 1e9 });
  t.deepEqual(seen.map(([s]) => s), [0, 10, 20, 30]);
  for (const [s, before] of seen.slice(0, 3)) t.deepEqual(before, [0, 5, 10, 15, 20, 25].filter((x) => x <= s), `before checkpoint ${s}`);
  t.deepEqual(seen[3]![1], [0, 5, 10, 15, 20, 25, 29]);
});

test.serial('a checkpoint of another config or trial is refused, naming the field; nothing is logged', async (t) => {
  const cfg = cfgOf({ name: 'vanilla' }, 'full');
  const full = await train(cfg);
  const ck = full.ckpts.get(10)!;
  const other = { ...cfg, train: { ...cfg.train, lr: 0.02 } };
  const rows: MetricRow[] = [];
  const backend = await testBackend();
  const e = await t.throwsAsync(trainTrial(other, { onRows: (r) => void rows.push(...r) }, { backend, resume: { checkpoint: ck } }), { instanceOf: ResumeError });
  t.regex(e!.message, /train\.lr: checkpoint 0\.01, trial 0\.02/);
  t.deepEqual(rows, []);
  const e2 = await t.throwsAsync(trainTrial(cfg, { onRows: () => {} }, { backend, resume: { checkpoint: ck, trialId: 't0000000000000000' } }), { instanceOf: ResumeError });
  t.regex(e2!.message, /of trial t00112233445566ff, not t0000000000000000/);
  await t.throwsAsync(trainTrial(cfg, { onRows: () => {} }, { backend, resume: { checkpoint: new Uint8Array([1, 2, 3]) } }), { instanceOf: ResumeError, message: /not a checkpoint/ });
});

test.serial('slot task: resume passes through (resumed_from, rows from the step on); an unusable checkpoint trains from step 0', async (t) => {
  const backend = await testBackend();
  const cfg = cfgOf({ name: 'rba', eta: 0.01, gamma: 0.99, normalization: 'max', init: 'zero' }, 32);
  const full = await train(cfg);
  const trial = { sweep: 's', trial_id: TID, config: cfg };
  const run = async (resume: { attempt: number; step: number; checkpoint: Uint8Array } | null) => {
    const events: SlotEvent[] = [];
    const out = await runSlotTask({ trial, attempt: 2, backend, maxBytes: 1 << 20, resume }, (e) => void events.push(e));
    return { out, ckpts: events.filter((e) => e.type === 'checkpoint').map((e) => (e as { step: number }).step) };
  };
  const a = await run({ attempt: 1, step: 20, checkpoint: full.ckpts.get(20)! });
  t.is(a.out.status, 'done', a.out.error ?? '');
  t.deepEqual(a.out.resumed_from, { attempt: 1, step: 20 });
  t.is(a.out.resume_error, null);
  t.is(a.out.rows, full.rows.filter((r) => r.step >= 20).length);
  t.is(a.out.final_loss, full.summary.final_loss);
  t.deepEqual(a.ckpts, [30]);
  // A checkpoint of another config: refused, trained from 0.
  const wrong = await train({ ...cfg, seed: 8 });
  const b = await run({ attempt: 1, step: 20, checkpoint: wrong.ckpts.get(20)! });
  t.is(b.out.status, 'done');
  t.is(b.out.resumed_from, null);
  t.regex(b.out.resume_error!, /seed: checkpoint 8, trial 7/);
  t.is(b.out.rows, full.rows.length);
  t.is(b.out.final_loss, full.summary.final_loss);
  const c = await run(null);
  t.is(c.out.resumed_from, null);
  t.is(c.out.resume_error, null);
});

// ---------------------------------------------------------------------------------------------
// (b) serving checkpoints over NATS

test.serial('serveCheckpoints / fetchCheckpoint: several slices through a small max_payload, latest step, sha256; unknown trial and path tricks give null', async (t) => {
  const work = await tempDir('resume-serve');
  const dir = join(work, 'out');
  // A nats-server whose max_payload (2048 bytes) is far smaller than a checkpoint.
  const conf = join(work, 'nats.conf');
  await writeFile(conf, 'max_payload: 2048\n');
  const wrapper = join(work, 'nats-server-small');
  await writeFile(wrapper, `#!/bin/sh\nexec ${process.env.PHASEMAP_NATS_SERVER ?? 'nats-server'} -c ${conf} "$@"\n`, { mode: 0o755 });
  const nats = await startNats(join(work, 'nats-store'), wrapper);
  t.teardown(() => nats.stop());
  const server = await connect({ servers: nats.url });
  const client = await connect({ servers: nats.url });
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  t.is(server.info?.max_payload, 2048);

  const cfg = cfgOf({ name: 'rba', eta: 0.01, gamma: 0.99, normalization: 'max', init: 'zero' }, 32);
  const full = await train(cfg);
  for (const [step, bytes] of full.ckpts) {
    if (step === 30) continue; // the trial was killed before its end: the latest is step 20
    const path = join(dir, checkpointPath(TID, step));
    await mkdir(dirname(path), { recursive: true });
    // step 20 as attempt 2 wrote it
    await writeFile(path, step === 20 ? encodeSafetensors([...decodeSafetensors(bytes).tensors.values()], { ...decodeSafetensors(bytes).metadata, attempt: '2' }) : bytes);
  }
  await writeFile(join(dir, 'checkpoints', TID, 'step-40.safetensors.tmp-1-abcd'), 'partial write');
  t.deepEqual(await checkpointSteps(dir, TID), [0, 10, 20]);
  const want = await readFile(join(dir, checkpointPath(TID, 20)));
  t.true(want.length > 2 * 2048, `${want.length} bytes`);

  // A secret outside DIR that a path trick would reach: DIR/checkpoints/../../secret/step-1.safetensors.
  const secret = join(work, 'secret', 'step-1.safetensors');
  await mkdir(dirname(secret), { recursive: true });
  await writeFile(secret, 'SECRET');

  const subject = transportNames('rtest').checkpointRequest('sw');
  const warnings: string[] = [];
  const sub = serveCheckpoints(server, subject, dir, 1 << 20, { onWarning: (m) => warnings.push(m) });
  t.teardown(() => sub.unsubscribe());
  let requests = 0;
  const spy = client.subscribe(subject, { callback: () => void requests++ });
  await server.flush();
  await client.flush();

  const got = await fetchCheckpoint(client, subject, TID, 5000);
  t.truthy(got);
  t.is(got!.step, 20);
  t.is(got!.attempt, 2);
  t.true(Buffer.from(got!.bytes).equals(want));
  await client.flush();
  t.true(requests >= Math.ceil(want.length / 1024), `${requests} requests for ${want.length} bytes`);

  // The fetched checkpoint resumes the trial: the uninterrupted rows from step 20 on.
  const res = await train(cfg, got!.bytes);
  t.deepEqual(strip(res.rows), strip(full.rows.filter((r) => r.step >= 20)));

  // Unknown trial: null. Not a trial id: null without asking; asked raw, refused with an error reply.
  t.is(await fetchCheckpoint(client, subject, 't0000000000000000', 5000), null);
  t.is(await fetchCheckpoint(client, subject, '../../etc', 5000), null);
  for (const bad of ['../../secret', '../secret', `${TID}/../../../secret`, '/etc', '']) {
    const reply = await client.request(subject, new TextEncoder().encode(JSON.stringify({ trial_id: bad, step: 1, offset: 0 })), { timeout: 5000 });
    t.is(reply.headers?.get(CKPT_REPLY_HEADERS.status), 'error', bad);
    t.regex(reply.headers!.get(CKPT_REPLY_HEADERS.error), /trial_id/);
    t.is(reply.data.length, 0);
  }
  const garbage = await client.request(subject, new TextEncoder().encode('not json'), { timeout: 5000 });
  t.is(garbage.headers?.get(CKPT_REPLY_HEADERS.status), 'error');
  t.true(warnings.some((w) => /trial_id/.test(w)));
  // A given step, and an offset past the end.
  const s10 = await client.request(subject, new TextEncoder().encode(JSON.stringify({ trial_id: TID, step: 10, offset: 0 })), { timeout: 5000 });
  t.is(s10.headers?.get(CKPT_HEADERS.step), '10');
  t.is(s10.headers?.get(CKPT_HEADERS.attempt), '1');
  const past = await client.request(subject, new TextEncoder().encode(JSON.stringify({ trial_id: TID, offset: want.length + 1 })), { timeout: 5000 });
  t.is(past.headers?.get(CKPT_REPLY_HEADERS.status), 'error');
  const missing = await client.request(subject, new TextEncoder().encode(JSON.stringify({ trial_id: TID, step: 15, offset: 0 })), { timeout: 5000 });
  t.is(missing.headers?.get(CKPT_REPLY_HEADERS.status), 'none');

  // Nobody serving: null once the timeout has passed (no responders), as is a server that never answers within it.
  const n0 = Date.now();
  t.is(await fetchCheckpoint(client, transportNames('rtest').checkpointRequest('nobody'), TID, 1500), null);
  t.true(Date.now() - n0 >= 1000 && Date.now() - n0 < 4000, `gave up after ${Date.now() - n0} ms`);
  // A service that comes up while the fetch waits (an orchestrator restarting) is asked again and answers.
  const late = transportNames('rtest').checkpointRequest('late');
  const pending = fetchCheckpoint(client, late, TID, 5000);
  await new Promise((r) => setTimeout(r, 1200));
  const lateSub = serveCheckpoints(server, late, dir, 1 << 20);
  await server.flush();
  const lateGot = await pending;
  lateSub.unsubscribe();
  t.is(lateGot?.step, 20);
  const mute = client.subscribe('rtest.ckpt.mute', { callback: () => {} });
  const t0 = Date.now();
  t.is(await fetchCheckpoint(client, 'rtest.ckpt.mute', TID, 300), null);
  t.true(Date.now() - t0 < 3000);
  mute.unsubscribe();
  spy.unsubscribe();
});

test.serial('fetchCheckpoint: a reply whose bytes do not hash to its sha256 is never returned', async (t) => {
  const work = await tempDir('resume-badsha');
  const nats = await startNats(join(work, 'nats-store'));
  t.teardown(() => nats.stop());
  const nc: NatsConnection = await connect({ servers: nats.url });
  t.teardown(() => nc.close());
  const body = new TextEncoder().encode('these are not the bytes you hashed');
  nc.subscribe('rtest.ckpt.liar', {
    callback: (_e, m) => {
      const h = headers();
      h.set(CKPT_REPLY_HEADERS.status, 'ok');
      h.set(CKPT_HEADERS.step, '10');
      h.set(CKPT_HEADERS.attempt, '1');
      h.set(CKPT_HEADERS.totalBytes, String(body.length));
      h.set(CKPT_HEADERS.sha256, '0'.repeat(64));
      h.set(CKPT_REPLY_HEADERS.offset, '0');
      m.respond(body, { headers: h });
    },
  });
  await nc.flush();
  const warnings: string[] = [];
  t.is(await fetchCheckpoint(nc, 'rtest.ckpt.liar', TID, 2000, { onWarning: (w) => warnings.push(w) }), null);
  t.true(warnings.some((w) => /sha256 mismatch/.test(w)));
});

// ---------------------------------------------------------------------------------------------
// (c) row carry-over

const T = 't0a0b0c0d0e0f0a0b';

async function stepsOf(dir: string, attempt: number): Promise<Array<{ step: number; n: number; loss: number }>> {
  const rows = await duck(`
    SELECT step, count(*) AS n, min(loss) AS loss FROM read_parquet('${dir}/metrics/*/*/*.parquet', hive_partitioning = true)
    WHERE trial_id = '${T}' AND attempt = ${attempt} GROUP BY step ORDER BY step`);
  return rows.map((r) => ({ step: Number(r.step), n: Number(r.n), loss: r.loss as number }));
}

test.serial('copyEarlierRows: the resumed attempt holds every step once (DuckDB), idempotent, not dropped by the watermark', async (t) => {
  const cfg = cfgOf({ name: 'rba', eta: 0.01, gamma: 0.99, normalization: 'max', init: 'zero' }, 32);
  const full = await train(cfg);
  const dir = await tempDir('resume-copy');
  const store = new MetricsStore(dir);
  // Attempt 1 was killed after logging step 15 (its checkpoint of step 10 is the latest); attempt 2
  // resumed from step 10 and logged 10..29, written in two parts.
  await store.writePart(T, 1, full.rows.filter((r) => r.step <= 15));
  const resumed = (await train(cfg, full.ckpts.get(10)!)).rows;
  await store.writePart(T, 2, resumed.filter((r) => r.step < 20));
  await store.writePart(T, 2, resumed.filter((r) => r.step >= 20));
  t.is(await store.watermark(T, 2), 29);

  const first = await store.copyEarlierRows(T, 1, 2, 10);
  t.is(first.rows, 2);
  t.is(first.already, 0);
  t.regex(first.path!, /attempt=2\/part-00002\.parquet$/);
  const want = full.rows.map((r) => ({ step: r.step, n: 1, loss: r.loss }));
  t.deepEqual(await stepsOf(dir, 2), want);
  // Again (a collector that crashed after copying redoes it), with this store and with a fresh one.
  t.deepEqual(await store.copyEarlierRows(T, 1, 2, 10), { path: null, rows: 0, already: 2 });
  t.deepEqual(await copyEarlierRows(dir, T, 1, 2, 10), { path: null, rows: 0, already: 2 });
  t.deepEqual(await stepsOf(dir, 2), want);
  // Attempt 1 keeps its own rows; the phase reader sees the whole series of attempt 2.
  t.deepEqual((await stepsOf(dir, 1)).map((r) => r.step), [0, 5, 10, 15]);
  t.deepEqual((await readAttemptSeries(dir, T, 2)).step, full.rows.map((r) => r.step));
  // Every column of the copied rows is attempt 1's, bit for bit.
  const back = await duck(`
    SELECT * EXCLUDE (trial_id, attempt) FROM read_parquet('${dir}/metrics/*/*/*.parquet', hive_partitioning = true)
    WHERE trial_id = '${T}' AND attempt = 2 AND step < 10 ORDER BY step`);
  t.is(back.length, 2);
  for (const [i, r] of back.entries()) {
    const w = full.rows[i]!;
    for (const k of ['step', 'lr', 'loss', 'loss_residual', 'loss_boundary', 'wall_seconds', 'rel_l2', 'snr', 'grad_order', 'snr_adam', 'lambda_mean'] as const)
      t.is(r[k] === null ? null : Number(r[k]), w[k] as number | null, `step ${w.step} ${k}`);
  }
  // New rows of attempt 2 after the copy are still deduplicated by the watermark.
  t.deepEqual(await store.writePart(T, 2, resumed.slice(-2)), { path: null, rows: 0 });
});

test.serial('copyEarlierRows: copied before the resumed rows arrive, and through a chain of resumed attempts', async (t) => {
  const cfg = cfgOf({ name: 'vanilla' }, 16);
  const full = await train(cfg);
  const dir = await tempDir('resume-chain');
  const store = new MetricsStore(dir);
  // Attempt 1: steps 0..15, killed (checkpoint 10). Attempt 2: resumed at 10, steps 10..25, killed
  // (checkpoint 20, written by attempt 2). Attempt 3: resumed at 20 from attempt 2, done.
  await store.writePart(T, 1, full.rows.filter((r) => r.step <= 15));
  const r2 = (await train(cfg, full.ckpts.get(10)!)).rows;
  await store.writePart(T, 2, r2.filter((r) => r.step <= 25));
  const r3 = (await train(cfg, full.ckpts.get(20)!)).rows;
  // The collector copies as soon as it learns of the resume, before attempt 3's rows are written.
  const c = await store.copyEarlierRows(T, 2, 3, 20);
  t.is(c.rows, 4); // 10, 15 from attempt 2; 0, 5 from attempt 1
  t.deepEqual(await store.writePart(T, 3, r3), { path: join(dir, 'metrics', `trial_id=${T}`, 'attempt=3', 'part-00001.parquet'), rows: r3.length });
  t.deepEqual(await stepsOf(dir, 3), full.rows.map((r) => ({ step: r.step, n: 1, loss: r.loss })));
  t.deepEqual(await copyEarlierRows(dir, T, 2, 3, 20), { path: null, rows: 0, already: 4 });
  // Attempt 2's partition is untouched (it never finished).
  t.deepEqual((await stepsOf(dir, 2)).map((r) => r.step), [10, 15, 20, 25]);
  // Bad arguments.
  await t.throwsAsync(store.copyEarlierRows(T, 3, 3, 10), { message: /below toAttempt/ });
  await t.throwsAsync(store.copyEarlierRows('../../x', 1, 2, 10), { message: /trial_id/ });
});
