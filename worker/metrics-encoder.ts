/**
 * Encoding of per-step metric rows into Arrow IPC stream messages (schemas/metrics.ts).
 *
 * Pure and synchronous: meant to run inside a worker thread. Each chunk is written straight into one
 * IPC stream buffer (schemas/metrics-ipc.ts: the schema is fixed, so no apache-arrow table is built
 * per message) of at most `maxBytes` bytes.
 */
import { DataType } from 'apache-arrow';
import type { KeyedMetricRow } from '../schemas/metrics-batch.js';
import { encodeWireStream, wireStreamOverhead } from '../schemas/metrics-ipc.js';
import { wireMetricsSchema } from '../schemas/metrics.js';

export type { KeyedMetricRow };

/** Per-row layout of the wire schema: fixed bytes per row, and the List<Float64> columns. */
let layout: { fixed: number; lists: Array<keyof KeyedMetricRow> } | null = null;
function rowLayout(): { fixed: number; lists: Array<keyof KeyedMetricRow> } {
  if (layout) return layout;
  let fixed = 0;
  const lists: Array<keyof KeyedMetricRow> = [];
  for (const f of wireMetricsSchema().fields) {
    if (DataType.isList(f.type)) {
      fixed += 4; // offset
      lists.push(f.name as keyof KeyedMetricRow);
    } else if (DataType.isUtf8(f.type)) fixed += 4; // offset (+ the string bytes)
    else fixed += (f.type as { bitWidth?: number }).bitWidth === 32 ? 4 : 8;
    if (f.nullable) fixed += 1 / 8; // validity bit
  }
  layout = { fixed: Math.ceil(fixed), lists };
  return layout;
}

/** Estimated IPC body bytes of one row (values, offsets, bitmap bits; no padding). */
function rowBytes(r: KeyedMetricRow): number {
  const { fixed, lists } = rowLayout();
  let b = fixed + r.trial_id.length;
  for (const name of lists) {
    const v = r[name] as number[] | null;
    if (v) b += v.length * 8;
  }
  return b;
}

/**
 * Encodes keyed metric rows as Arrow IPC stream messages of at most `maxBytes` bytes each.
 *
 * Every returned Uint8Array is one self-contained Arrow IPC *stream* (schema message, one record
 * batch, end-of-stream marker) with exactly `wireMetricsSchema()`; the per-layer columns (snr_layers,
 * saturation_layers, entropy_layers) are List<Float64>, and null values (rel_l2 and the diagnostic
 * columns off their cadence, snr_adam at step 0, ...) are real Arrow nulls. Rows
 * keep their input order; rows of several trials/attempts may share a chunk. The chunk boundaries
 * are first chosen from a per-row size estimate, then any chunk that still serializes larger than
 * `maxBytes` is halved recursively.
 *
 * @param rows     metric rows with their keys (trial_id, attempt ≥ 1 integers, step a 32-bit integer).
 * @param maxBytes largest size of one message in bytes (e.g. DEFAULT_MAX_MESSAGE_BYTES); a positive integer.
 * @returns the chunks in row order; [] for no rows.
 * @throws RangeError when maxBytes is not a positive integer, or when a single row alone encodes
 *         larger than maxBytes (the message names trial_id, attempt, step and both sizes);
 *         TypeError when a row value has the wrong type.
 */
export function encodeMetricChunks(rows: KeyedMetricRow[], maxBytes: number): Uint8Array[] {
  if (!Number.isInteger(maxBytes) || maxBytes <= 0) throw new RangeError(`maxBytes: got ${maxBytes}, expected a positive integer`);
  if (rows.length === 0) return [];
  const out: Uint8Array[] = [];
  const emit = (lo: number, hi: number): void => {
    const bytes = encodeWireStream(rows, lo, hi);
    if (bytes.length <= maxBytes) {
      out.push(bytes);
      return;
    }
    if (hi - lo === 1) {
      const r = rows[lo];
      throw new RangeError(
        `metrics row (trial_id=${r.trial_id}, attempt=${r.attempt}, step=${r.step}) alone encodes to ${bytes.length} bytes, over maxBytes=${maxBytes}`,
      );
    }
    const mid = lo + ((hi - lo) >> 1);
    emit(lo, mid);
    emit(mid, hi);
  };

  // Greedy packing on the estimate, keeping a margin for per-buffer padding (up to 8 bytes for each
  // of the ≤ 3 buffers of every column, list children included).
  const budget = maxBytes - wireStreamOverhead() - 8 * 3 * (wireMetricsSchema().fields.length + rowLayout().lists.length);
  let lo = 0;
  let acc = 0;
  for (let i = 0; i < rows.length; i++) {
    const b = rowBytes(rows[i]);
    if (i > lo && acc + b > budget) {
      emit(lo, i);
      lo = i;
      acc = 0;
    }
    acc += b;
  }
  emit(lo, rows.length);
  return out;
}
