/**
 * Arrow IPC of the metrics schema without apache-arrow's generic (and, per 100-row message, slow)
 * table machinery: the schema is fixed (schemas/metrics.ts), so a record batch's layout — its field
 * nodes and buffers — is known in advance.
 *
 * - `encodeWireStream`: metric rows → one self-contained Arrow IPC stream (schema message, one record
 *   batch, end-of-stream) with exactly `wireMetricsSchema()`, written in one pass into one buffer. The
 *   schema message is apache-arrow's own (made once), so every Arrow reader reads it as before.
 * - `parseWireStream`: the reverse check on the collector: a message whose schema message is that
 *   canonical one is validated field node by field node and buffer by buffer (lengths, null counts
 *   against the validity bitmaps, offsets) without decoding it; it yields the (trial_id, attempt) key,
 *   the steps, and the batch re-labelled with `partMetricsSchema()` (the key columns' nodes and
 *   buffers dropped from the header; the body is kept as it is). Anything else (another writer's
 *   schema bytes, several keys in one message, steps not increasing, compressed bodies, ...) gives
 *   null: the caller then takes the general apache-arrow path.
 * - `partIpcStream`: such batches → one IPC stream with `partMetricsSchema()` (for parquet-wasm).
 *
 * Layout of a record batch message: 0xFFFFFFFF, int32 metadata length, the flatbuffer `Message`
 * (padded to 8 bytes), then the body; body buffers start at multiples of 8 (format/Message.fbs,
 * format/Schema.fbs of the Arrow spec).
 */
import { DataType, Precision, Table, tableToIPC, type Schema } from 'apache-arrow';
import { buildMetricsBatch, type KeyedMetricRow } from './metrics-batch.js';
import { partMetricsSchema, wireMetricsSchema } from './metrics.js';

type Kind = 'utf8' | 'int32' | 'float64' | 'list';

interface Column {
  name: string;
  kind: Kind;
  nullable: boolean;
}

interface Plan {
  columns: Column[];
  /** Field nodes per batch (a list column has two: the list and its Float64 child). */
  nodes: number;
  /** Buffers per batch. */
  buffers: number;
  /** The schema message as apache-arrow writes it (continuation, length, flatbuffer). */
  schemaMessage: Uint8Array;
}

function planOf(schema: Schema, keyed: boolean): Plan {
  const columns: Column[] = [];
  let nodes = 0;
  let buffers = 0;
  for (const f of schema.fields) {
    let kind: Kind;
    if (DataType.isUtf8(f.type)) kind = 'utf8';
    else if (DataType.isInt(f.type) && f.type.bitWidth === 32 && f.type.isSigned) kind = 'int32';
    else if (DataType.isFloat(f.type) && f.type.precision === Precision.DOUBLE) kind = 'float64';
    else if (DataType.isList(f.type) && DataType.isFloat(f.type.children[0].type) && f.type.children[0].type.precision === Precision.DOUBLE) kind = 'list';
    else throw new Error(`metrics IPC: no layout for field ${f.name}: ${f.type}`);
    columns.push({ name: f.name, kind, nullable: f.nullable });
    nodes += kind === 'list' ? 2 : 1;
    buffers += kind === 'utf8' ? 3 : kind === 'list' ? 4 : 2;
  }
  const stream = tableToIPC(new Table(schema, [buildMetricsBatch([], keyed)]), 'stream');
  const len = new DataView(stream.buffer, stream.byteOffset).getInt32(4, true);
  return { columns, nodes, buffers, schemaMessage: stream.slice(0, 8 + len) };
}

let wirePlan: Plan | null = null;
let partPlan: Plan | null = null;
const wire = () => (wirePlan ??= planOf(wireMetricsSchema(), true));
const part = () => (partPlan ??= planOf(partMetricsSchema(), false));

/** Key columns at the head of the wire schema (trial_id, attempt): what the part schema lacks. */
function keyCounts(): { nodes: number; buffers: number; columns: number } {
  const w = wire();
  const p = part();
  const columns = w.columns.length - p.columns.length;
  return { nodes: w.nodes - p.nodes, buffers: w.buffers - p.buffers, columns };
}

const pad8 = (n: number) => (n + 7) & ~7;

/** Non-negative int64 (little-endian) as two 32-bit words (no BigInt: this runs per node and buffer). */
function setU64(dv: DataView, at: number, v: number): void {
  dv.setUint32(at, v % 4294967296, true);
  dv.setUint32(at + 4, Math.floor(v / 4294967296), true);
}

/** int64 (little-endian) → number; a negative value or one of 2^53 and more → -1. */
function getU64(dv: DataView, at: number): number {
  const hi = dv.getUint32(at + 4, true);
  if (hi >= 0x200000) return -1;
  return hi * 4294967296 + dv.getUint32(at, true);
}

// ---------------------------------------------------------------------------------------------
// Record batch header (flatbuffer), written front to back:
//
//   0   uint32  root → Message table (16)
//   4   Message vtable: size 12, table size 20, version @16, header_type @18, header @4, bodyLength @8
//   16  Message table: soffset 12, header uoffset → 48, bodyLength int64, version int16 (V5), header_type uint8 (RecordBatch)
//   36  RecordBatch vtable: size 10, table size 20, length @8, nodes @4, buffers @16
//   48  RecordBatch table: soffset 12, nodes uoffset → 68, length int64, buffers uoffset
//   68  nodes: uint32 count, then count × {length int64, null_count int64} from 72
//       buffers: uint32 count at 8k+4, then count × {offset int64, length int64}

/** Byte length of the flatbuffer of a record batch message with `nodes` field nodes and `buffers` buffers. */
const headerSize = (nodes: number, buffers: number) => 80 + 16 * nodes + 16 * buffers;

/**
 * Writes a record batch message's prefix (continuation, metadata length, flatbuffer) at `at` of `out`
 * (`at` a multiple of 8 from the buffer's start). `nodeVals` holds (length, null_count) pairs and
 * `bufVals` (offset, length) pairs.
 */
function writeHeader(out: DataView, at: number, rows: number, nodeVals: ArrayLike<number>, bufVals: ArrayLike<number>, bodyLength: number): number {
  const nodes = nodeVals.length >> 1;
  const buffers = bufVals.length >> 1;
  const size = headerSize(nodes, buffers);
  out.setUint32(at, 0xffffffff, true);
  out.setInt32(at + 4, size, true);
  const f = at + 8;
  out.setUint32(f, 16, true);
  // Message vtable
  out.setUint16(f + 4, 12, true);
  out.setUint16(f + 6, 20, true);
  out.setUint16(f + 8, 16, true); // version
  out.setUint16(f + 10, 18, true); // header_type
  out.setUint16(f + 12, 4, true); // header
  out.setUint16(f + 14, 8, true); // bodyLength
  // Message table
  out.setInt32(f + 16, 12, true);
  out.setUint32(f + 20, 28, true); // → 48
  setU64(out, f + 24, bodyLength);
  out.setInt16(f + 32, 4, true); // MetadataVersion.V5
  out.setUint8(f + 34, 3); // MessageHeader.RecordBatch
  out.setUint8(f + 35, 0);
  // RecordBatch vtable
  out.setUint16(f + 36, 10, true);
  out.setUint16(f + 38, 20, true);
  out.setUint16(f + 40, 8, true); // length
  out.setUint16(f + 42, 4, true); // nodes
  out.setUint16(f + 44, 16, true); // buffers
  out.setUint16(f + 46, 0, true);
  // RecordBatch table
  out.setInt32(f + 48, 12, true);
  out.setUint32(f + 52, 16, true); // → 68
  setU64(out, f + 56, rows);
  const bufCount = 72 + 16 * nodes + 4;
  out.setUint32(f + 64, bufCount - 64, true);
  // nodes
  out.setUint32(f + 68, nodes, true);
  let p = f + 72;
  for (let i = 0; i < nodeVals.length; i++, p += 8) setU64(out, p, nodeVals[i]);
  out.setUint32(p, 0, true); // padding
  out.setUint32(p + 4, buffers, true);
  p += 8;
  for (let i = 0; i < bufVals.length; i++, p += 8) setU64(out, p, bufVals[i]);
  return 8 + size;
}

// ---------------------------------------------------------------------------------------------
// Encoding

const textEncoder = new TextEncoder();
const NULL_STRING = new Uint8Array(0);

/** Bytes of a wire IPC stream of `encodeWireStream` besides its body (schema message, batch header, end-of-stream). */
export function wireStreamOverhead(): number {
  const w = wire();
  return w.schemaMessage.length + 8 + headerSize(w.nodes, w.buffers) + 8;
}

/**
 * Column readers, compiled once per column from the schema (a named property load per column is
 * monomorphic; `row[name]` in a loop over columns is not, and was most of the encoding time). Each
 * returns the column's null count (list: its item count), or -1 at the first value of a wrong type
 * (`validateRows` then names it).
 */
type ScalarReader = (rows: readonly object[], lo: number, n: number, values: Float64Array | Int32Array, bits: Uint8Array) => number;
interface ListScratch {
  items: Float64Array;
  nulls: number;
}
type ListReader = (rows: readonly object[], lo: number, n: number, offsets: Int32Array, bits: Uint8Array, s: ListScratch) => number;

function compileReader(col: Column): ScalarReader | ListReader | null {
  if (!/^[A-Za-z_$][\w$]*$/.test(col.name)) throw new Error(`metrics IPC: column name ${JSON.stringify(col.name)} is not an identifier`);
  const nullBranch = col.nullable
    ? `else if (v === null) { if (nulls++ === 0) bits.fill(255); bits[i >> 3] &= ~(1 << (i & 7)); }`
    : '';
  let body: string;
  if (col.kind === 'float64') {
    body = `let nulls = 0;
      for (let i = 0; i < n; i++) {
        const v = rows[lo + i].${col.name};
        if (typeof v === 'number') values[i] = v;
        ${nullBranch}
        else return -1;
      }
      return nulls;`;
    // eslint-disable-next-line @typescript-eslint/no-implied-eval
    return new Function('rows', 'lo', 'n', 'values', 'bits', body) as ScalarReader;
  }
  if (col.kind === 'int32') {
    body = `let nulls = 0;
      for (let i = 0; i < n; i++) {
        const v = rows[lo + i].${col.name};
        if (typeof v === 'number' && (v | 0) === v) values[i] = v;
        ${nullBranch}
        else return -1;
      }
      return nulls;`;
    return new Function('rows', 'lo', 'n', 'values', 'bits', body) as ScalarReader;
  }
  if (col.kind === 'list') {
    body = `let nulls = 0;
      let o = 0;
      let items = s.items;
      for (let i = 0; i < n; i++) {
        const v = rows[lo + i].${col.name};
        if (Array.isArray(v)) {
          const k = v.length;
          if (o + k > items.length) {
            const grown = new Float64Array(Math.max(2 * items.length, o + k));
            grown.set(items.subarray(0, o));
            items = s.items = grown;
          }
          for (let j = 0; j < k; j++) {
            const x = v[j];
            if (typeof x !== 'number') return -1;
            items[o + j] = x;
          }
          o += k;
        }
        ${nullBranch}
        else return -1;
        offsets[i + 1] = o;
      }
      s.nulls = nulls;
      return o;`;
    return new Function('rows', 'lo', 'n', 'offsets', 'bits', 's', body) as ListReader;
  }
  return null; // utf8: read in plain code (one column, the trial id)
}

let readers: Array<ScalarReader | ListReader | null> | null = null;
const listScratch: ListScratch[] = [];

/**
 * Checks rows lo..hi-1 column by column, in schema order, and throws the TypeError of the first bad
 * value (the messages of `buildMetricsBatch`; row index from `lo`). Only called once a reader
 * found a bad value.
 */
function validateRows(rows: readonly KeyedMetricRow[], lo: number, hi: number): void {
  const n = hi - lo;
  for (const { name, kind, nullable } of wire().columns) {
    for (let i = 0; i < n; i++) {
      const v = (rows[lo + i] as unknown as Record<string, unknown>)[name];
      if (kind === 'float64') {
        if (typeof v !== 'number' && !(v === null && nullable)) throw new TypeError(`metrics row ${i}: ${name} must be a number${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
      } else if (kind === 'int32') {
        if (typeof v !== 'number' || (v | 0) !== v) throw new TypeError(`metrics row ${i}: ${name} must be a 32-bit integer, got ${JSON.stringify(v)}`);
      } else if (kind === 'list') {
        if (Array.isArray(v)) {
          for (let j = 0; j < v.length; j++) {
            if (typeof v[j] !== 'number') throw new TypeError(`metrics row ${i}: ${name}[${j}] must be a number, got ${JSON.stringify(v[j])}`);
          }
        } else if (!(v === null && nullable)) throw new TypeError(`metrics row ${i}: ${name} must be an array of numbers${nullable ? ' or null' : ''}, got ${JSON.stringify(v)}`);
      } else if (typeof v !== 'string' && !(v === null && nullable)) throw new TypeError(`metrics row ${i}: ${name} must be a string, got ${JSON.stringify(v)}`);
    }
  }
  throw new TypeError('metrics rows: a value has the wrong type');
}

/**
 * Rows lo..hi-1 of `rows` → one self-contained Arrow IPC stream (schema message, one record batch,
 * end-of-stream marker) with exactly `wireMetricsSchema()`; readable by any Arrow IPC reader
 * (apache-arrow's `tableFromIPC` included). Null values are real Arrow nulls (a validity bitmap only
 * where a column holds one); list columns are List<Float64> with non-null items.
 *
 * Body layout: every buffer at a multiple of 8; a nullable column always has room for its bitmap
 * (so that the layout is known before the values are read), announced with length 0 when the
 * column holds no null.
 *
 * @throws TypeError naming the row (index from `lo`) and column when a value has the wrong type, as
 *         `buildMetricsBatch` does.
 */
export function encodeWireStream(rows: readonly KeyedMetricRow[], lo = 0, hi = rows.length): Uint8Array {
  const plan = wire();
  const cols = plan.columns;
  readers ??= cols.map(compileReader);
  const n = hi - lo;
  const bitmapBytes = (n + 7) >> 3;
  // Variable-size columns first (their sizes fix the layout): lists into scratch, trial ids encoded.
  const listOffsets: Array<Int32Array | null> = new Array(cols.length).fill(null);
  const listBits: Array<Uint8Array | null> = new Array(cols.length).fill(null);
  const sizes = new Int32Array(cols.length);
  let ids: Uint8Array[] | null = null;
  for (let c = 0; c < cols.length; c++) {
    const col = cols[c];
    if (col.kind === 'list') {
      const s = (listScratch[c] ??= { items: new Float64Array(1024), nulls: 0 });
      const offsets = new Int32Array(n + 1);
      const bits = new Uint8Array(bitmapBytes);
      const total = (readers[c] as ListReader)(rows, lo, n, offsets, bits, s);
      if (total < 0) validateRows(rows, lo, hi);
      listOffsets[c] = offsets;
      listBits[c] = bits;
      sizes[c] = total;
    } else if (col.kind === 'utf8') {
      ids = new Array(n);
      let last = '';
      let lastBytes: Uint8Array | null = null;
      let bytes = 0;
      for (let i = 0; i < n; i++) {
        const v = (rows[lo + i] as unknown as Record<string, unknown>)[col.name];
        if (typeof v !== 'string') {
          if (v === null && col.nullable) {
            ids[i] = NULL_STRING;
            continue;
          }
          validateRows(rows, lo, hi);
        }
        if (lastBytes === null || v !== last) {
          last = v as string;
          lastBytes = textEncoder.encode(last);
        }
        ids[i] = lastBytes;
        bytes += lastBytes.length;
      }
      sizes[c] = bytes;
    }
  }
  // Layout: [validity?, data buffers...] per column, each at a multiple of 8.
  const at = new Int32Array(4 * cols.length);
  let body = 0;
  for (let c = 0; c < cols.length; c++) {
    const { kind, nullable } = cols[c];
    at[4 * c] = body;
    if (nullable) body += pad8(bitmapBytes);
    if (kind === 'float64') {
      at[4 * c + 1] = body;
      body += pad8(8 * n);
    } else if (kind === 'int32') {
      at[4 * c + 1] = body;
      body += pad8(4 * n);
    } else if (kind === 'utf8') {
      at[4 * c + 1] = body;
      body += pad8(4 * (n + 1));
      at[4 * c + 2] = body;
      body += pad8(sizes[c]);
    } else {
      at[4 * c + 1] = body;
      body += pad8(4 * (n + 1));
      at[4 * c + 2] = body; // the child's validity: none
      at[4 * c + 3] = body;
      body += pad8(8 * sizes[c]);
    }
  }
  const schemaLen = plan.schemaMessage.length;
  const hdr = 8 + headerSize(plan.nodes, plan.buffers);
  const total = schemaLen + hdr + body + 8;
  const out = new Uint8Array(total);
  const b0 = schemaLen + hdr; // 8-aligned: the schema message and the header are multiples of 8
  // Values, straight into the body.
  const nullCounts = new Int32Array(cols.length);
  for (let c = 0; c < cols.length; c++) {
    const { kind, nullable } = cols[c];
    const bits = nullable ? out.subarray(b0 + at[4 * c], b0 + at[4 * c] + bitmapBytes) : NULL_STRING;
    if (kind === 'float64' || kind === 'int32') {
      const values = kind === 'float64' ? new Float64Array(out.buffer, b0 + at[4 * c + 1], n) : new Int32Array(out.buffer, b0 + at[4 * c + 1], n);
      const nulls = (readers[c] as ScalarReader)(rows, lo, n, values, bits);
      if (nulls < 0) validateRows(rows, lo, hi);
      nullCounts[c] = nulls;
    } else if (kind === 'utf8') {
      const offsets = new Int32Array(out.buffer, b0 + at[4 * c + 1], n + 1);
      let o = 0;
      let nulls = 0;
      for (let i = 0; i < n; i++) {
        const s = ids![i];
        if (s === NULL_STRING) {
          if (nulls++ === 0) bits.fill(255);
          bits[i >> 3] &= ~(1 << (i & 7));
        } else {
          const to = b0 + at[4 * c + 2] + o;
          for (let k = 0; k < s.length; k++) out[to + k] = s[k]; // short: a loop beats set()
        }
        o += s.length;
        offsets[i + 1] = o;
      }
      nullCounts[c] = nulls;
    } else {
      new Int32Array(out.buffer, b0 + at[4 * c + 1], n + 1).set(listOffsets[c]!);
      new Float64Array(out.buffer, b0 + at[4 * c + 3], sizes[c]).set(listScratch[c].items.subarray(0, sizes[c]));
      nullCounts[c] = listScratch[c].nulls;
      if (nullCounts[c] > 0) bits.set(listBits[c]!);
    }
  }
  // Header: field nodes and buffers (a validity bitmap announced only where there are nulls).
  const nodeVals: number[] = [];
  const bufVals: number[] = [];
  for (let c = 0; c < cols.length; c++) {
    const { kind } = cols[c];
    nodeVals.push(n, nullCounts[c]);
    bufVals.push(at[4 * c], nullCounts[c] > 0 ? bitmapBytes : 0);
    if (kind === 'float64') bufVals.push(at[4 * c + 1], 8 * n);
    else if (kind === 'int32') bufVals.push(at[4 * c + 1], 4 * n);
    else if (kind === 'utf8') bufVals.push(at[4 * c + 1], 4 * (n + 1), at[4 * c + 2], sizes[c]);
    else {
      nodeVals.push(sizes[c], 0);
      bufVals.push(at[4 * c + 1], 4 * (n + 1), at[4 * c + 2], 0, at[4 * c + 3], 8 * sizes[c]);
    }
  }
  out.set(plan.schemaMessage, 0);
  const dv = new DataView(out.buffer);
  writeHeader(dv, schemaLen, n, nodeVals, bufVals, body);
  // end-of-stream
  dv.setUint32(total - 8, 0xffffffff, true);
  dv.setInt32(total - 4, 0, true);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Parsing (collector)

/** One record batch of a wire message, checked and re-labelled with the part schema. */
export interface WireBatch {
  trialId: string;
  attempt: number;
  rows: number;
  /** Steps of the rows, strictly increasing (a view into the message where aligned). */
  steps: Int32Array;
  /** Record batch message prefix (continuation, length, flatbuffer) with `partMetricsSchema()`'s nodes and buffers. */
  header: Uint8Array;
  /** The body, as it came (the key columns' buffers stay in it, unreferenced). */
  body: Uint8Array;
}

/** Reads a flatbuffer table: field `id`'s absolute position, or 0 when absent. */
function field(dv: DataView, table: number, id: number, end: number): number {
  const vt = table - dv.getInt32(table, true);
  if (vt < 0 || vt + 4 > end) throw new RangeError('vtable out of range');
  const vsize = dv.getUint16(vt, true);
  if (4 + 2 * id + 2 > vsize) return 0;
  const off = dv.getUint16(vt + 4 + 2 * id, true);
  return off === 0 ? 0 : table + off;
}

function popcount(bits: Uint8Array, n: number): number {
  let k = 0;
  const full = n >> 3;
  for (let i = 0; i < full; i++) {
    let b = bits[i];
    b = b - ((b >> 1) & 0x55);
    b = (b & 0x33) + ((b >> 2) & 0x33);
    k += (b + (b >> 4)) & 0x0f;
  }
  for (let i = full << 3; i < n; i++) k += (bits[i >> 3] >> (i & 7)) & 1;
  return k;
}

const textDecoder = new TextDecoder();

/**
 * Checks one metrics message (an Arrow IPC stream) for the fast path, without decoding it.
 *
 * @returns its record batches (one per batch in the stream) when the stream starts with the canonical
 *          wire schema message, every batch is uncompressed, structurally valid (node lengths, null
 *          counts matching the validity bitmaps, non-nullable columns without nulls, offsets in
 *          range and non-decreasing, buffers 8-byte aligned and inside the body), holds rows of a
 *          single (trial_id, attempt) — the same for all batches — with strictly increasing steps,
 *          and no batch is empty; null otherwise (the caller decodes it the general way, which also
 *          reports what is wrong with a bad message).
 */
export function parseWireStream(bytes: Uint8Array): WireBatch[] | null {
  try {
    return parseOrNull(bytes);
  } catch {
    return null;
  }
}

function parseOrNull(bytes: Uint8Array): WireBatch[] | null {
  const plan = wire();
  const keys = keyCounts();
  const sm = plan.schemaMessage;
  if (bytes.length < sm.length + 8) return null;
  if (!Buffer.from(bytes.buffer, bytes.byteOffset, sm.length).equals(sm)) return null;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: WireBatch[] = [];
  let pos = sm.length;
  let prevStep = -Infinity;
  for (;;) {
    if (pos === bytes.length) break; // end without an end-of-stream marker (allowed)
    if (pos + 8 > bytes.length || dv.getUint32(pos, true) !== 0xffffffff) return null;
    const metaLen = dv.getInt32(pos + 4, true);
    if (metaLen === 0) {
      if (pos + 8 !== bytes.length) return null;
      break;
    }
    if (metaLen < 0 || (metaLen & 7) !== 0) return null;
    const f = pos + 8;
    const fEnd = f + metaLen;
    if (fEnd > bytes.length) return null;
    const msg = f + dv.getUint32(f, true);
    if (msg + 4 > fEnd) return null;
    const ht = field(dv, msg, 1, fEnd);
    const hd = field(dv, msg, 2, fEnd);
    const bl = field(dv, msg, 3, fEnd);
    if (!ht || dv.getUint8(ht) !== 3 || !hd || !bl) return null; // only record batches (no dictionaries)
    const bodyLength = getU64(dv, bl);
    const body0 = fEnd;
    if (!(bodyLength >= 0) || (bodyLength & 7) !== 0 || body0 + bodyLength > bytes.length || (body0 & 7) !== 0) return null;
    const rb = hd + dv.getUint32(hd, true);
    if (rb + 4 > fEnd) return null;
    if (field(dv, rb, 3, fEnd)) return null; // compressed body
    const lenAt = field(dv, rb, 0, fEnd);
    const nodesAt = field(dv, rb, 1, fEnd);
    const bufsAt = field(dv, rb, 2, fEnd);
    if (!lenAt || !nodesAt || !bufsAt) return null;
    const n = getU64(dv, lenAt);
    if (!(n > 0 && n < 2 ** 31)) return null;
    const nv = nodesAt + dv.getUint32(nodesAt, true);
    const bv = bufsAt + dv.getUint32(bufsAt, true);
    if (dv.getUint32(nv, true) !== plan.nodes || dv.getUint32(bv, true) !== plan.buffers) return null;
    if (nv + 4 + 16 * plan.nodes > fEnd || bv + 4 + 16 * plan.buffers > fEnd) return null;
    const nodeVals = new Array<number>(2 * plan.nodes);
    for (let i = 0; i < 2 * plan.nodes; i++) nodeVals[i] = getU64(dv, nv + 4 + 8 * i);
    const bufVals = new Array<number>(2 * plan.buffers);
    for (let i = 0; i < 2 * plan.buffers; i++) bufVals[i] = getU64(dv, bv + 4 + 8 * i);
    for (let i = 0; i < plan.buffers; i++) {
      const o = bufVals[2 * i];
      const l = bufVals[2 * i + 1];
      if (!(o >= 0 && l >= 0 && o + l <= bodyLength) || (o & 7) !== 0) return null;
    }
    const view = (b: number) => bytes.subarray(body0 + bufVals[2 * b], body0 + bufVals[2 * b] + bufVals[2 * b + 1]);
    const int32s = (b: number, count: number): Int32Array | null => {
      if (bufVals[2 * b + 1] < 4 * count) return null;
      const at = body0 + bufVals[2 * b];
      // A NATS payload is a slice of a read buffer, at any byte offset: a view only where aligned.
      if (((bytes.byteOffset + at) & 3) === 0) return new Int32Array(bytes.buffer, bytes.byteOffset + at, count);
      const a = new Int32Array(count);
      for (let i = 0; i < count; i++) a[i] = dv.getInt32(at + 4 * i, true);
      return a;
    };
    const validityOk = (b: number, len: number, nullCount: number, nullable: boolean): boolean => {
      if (nullCount < 0 || nullCount > len) return false;
      if (nullCount === 0) return true;
      if (!nullable || bufVals[2 * b + 1] < ((len + 7) >> 3)) return false;
      return len - popcount(view(b), len) === nullCount;
    };
    const offsetsOk = (offs: Int32Array | null, limit: number): boolean => {
      if (offs === null || offs[0] < 0) return false;
      for (let i = 1; i < offs.length; i++) if (offs[i] < offs[i - 1]) return false;
      return offs[offs.length - 1] <= limit;
    };
    let node = 0;
    let b = 0;
    let trialId: string | null = null;
    let attempt = 0;
    let steps: Int32Array | null = null;
    for (const col of plan.columns) {
      const len = nodeVals[2 * node];
      const nullCount = nodeVals[2 * node + 1];
      if (len !== n || !validityOk(b, len, nullCount, col.nullable)) return null;
      if (col.kind === 'float64') {
        if (bufVals[2 * (b + 1) + 1] < 8 * n) return null;
      } else if (col.kind === 'int32') {
        const values = int32s(b + 1, n);
        if (values === null) return null;
        if (col.name === 'attempt') {
          attempt = values[0];
          for (let i = 1; i < n; i++) if (values[i] !== attempt) return null;
        } else if (col.name === 'step') {
          for (let i = 0; i < n; i++) {
            if (!(values[i] > prevStep)) return null;
            prevStep = values[i];
          }
          steps = values;
        }
      } else if (col.kind === 'utf8') {
        const offs = int32s(b + 1, n + 1);
        if (!offsetsOk(offs, bufVals[2 * (b + 2) + 1])) return null;
        if (col.name === 'trial_id') {
          if (nullCount > 0) return null;
          const data = view(b + 2);
          const a0 = offs![0];
          const l0 = offs![1] - a0;
          for (let i = 1; i < n; i++) {
            const a = offs![i];
            if (offs![i + 1] - a !== l0) return null;
            for (let k = 0; k < l0; k++) if (data[a + k] !== data[a0 + k]) return null;
          }
          trialId = textDecoder.decode(data.subarray(a0, a0 + l0));
        }
      } else {
        const childLen = nodeVals[2 * (node + 1)];
        const childNulls = nodeVals[2 * (node + 1) + 1];
        if (!(childLen >= 0) || childNulls !== 0) return null;
        if (!offsetsOk(int32s(b + 1, n + 1), childLen)) return null;
        if (bufVals[2 * (b + 3) + 1] < 8 * childLen) return null;
      }
      node += col.kind === 'list' ? 2 : 1;
      b += col.kind === 'utf8' ? 3 : col.kind === 'list' ? 4 : 2;
    }
    if (trialId === null || steps === null) return null;
    if (out.length && (out[0].trialId !== trialId || out[0].attempt !== attempt)) return null;
    const p = part();
    const header = new Uint8Array(8 + headerSize(p.nodes, p.buffers));
    writeHeader(new DataView(header.buffer), 0, n, nodeVals.slice(2 * keys.nodes), bufVals.slice(2 * keys.buffers), bodyLength);
    out.push({ trialId, attempt, rows: n, steps, header, body: bytes.subarray(body0, body0 + bodyLength) });
    pos = body0 + bodyLength;
  }
  return out.length ? out : null;
}

/** Batches from `parseWireStream` → one Arrow IPC stream with `partMetricsSchema()` (schema, the batches in order, end-of-stream). */
export function partIpcStream(batches: readonly WireBatch[]): Uint8Array {
  const sm = part().schemaMessage;
  let total = sm.length + 8;
  for (const b of batches) total += b.header.length + pad8(b.body.length);
  const out = new Uint8Array(total);
  out.set(sm, 0);
  let at = sm.length;
  for (const b of batches) {
    out.set(b.header, at);
    at += b.header.length;
    out.set(b.body, at);
    at += pad8(b.body.length);
  }
  const dv = new DataView(out.buffer);
  dv.setUint32(at, 0xffffffff, true);
  dv.setInt32(at + 4, 0, true);
  return out;
}
