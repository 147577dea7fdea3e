/**
 * Storage of metrics and trial records as Parquet (layout: schemas/parquet.ts).
 *
 *   DIR/metrics/trial_id=<id>/attempt=<n>/part-<k>.parquet   one file per written batch, rows sorted by step
 *   DIR/trials.parquet                                       one row per trial, rewritten whole
 *
 * Every file is written durably: a temp file in the target folder (name not ending in `.parquet`,
 * so readers globbing `*.parquet` never see it), fsync, rename, fsync of the folder.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import {
  DataType,
  Field,
  RecordBatch,
  Schema,
  Struct,
  Table,
  makeData,
  tableFromIPC,
  tableToIPC,
  vectorFromArray,
  type Data,
  type Vector,
} from 'apache-arrow';
import { Compression, EnabledStatistics, Encoding, Table as WasmTable, WriterPropertiesBuilder, readParquet, writeParquet } from 'parquet-wasm';
import { partMetricsSchema, wireMetricsSchema, METRIC_COLUMNS, type MetricRow } from '../schemas/metrics.js';
import { TRIALS_FILE, TRIAL_COLUMNS, TRIAL_ID_PATTERN, metricsPartPath, trialsSchema, type TrialRecord } from '../schemas/parquet.js';
import { buildMetricsBatch } from '../schemas/metrics-batch.js';
import { partIpcStream, type WireBatch } from '../schemas/metrics-ipc.js';

// ---------------------------------------------------------------------------------------------
// Arrow <-> Parquet

/** Arrow JS table → Parquet bytes (zstd, via parquet-wasm), with the default writer properties (trials.parquet). */
function toParquet(table: Table): Uint8Array {
  const wasmTable = WasmTable.fromIPCStream(tableToIPC(table, 'stream'));
  const props = new WriterPropertiesBuilder().setCompression(Compression.ZSTD).build();
  return writeParquet(wasmTable, props);
}

/** Top-level Float64 columns of a part (BYTE_STREAM_SPLIT; nested list items keep PLAIN: parquet-wasm names columns by top-level path only). */
const PART_FLOAT_COLUMNS = partMetricsSchema().fields.filter((f) => DataType.isFloat(f.type)).map((f) => f.name);

/**
 * Arrow IPC stream with `partMetricsSchema()` → Parquet bytes of a metrics part. zstd on every
 * column; no dictionary encoding (measured values hardly repeat: with it, writing took ~3× as long
 * and files were larger); statistics per column chunk only (no page index); the float columns
 * BYTE_STREAM_SPLIT (their exponent bytes then compress: ~10 % smaller, and faster to write).
 */
function partParquet(ipc: Uint8Array): Uint8Array {
  let b = new WriterPropertiesBuilder()
    .setCompression(Compression.ZSTD)
    .setDictionaryEnabled(false)
    .setStatisticsEnabled(EnabledStatistics.Chunk);
  for (const c of PART_FLOAT_COLUMNS) b = b.setColumnEncoding(c, Encoding.BYTE_STREAM_SPLIT);
  return writeParquet(WasmTable.fromIPCStream(ipc), b.build());
}

/** Parquet bytes → Arrow JS table (via parquet-wasm), optionally only some columns. */
function fromParquet(bytes: Uint8Array, columns?: string[]): Table {
  const wasmTable = readParquet(bytes, columns ? { columns } : undefined);
  return tableFromIPC(wasmTable.intoIPCStream());
}

/** Writes `bytes` to `path` atomically and durably: temp file in the same folder, fsync, rename, fsync folder. */
export async function writeFileDurable(path: string, bytes: Uint8Array): Promise<void> {
  const dir = dirname(path);
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fh = await open(tmp, 'wx');
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Wire messages

/** Describes how `got` differs from `want` (first difference), or null when they match by name and type. */
function schemaMismatch(got: Schema, want: Schema): string | null {
  for (let i = 0; i < want.fields.length; i++) {
    const w = want.fields[i];
    const g = got.fields[i];
    if (g === undefined) return `missing field ${JSON.stringify(w.name)} (position ${i})`;
    if (g.name !== w.name) return `field ${i} is ${JSON.stringify(g.name)}, expected ${JSON.stringify(w.name)}`;
    if (g.typeId !== w.typeId || String(g.type) !== String(w.type)) return `field ${JSON.stringify(w.name)} has type ${g.type}, expected ${w.type}`;
  }
  if (got.fields.length > want.fields.length) return `unexpected field ${JSON.stringify(got.fields[want.fields.length].name)}`;
  return null;
}

/** Checks names/types against `want` and that non-nullable columns hold no nulls. */
function checkTable(table: Table, want: Schema, what: string): void {
  const mismatch = schemaMismatch(table.schema, want);
  if (mismatch) throw new Error(`${what}: schema mismatch: ${mismatch}`);
  for (const f of want.fields) {
    if (!f.nullable && table.getChild(f.name)!.nullCount > 0) throw new Error(`${what}: field ${JSON.stringify(f.name)} is not nullable but holds nulls`);
  }
}

/**
 * Decodes one metrics message (an Arrow IPC stream as made by `encodeMetricChunks`).
 *
 * @param bytes the message payload.
 * @returns the Arrow table, with exactly the fields of `wireMetricsSchema()` (names, order, types).
 * @throws Error when the bytes are not an Arrow IPC stream, or naming the first field whose name or
 *         type differs from the wire schema (missing / extra / renamed / retyped), or a
 *         non-nullable field (trial_id, attempt, step, lr, losses, wall_seconds) that holds nulls.
 */
export function decodeMetricsMessage(bytes: Uint8Array): Table {
  let table: Table;
  try {
    table = tableFromIPC(bytes);
  } catch (e) {
    throw new Error(`metrics message: not an Arrow IPC stream (${(e as Error).message})`);
  }
  checkTable(table, wireMetricsSchema(), 'metrics message');
  return table;
}

/** Column accessors over a (possibly multi-batch) table: value of column c at row i, null where null. */
function rowsFromTable(table: Table, keyed: boolean): Array<MetricRow & { trial_id?: string; attempt?: number }> {
  const n = table.numRows;
  const cols = (keyed ? ['trial_id', 'attempt', ...METRIC_COLUMNS] : [...METRIC_COLUMNS]).map((name) => ({
    name,
    vec: table.getChild(name) as Vector,
  }));
  const rows: Array<Record<string, unknown>> = new Array(n);
  for (let i = 0; i < n; i++) rows[i] = {};
  for (const { name, vec } of cols) {
    if (DataType.isList(vec.type)) {
      for (let i = 0; i < n; i++) {
        const v = vec.get(i) as Vector | null;
        rows[i][name] = v === null ? null : Array.from(v.toArray() as Float64Array);
      }
    } else if (vec.nullCount === 0 && name !== 'trial_id') {
      const arr = vec.toArray() as ArrayLike<number>;
      for (let i = 0; i < n; i++) rows[i][name] = arr[i];
    } else {
      for (let i = 0; i < n; i++) rows[i][name] = vec.get(i);
    }
  }
  return rows as unknown as Array<MetricRow & { trial_id?: string; attempt?: number }>;
}

/** Rows sorted by step → part table with exactly `partMetricsSchema()`. */
function partTableFromRows(rows: MetricRow[]): Table {
  const sorted = rows.slice().sort((a, b) => a.step - b.step);
  const batch = buildMetricsBatch(sorted, false);
  return new Table(batch.schema, [batch]);
}

const utf8 = new TextDecoder();

/**
 * Row accessor of a Utf8 column that decodes a value only when its bytes differ from the previous
 * row's (a metrics message is usually one trial: one decode instead of one per row).
 */
function utf8Reader(vec: Vector): (i: number) => string {
  const d = vec.data.length === 1 ? vec.data[0]! : null;
  if (!d || d.offset !== 0 || d.nullCount > 0 || !d.valueOffsets || !d.values) return (i) => vec.get(i) as string;
  const off = d.valueOffsets as Int32Array;
  const bytes = d.values as Uint8Array;
  let lo = -1;
  let len = -1;
  let last = '';
  return (i) => {
    const a = off[i]!;
    const n = off[i + 1]! - a;
    if (n === len) {
      let same = true;
      for (let k = 0; k < n; k++) if (bytes[a + k] !== bytes[lo + k]) { same = false; break; }
      if (same) return last;
    }
    lo = a;
    len = n;
    last = utf8.decode(bytes.subarray(a, a + n));
    return last;
  };
}

/** One (trial_id, attempt) group of a decoded metrics message. */
export interface MetricsPart {
  trial_id: string;
  attempt: number;
  /** Rows of that attempt, sorted by step, with exactly `partMetricsSchema()` (no key columns). */
  table: Table;
}

/**
 * Splits a decoded wire table (see `decodeMetricsMessage`) by (trial_id, attempt).
 *
 * @returns one part per distinct key, in order of first appearance; each part's table has exactly
 *          `partMetricsSchema()` (keys dropped), rows sorted by step.
 * @throws Error when the table does not have the wire schema.
 */
export function splitMetricsTable(table: Table): MetricsPart[] {
  checkTable(table, wireMetricsSchema(), 'metrics table');
  const n = table.numRows;
  const id = utf8Reader(table.getChild('trial_id')!);
  const attempts = table.getChild('attempt')!.toArray() as Int32Array;
  const steps = table.getChild('step')!.toArray() as Int32Array;
  // Group row indices by key; note whether each group is one contiguous run with increasing steps.
  const groups = new Map<string, { trial_id: string; attempt: number; lo: number; hi: number; simple: boolean; idx: number[] }>();
  let lastId: string | null = null;
  let lastAttempt = -1;
  let lastGroup: { trial_id: string; attempt: number; lo: number; hi: number; simple: boolean; idx: number[] } | undefined;
  for (let i = 0; i < n; i++) {
    const tid = id(i);
    let g = tid === lastId && attempts[i] === lastAttempt ? lastGroup : undefined;
    if (g === undefined) {
      const key = `${tid}\u0000${attempts[i]}`;
      g = groups.get(key);
      if (g !== undefined) {
        if (g.hi !== i || steps[i] <= steps[i - 1]) g.simple = false;
        g.hi = i + 1;
        g.idx.push(i);
      } else {
        g = { trial_id: tid, attempt: attempts[i], lo: i, hi: i + 1, simple: true, idx: [i] };
        groups.set(key, g);
      }
      lastId = tid;
      lastAttempt = attempts[i]!;
      lastGroup = g;
      continue;
    }
    // Same key as the row before (the usual case): extends its run.
    if (steps[i] <= steps[i - 1]) g.simple = false;
    g.hi = i + 1;
    g.idx.push(i);
  }
  let objects: Array<MetricRow & { trial_id?: string; attempt?: number }> | null = null;
  return [...groups.values()].map((g) => {
    if (g.simple) {
      // Fast path (the usual message): a contiguous, sorted run → a zero-copy slice minus the keys.
      const part = (g.lo === 0 && g.hi === n ? table : table.slice(g.lo, g.hi)).select([...METRIC_COLUMNS]) as unknown as Table;
      return { trial_id: g.trial_id, attempt: g.attempt, table: part };
    }
    objects ??= rowsFromTable(table, true);
    const rows = g.idx.map((i) => {
      const { trial_id: _k, attempt: _a, ...r } = objects![i];
      return r as MetricRow;
    });
    return { trial_id: g.trial_id, attempt: g.attempt, table: partTableFromRows(rows) };
  });
}

// ---------------------------------------------------------------------------------------------
// Metrics parts

interface AttemptState {
  /** Max step on disk, -1 if none. */
  watermark: number;
  /** Next free part index. */
  nextPart: number;
  /**
   * Every step on disk, loaded from the parts only when rows at or under the watermark arrive (a
   * redelivery, or messages stored out of order by a retried publish), then kept up to date; null = not loaded.
   */
  steps: Set<number> | null;
  /** The attempt's folder exists (made by this store, or found with parts in it). */
  dirMade?: boolean;
}

const PART_FILE = /^part-(\d+)\.parquet$/;

/**
 * Writer of metrics parts under `DIR/metrics/trial_id=<id>/attempt=<n>/`, deduplicating redelivered
 * rows by step.
 *
 * Per (trial_id, attempt) it keeps a watermark — the largest step already on disk — read from the
 * existing part files on first use and cached; rows with a step above it are new (the usual case,
 * no lookup). Rows at or under it — a redelivered message, or one stored out of order because its
 * publish was retried after later ones were stored (workers pipeline their publishes) — are checked
 * against the exact set of the attempt's steps on disk, read from its parts on first need and then
 * kept up to date (`release` drops it): a step is written once, whatever the arrival order. Calls for the same
 * attempt are serialized internally; one store instance should own a DIR (no cross-process locking).
 */
export class MetricsStore {
  private readonly states = new Map<string, Promise<AttemptState>>();
  private readonly queues = new Map<string, Promise<unknown>>();

  /** @param dir the sweep output directory DIR (created on first write). */
  constructor(readonly dir: string) {}

  private attemptDir(trialId: string, attempt: number): string {
    return dirname(join(this.dir, metricsPartPath(trialId, attempt, 0)));
  }

  private state(trialId: string, attempt: number): Promise<AttemptState> {
    const key = `${trialId}/${attempt}`;
    let s = this.states.get(key);
    if (s === undefined) {
      s = this.loadState(trialId, attempt);
      this.states.set(key, s);
      s.catch(() => this.states.delete(key));
    }
    return s;
  }

  private async loadState(trialId: string, attempt: number): Promise<AttemptState> {
    const dir = this.attemptDir(trialId, attempt);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { watermark: -1, nextPart: 0, steps: null };
      throw e;
    }
    let watermark = -1;
    let nextPart = 0;
    for (const name of names) {
      const m = PART_FILE.exec(name);
      if (!m) continue;
      nextPart = Math.max(nextPart, Number(m[1]) + 1);
      const steps = fromParquet(await readFile(join(dir, name)), ['step']).getChild('step');
      if (steps === null) throw new Error(`${join(dir, name)}: no step column`);
      for (const s of steps.toArray() as Int32Array) if (s > watermark) watermark = s;
    }
    return { watermark, nextPart, steps: null, dirMade: true };
  }

  /** The attempt's steps on disk (loaded once from its parts, then kept up to date by `commit`). Call inside the attempt's queue. */
  private async stepsOnDisk(trialId: string, attempt: number, st: AttemptState): Promise<Set<number>> {
    st.steps ??= new Set((await this.attemptRows(trialId, attempt, ['step'])).map((r) => r.step));
    return st.steps;
  }

  /**
   * Forgets the cached step set of an attempt (e.g. once its result is written): memory stays bounded
   * by the attempts in flight. The watermark stays; the set is re-read from disk if ever needed again.
   */
  release(trialId: string, attempt: number): void {
    void this.states.get(`${trialId}/${attempt}`)?.then((st) => (st.steps = null), () => undefined);
  }

  /**
   * Largest step already on disk for this attempt, -1 if none. Read from the part files the first
   * time an attempt is seen, then cached (and advanced by `writePart`).
   *
   * @throws Error on a trial id that is not `t` + 16 hex digits or an attempt < 1, or on an unreadable part file.
   */
  async watermark(trialId: string, attempt: number): Promise<number> {
    return (await this.state(trialId, attempt)).watermark;
  }

  /**
   * Writes the rows of one attempt as a new part file `part-<k>.parquet` (k = next free index).
   *
   * Rows whose step is already on disk for the attempt are dropped (at-least-once redelivery; exact,
   * see the class comment, also for rows arriving out of step order); the rest are
   * sorted by step and written with zstd compression, durably (temp + fsync + rename + fsync dir).
   * When nothing is left after dropping, no file is written.
   *
   * @param rows metric rows (keys, if present, are ignored) or an Arrow table with
   *             `partMetricsSchema()` (e.g. a `splitMetricsTable` part) or `wireMetricsSchema()`
   *             (then every row must belong to this trial_id/attempt).
   * @returns the path written (absolute if `dir` was; null when every row was a duplicate) and the
   *          number of rows written.
   * @throws Error on a bad trial id / attempt, a table with another schema, rows of another key, or an I/O error.
   */
  writePart(trialId: string, attempt: number, rows: MetricRow[] | Table): Promise<{ path: string | null; rows: number }> {
    metricsPartPath(trialId, attempt, 0); // validates the key before anything is queued
    return this.enqueue(`${trialId}/${attempt}`, () => this.writePartNow(trialId, attempt, rows));
  }

  /**
   * `writePart` for record batches of wire messages as `parseWireStream` (schemas/metrics-ipc.ts)
   * checked them, all of this (trialId, attempt), in arrival order: the usual case — steps strictly
   * increasing across the batches and above the watermark — is written as one part without decoding
   * a value (the batches go to the Parquet writer as they came, key columns dropped); any other
   * (a redelivery, a message stored out of order) is decoded and takes `writePart`'s exact path.
   * Same result, durability and serialization as `writePart`.
   */
  writeBatches(trialId: string, attempt: number, batches: readonly WireBatch[]): Promise<{ path: string | null; rows: number }> {
    metricsPartPath(trialId, attempt, 0);
    for (const b of batches) {
      if (b.trialId !== trialId || b.attempt !== attempt) throw new Error(`writeBatches(${trialId}, ${attempt}): a batch of (${b.trialId}, ${b.attempt})`);
    }
    return this.enqueue(`${trialId}/${attempt}`, () => this.writeBatchesNow(trialId, attempt, batches));
  }

  /** Runs `task` after every earlier task of the same attempt (one writer per attempt at a time). */
  private enqueue<T>(key: string, task: () => Promise<T>): Promise<T> {
    const prev = this.queues.get(key) ?? Promise.resolve();
    const next = prev.catch(() => {}).then(task);
    this.queues.set(key, next);
    next
      .catch(() => {})
      .finally(() => {
        if (this.queues.get(key) === next) this.queues.delete(key);
      });
    return next;
  }

  private async writeBatchesNow(trialId: string, attempt: number, batches: readonly WireBatch[]): Promise<{ path: string | null; rows: number }> {
    if (batches.length === 0) return { path: null, rows: 0 };
    const st = await this.state(trialId, attempt);
    let prev = st.watermark;
    let rows = 0;
    let fast = true;
    for (const b of batches) {
      if (!(b.steps[0] > prev)) {
        fast = false;
        break;
      }
      prev = b.steps[b.steps.length - 1];
      rows += b.rows;
    }
    if (fast) {
      const bytes = partParquet(partIpcStream(batches));
      return this.commitBytes(trialId, attempt, st, bytes, rows, prev, () => batches.flatMap((b) => [...b.steps]));
    }
    const tables = batches.map((b) => tableFromIPC(partIpcStream([b])));
    return this.writePartNow(trialId, attempt, tables.length === 1 ? tables[0] : tables[0].concat(...tables.slice(1)));
  }

  private async writePartNow(trialId: string, attempt: number, input: MetricRow[] | Table): Promise<{ path: string | null; rows: number }> {
    let rows: MetricRow[];
    if (input instanceof Table) {
      if (input.schema.fields.length === wireMetricsSchema().fields.length) {
        checkTable(input, wireMetricsSchema(), 'writePart table');
        const keyed = rowsFromTable(input, true);
        for (const r of keyed) {
          if (r.trial_id !== trialId || r.attempt !== attempt) {
            throw new Error(`writePart(${trialId}, ${attempt}): table holds a row of (${r.trial_id}, ${r.attempt})`);
          }
        }
        rows = keyed;
      } else {
        checkTable(input, partMetricsSchema(), 'writePart table');
        const fast = await this.writeSortedTable(trialId, attempt, input);
        if (fast !== undefined) return fast;
        rows = rowsFromTable(input, false);
      }
    } else {
      rows = input;
    }
    return this.writeRows(trialId, attempt, rows);
  }

  /** Part-schema table whose steps strictly increase: drop the prefix at or under the watermark, write as is. */
  private async writeSortedTable(trialId: string, attempt: number, table: Table): Promise<{ path: string | null; rows: number } | undefined> {
    const steps = table.getChild('step')!.toArray() as Int32Array;
    for (let i = 1; i < steps.length; i++) if (steps[i] <= steps[i - 1]) return undefined;
    const st = await this.state(trialId, attempt);
    let from = 0;
    while (from < steps.length && steps[from] <= st.watermark) from++;
    if (from > 0) {
      // Rows at or under the watermark: dropped only if their step is really on disk (a message
      // stored out of order, e.g. after a retried publish, brings steps below rows already written).
      const have = await this.stepsOnDisk(trialId, attempt, st);
      for (let i = 0; i < from; i++) if (!have.has(steps[i])) return undefined; // some are new: the row path filters exactly
    }
    if (from === steps.length) return { path: null, rows: 0 };
    return this.commit(trialId, attempt, st, from === 0 ? table : table.slice(from), steps[steps.length - 1]);
  }

  private async writeRows(trialId: string, attempt: number, rows: MetricRow[]): Promise<{ path: string | null; rows: number }> {
    const st = await this.state(trialId, attempt);
    const have = rows.some((r) => r.step <= st.watermark) ? await this.stepsOnDisk(trialId, attempt, st) : null;
    const fresh = have ? rows.filter((r) => r.step > st.watermark || !have.has(r.step)) : rows;
    // Two rows of the same step in one call: keep the first (a message never legitimately repeats a step).
    const seen = new Set<number>();
    const unique = fresh.filter((r) => (seen.has(r.step) ? false : (seen.add(r.step), true)));
    if (unique.length === 0) return { path: null, rows: 0 };
    const table = partTableFromRows(unique);
    return this.commit(trialId, attempt, st, table, table.getChild('step')!.get(table.numRows - 1) as number);
  }

  /**
   * Completes a resumed attempt (science.md §7 checkpoints; worker/trainer/resume.ts): writes the rows
   * of attempt `fromAttempt` with step < `beforeStep` into `toAttempt`'s partition (their `attempt` is
   * then `toAttempt`, by the partition path) as one new part file, so that `toAttempt` — which resumed
   * from `fromAttempt`'s checkpoint of step `beforeStep` and logged rows from that step on — holds every
   * step exactly once.
   *
   * - Lineage: when `fromAttempt` was itself a resumed attempt that never finished (its rows start at
   *   some step m > 0 and nobody copied its prefix), the rows below m come from the latest earlier
   *   attempt holding rows below m, and so on down to attempt 1 (training is deterministic: every
   *   attempt computed the same numbers for a step on the same backend).
   * - Idempotent: steps already present in `toAttempt`'s partition (its own rows, or an earlier copy)
   *   are never written again; a second call, e.g. after a collector crash, writes nothing.
   * - Durable and atomic like `writePart` (temp + fsync + rename + fsync dir); serialized with the
   *   attempt's `writePart` calls and numbered as its next part, so use this store's method when the
   *   store also writes `toAttempt`.
   * - Not subject to the duplicate watermark (the copied steps are below rows already written); the
   *   watermark stays the largest step on disk.
   * Call it after every row of the earlier attempts is on disk (the collector has written what its
   * stream holds for them) and before reading the attempt's series (phase analysis).
   *
   * @param beforeStep rows with step < beforeStep are copied (the attempt's resumed_from.step).
   * @returns the part written (null when nothing was missing), the rows written, and how many steps
   *          below `beforeStep` the partition already held.
   * @throws Error on a bad trial id, attempts not integers with 1 <= fromAttempt < toAttempt, a
   *         negative beforeStep, an unreadable part file, or an I/O error.
   */
  async copyEarlierRows(trialId: string, fromAttempt: number, toAttempt: number, beforeStep: number): Promise<{ path: string | null; rows: number; already: number }> {
    metricsPartPath(trialId, fromAttempt, 0);
    metricsPartPath(trialId, toAttempt, 0);
    if (!(fromAttempt < toAttempt)) throw new Error(`copyEarlierRows: fromAttempt ${fromAttempt} must be below toAttempt ${toAttempt}`);
    if (!(beforeStep >= 0)) throw new Error(`copyEarlierRows: beforeStep ${beforeStep}`);
    return await this.enqueue(`${trialId}/${toAttempt}`, () => this.copyNow(trialId, fromAttempt, toAttempt, beforeStep));
  }

  /** Every row on disk of one attempt (all its part files), in file order; [] when it has none. */
  private async attemptRows(trialId: string, attempt: number, columns?: string[]): Promise<MetricRow[]> {
    const dir = this.attemptDir(trialId, attempt);
    let names: string[];
    try {
      names = (await readdir(dir)).filter((n) => PART_FILE.test(n)).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    const out: MetricRow[] = [];
    for (const name of names) {
      const table = fromParquet(await readFile(join(dir, name)), columns);
      if (columns) {
        const steps = table.getChild('step');
        if (steps === null) throw new Error(`${join(dir, name)}: no step column`);
        for (const step of steps.toArray() as Int32Array) out.push({ step } as MetricRow);
      } else {
        checkTable(table, partMetricsSchema(), join(dir, name));
        out.push(...rowsFromTable(table, false));
      }
    }
    return out;
  }

  private async copyNow(trialId: string, fromAttempt: number, toAttempt: number, beforeStep: number): Promise<{ path: string | null; rows: number; already: number }> {
    const st = await this.state(trialId, toAttempt);
    const have = new Set((await this.attemptRows(trialId, toAttempt, ['step'])).map((r) => r.step));
    const already = [...have].filter((x) => x < beforeStep).length;
    const taken = new Set(have);
    const rows: MetricRow[] = [];
    let below = beforeStep;
    for (let a = fromAttempt; a >= 1 && below > 0; a--) {
      let first = Infinity;
      for (const r of await this.attemptRows(trialId, a)) {
        if (r.step >= below) continue;
        first = Math.min(first, r.step);
        if (taken.has(r.step)) continue;
        taken.add(r.step);
        rows.push(r);
      }
      if (first !== Infinity) below = first; // earlier attempts fill only what lies below this one's rows
    }
    if (rows.length === 0) return { path: null, rows: 0, already };
    const table = partTableFromRows(rows);
    const { path } = await this.commit(trialId, toAttempt, st, table, table.getChild('step')!.get(table.numRows - 1) as number);
    return { path, rows: rows.length, already };
  }

  /** Writes a sorted, deduplicated part table as the next part file and advances the state. */
  private async commit(trialId: string, attempt: number, st: AttemptState, table: Table, maxStep: number): Promise<{ path: string; rows: number }> {
    const bytes = partParquet(tableToIPC(table, 'stream'));
    return this.commitBytes(trialId, attempt, st, bytes, table.numRows, maxStep, () => table.getChild('step')!.toArray() as Int32Array);
  }

  /** Writes Parquet bytes of a part as the next part file and advances the state (`steps`: the part's steps, read only when the step set is loaded). */
  private async commitBytes(
    trialId: string, attempt: number, st: AttemptState, bytes: Uint8Array, rows: number, maxStep: number, steps: () => ArrayLike<number>,
  ): Promise<{ path: string; rows: number }> {
    const path = join(this.dir, metricsPartPath(trialId, attempt, st.nextPart));
    if (!st.dirMade) {
      await mkdir(dirname(path), { recursive: true });
      st.dirMade = true;
    }
    await writeFileDurable(path, bytes);
    st.nextPart++;
    st.watermark = Math.max(st.watermark, maxStep);
    if (st.steps) {
      const s = steps();
      for (let i = 0; i < s.length; i++) st.steps.add(s[i]);
    }
    return { path, rows };
  }
}

/**
 * `MetricsStore.copyEarlierRows` on a store of its own for `dir` (see there: what is copied, lineage,
 * idempotence, durability). Only for a DIR no live MetricsStore is writing `toAttempt` of: the collector
 * calls its own store's method, which numbers the part after the attempt's other parts.
 */
export function copyEarlierRows(dir: string, trialId: string, fromAttempt: number, toAttempt: number, beforeStep: number): Promise<{ path: string | null; rows: number; already: number }> {
  return new MetricsStore(dir).copyEarlierRows(trialId, fromAttempt, toAttempt, beforeStep);
}

// ---------------------------------------------------------------------------------------------
// trials.parquet

/**
 * Writes DIR/trials.parquet: one row per record, columns exactly TRIAL_COLUMNS with the types of
 * `trialsSchema()` (Utf8, Int32, Float64, Bool, Timestamp[ms]; null where a problem/strategy lacks a
 * parameter). Replaces any previous file atomically and durably (temp + fsync + rename + fsync dir).
 *
 * @param dir     the sweep output directory DIR (created if missing).
 * @param records trial records, written in the given order.
 * @throws Error when a record has a non-nullable column (trial_id, sweep, status, attempts) missing,
 *         a malformed trial_id, or a value of the wrong type; or on an I/O error.
 */
export async function writeTrialsParquet(dir: string, records: TrialRecord[]): Promise<void> {
  const schema = trialsSchema();
  const children: Data[] = TRIAL_COLUMNS.map((c, j) => {
    const field = schema.fields[j];
    const values = records.map((r, i) => {
      let v = c.get(r);
      if (v === undefined) v = null;
      if (v === null && !field.nullable) throw new Error(`trials.parquet: record ${i} (${r.trial_id}): ${c.name} is required`);
      if (c.name === 'trial_id' && !TRIAL_ID_PATTERN.test(v as string)) throw new Error(`trials.parquet: record ${i}: bad trial_id ${JSON.stringify(v)}`);
      if (v instanceof Date) v = v.getTime();
      return v;
    });
    const vec = vectorFromArray(values as never[], c.type);
    const data = vec.data.length === 1 ? vec.data[0] : makeData({ type: c.type, length: 0, nullCount: 0 } as never);
    return data as Data;
  });
  const batch = new RecordBatch(
    schema,
    makeData({ type: new Struct(schema.fields as Field[]), length: records.length, nullCount: 0, children }),
  );
  const bytes = toParquet(new Table(schema, [batch]));
  await mkdir(dir, { recursive: true });
  await writeFileDurable(join(dir, TRIALS_FILE), bytes);
}

/** A row of trials.parquet as read back: every TRIAL_COLUMNS column, timestamps as Date. */
export interface TrialRow {
  trial_id: string;
  sweep: string;
  status: string;
  attempts: number;
  started_at: Date | null;
  finished_at: Date | null;
  [column: string]: unknown;
}

/**
 * Reads DIR/trials.parquet back (parquet-wasm → Arrow), e.g. on a re-run to know which trials are done.
 *
 * @returns one plain object per row keyed by column name (numbers, strings, booleans, null;
 *          `started_at`/`finished_at` as Date), in file order; [] when the file does not exist.
 * @throws Error when the file exists but is not readable Parquet or lacks trial_id/status/attempts.
 */
export async function readTrialsParquet(dir: string): Promise<TrialRow[]> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(dir, TRIALS_FILE));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  const table = fromParquet(bytes);
  for (const name of ['trial_id', 'status', 'attempts']) {
    if (table.getChild(name) === null) throw new Error(`${join(dir, TRIALS_FILE)}: no ${name} column`);
  }
  const names = table.schema.fields.map((f) => f.name);
  const isTime = new Set(table.schema.fields.filter((f) => String(f.type).startsWith('Timestamp')).map((f) => f.name));
  const cols = names.map((n) => table.getChild(n)!);
  const out: TrialRow[] = [];
  for (let i = 0; i < table.numRows; i++) {
    const row: Record<string, unknown> = {};
    for (let j = 0; j < names.length; j++) {
      let v = cols[j].get(i);
      if (typeof v === 'bigint') v = Number(v);
      if (v !== null && isTime.has(names[j])) v = new Date(v as number);
      row[names[j]] = v;
    }
    out.push(row as TrialRow);
  }
  return out;
}

