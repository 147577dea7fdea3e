/**
 * Collector at sweep scale: trials.parquet is written debounced (a result is acked, and reported
 * finished, only once a trials.parquet holding it is on disk), and metrics messages stored out of
 * order (a worker's retried publish) lose no row and double none. Real nats-server, files read back
 * through DuckDB.
 */
import test from 'ava';
import { rm } from 'node:fs/promises';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Collector } from '../orchestrator/collector.js';
import { ensureResources } from '../orchestrator/jetstream.js';
import { readTrialsParquet } from '../orchestrator/parquet-store.js';
import { resolveSweep, parseSpecText } from '../orchestrator/spec.js';
import type { TrialRecord } from '../schemas/parquet.js';
import type { TrialResultMessage } from '../schemas/trial.js';
import { transportNames } from '../schemas/transport.js';
import { encodeMetricChunks, type KeyedMetricRow } from '../worker/metrics-encoder.js';
import { duck, startNats, tempDir } from './helpers.js';
import { TINY_SPEC } from './spec-helpers.js';

function rows(trialId: string, attempt: number, n: number): KeyedMetricRow[] {
  return Array.from({ length: n }, (_, i) => ({
    trial_id: trialId, attempt, step: i * 5, lr: 1e-3, loss: 1 / (1 + i), loss_residual: 0.5 / (1 + i), loss_boundary: 0.5 / (1 + i), wall_seconds: i * 0.01,
    rel_l2: i % 4 === 0 ? 0.1 : null, snr: i % 4 === 0 ? 10 / (1 + i) : null, snr_layers: i % 4 === 0 ? [1, 2, 3] : null, grad_order: null, snr_adam: null,
    res_homogeneity: null, saturation_layers: null, entropy_layers: null, lambda_mean: null, lambda_max: null,
  }));
}

function result(sweep: string, trialId: string, n: number): TrialResultMessage {
  const now = new Date().toISOString();
  return {
    sweep, trial_id: trialId, attempt: 1, status: 'done', started_at: now, finished_at: now, wall_seconds: 1, final_loss: 0.01, final_rel_l2: 0.1, diverged: false,
    steps_done: n * 5, rows: n, host: 'h', device: 'cpu', backend: 'wasm', worker: 'w', slot: 's0', visible_devices: null, resumed_from: null, error: null,
  };
}

async function setup(t: import('ava').ExecutionContext, prefix: string, trials: number) {
  const dir = await tempDir(prefix);
  const srv = await startNats(`${dir}/.nats`);
  const nc = await connect({ servers: srv.url });
  const names = transportNames('ctest');
  const sweep = 't';
  const transport = await ensureResources(nc, names, sweep);
  const spec = resolveSweep(parseSpecText(TINY_SPEC + `grid:\n  seed: [${[...Array(trials).keys()].join(', ')}]\n`, 'spec.yaml'), 'spec.yaml');
  const records = new Map<string, TrialRecord>(
    spec.trials.map((x) => [x.trial_id, {
      trial_id: x.trial_id, sweep, config: x.config, status: 'queued', attempts: 0, started_at: null, finished_at: null, wall_seconds: null, final_loss: null,
      final_rel_l2: null, diverged: null, host: null, device: null, backend: null, worker: null, slot: null, visible_devices: null, resumed_from_attempt: null,
      resumed_from_step: null, fused: null, error: null, t_diffusion: null, t_equilibrium: null, final_phase: null,
    }]),
  );
  t.teardown(async () => {
    await nc.close().catch(() => undefined);
    await srv.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const pending = async () => {
    const i = await jsm.consumers.info(names.outStream, names.collector(sweep));
    return i.num_pending + i.num_ack_pending;
  };
  return { dir, nc, names, sweep, transport, records, js, pending, ids: [...records.keys()] };
}

const until = async (f: () => Promise<boolean> | boolean, ms = 20_000) => {
  const t0 = Date.now();
  while (!(await f())) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 50));
  }
};

test.serial('trials.parquet is debounced: a result is acked and reported only once trials.parquet holds it; stop writes it', async (t) => {
  const s = await setup(t, 'collector-debounce', 3);
  const finished: string[] = [];
  const c = new Collector({ nc: s.nc, names: s.names, sweep: s.sweep, dir: s.dir, records: s.records, kv: s.transport.kv, trialsEveryMs: 600_000, flushEveryMs: 100, onTrialFinished: (r) => finished.push(r.trial_id) });
  await c.start();
  // A first result writes trials.parquet at once (none written yet); the next ones wait for the debounce.
  const enc = new TextEncoder();
  for (const [k, id] of s.ids.entries()) {
    for (const b of encodeMetricChunks(rows(id, 1, 40), 4000)) await s.js.publish(s.names.metrics(s.sweep), b);
    await s.js.publish(s.names.result(s.sweep, id), enc.encode(JSON.stringify(result(s.sweep, id, 40))));
    if (k === 0) await until(() => finished.length === 1);
  }
  // Rows of all three are on disk and their metrics messages acked; two results wait, unacked and unreported.
  await until(async () => (await s.pending()) === 2);
  await until(async () => Number((await duck(`SELECT count(*) AS n FROM read_parquet('${s.dir}/metrics/**/*.parquet', hive_partitioning = true)`))[0]!.n) === 120);
  t.deepEqual(finished, [s.ids[0]]);
  t.deepEqual((await readTrialsParquet(s.dir)).filter((r) => r.status === 'done').map((r) => r.trial_id), [s.ids[0]]);
  await c.stop();
  t.deepEqual(finished.sort(), [...s.ids].sort());
  t.is((await readTrialsParquet(s.dir)).filter((r) => r.status === 'done').length, 3);
  t.is(await s.pending(), 0);
  // Every done trial carries its phase record (read after its rows were on disk).
  t.true((await readTrialsParquet(s.dir)).every((r) => r.final_phase !== null));
});

test.serial('trials.parquet is written within trialsEveryMs without a stop, many results per write', async (t) => {
  const s = await setup(t, 'collector-debounce2', 30);
  const finished: string[] = [];
  const c = new Collector({ nc: s.nc, names: s.names, sweep: s.sweep, dir: s.dir, records: s.records, kv: s.transport.kv, trialsEveryMs: 300, onTrialFinished: (r) => finished.push(r.trial_id) });
  await c.start();
  const enc = new TextEncoder();
  await Promise.all(
    s.ids.map(async (id) => {
      for (const b of encodeMetricChunks(rows(id, 1, 8), 1 << 20)) await s.js.publish(s.names.metrics(s.sweep), b);
      await s.js.publish(s.names.result(s.sweep, id), enc.encode(JSON.stringify(result(s.sweep, id, 8))));
    }),
  );
  await until(() => finished.length === 30);
  t.is((await readTrialsParquet(s.dir)).filter((r) => r.status === 'done').length, 30);
  await until(async () => (await s.pending()) === 0);
  await c.stop();
  const n = await duck(`SELECT count(*)::INTEGER AS n, count(DISTINCT (trial_id, step))::INTEGER AS d FROM read_parquet('${s.dir}/metrics/**/*.parquet', hive_partitioning = true)`);
  t.deepEqual(n, [{ n: 240, d: 240 }]);
});

test.serial('metrics messages stored out of order (a retried publish) lose no row and double none; redelivery adds none', async (t) => {
  const s = await setup(t, 'collector-order', 1);
  const id = s.ids[0]!;
  const chunks = encodeMetricChunks(rows(id, 1, 200), 5000);
  t.true(chunks.length >= 6);
  const finished: string[] = [];
  const c = new Collector({ nc: s.nc, names: s.names, sweep: s.sweep, dir: s.dir, records: s.records, kv: s.transport.kv, flushAtMessages: 1, onTrialFinished: (r) => finished.push(r.trial_id) });
  await c.start();
  // Chunk 1 is stored last (its first publish failed and was retried after the others were stored),
  // each message written as its own part (flushAtMessages 1); then every chunk is redelivered once more.
  const order = [0, ...[...chunks.keys()].slice(2), 1];
  for (const i of order) await s.js.publish(s.names.metrics(s.sweep), chunks[i]!);
  await until(async () => (await s.pending()) === 0);
  for (const b of chunks) await s.js.publish(s.names.metrics(s.sweep), b);
  await s.js.publish(s.names.result(s.sweep, id), new TextEncoder().encode(JSON.stringify(result(s.sweep, id, 200))));
  await until(() => finished.length === 1);
  await c.stop();
  const n = await duck(`SELECT count(*)::INTEGER AS n, count(DISTINCT step)::INTEGER AS d, min(step) AS lo, max(step) AS hi FROM read_parquet('${s.dir}/metrics/**/*.parquet', hive_partitioning = true)`);
  t.deepEqual(n, [{ n: 200, d: 200, lo: 0, hi: 995 }]);
});
