/**
 * Compute-once cache for reference solutions (docs/science.md §3: each problem's reference u* is
 * computed by phasemap itself; a sweep needs the same u* for every trial of a configuration).
 *
 * Two levels: an in-process memo, and optionally a disk cache `<dir>/<sha256>.f64` (raw
 * little-endian float64) under a directory the caller chooses (see {@link defaultReferenceCacheDir}).
 * The key is the SHA-256 of a canonical serialisation of the caller's key object: object keys
 * sorted, typed arrays and DataViews replaced by their element type, length and SHA-256 of their
 * bytes (so a grid is part of the key at the cost of one hash).
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const memo = new Map<string, Float64Array>();

function sha256(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

function canonical(v: unknown, seen: Set<object>): string {
  if (v === null) return 'null';
  switch (typeof v) {
    case 'number':
      if (!Number.isFinite(v)) throw new TypeError(`referenceKeyHash: non-finite number ${v} in key`);
      return Object.is(v, -0) ? '0' : JSON.stringify(v);
    case 'string':
    case 'boolean':
      return JSON.stringify(v);
    case 'bigint':
      return `{"$bigint":"${v.toString()}"}`;
    case 'object':
      break;
    default:
      throw new TypeError(`referenceKeyHash: cannot key on a ${typeof v}`);
  }
  const o = v as object;
  if (ArrayBuffer.isView(o)) {
    const bytes = new Uint8Array(o.buffer, o.byteOffset, o.byteLength);
    const n = 'length' in o ? (o as { length: number }).length : o.byteLength;
    return `{"$typed":${JSON.stringify(o.constructor.name)},"length":${n},"sha256":"${sha256(bytes)}"}`;
  }
  if (seen.has(o)) throw new TypeError('referenceKeyHash: cyclic key');
  seen.add(o);
  let s: string;
  if (Array.isArray(o)) {
    s = `[${o.map((e) => canonical(e === undefined ? null : e, seen)).join(',')}]`;
  } else {
    const entries = Object.keys(o)
      .filter((k) => (o as Record<string, unknown>)[k] !== undefined)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((o as Record<string, unknown>)[k], seen)}`);
    s = `{${entries.join(',')}}`;
  }
  seen.delete(o);
  return s;
}

/**
 * Hex SHA-256 of the canonical form of `key` (sorted object keys; typed arrays by type, length and
 * content hash; `undefined` members dropped; −0 = 0). Equal keys ⇔ equal hashes.
 *
 * @param key plain data: objects, arrays, finite numbers, strings, booleans, bigints, null, typed arrays.
 * @returns 64 lowercase hex characters.
 * @throws TypeError on functions, symbols, non-finite numbers or cycles.
 */
export function referenceKeyHash(key: object): string {
  return sha256(canonical(key, new Set()));
}

/**
 * The conventional disk-cache directory for references: `$PHASEMAP_CACHE/reference` if
 * PHASEMAP_CACHE is set and non-empty, else `~/.cache/phasemap/reference`. Nothing is created.
 *
 * @param env environment to read (default `process.env`).
 */
export function defaultReferenceCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.PHASEMAP_CACHE;
  return base ? path.join(base, 'reference') : path.join(os.homedir(), '.cache', 'phasemap', 'reference');
}

function readDisk(file: string): Float64Array | undefined {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  if (buf.byteLength % 8 !== 0) return undefined; // truncated / foreign file: recompute
  const out = new Float64Array(buf.byteLength / 8);
  new Uint8Array(out.buffer).set(buf);
  if (os.endianness() !== 'LE') {
    const dv = new DataView(out.buffer);
    for (let i = 0; i < out.length; i++) out[i] = dv.getFloat64(i * 8, true);
  }
  return out;
}

function writeDisk(dir: string, file: string, data: Float64Array): void {
  fs.mkdirSync(dir, { recursive: true });
  let bytes: Uint8Array;
  if (os.endianness() === 'LE') bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  else {
    const dv = new DataView(new ArrayBuffer(data.byteLength));
    for (let i = 0; i < data.length; i++) dv.setFloat64(i * 8, data[i]!, true);
    bytes = new Uint8Array(dv.buffer);
  }
  // Write to a unique temporary name, then rename: concurrent workers never see a partial file.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, bytes);
  fs.renameSync(tmp, file);
}

/**
 * Returns the reference for `key`, calling `compute` only if neither the in-process memo nor (when
 * `opts.dir` is given) the disk cache `<dir>/<referenceKeyHash(key)>.f64` has it. The key must name
 * everything the result depends on: problem name, its science.md §3 parameters, solver settings
 * (e.g. nodes, modes, dt) and the evaluation grid or points (typed arrays are hashed by content).
 *
 * Each call returns a fresh copy (callers may modify it). Disk writes are atomic (temp file +
 * rename); a failed disk write is ignored (the value is still memoised and returned); an unreadable
 * or malformed cache file is treated as a miss and overwritten.
 *
 * @param key plain-data description of the reference (see {@link referenceKeyHash}).
 * @param compute produces the reference, e.g. `() => burgersReference(x, t)`; called at most once
 *   per key per process (unless {@link clearReferenceMemo} is called).
 * @param opts.dir disk cache directory (created if missing), e.g. {@link defaultReferenceCacheDir}();
 *   omitted = memory only.
 * @returns the reference values, [as computed], float64.
 * @throws TypeError for an invalid key or when `compute` does not return a Float64Array; whatever
 *   `compute` throws.
 */
export function cachedReference(key: object, compute: () => Float64Array, opts?: { dir?: string }): Float64Array {
  const h = referenceKeyHash(key);
  let v = memo.get(h);
  if (v === undefined && opts?.dir !== undefined) v = readDisk(path.join(opts.dir, `${h}.f64`));
  if (v === undefined) {
    const computed = compute();
    if (!(computed instanceof Float64Array)) throw new TypeError('cachedReference: compute() must return a Float64Array');
    v = computed.slice();
    if (opts?.dir !== undefined) {
      try {
        writeDisk(opts.dir, path.join(opts.dir, `${h}.f64`), v);
      } catch {
        // disk cache is best-effort
      }
    }
  }
  memo.set(h, v);
  return v.slice();
}

/** Empties the in-process memo (the disk cache is left alone). For tests and memory pressure. */
export function clearReferenceMemo(): void {
  memo.clear();
}
