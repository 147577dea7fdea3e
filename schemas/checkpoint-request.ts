/**
 * Wire contract of the checkpoint requests (core NATS request/reply on `transportNames(ns)
 * .checkpointRequest(sweep)`): a worker that resumes a redelivered trial asks the orchestrator that owns
 * DIR for the trial's latest checkpoint (science.md §7), slice by slice (server:
 * orchestrator/checkpoints.ts serveCheckpoints; client: worker/checkpoint-fetch.ts fetchCheckpoint).
 *
 * Request payload (JSON): `{ "trial_id": "t<16 hex>", "step"?: n, "offset": bytes }` — `step` absent: the
 * latest checkpoint on disk (largest step); `offset`: the first byte of the slice wanted.
 * Reply: headers CKPT_REPLY_HEADERS.status = `ok` | `none` | `error`, and for `ok` the CKPT_HEADERS
 * step, attempt (from the file's metadata; 0 if absent), totalBytes and sha256 (of the whole file) plus
 * CKPT_REPLY_HEADERS.offset; payload: the bytes [offset, offset + len) of the file, len ≤ the server's
 * slice size (≥ 1 unless the file is empty). `none`: the trial has no checkpoint (or not that step);
 * `error`: CKPT_REPLY_HEADERS.error says why (bad request, unreadable file).
 */
import { TRIAL_ID_PATTERN } from './parquet.js';

/** A checkpoint request (see the module comment). */
export interface CheckpointRequest {
  trial_id: string;
  /** The checkpoint's step; absent: the latest. */
  step?: number;
  /** First byte of the slice (≥ 0). */
  offset: number;
}

/** Reply headers beyond CKPT_HEADERS.step/attempt/totalBytes/sha256 (schemas/transport.ts). */
export const CKPT_REPLY_HEADERS = {
  /** `ok`, `none` or `error`. */
  status: 'Phasemap-Checkpoint',
  /** Offset of this slice in the file (decimal). */
  offset: 'Phasemap-Offset',
  /** Why the request was refused (status `error`). */
  error: 'Phasemap-Error',
} as const;

/**
 * Parses and validates a request payload.
 * @throws Error naming the bad field: not JSON, trial_id not `t` + 16 hex digits (so a request never
 *   names a path outside DIR), step / offset not a non-negative safe integer.
 */
export function parseCheckpointRequest(data: Uint8Array): CheckpointRequest {
  let v: unknown;
  try {
    v = JSON.parse(new TextDecoder().decode(data));
  } catch {
    throw new Error('checkpoint request: not JSON');
  }
  if (typeof v !== 'object' || v === null) throw new Error('checkpoint request: not a JSON object');
  const r = v as Record<string, unknown>;
  if (typeof r.trial_id !== 'string' || !TRIAL_ID_PATTERN.test(r.trial_id)) throw new Error(`checkpoint request: trial_id ${JSON.stringify(r.trial_id)} is not t + 16 hex digits`);
  const nat = (k: string) => typeof r[k] === 'number' && Number.isSafeInteger(r[k]) && (r[k] as number) >= 0;
  if (r.step !== undefined && r.step !== null && !nat('step')) throw new Error(`checkpoint request: step ${JSON.stringify(r.step)} is not an integer >= 0`);
  if (!nat('offset')) throw new Error(`checkpoint request: offset ${JSON.stringify(r.offset)} is not an integer >= 0`);
  return { trial_id: r.trial_id, ...(typeof r.step === 'number' ? { step: r.step } : {}), offset: r.offset as number };
}
