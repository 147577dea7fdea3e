/**
 * Metric rows → one Arrow record batch with exactly the wire or part schema (schemas/metrics.ts).
 * Shared by the worker (encoding messages) and the collector (writing parts from rows), so it lives
 * with the schema. Columns are built directly as typed arrays and wrapped with `makeData` (no
 * per-value Arrow builders).
 */
import {
  DataType,
  Field,
  Float64,
  Int32,
  List,
  Precision,
  RecordBatch,
  Schema,
  Struct,
  Utf8,
  makeData,
  type Data,
} from 'apache-arrow';
import { partMetricsSchema, wireMetricsSchema, type MetricRow } from './metrics.js';

/** A metric row with its keys, as it goes on the wire. */
export type KeyedMetricRow = { trial_id: string; attempt: number } & MetricRow;

const utf8 = new TextEncoder();

/** Validity bitmap (LSB first) from a per-row predicate, or null when every row is valid. */
function bitmap(n: number, valid: (i: number) => boolean): { bits: Uint8Array | null; nulls: number } {
  let bits: Uint8Array | null = null;
  let nulls = 0;
  for (let i = 0; i < n; i++) {
    if (!valid(i)) {
      if (bits === null) {
        bits = new Uint8Array((n + 7) >> 3).fill(0xff);
      }
      bits[i >> 3] &= ~(1 << (i & 7));
      nulls++;
    }
  }
  return { bits, nulls };
}

function int32Column(n: number, rows: readonly MetricRow[], name: string, get: (r: any) => unknown): Data<Int32> {
  const values = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const v = get(rows[i]);
    if (typeof v !== 'number' || (v | 0) !== v) {
      throw new TypeError(`metrics row ${i}: ${name} must be a 32-bit integer, got ${JSON.stringify(v)}`);
    }
    values[i] = v;
  }
  return makeData({ type: new Int32(), length: n, nullCount: 0, data: values });
}

function float64Column(n: number, rows: readonly MetricRow[], name: keyof MetricRow, nullable: boolean): Data<Float64> {
  const values = new Float64Array(n);
  let bits: Uint8Array | null = null;
  let nulls = 0;
  for (let i = 0; i < n; i++) {
    const v = rows[i][name];
    if (typeof v === 'number') {
      values[i] = v;
    } else if (v === null && nullable) {
      if (bits === null) bits = new Uint8Array((n + 7) >> 3).fill(0xff);
      bits[i >> 3] &= ~(1 << (i & 7));
      nulls++;
    } else {
      throw new TypeError(`metrics row ${i}: ${name} must be a number${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
    }
  }
  return makeData({ type: new Float64(), length: n, nullCount: nulls, nullBitmap: bits ?? undefined, data: values });
}

/**
 * A List<Float64> column (per-layer values such as snr_layers) from the row field `name`: each value
 * an array of numbers, or null (a real Arrow null; a null list, not an empty one).
 */
function listColumn(n: number, rows: readonly MetricRow[], name: keyof MetricRow, type: List<Float64>, nullable: boolean): Data<List<Float64>> {
  const offsets = new Int32Array(n + 1);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const v = rows[i][name];
    if (Array.isArray(v)) {
      for (let j = 0; j < v.length; j++) {
        if (typeof v[j] !== 'number') throw new TypeError(`metrics row ${i}: ${name}[${j}] must be a number, got ${JSON.stringify(v[j])}`);
      }
      total += v.length;
    } else if (!(v === null && nullable)) {
      throw new TypeError(`metrics row ${i}: ${name} must be an array of numbers${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
    }
    offsets[i + 1] = total;
  }
  const child = new Float64Array(total);
  let at = 0;
  for (let i = 0; i < n; i++) {
    const v = rows[i][name] as number[] | null;
    if (v === null) continue;
    for (let j = 0; j < v.length; j++) child[at++] = v[j];
  }
  const { bits, nulls } = bitmap(n, (i) => rows[i][name] !== null);
  return makeData({
    type,
    length: n,
    nullCount: nulls,
    nullBitmap: bits ?? undefined,
    valueOffsets: offsets,
    child: makeData({ type: type.children[0].type, length: total, nullCount: 0, data: child }),
  });
}

function utf8Column(n: number, rows: readonly KeyedMetricRow[]): Data<Utf8> {
  // Few distinct trial ids per message: encode each once.
  const cache = new Map<string, Uint8Array>();
  const encoded: Uint8Array[] = new Array(n);
  const offsets = new Int32Array(n + 1);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const s = rows[i].trial_id;
    if (typeof s !== 'string') throw new TypeError(`metrics row ${i}: trial_id must be a string, got ${JSON.stringify(s)}`);
    let b = cache.get(s);
    if (b === undefined) {
      b = utf8.encode(s);
      cache.set(s, b);
    }
    encoded[i] = b;
    total += b.length;
    offsets[i + 1] = total;
  }
  const bytes = new Uint8Array(total);
  for (let i = 0; i < n; i++) bytes.set(encoded[i], offsets[i]);
  return makeData({ type: new Utf8(), length: n, nullCount: 0, valueOffsets: offsets, data: bytes });
}

/**
 * Builds one Arrow record batch from metric rows, column by column.
 *
 * @param rows  rows in the order they should appear (not reordered here).
 * @param keyed true → exactly `wireMetricsSchema()` (trial_id, attempt first; rows must carry them);
 *              false → exactly `partMetricsSchema()` (keys ignored).
 * @throws TypeError naming the row index and column when a value has the wrong type (a non-integer
 *         step/attempt, a missing non-nullable number, ...).
 */
export function buildMetricsBatch(rows: readonly MetricRow[], keyed: boolean): RecordBatch {
  const schema: Schema = keyed ? wireMetricsSchema() : partMetricsSchema();
  const n = rows.length;
  const children: Data[] = [];
  // One builder per Arrow type of the schema: a new column of an existing type needs no code here.
  for (const f of schema.fields) {
    const name = f.name as keyof KeyedMetricRow;
    if (DataType.isUtf8(f.type) && name === 'trial_id') children.push(utf8Column(n, rows as readonly KeyedMetricRow[]));
    else if (DataType.isInt(f.type) && f.type.bitWidth === 32 && f.type.isSigned) children.push(int32Column(n, rows, name, (r: KeyedMetricRow) => r[name]));
    else if (DataType.isFloat(f.type) && f.type.precision === Precision.DOUBLE) children.push(float64Column(n, rows, name as keyof MetricRow, f.nullable));
    else if (DataType.isList(f.type) && DataType.isFloat(f.type.children[0].type)) {
      children.push(listColumn(n, rows, name as keyof MetricRow, f.type as List<Float64>, f.nullable));
    } else throw new Error(`buildMetricsBatch: no column builder for field ${name}: ${f.type}`);
  }
  const data = makeData({ type: new Struct(schema.fields as Field[]), length: n, nullCount: 0, children });
  return new RecordBatch(schema, data);
}

