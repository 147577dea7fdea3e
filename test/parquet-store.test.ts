import test from 'ava';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DuckDBInstance } from '@duckdb/node-api';
import { Field, Float64, Int32, Schema, Table, tableFromIPC, tableToIPC, Utf8, vectorFromArray, makeData, RecordBatch, Struct } from 'apache-arrow';
import { DEFAULT_MAX_MESSAGE_BYTES, METRIC_COLUMNS, wireMetricsSchema, type MetricRow } from '../schemas/metrics.js';
import { TRIAL_COLUMNS, type TrialRecord } from '../schemas/parquet.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { encodeMetricChunks, type KeyedMetricRow } from '../worker/metrics-encoder.js';
import {
  MetricsStore,
  decodeMetricsMessage,
  readTrialsParquet,
  splitMetricsTable,
  writeTrialsParquet,
} from '../orchestrator/parquet-store.js';

const T1 = 't0123456789abcdef';
const T2 = 'tfedcba9876543210';
const T3 = 't00000000000000ff';

/**
 * Realistic rows: a row every `logEvery` steps; rel_l2 and the diagnostic columns (snr, snr_layers
 * (length 4), grad_order, snr_adam (null at step 0), res_homogeneity, saturation_layers and
 * entropy_layers (length 3), lambda_mean, lambda_max) every 10th row.
 */
function makeRows(trialId: string, attempt: number, n: number, from = 0, logEvery = 10): KeyedMetricRow[] {
  const rows: KeyedMetricRow[] = new Array(n);
  for (let j = 0; j < n; j++) {
    const i = from + j;
    const step = i * logEvery;
    const diag = i % 10 === 0;
    rows[j] = {
      trial_id: trialId,
      attempt,
      step,
      lr: 1e-3 * 0.9 ** Math.floor(step / 5000),
      loss: 1 / (1 + step) + 1e-6 * Math.sin(i),
      loss_residual: 0.7 / (1 + step),
      loss_boundary: 0.3 / (1 + step),
      wall_seconds: step * 0.0123,
      rel_l2: diag ? 0.5 / (1 + i) : null,
      snr: diag ? 1 + Math.cos(i) : null,
      snr_layers: diag ? [i + 0.25, i + 0.5, i + 0.75, i + 1] : null,
      grad_order: diag ? 0.5 + 0.4 * Math.sin(i) : null,
      snr_adam: diag && step > 0 ? 0.1 + 0.05 * Math.cos(i) : null,
      res_homogeneity: diag ? 0.9 - 0.001 * i : null,
      saturation_layers: diag ? [i % 100, 12.5, 50 + 0.125] : null,
      entropy_layers: diag ? [Math.log2(1000), 9.5 + i / 1024, 0] : null,
      lambda_mean: diag ? 1 - 1 / (2 + i) : null,
      lambda_max: diag ? 1 : null,
    };
  }
  return rows;
}

function config(lr: number, batch: number | 'full', strategy: TrialConfig['strategy'], helmholtz: boolean): TrialConfig {
  const common = { n_collocation: 1000, n_boundary: 100, w_bc: 1, eval_grid: 101 };
  return {
    problem: helmholtz ? { name: 'helmholtz2d', a1: 1, a2: 4, k: 1, ...common } : { name: 'poisson2d', ...common },
    model: { width: 32, depth: 4 },
    train: { steps: 5000, lr, batch_size: batch, lr_decay: { rate: 0.9, every: 5000 }, log_every: 10, eval_every: 100 },
    strategy,
    diagnostics: { every: 100, snr_batches: 10 },
    seed: 7,
  } as TrialConfig;
}

function record(trialId: string, cfg: TrialConfig, status: TrialRecord['status'], done: boolean): TrialRecord {
  return {
    trial_id: trialId,
    sweep: 'demo',
    config: cfg,
    status,
    attempts: done ? 1 : 0,
    started_at: done ? new Date('2025-01-02T03:04:05.678Z') : null,
    finished_at: done ? new Date('2025-01-02T03:14:05.678Z') : null,
    wall_seconds: done ? 600 : null,
    final_loss: done ? 1e-4 : null,
    final_rel_l2: done ? 0.01 : null,
    diverged: done ? false : null,
    host: done ? 'h1' : null,
    device: done ? 'cpu' : null,
    backend: done ? 'wasm' : null,
    worker: done ? 'w1' : null,
    slot: done ? 'cpu0' : null,
    visible_devices: null,
    resumed_from_attempt: null,
    resumed_from_step: null,
    fused: null,
    error: null,
    t_diffusion: null,
    t_equilibrium: null,
    final_phase: null,
  };
}

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'phasemap-pq-'));
}

async function duck() {
  const instance = await DuckDBInstance.create(':memory:');
  const conn = await instance.connect();
  return {
    async all(sql: string) {
      const r = await conn.runAndReadAll(sql);
      return { names: r.columnNames(), types: r.columnTypes().map((t) => t.toString()), rows: r.getRowObjectsJS() };
    },
    close() {
      conn.closeSync();
      instance.closeSync();
    },
  };
}

const metricsGlob = (dir: string) => `read_parquet('${join(dir, 'metrics')}/**/*.parquet', hive_partitioning = true)`;

const LIST_COLUMNS = ['snr_layers', 'saturation_layers', 'entropy_layers'];

/** Row of a decoded table back as a plain object (lists as number[]). */
function tableRows(table: Table): Array<Record<string, unknown>> {
  return table.toArray().map((r) => {
    const o = r.toJSON() as Record<string, unknown>;
    for (const c of LIST_COLUMNS) {
      const l = o[c] as { toArray(): Float64Array } | null;
      o[c] = l === null ? null : Array.from(l.toArray());
    }
    return o;
  });
}

test('encodeMetricChunks: small maxBytes → several self-contained chunks ≤ maxBytes carrying every row', (t) => {
  const rows = [...makeRows(T1, 1, 300), ...makeRows(T2, 2, 300)];
  const maxBytes = 8192;
  const chunks = encodeMetricChunks(rows, maxBytes);
  t.true(chunks.length > 2, `got ${chunks.length} chunks`);
  const back: Array<Record<string, unknown>> = [];
  for (const c of chunks) {
    t.true(c.length <= maxBytes, `chunk of ${c.length} bytes`);
    const table = decodeMetricsMessage(c);
    t.deepEqual(table.schema.fields.map((f) => `${f.name}:${f.type}:${f.nullable}`), wireMetricsSchema().fields.map((f) => `${f.name}:${f.type}:${f.nullable}`));
    t.is(tableFromIPC(c).numRows, table.numRows); // a plain Arrow reader reads it alone too
    back.push(...tableRows(table));
  }
  t.is(back.length, rows.length);
  t.deepEqual(back, rows as unknown as Array<Record<string, unknown>>);
  // A chunk straddling both trials is allowed: keys are per row.
  t.deepEqual(new Set(back.map((r) => r.trial_id)), new Set([T1, T2]));
  // Nulls are real Arrow nulls.
  const first = decodeMetricsMessage(chunks[0]);
  t.is(first.getChild('snr')!.nullCount, first.numRows - Math.ceil(first.numRows / 10));
  t.is(first.getChild('snr_layers')!.nullCount, first.getChild('snr')!.nullCount);
  for (const c of ['res_homogeneity', ...LIST_COLUMNS, 'lambda_mean', 'lambda_max']) t.is(first.getChild(c)!.nullCount, first.getChild('snr')!.nullCount, c);
  t.is(first.getChild('snr_adam')!.nullCount, first.getChild('snr')!.nullCount + 1, 'snr_adam is also null at step 0');
  t.is(String(first.schema.fields.find((f) => f.name === 'entropy_layers')!.type), 'List<Float64>');
});

test('encodeMetricChunks: default maxBytes packs many rows per message; empty input → []', (t) => {
  const rows = makeRows(T1, 1, 20_000);
  const chunks = encodeMetricChunks(rows, DEFAULT_MAX_MESSAGE_BYTES);
  for (const c of chunks) t.true(c.length <= DEFAULT_MAX_MESSAGE_BYTES);
  t.is(chunks.reduce((a, c) => a + decodeMetricsMessage(c).numRows, 0), rows.length);
  t.true(chunks.length <= 3, `${chunks.length} chunks`);
  t.deepEqual(encodeMetricChunks([], 1024), []);
});

test('encodeMetricChunks: one row larger than maxBytes is a clear error; bad input is rejected', (t) => {
  const big = makeRows(T1, 1, 3);
  big[1].snr_layers = new Array(2000).fill(1.5);
  const e = t.throws(() => encodeMetricChunks(big, 4096));
  t.regex(e!.message, /trial_id=t0123456789abcdef, attempt=1, step=10\) alone encodes to \d+ bytes, over maxBytes=4096/);
  t.throws(() => encodeMetricChunks(big, 0), { message: /maxBytes/ });
  const bad = makeRows(T1, 1, 2);
  (bad[1] as { step: number }).step = 1.5;
  t.throws(() => encodeMetricChunks(bad, 4096), { message: /row 1: step must be a 32-bit integer/ });
  const bad2 = makeRows(T1, 1, 2);
  (bad2[0] as { loss: number | null }).loss = null;
  t.throws(() => encodeMetricChunks(bad2, 4096), { message: /row 0: loss must be a number/ });
  const bad3 = makeRows(T1, 1, 2);
  (bad3[0] as unknown as { entropy_layers: unknown }).entropy_layers = [1, 'x'];
  t.throws(() => encodeMetricChunks(bad3, 4096), { message: /row 0: entropy_layers\[1\] must be a number/ });
  const bad4 = makeRows(T1, 1, 2);
  (bad4[1] as unknown as { saturation_layers: unknown }).saturation_layers = 3;
  t.throws(() => encodeMetricChunks(bad4, 4096), { message: /row 1: saturation_layers must be an array of numbers or null/ });
});

test('decodeMetricsMessage: a schema that differs from the wire schema names the field', (t) => {
  const good = decodeMetricsMessage(encodeMetricChunks(makeRows(T1, 1, 5), 1 << 20)[0]);
  // Retyped: step as Float64.
  const fields = good.schema.fields.map((f) => (f.name === 'step' ? new Field('step', new Float64(), false) : f));
  const children = good.schema.fields.map((f) =>
    f.name === 'step' ? vectorFromArray(Float64Array.from(good.getChild('step')!.toArray() as Int32Array)).data[0] : good.getChild(f.name)!.data[0],
  );
  const retyped = new Table(new Schema(fields), [
    new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length: 5, nullCount: 0, children })),
  ]);
  t.throws(() => decodeMetricsMessage(tableToIPC(retyped, 'stream')), { message: /field "step" has type Float64, expected Int32/ });
  // Missing field / wrong name.
  const other = new Table({ trial_id: vectorFromArray(['x'], new Utf8()), attempt: vectorFromArray([1], new Int32()) });
  t.throws(() => decodeMetricsMessage(tableToIPC(other, 'stream')), { message: /missing field "step"/ });
  t.throws(() => decodeMetricsMessage(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), { message: /metrics message/ });
});

test('round trip: encode → decode → MetricsStore → Parquet, read back with DuckDB; redelivery adds no row', async (t) => {
  const dir = await tempDir();
  const db = await duck();
  t.teardown(async () => {
    db.close();
    await rm(dir, { recursive: true, force: true });
  });
  const rows = [...makeRows(T1, 1, 250), ...makeRows(T2, 1, 180)];
  const chunks = encodeMetricChunks(rows, 6000);
  t.true(chunks.length > 2);

  const store = new MetricsStore(dir);
  t.is(await store.watermark(T1, 1), -1);
  const deliver = async (s: MetricsStore, c: Uint8Array) => {
    let n = 0;
    for (const part of splitMetricsTable(decodeMetricsMessage(c))) n += (await s.writePart(part.trial_id, part.attempt, part.table)).rows;
    return n;
  };
  let written = 0;
  for (const c of chunks) written += await deliver(store, c);
  t.is(written, rows.length);
  t.is(await store.watermark(T1, 1), 249 * 10);
  t.is(await store.watermark(T2, 1), 179 * 10);

  // Layout and durability: only part-<k>.parquet files, no temp leftovers.
  const files = await readdir(join(dir, 'metrics', `trial_id=${T1}`, 'attempt=1'));
  t.true(files.length >= 2);
  t.true(files.every((f) => /^part-\d{5}\.parquet$/.test(f)), files.join(','));

  const counts = await db.all(`SELECT trial_id, attempt, count(*)::INTEGER AS n, min(step) AS lo, max(step) AS hi FROM ${metricsGlob(dir)} GROUP BY ALL ORDER BY trial_id`);
  t.deepEqual(counts.rows, [
    { trial_id: T1, attempt: 1n, n: 250, lo: 0, hi: 2490 },
    { trial_id: T2, attempt: 1n, n: 180, lo: 0, hi: 1790 },
  ]);

  const desc = await db.all(`DESCRIBE SELECT * FROM ${metricsGlob(dir)}`);
  const types = Object.fromEntries(desc.rows.map((r) => [r.column_name as string, r.column_type as string]));
  t.deepEqual(types, {
    step: 'INTEGER',
    lr: 'DOUBLE',
    loss: 'DOUBLE',
    loss_residual: 'DOUBLE',
    loss_boundary: 'DOUBLE',
    wall_seconds: 'DOUBLE',
    rel_l2: 'DOUBLE',
    snr: 'DOUBLE',
    snr_layers: 'DOUBLE[]',
    grad_order: 'DOUBLE',
    snr_adam: 'DOUBLE',
    res_homogeneity: 'DOUBLE',
    saturation_layers: 'DOUBLE[]',
    entropy_layers: 'DOUBLE[]',
    lambda_mean: 'DOUBLE',
    lambda_max: 'DOUBLE',
    attempt: 'BIGINT',
    trial_id: 'VARCHAR',
  });
  t.deepEqual(desc.rows.map((r) => r.column_name), [...METRIC_COLUMNS, 'attempt', 'trial_id']); // hive columns come last (DuckDB orders them by name)
  t.deepEqual([...METRIC_COLUMNS], [
    'step', 'lr', 'loss', 'loss_residual', 'loss_boundary', 'wall_seconds', 'rel_l2', 'snr', 'snr_layers', 'grad_order',
    'snr_adam', 'res_homogeneity', 'saturation_layers', 'entropy_layers', 'lambda_mean', 'lambda_max',
  ]);

  // Null placement: diagnostics exactly on every 10th row (step % 100 == 0), nowhere else.
  const nulls = await db.all(
    `SELECT count(*) FILTER (WHERE snr IS NULL) = count(*) FILTER (WHERE step % 100 <> 0) AS a,
            bool_and((snr IS NULL) = (step % 100 <> 0)) AS b,
            bool_and((snr_layers IS NULL) = (step % 100 <> 0)) AS c,
            bool_and((rel_l2 IS NULL) = (grad_order IS NULL)) AS d,
            count(*) FILTER (WHERE lr IS NULL OR loss IS NULL) AS e,
            bool_and((snr IS NULL) = (res_homogeneity IS NULL) AND (snr IS NULL) = (saturation_layers IS NULL)
                     AND (snr IS NULL) = (entropy_layers IS NULL) AND (snr IS NULL) = (lambda_mean IS NULL)
                     AND (snr IS NULL) = (lambda_max IS NULL)) AS f,
            bool_and((snr_adam IS NULL) = (snr IS NULL OR step = 0)) AS g
     FROM ${metricsGlob(dir)}`,
  );
  t.deepEqual(nulls.rows[0], { a: true, b: true, c: true, d: true, e: 0n, f: true, g: true });

  const one = await db.all(`SELECT snr_layers, snr_layers[2] AS second, len(snr_layers) AS k, lr, wall_seconds FROM ${metricsGlob(dir)} WHERE trial_id = '${T2}' AND step = 1200`);
  t.deepEqual(one.rows, [{ snr_layers: [120.25, 120.5, 120.75, 121], second: 120.5, k: 4n, lr: 1e-3, wall_seconds: 1200 * 0.0123 }]);
  // The new diagnostic columns read back exactly (DOUBLE and DOUBLE[]); per-layer lists index like snr_layers.
  const diag = await db.all(
    `SELECT snr_adam, res_homogeneity, saturation_layers, entropy_layers, entropy_layers[2] AS h2, len(saturation_layers) AS ls,
            lambda_mean, lambda_max FROM ${metricsGlob(dir)} WHERE trial_id = '${T2}' AND step IN (0, 1200) ORDER BY step`,
  );
  t.deepEqual(diag.types, ['DOUBLE', 'DOUBLE', 'DOUBLE[]', 'DOUBLE[]', 'DOUBLE', 'BIGINT', 'DOUBLE', 'DOUBLE']);
  t.deepEqual(diag.rows, [
    { snr_adam: null, res_homogeneity: 0.9, saturation_layers: [0, 12.5, 50.125], entropy_layers: [Math.log2(1000), 9.5, 0], h2: 9.5, ls: 3n, lambda_mean: 0.5, lambda_max: 1 },
    {
      snr_adam: 0.1 + 0.05 * Math.cos(120), res_homogeneity: 0.9 - 0.001 * 120, saturation_layers: [20, 12.5, 50.125],
      entropy_layers: [Math.log2(1000), 9.5 + 120 / 1024, 0], h2: 9.5 + 120 / 1024, ls: 3n, lambda_mean: 1 - 1 / 122, lambda_max: 1,
    },
  ]);
  // Within a part, rows are sorted by step.
  const order = await db.all(`SELECT bool_and(step > prev) AS sorted FROM (SELECT step, lag(step, 1, -1) OVER (PARTITION BY filename ORDER BY file_row_number) AS prev FROM read_parquet('${join(dir, 'metrics')}/**/*.parquet', filename = true, file_row_number = true))`);
  t.deepEqual(order.rows, [{ sorted: true }]);

  // Redelivery: same messages again to the same store, then to a fresh store over the same DIR.
  const partsBefore = (await readdir(join(dir, 'metrics', `trial_id=${T1}`, 'attempt=1'))).length;
  for (const c of chunks) t.is(await deliver(store, c), 0);
  const fresh = new MetricsStore(dir);
  t.is(await fresh.watermark(T1, 1), 2490);
  for (const c of chunks) t.is(await deliver(fresh, c), 0);
  t.is((await readdir(join(dir, 'metrics', `trial_id=${T1}`, 'attempt=1'))).length, partsBefore);
  // An overlapping message only adds the new steps, as the next part index.
  const overlap = encodeMetricChunks(makeRows(T1, 1, 20, 240), 1 << 20);
  t.is(await deliver(fresh, overlap[0]), 10);
  t.true(
    (await readdir(join(dir, 'metrics', `trial_id=${T1}`, 'attempt=1'))).includes(`part-${String(partsBefore).padStart(5, '0')}.parquet`),
  );
  // A second attempt is its own partition with its own watermark; rows given as objects work too.
  t.is((await fresh.writePart(T1, 2, makeRows(T1, 2, 5))).rows, 5);
  const after = await db.all(`SELECT trial_id, attempt, count(*)::INTEGER AS n, count(DISTINCT step)::INTEGER AS d FROM ${metricsGlob(dir)} GROUP BY ALL ORDER BY ALL`);
  t.deepEqual(after.rows, [
    { trial_id: T1, attempt: 1n, n: 260, d: 260 },
    { trial_id: T1, attempt: 2n, n: 5, d: 5 },
    { trial_id: T2, attempt: 1n, n: 180, d: 180 },
  ]);
  // Concurrent writes for one attempt are serialized: no part index is reused, nothing doubled.
  const more = makeRows(T2, 1, 30, 180);
  const res = await Promise.all([fresh.writePart(T2, 1, more.slice(0, 10)), fresh.writePart(T2, 1, more.slice(10, 20)), fresh.writePart(T2, 1, more.slice(10, 30))]);
  t.deepEqual(res.map((r) => r.rows), [10, 10, 10]);
  t.is(new Set(res.map((r) => r.path)).size, 3);
  t.throws(() => fresh.writePart('../../etc', 1, []), { message: /trial_id/ });
});

test('trials.parquet: exact columns and types from TRIAL_COLUMNS, read back, joined with metrics', async (t) => {
  const dir = await tempDir();
  const db = await duck();
  t.teardown(async () => {
    db.close();
    await rm(dir, { recursive: true, force: true });
  });
  t.deepEqual(await readTrialsParquet(dir), []);

  const records = [
    record(T1, config(1e-3, 'full', { name: 'vanilla' }, true), 'done', true),
    record(T2, config(1e-2, 100, { name: 'rba', eta: 1e-3, gamma: 0.999, normalization: 'minmax', init: 'residual' }, false), 'done', true),
    record(T3, config(1e-1, 250, { name: 'sa', lr: 5e-3, freeze_step: 40 }, false), 'queued', false),
  ];
  await writeTrialsParquet(dir, records);
  t.deepEqual(await readdir(dir), ['trials.parquet']);

  const duckType = (c: (typeof TRIAL_COLUMNS)[number]): string =>
    ({ Utf8: 'VARCHAR', Int32: 'INTEGER', Float64: 'DOUBLE', Bool: 'BOOLEAN', 'Timestamp<MILLISECOND>': 'TIMESTAMP' })[String(c.type)] ?? `?${c.type}`;
  const desc = await db.all(`DESCRIBE SELECT * FROM '${join(dir, 'trials.parquet')}'`);
  t.deepEqual(
    desc.rows.map((r) => `${r.column_name} ${r.column_type}`),
    TRIAL_COLUMNS.map((c) => `${c.name} ${duckType(c)}`),
  );
  const rows = await db.all(`SELECT trial_id, problem, problem_a1, batch_size, batch_full, strategy, strategy_eta, status, attempts, started_at FROM '${join(dir, 'trials.parquet')}' ORDER BY trial_id`);
  t.is(rows.rows.length, records.length);
  t.deepEqual(rows.rows.map((r) => [r.trial_id, r.problem, r.problem_a1, r.batch_size, r.batch_full, r.strategy, r.strategy_eta, r.status, r.attempts]), [
    [T3, 'poisson2d', null, 250, false, 'sa', null, 'queued', 0],
    [T1, 'helmholtz2d', 1, 1000, true, 'vanilla', null, 'done', 1],
    [T2, 'poisson2d', null, 100, false, 'rba', 1e-3, 'done', 1],
  ]);
  t.is((rows.rows[1].started_at as Date).toISOString(), '2025-01-02T03:04:05.678Z');
  const strat = await db.all(`SELECT trial_id, strategy_normalization, strategy_init, strategy_lr, strategy_freeze_step FROM '${join(dir, 'trials.parquet')}' ORDER BY trial_id`);
  t.deepEqual(strat.rows.map((r) => [r.trial_id, r.strategy_normalization, r.strategy_init, r.strategy_lr, r.strategy_freeze_step]), [
    [T3, null, null, 5e-3, 40],
    [T1, null, null, null, null],
    [T2, 'minmax', 'residual', null, null],
  ]);

  const back = await readTrialsParquet(dir);
  t.deepEqual(back.map((r) => [r.trial_id, r.status, r.attempts]), [[T1, 'done', 1], [T2, 'done', 1], [T3, 'queued', 0]]);
  t.deepEqual(Object.keys(back[0]), TRIAL_COLUMNS.map((c) => c.name));
  t.deepEqual(back[0].started_at, records[0].started_at);
  t.is(back[2].started_at, null);
  t.is(back[1].batch_full, false);
  t.is(back[1].lr, 1e-2);

  // Metrics of the two done trials, joined with the trials table.
  const store = new MetricsStore(dir);
  for (const c of encodeMetricChunks([...makeRows(T1, 1, 120), ...makeRows(T2, 1, 80)], 16_384)) {
    for (const p of splitMetricsTable(decodeMetricsMessage(c))) await store.writePart(p.trial_id, p.attempt, p.table);
  }
  const joined = await db.all(
    `SELECT t.lr, t.batch_size, t.strategy, m.step, m.snr FROM ${metricsGlob(dir)} m JOIN '${join(dir, 'trials.parquet')}' t USING (trial_id)`,
  );
  t.is(joined.rows.length, 200);
  t.deepEqual(joined.types, ['DOUBLE', 'INTEGER', 'VARCHAR', 'INTEGER', 'DOUBLE']);
  const per = await db.all(
    `SELECT t.strategy, t.batch_size, count(*)::INTEGER AS n, count(m.snr)::INTEGER AS with_snr FROM ${metricsGlob(dir)} m JOIN '${join(dir, 'trials.parquet')}' t USING (trial_id) GROUP BY ALL ORDER BY n`,
  );
  t.deepEqual(per.rows, [
    { strategy: 'rba', batch_size: 100, n: 80, with_snr: 8 },
    { strategy: 'vanilla', batch_size: 1000, n: 120, with_snr: 12 },
  ]);

  // Rewriting replaces the file whole and atomically.
  records[2].status = 'failed';
  records[2].error = 'boom';
  await writeTrialsParquet(dir, records);
  const again = await readTrialsParquet(dir);
  t.is(again.length, 3);
  t.deepEqual([again[2].status, again[2].error], ['failed', 'boom']);
  t.deepEqual((await readdir(dir)).sort(), ['metrics', 'trials.parquet']);

  // Missing required values are rejected before anything is written.
  await t.throwsAsync(writeTrialsParquet(dir, [{ ...records[0], status: null as never }]), { message: /status is required/ });
  t.is((await readTrialsParquet(dir)).length, 3);
});

test('files are plain zstd Parquet any engine reads (DuckDB here; no python/pandas involved)', async (t) => {
  const dir = await tempDir();
  const db = await duck();
  t.teardown(async () => {
    db.close();
    await rm(dir, { recursive: true, force: true });
  });
  await writeTrialsParquet(dir, [record(T1, config(1e-3, 'full', { name: 'vanilla' }, true), 'done', true)]);
  await new MetricsStore(dir).writePart(T1, 1, makeRows(T1, 1, 50));
  const meta = await db.all(`SELECT DISTINCT compression FROM parquet_metadata(['${join(dir, 'trials.parquet')}', '${join(dir, 'metrics')}/**/*.parquet'])`);
  t.deepEqual(meta.rows, [{ compression: 'ZSTD' }]);
  const schema = await db.all(`SELECT name, type, logical_type IS NOT NULL AS has_logical FROM parquet_schema('${join(dir, 'metrics')}/**/*.parquet') WHERE name IN ('step', 'lr')  ORDER BY name`);
  t.deepEqual(schema.rows.map((r) => [r.name, r.type]), [['lr', 'DOUBLE'], ['step', 'INT32']]);
  // A stray temp file (crash between write and rename) is ignored by readers and by the store.
  await writeFile(join(dir, 'metrics', `trial_id=${T1}`, 'attempt=1', 'part-00001.parquet.tmp-1-deadbeef'), 'garbage');
  const n = await db.all(`SELECT count(*)::INTEGER AS n FROM ${metricsGlob(dir)}`);
  t.deepEqual(n.rows, [{ n: 50 }]);
  t.is(await new MetricsStore(dir).watermark(T1, 1), 490);
});

test('measure: encode and Parquet write throughput for 100k realistic rows (reported, not asserted)', async (t) => {
  const dir = await tempDir();
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const rows = [...makeRows(T1, 1, 50_000), ...makeRows(T2, 1, 50_000)];
  encodeMetricChunks(rows.slice(0, 2000), DEFAULT_MAX_MESSAGE_BYTES); // warm-up
  let t0 = performance.now();
  const chunks = encodeMetricChunks(rows, DEFAULT_MAX_MESSAGE_BYTES);
  const encMs = performance.now() - t0;
  const bytes = chunks.reduce((a, c) => a + c.length, 0);
  t.log(`encode: ${rows.length} rows → ${chunks.length} chunks, ${(bytes / 1e6).toFixed(2)} MB, ${encMs.toFixed(0)} ms, ${Math.round(rows.length / (encMs / 1000)).toLocaleString('en')} rows/s`);

  t0 = performance.now();
  const parts = chunks.flatMap((c) => splitMetricsTable(decodeMetricsMessage(c)));
  const decMs = performance.now() - t0;
  t.log(`decode+split: ${Math.round(rows.length / (decMs / 1000)).toLocaleString('en')} rows/s`);

  const store = new MetricsStore(dir);
  t0 = performance.now();
  let n = 0;
  for (const p of parts) n += (await store.writePart(p.trial_id, p.attempt, p.table)).rows;
  const wMs = performance.now() - t0;
  t.is(n, rows.length);
  t.log(`parquet write (zstd, fsync'd, ${parts.length} parts): ${wMs.toFixed(0)} ms, ${Math.round(n / (wMs / 1000)).toLocaleString('en')} rows/s`);

  t0 = performance.now();
  n = 0;
  for (const tid of [T1, T2]) n += (await new MetricsStore(dir).writePart(tid, 2, rows.filter((r) => r.trial_id === tid))).rows;
  const w2 = performance.now() - t0;
  t.log(`parquet write as 2 big parts of 50k rows (from objects): ${Math.round(n / (w2 / 1000)).toLocaleString('en')} rows/s`);
  t.pass();
});

test('splitMetricsTable / writePart: interleaved trials and unsorted steps are grouped and sorted', async (t) => {
  const dir = await tempDir();
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const a = makeRows(T1, 1, 3); // steps 0, 10, 20; row 0 has diagnostics
  const b = makeRows(T2, 3, 2);
  const mixed = [a[2], b[1], a[0], b[0], a[1], a[0]]; // includes a duplicate of T1 step 0
  const [msg] = encodeMetricChunks(mixed, 1 << 20);
  const parts = splitMetricsTable(decodeMetricsMessage(msg));
  t.deepEqual(parts.map((p) => [p.trial_id, p.attempt, p.table.numRows]), [[T1, 1, 4], [T2, 3, 2]]);
  t.deepEqual(parts[0].table.schema.fields.map((f) => f.name), [...METRIC_COLUMNS]);
  const p0 = tableRows(parts[0].table);
  t.deepEqual(p0.map((r) => r.step), [0, 0, 10, 20]);
  t.deepEqual(p0[0].snr_layers, [0.25, 0.5, 0.75, 1]);
  // The slow path (rows regrouped through objects) keeps every list column and null.
  t.deepEqual(p0[0].saturation_layers, [0, 12.5, 50.125]);
  t.deepEqual(p0[0].entropy_layers, [Math.log2(1000), 9.5, 0]);
  t.is(p0[0].snr_adam, null);
  t.is(p0[2].entropy_layers, null);
  t.is(p0[2].snr, null);
  const store = new MetricsStore(dir);
  t.is((await store.writePart(T1, 1, parts[0].table)).rows, 3); // the duplicate step is written once
  t.is((await store.writePart(T2, 3, parts[1].table)).rows, 2);
  t.is(await store.watermark(T2, 3), 10);
  // A wire-schema table for the wrong key is refused.
  await t.throwsAsync(store.writePart(T1, 2, decodeMetricsMessage(msg)), { message: /holds a row of/ });
});
