/**
 * Reassembly of checkpoint files from their chunk messages (schemas/transport.ts CKPT_HEADERS) into
 * DIR/checkpoints/<trial_id>/step-<n>.safetensors (science.md §7).
 *
 * Chunks are keyed by (trial_id, attempt, step); a file is written — temp + fsync + rename + fsync of
 * the folder — once every chunk is there, its size matches and its SHA-256 matches the header, and only
 * then are the messages it came from released for acknowledgement. A redelivered or duplicated chunk
 * replaces the same slot with the same bytes; a chunk of an already written file (same hash on disk)
 * is released at once. A file whose bytes do not hash to the header is never written (its messages
 * are released for termination with a warning).
 */
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { headers, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import { CKPT_REPLY_HEADERS, parseCheckpointRequest } from '../schemas/checkpoint-request.js';
import { checkpointPath, CHECKPOINTS_DIR, TRIAL_ID_PATTERN } from '../schemas/parquet.js';
import { CKPT_HEADERS } from '../schemas/transport.js';
import { writeFileDurable } from './parquet-store.js';

/** The headers of one chunk message, validated. */
export interface ChunkInfo {
  trialId: string;
  attempt: number;
  step: number;
  chunk: number;
  chunks: number;
  totalBytes: number;
  sha256: string;
}

/** Largest checkpoint accepted (bytes): a bound on what a malformed header can make the collector hold. */
export const MAX_CHECKPOINT_BYTES = 2 ** 31;

/**
 * Reads and validates a chunk's headers (`get` returns a header's value or undefined).
 * @throws Error naming the bad header (the trial id must match TRIAL_ID_PATTERN: nothing lands outside DIR).
 */
export function parseChunkHeaders(get: (name: string) => string | undefined): ChunkInfo {
  const str = (k: string): string => {
    const v = get(k);
    if (v === undefined || v === '') throw new Error(`checkpoint chunk: header ${k} missing`);
    return v;
  };
  const int = (k: string, min: number, max = Number.MAX_SAFE_INTEGER): number => {
    const v = str(k);
    if (!/^[0-9]{1,16}$/.test(v) || Number(v) < min || Number(v) > max) throw new Error(`checkpoint chunk: header ${k} = ${JSON.stringify(v)} is not an integer in [${min}, ${max}]`);
    return Number(v);
  };
  const trialId = str(CKPT_HEADERS.trialId);
  if (!TRIAL_ID_PATTERN.test(trialId)) throw new Error(`checkpoint chunk: bad trial id ${JSON.stringify(trialId)}`);
  const sha256 = str(CKPT_HEADERS.sha256);
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw new Error(`checkpoint chunk: bad sha256 ${JSON.stringify(sha256)}`);
  const chunks = int(CKPT_HEADERS.chunks, 1, 1_000_000);
  const info: ChunkInfo = {
    trialId,
    attempt: int(CKPT_HEADERS.attempt, 1),
    step: int(CKPT_HEADERS.step, 0),
    chunk: int(CKPT_HEADERS.chunk, 0, chunks - 1),
    chunks,
    totalBytes: int(CKPT_HEADERS.totalBytes, 0, MAX_CHECKPOINT_BYTES),
    sha256,
  };
  return info;
}

interface Assembly<M> {
  info: ChunkInfo;
  parts: Array<Uint8Array | undefined>;
  have: number;
  handles: M[];
}

/** What to do with message handles after `add` (ack: stored or superseded; term: unusable; nak: write failed, redeliver). */
export interface Release<M> {
  ack: M[];
  term: M[];
  nak: M[];
  /** Absolute path of the file written by this call, if any. */
  written?: string;
}

const sha256Hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function fsyncDir(path: string): Promise<void> {
  const dh = await open(path, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}

/** Reassembles checkpoint chunks into files under `dir` (see the module comment). `M` = message handle. */
export class CheckpointAssembler<M> {
  private readonly open = new Map<string, Assembly<M>>();
  /** Files written (or found on disk) by this assembler: key → sha256. */
  private readonly done = new Map<string, string>();
  /** Checkpoint files written. */
  filesWritten = 0;

  /**
   * @param onWriteError called when a complete file cannot be written (its chunks are nak'ed for
   *   redelivery either way); returning true means the caller handles it (e.g. a full disk pauses the
   *   collector) and no warning is logged.
   */
  constructor(
    private readonly dir: string,
    private readonly onWarning?: (msg: string) => void,
    private readonly onWriteError?: (e: unknown) => boolean,
  ) {}

  private static key(i: ChunkInfo): string {
    return `${i.trialId}#${i.attempt}#${i.step}`;
  }

  /** Chunks held for files not complete yet. */
  get pendingChunks(): number {
    let n = 0;
    for (const a of this.open.values()) n += a.handles.length;
    return n;
  }

  /** True if the file of `info` is on disk with the expected hash. */
  private async onDisk(info: ChunkInfo): Promise<boolean> {
    const path = join(this.dir, checkpointPath(info.trialId, info.step));
    try {
      if ((await stat(path)).size !== info.totalBytes) return false;
      return sha256Hex(await readFile(path)) === info.sha256;
    } catch {
      return false;
    }
  }

  /** Adds one chunk; writes the file when it completes it. */
  async add(info: ChunkInfo, data: Uint8Array, handle: M): Promise<Release<M>> {
    const key = CheckpointAssembler.key(info);
    if (this.done.get(key) === info.sha256) return { ack: [handle], term: [], nak: [] };
    let a = this.open.get(key);
    const release: Release<M> = { ack: [], term: [], nak: [] };
    if (a && (a.info.sha256 !== info.sha256 || a.info.chunks !== info.chunks || a.info.totalBytes !== info.totalBytes)) {
      // Another file under the same (trial, attempt, step): the newer one supersedes the partial one.
      this.onWarning?.(`checkpoint ${info.trialId} attempt ${info.attempt} step ${info.step}: chunks of two different files; the partial earlier one is dropped`);
      release.ack.push(...a.handles);
      this.open.delete(key);
      a = undefined;
    }
    if (!a) {
      if (await this.onDisk(info)) {
        this.done.set(key, info.sha256);
        release.ack.push(handle);
        return release;
      }
      a = { info, parts: new Array<Uint8Array | undefined>(info.chunks), have: 0, handles: [] };
      this.open.set(key, a);
    }
    if (!a.parts[info.chunk]) a.have++;
    a.parts[info.chunk] = Uint8Array.from(data); // a duplicate chunk replaces its slot, never appends
    a.handles.push(handle);
    if (a.have < info.chunks) return release;

    this.open.delete(key);
    const total = a.parts.reduce((s, p) => s + p!.length, 0);
    const bytes = new Uint8Array(total);
    let at = 0;
    for (const p of a.parts) {
      bytes.set(p!, at);
      at += p!.length;
    }
    if (total !== info.totalBytes || sha256Hex(bytes) !== info.sha256) {
      this.onWarning?.(`checkpoint ${info.trialId} attempt ${info.attempt} step ${info.step}: ${total} bytes that do not match the header (${info.totalBytes} bytes, sha256 ${info.sha256.slice(0, 12)}…); not written`);
      release.term.push(...a.handles);
      return release;
    }
    const path = join(this.dir, checkpointPath(info.trialId, info.step));
    try {
      const created = await mkdir(dirname(path), { recursive: true });
      if (created !== undefined) {
        // New folders: make their entries durable too (DIR/checkpoints, DIR/checkpoints/<id>).
        await fsyncDir(join(this.dir, CHECKPOINTS_DIR));
        await fsyncDir(this.dir);
      }
      await writeFileDurable(path, bytes);
    } catch (e) {
      // Nothing acked: JetStream redelivers every chunk and the file is assembled again.
      if (!this.onWriteError?.(e)) this.onWarning?.(`checkpoint ${info.trialId} step ${info.step}: not written (${(e as Error).message}); will be redelivered`);
      release.nak.push(...a.handles);
      return release;
    }
    this.done.set(key, info.sha256);
    this.filesWritten++;
    release.ack.push(...a.handles);
    release.written = path;
    return release;
  }

  /**
   * A result of (trialId, attempt) arrived: incomplete files of earlier attempts of that trial will never
   * complete (their chunks precede their own result); their chunks are released for acknowledgement.
   */
  supersede(trialId: string, attempt: number): M[] {
    const out: M[] = [];
    for (const [key, a] of this.open) {
      if (a.info.trialId !== trialId || a.info.attempt >= attempt) continue;
      this.onWarning?.(`checkpoint ${trialId} attempt ${a.info.attempt} step ${a.info.step}: incomplete (${a.have}/${a.info.chunks} chunks) and superseded by attempt ${attempt}; dropped`);
      out.push(...a.handles);
      this.open.delete(key);
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Serving checkpoints to workers that resume a trial

const STEP_FILE = /^step-(\d{1,15})\.safetensors$/;

/**
 * Steps of the checkpoints on disk for one trial (DIR/checkpoints/<trial_id>/step-<n>.safetensors),
 * ascending; [] when it has none. Temp files of a write in progress are not listed.
 * @throws Error on a trial id that is not `t` + 16 hex digits (never reads outside DIR) or an I/O error other than ENOENT.
 */
export async function checkpointSteps(dir: string, trialId: string): Promise<number[]> {
  const folder = dirname(join(dir, checkpointPath(trialId, 0)));
  let names: string[];
  try {
    names = await readdir(folder);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
  return names.flatMap((n) => {
    const m = STEP_FILE.exec(n);
    return m ? [Number(m[1])] : [];
  }).sort((a, b) => a - b);
}

/** The `attempt` metadata of a safetensors file from its first bytes (0 when absent or unreadable). */
function attemptOf(head: Uint8Array): number {
  try {
    const n = Number(new DataView(head.buffer, head.byteOffset, 8).getBigUint64(0, true));
    if (8 + n > head.length) return 0;
    const meta = (JSON.parse(new TextDecoder().decode(head.subarray(8, 8 + n))) as { __metadata__?: Record<string, string> }).__metadata__;
    const a = meta?.attempt;
    return a !== undefined && /^[0-9]{1,9}$/.test(a) ? Number(a) : 0;
  } catch {
    return 0;
  }
}

/** Options of `serveCheckpoints`. */
export interface ServeCheckpointsOptions {
  /** Told about refused requests and unreadable files. */
  onWarning?(msg: string): void;
}

/**
 * Answers checkpoint requests (schemas/checkpoint-request.ts) on the core NATS subject `subject`
 * (`transportNames(ns).checkpointRequest(sweep)`) from the checkpoints under `dir` (science.md §7): a
 * request `{trial_id, step?, offset}` gets the slice [offset, offset + len) of the trial's latest (or the
 * given step's) checkpoint file, len = min(maxBytes, server max_payload − 1 KiB for the headers), with
 * headers status `ok`, step, attempt (the file's metadata), total bytes and sha256 of the whole file;
 * or status `none` when the trial has no checkpoint (that step); or `error` for a malformed request (a
 * trial_id that is not `t` + 16 hex digits is refused before any path is formed: nothing outside
 * DIR/checkpoints is ever read) or an offset past the end. Each reply reads one opened file (size, hash
 * and slice from the same file even when it is replaced meanwhile); hashes are cached per file version.
 *
 * @param nc      connection of the orchestrator that owns DIR.
 * @param maxBytes largest slice payload in bytes (≥ 1).
 * @returns the subscription (unsubscribe or drain it to stop serving).
 */
export function serveCheckpoints(nc: NatsConnection, subject: string, dir: string, maxBytes: number, opts: ServeCheckpointsOptions = {}): Subscription {
  if (!(Number.isSafeInteger(maxBytes) && maxBytes >= 1)) throw new Error(`serveCheckpoints: maxBytes ${maxBytes}`);
  const serverMax = nc.info?.max_payload;
  const slice = Math.max(1, Math.min(maxBytes, serverMax !== undefined ? serverMax - 1024 : maxBytes));
  /** sha256 and attempt per file version (path, inode, size, mtime). */
  const cache = new Map<string, { sha256: string; attempt: number }>();

  const reply = (m: Msg, status: 'ok' | 'none' | 'error', fields: Record<string, string> = {}, data: Uint8Array = new Uint8Array(0)) => {
    const h = headers();
    h.set(CKPT_REPLY_HEADERS.status, status);
    // Header values are one line of printable ASCII (an error message may quote the request).
    for (const [k, v] of Object.entries(fields)) h.set(k, v.replace(/[^\x20-\x7e]/g, '?').slice(0, 300));
    m.respond(data, { headers: h });
  };

  const answer = async (m: Msg): Promise<void> => {
    let req;
    try {
      req = parseCheckpointRequest(m.data);
    } catch (e) {
      opts.onWarning?.(`checkpoint request refused: ${(e as Error).message}`);
      return reply(m, 'error', { [CKPT_REPLY_HEADERS.error]: (e as Error).message });
    }
    const steps = await checkpointSteps(dir, req.trial_id);
    const step = req.step ?? steps[steps.length - 1];
    if (step === undefined || !steps.includes(step)) return reply(m, 'none');
    const path = join(dir, checkpointPath(req.trial_id, step));
    let fh;
    try {
      fh = await open(path, 'r');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return reply(m, 'none');
      throw e;
    }
    try {
      const st = await fh.stat();
      const size = st.size;
      if (req.offset > size) return reply(m, 'error', { [CKPT_REPLY_HEADERS.error]: `offset ${req.offset} is past the end of the ${size}-byte checkpoint` });
      const key = `${path}#${st.ino}#${size}#${st.mtimeMs}`;
      let info = cache.get(key);
      if (!info) {
        const all = new Uint8Array(size);
        const { bytesRead } = await fh.read(all, 0, size, 0);
        if (bytesRead !== size) throw new Error(`${path}: read ${bytesRead} of ${size} bytes`);
        info = { sha256: sha256Hex(all), attempt: attemptOf(all) };
        if (cache.size >= 64) cache.delete(cache.keys().next().value!);
        cache.set(key, info);
      }
      const len = Math.min(slice, size - req.offset);
      const data = new Uint8Array(len);
      const { bytesRead } = await fh.read(data, 0, len, req.offset);
      if (bytesRead !== len) throw new Error(`${path}: read ${bytesRead} of ${len} bytes at ${req.offset}`);
      reply(m, 'ok', {
        [CKPT_HEADERS.step]: String(step),
        [CKPT_HEADERS.attempt]: String(info.attempt),
        [CKPT_HEADERS.totalBytes]: String(size),
        [CKPT_HEADERS.sha256]: info.sha256,
        [CKPT_REPLY_HEADERS.offset]: String(req.offset),
      }, data);
    } finally {
      await fh.close();
    }
  };

  return nc.subscribe(subject, {
    callback: (err, m) => {
      if (err || !m.reply) return;
      answer(m).catch((e: Error) => {
        opts.onWarning?.(`checkpoint request on ${subject}: ${e.message}`);
        try {
          reply(m, 'error', { [CKPT_REPLY_HEADERS.error]: 'checkpoint not readable' });
        } catch {
          /* connection closing */
        }
      });
    },
  });
}
