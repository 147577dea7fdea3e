/**
 * The safetensors file format (https://huggingface.co/docs/safetensors), the format of checkpoints
 * (science.md §7). A file is:
 *
 *   8 bytes    N, the header length, unsigned 64-bit little-endian
 *   N bytes    the header: UTF-8 JSON {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *              ..., "__metadata__": {"<key>": "<string value>", ...}}, padded with spaces (0x20) so that
 *              8 + N is a multiple of 8
 *   rest       the byte buffer; tensor data little-endian, row-major, at [begin, end) relative to its start,
 *              contiguous and in header order, no gaps
 *
 * No npm package for writing safetensors in Node is maintained (the `safetensors` package is a 0.0.1
 * placeholder), so this is written here (~40 lines) and tested against an independent reader
 * (test/recompute_checkpoint.py parses it with json + numpy).
 */

/** dtypes phasemap writes. */
export type SafetensorsDtype = 'F32' | 'I32' | 'F64';

export interface SafetensorsTensor {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  data: Float32Array | Int32Array | Float64Array;
}

const BYTES: Record<SafetensorsDtype, number> = { F32: 4, I32: 4, F64: 8 };
const ARRAY: Record<SafetensorsDtype, Float32ArrayConstructor | Int32ArrayConstructor | Float64ArrayConstructor> = {
  F32: Float32Array,
  I32: Int32Array,
  F64: Float64Array,
};

const littleEndian = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Serialises tensors (in the given order) and string metadata into one safetensors file.
 * @throws Error on a duplicate or reserved name, a shape that does not match the data, or a dtype mismatch.
 */
export function encodeSafetensors(tensors: SafetensorsTensor[], metadata: Record<string, string> = {}): Uint8Array {
  if (!littleEndian) throw new Error('encodeSafetensors: big-endian hosts are not supported');
  const header: Record<string, unknown> = {};
  if (Object.keys(metadata).length) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '__metadata__' || Object.prototype.hasOwnProperty.call(header, t.name)) throw new Error(`safetensors: duplicate or reserved tensor name ${JSON.stringify(t.name)}`);
    if (!(t.data instanceof ARRAY[t.dtype])) throw new Error(`safetensors: ${t.name}: data is not ${t.dtype}`);
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (!t.shape.every((s) => Number.isInteger(s) && s >= 0) || count !== t.data.length) throw new Error(`safetensors: ${t.name}: shape [${t.shape}] does not match ${t.data.length} values`);
    const bytes = count * BYTES[t.dtype];
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil((8 + json.length) / 8) * 8 - 8;
  const out = new Uint8Array(8 + padded + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + padded);
  let at = 8 + padded;
  for (const t of tensors) {
    const b = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/** A parsed safetensors file (tensors copied out of the buffer). */
export interface DecodedSafetensors {
  tensors: Map<string, SafetensorsTensor>;
  metadata: Record<string, string>;
}

/** Parses a safetensors file (F32, I32, F64 tensors). @throws Error on a malformed file. */
export function decodeSafetensors(bytes: Uint8Array): DecodedSafetensors {
  if (bytes.length < 8) throw new Error('safetensors: shorter than 8 bytes');
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  if (8 + n > bytes.length) throw new Error(`safetensors: header length ${n} exceeds the file`);
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n))) as Record<string, unknown>;
  const data = bytes.subarray(8 + n);
  const tensors = new Map<string, SafetensorsTensor>();
  let metadata: Record<string, string> = {};
  for (const [name, v] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = v as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets } = v as { dtype: SafetensorsDtype; shape: number[]; data_offsets: [number, number] };
    const Ctor = ARRAY[dtype];
    if (!Ctor) throw new Error(`safetensors: ${name}: unsupported dtype ${dtype}`);
    const [b, e] = data_offsets;
    if (!(b >= 0 && e >= b && e <= data.length) || (e - b) !== shape.reduce((x, y) => x * y, 1) * BYTES[dtype]) throw new Error(`safetensors: ${name}: bad data_offsets [${b}, ${e}]`);
    const copy = data.slice(b, e);
    tensors.set(name, { name, dtype, shape, data: new Ctor(copy.buffer, copy.byteOffset, (e - b) / BYTES[dtype]) });
  }
  return { tensors, metadata };
}
