/**
 * The metrics fast path (schemas/metrics-ipc.ts): the hand-written IPC encoder reads back like
 * apache-arrow's, the collector-side check accepts exactly what it can write without decoding and
 * hands everything else to the general path, and MetricsStore.writeBatches / the Collector keep the
 * exact per-step de-duplication whatever path a message takes.
 */
import test from 'ava';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Table, tableFromIPC, tableToIPC } from 'apache-arrow';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { Collector } from '../orchestrator/collector.js';
import { ensureResources } from '../orchestrator/jetstream.js';
import { MetricsStore } from '../orchestrator/parquet-store.js';
import { resolveSweep, parseSpecText } from '../orchestrator/spec.js';
import { buildMetricsBatch, type KeyedMetricRow } from '../schemas/metrics-batch.js';
import { encodeWireStream, parseWireStream, partIpcStream } from '../schemas/metrics-ipc.js';
import { METRIC_COLUMNS } from '../schemas/metrics.js';
import type { TrialRecord } from '../schemas/parquet.js';
import { transportNames } from '../schemas/transport.js';
import { encodeMetricChunks } from '../worker/metrics-encoder.js';
import { duck, startNats, tempDir } from './helpers.js';
import { TINY_SPEC } from './spec-helpers.js';

const T1 = 't0123456789abcdef';
const T2 = 'tfedcba9876543210';

/** Rows with every kind of value: nulls on and off the cadence, empty and non-empty lists. */
function rows(trialId: string, attempt: number, n: number, from = 0): KeyedMetricRow[] {
  return Array.from({ length: n }, (_, j) => {
    const i = from + j;
    const diag = i % 3 === 0;
    return {
      trial_id: trialId, attempt, step: i * 10, lr: 1e-3, loss: 1 / (1 + i), loss_residual: 0.6 / (1 + i), loss_boundary: 0.4 / (1 + i), wall_seconds: i * 0.5,
      rel_l2: i % 2 === 0 ? 0.1 * i : null, snr: diag ? i + 0.5 : null, snr_layers: diag ? [i, i + 1, i + 2, i + 3, i + 4] : null, grad_order: diag ? 0.25 : null,
      snr_adam: diag && i > 0 ? 0.125 * i : null, res_homogeneity: diag ? 0.9 : null, saturation_layers: diag ? (i % 2 ? [] : [1, 2, 3, 4]) : null,
      entropy_layers: diag ? [i / 7, 2, 3, 4] : null, lambda_mean: diag ? 1 : null, lambda_max: i === 5 ? null : 2,
    };
  });
}

/** A decoded table as plain objects (lists as arrays). */
function plain(t: Table): unknown[] {
  return t.toArray().map((r) => JSON.parse(JSON.stringify(r.toJSON(), (_k, v) => (v && typeof v === 'object' && typeof v.toArray === 'function' ? Array.from(v.toArray()) : v))));
}

function arrowStream(rs: KeyedMetricRow[]): Uint8Array {
  const b = buildMetricsBatch(rs, true);
  return tableToIPC(new Table(b.schema, [b]), 'stream');
}

test('encodeWireStream reads back (apache-arrow) exactly as apache-arrow\'s own encoding, for any row count', (t) => {
  for (const n of [1, 7, 8, 9, 64, 100, 257]) {
    const rs = rows(T1, 2, n);
    const mine = tableFromIPC(encodeWireStream(rs));
    const ref = tableFromIPC(arrowStream(rs));
    t.is(String(mine.schema), String(ref.schema));
    t.deepEqual(plain(mine), plain(ref));
    for (const f of ref.schema.fields) t.is(mine.getChild(f.name)!.nullCount, ref.getChild(f.name)!.nullCount, `${f.name} (n = ${n})`);
  }
  // Rows of several trials in one message, and a sub-range.
  const mixed = [...rows(T1, 1, 5), ...rows(T2, 3, 4)];
  t.deepEqual(plain(tableFromIPC(encodeWireStream(mixed, 2, 8))), plain(tableFromIPC(arrowStream(mixed.slice(2, 8)))));
});

test('encodeWireStream: a bad value is the same TypeError as before, first bad column in schema order', (t) => {
  const good = rows(T1, 1, 3);
  t.throws(() => encodeWireStream([good[0]!, { ...good[1]!, step: 2.5 }]), { message: /^metrics row 1: step must be a 32-bit integer, got 2.5$/ });
  t.throws(() => encodeWireStream([{ ...good[0]!, loss: null as never }]), { message: /^metrics row 0: loss must be a number, got null$/ });
  t.throws(() => encodeWireStream([{ ...good[0]!, entropy_layers: [1, 'x' as never] }]), { message: /^metrics row 0: entropy_layers\[1\] must be a number, got "x"$/ });
  t.throws(() => encodeWireStream([good[0]!, { ...good[1]!, saturation_layers: 3 as never }]), { message: /^metrics row 1: saturation_layers must be an array of numbers or null, got 3$/ });
  t.throws(() => encodeWireStream([{ ...good[0]!, trial_id: 5 as never }]), { message: /^metrics row 0: trial_id must be a string, got 5$/ });
  // step (schema position 2) is reported before loss (position 4), whatever the readers' order.
  t.throws(() => encodeWireStream([{ ...good[0]!, loss: 'x' as never, step: 0.5, snr_layers: 'y' as never }]), { message: /step must be a 32-bit integer/ });
});

test('parseWireStream: takes ours and apache-arrow\'s one-trial messages, at any byte offset; the part stream holds the rows minus the keys', (t) => {
  const rs = rows(T1, 4, 100, 7);
  for (const bytes of [encodeWireStream(rs), arrowStream(rs)]) {
    for (const shift of [0, 1, 3, 4]) {
      const buf = new Uint8Array(bytes.length + shift);
      buf.set(bytes, shift);
      const b = parseWireStream(buf.subarray(shift));
      t.truthy(b, `shift ${shift}`);
      t.deepEqual(b!.map((x) => [x.trialId, x.attempt, x.rows]), [[T1, 4, 100]]);
      t.deepEqual([...b![0]!.steps], rs.map((r) => r.step));
      const part = tableFromIPC(partIpcStream(b!));
      t.deepEqual(part.schema.fields.map((f) => f.name), [...METRIC_COLUMNS]);
      t.deepEqual(plain(part), plain(tableFromIPC(bytes).select([...METRIC_COLUMNS])));
    }
  }
});

test('parseWireStream: anything it cannot pass through unchanged is null (the general path decodes it)', (t) => {
  const rs = rows(T1, 1, 20);
  t.is(parseWireStream(encodeWireStream([...rs, ...rows(T2, 1, 2)])), null); // two trials
  t.is(parseWireStream(encodeWireStream([...rs.slice(0, 5), { ...rs[6]!, attempt: 2 }])), null); // two attempts
  t.is(parseWireStream(encodeWireStream([rs[1]!, rs[0]!])), null); // steps not increasing
  t.is(parseWireStream(encodeWireStream([rs[0]!, rs[0]!])), null); // a repeated step
  const good = encodeWireStream(rs);
  t.is(parseWireStream(good.subarray(0, good.length - 40)), null); // truncated
  t.is(parseWireStream(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), null);
  const other = tableToIPC(new Table({ step: tableFromIPC(good).getChild('step')! }), 'stream');
  t.is(parseWireStream(other), null); // another schema
  // A null count that the validity bitmap does not match.
  const b = parseWireStream(good)!;
  t.truthy(b);
  const corrupt = good.slice();
  const i = corrupt.length - 8 - b[0]!.body.length - 4; // inside the header: the last buffer's length
  corrupt[i] ^= 0xff;
  t.is(parseWireStream(corrupt), null);
  // rel_l2's null count (field node 8) one off from what its validity bitmap says.
  const dv = new DataView(good.buffer, good.byteOffset);
  const f = 8 + dv.getInt32(4, true) + 8; // the batch message's flatbuffer (after the schema message)
  const at = f + 72 + 16 * 8 + 8;
  t.is(dv.getUint32(at, true), 10); // 10 of the 20 rows have no rel_l2
  const miscounted = good.slice();
  new DataView(miscounted.buffer).setUint32(at, 9, true);
  t.is(parseWireStream(miscounted), null);
  t.truthy(parseWireStream(good));
});

test('MetricsStore.writeBatches: the fast path and the general one write every step exactly once', async (t) => {
  const dir = await tempDir('ipc-store');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const store = new MetricsStore(dir);
  const batches = (rs: KeyedMetricRow[]) => encodeMetricChunks(rs, 4_000).flatMap((m) => parseWireStream(m)!);
  const all = rows(T1, 1, 120);
  const first = batches(all.slice(0, 60));
  t.true(first.length > 2);
  t.deepEqual(await store.writeBatches(T1, 1, first).then((r) => r.rows), 60);
  t.is(await store.watermark(T1, 1), 590);
  // Redelivered: nothing new; overlapping and out of order: only the new steps.
  t.is((await store.writeBatches(T1, 1, first)).rows, 0);
  const late = batches(all.slice(50, 120));
  t.is((await store.writeBatches(T1, 1, [...late].reverse())).rows, 60);
  t.throws(() => store.writeBatches(T2, 1, first), { message: /a batch of/ });
  const n = await duck(`SELECT count(*)::INTEGER AS n, count(DISTINCT step)::INTEGER AS d, min(step) AS lo, max(step) AS hi, count(snr)::INTEGER AS s, count(rel_l2)::INTEGER AS r
                        FROM read_parquet('${dir}/metrics/**/*.parquet', hive_partitioning = true)`);
  t.deepEqual(n, [{ n: 120, d: 120, lo: 0, hi: 1190, s: 40, r: 60 }]);
  const same = await duck(`SELECT bool_and(snr_layers = [step // 10, step // 10 + 1, step // 10 + 2, step // 10 + 3, step // 10 + 4]) AS a,
                                  bool_and(lambda_max IS NULL = (step = 50)) AS b
                           FROM read_parquet('${dir}/metrics/**/*.parquet') WHERE snr IS NOT NULL OR step = 50`);
  t.deepEqual(same, [{ a: true, b: true }]);
  t.deepEqual((await readdir(join(dir, 'metrics', `trial_id=${T1}`, 'attempt=1'))).sort(), ['part-00000.parquet', 'part-00001.parquet']);
});

test.serial('Collector: fast-path and general-path messages of one attempt in one flush; unknown trials dropped', async (t) => {
  const dir = await tempDir('ipc-collector');
  const srv = await startNats(`${dir}/.nats`);
  const nc = await connect({ servers: srv.url });
  t.teardown(async () => {
    await nc.close().catch(() => undefined);
    await srv.stop();
    await rm(dir, { recursive: true, force: true });
  });
  const names = transportNames('ipctest');
  const sweep = 's';
  const transport = await ensureResources(nc, names, sweep);
  const spec = resolveSweep(parseSpecText(TINY_SPEC + 'grid:\n  seed: [0, 1]\n', 'spec.yaml'), 'spec.yaml');
  const records = new Map<string, TrialRecord>(
    spec.trials.map((x) => [x.trial_id, {
      trial_id: x.trial_id, sweep, config: x.config, status: 'queued', attempts: 0, started_at: null, finished_at: null, wall_seconds: null, final_loss: null,
      final_rel_l2: null, diverged: null, host: null, device: null, backend: null, worker: null, slot: null, visible_devices: null, resumed_from_attempt: null,
      resumed_from_step: null, fused: null, error: null, t_diffusion: null, t_equilibrium: null, final_phase: null,
    }]),
  );
  const [a, b] = [...records.keys()] as [string, string];
  const warnings: string[] = [];
  const js = jetstream(nc);
  const ra = rows(a, 1, 90);
  const rb = rows(b, 1, 30);
  // a: fast messages, then a message of both trials (general path), then fast again, then an apache-arrow one.
  const msgs = [
    ...encodeMetricChunks(ra.slice(0, 30), 1 << 20),
    ...encodeMetricChunks([...ra.slice(30, 40), ...rb.slice(0, 30)], 1 << 20),
    ...encodeMetricChunks(ra.slice(40, 80), 1 << 20),
    arrowStream(ra.slice(80, 90)),
    ...encodeMetricChunks(rows(T1, 1, 5), 1 << 20), // not a trial of this DIR
    ...encodeMetricChunks(ra.slice(20, 50), 1 << 20), // redelivered rows
  ];
  for (const m of msgs) await js.publish(names.metrics(sweep), m);
  const c = new Collector({ nc, names, sweep, dir, records, kv: transport.kv, onWarning: (w) => warnings.push(w) });
  await c.start();
  await c.settle(20_000);
  await c.stop();
  const jsm = await jetstreamManager(nc);
  const info = await jsm.consumers.info(names.outStream, names.collector(sweep));
  t.is(info.num_pending + info.num_ack_pending, 0);
  const n = await duck(`SELECT trial_id, count(*)::INTEGER AS n, count(DISTINCT step)::INTEGER AS d, count(snr_layers)::INTEGER AS l
                        FROM read_parquet('${dir}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY ALL ORDER BY n`);
  t.deepEqual(n, [{ trial_id: b, n: 30, d: 30, l: 10 }, { trial_id: a, n: 90, d: 90, l: 30 }]);
  t.true(warnings.some((w) => w.includes('unknown trial')), warnings.join('\n'));
  // Rows sorted within each part.
  const order = await duck(`SELECT bool_and(step > prev) AS sorted FROM (SELECT step, lag(step, 1, -1) OVER (PARTITION BY filename ORDER BY file_row_number) AS prev
                            FROM read_parquet('${dir}/metrics/**/*.parquet', filename = true, file_row_number = true))`);
  t.deepEqual(order, [{ sorted: true }]);
});
