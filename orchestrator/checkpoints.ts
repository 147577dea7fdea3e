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
import { mkdir, open, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
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

  constructor(
    private readonly dir: string,
    private readonly onWarning?: (msg: string) => void,
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
      this.onWarning?.(`checkpoint ${info.trialId} step ${info.step}: not written (${(e as Error).message}); will be redelivered`);
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
