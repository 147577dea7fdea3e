/**
 * The worker's side of the checkpoint requests (schemas/checkpoint-request.ts): a redelivered trial of
 * a sweep with train.checkpoint_every > 0 asks the orchestrator that owns DIR for the trial's latest
 * checkpoint (science.md §7) and resumes from it (worker/trainer/resume.ts). Workers cannot read DIR.
 */
import { createHash } from 'node:crypto';
import type { Msg, NatsConnection } from '@nats-io/transport-node';
import { CKPT_REPLY_HEADERS, type CheckpointRequest } from '../schemas/checkpoint-request.js';
import { TRIAL_ID_PATTERN } from '../schemas/parquet.js';
import { CKPT_HEADERS } from '../schemas/transport.js';

/** A fetched checkpoint: the whole safetensors file of `step`, written by attempt `attempt` (0: unknown). */
export interface FetchedCheckpoint {
  attempt: number;
  step: number;
  bytes: Uint8Array;
}

/** Options of `fetchCheckpoint`. */
export interface FetchCheckpointOptions {
  /** Told why a fetch gave up (null result) other than "no checkpoint". */
  onWarning?(msg: string): void;
  /** Largest file accepted (bytes); default 2^31 (MAX_CHECKPOINT_BYTES of the collector). */
  maxTotalBytes?: number;
}

/** Whole-file restarts (the file changed between slices, or its hash did not match) before giving up. */
const RESTARTS = 3;

/**
 * Fetches the latest checkpoint of `trialId` from the orchestrator serving `subject`
 * (`transportNames(ns).checkpointRequest(sweep)`; orchestrator/checkpoints.ts serveCheckpoints): requests
 * slices from offset 0 until the file's total size (the first reply pins the step; later slices must
 * carry the same step, size and sha256, else the fetch starts over, at most 3 times), then checks the
 * size and SHA-256 of the assembled bytes.
 *
 * @param timeoutMs how long each request waits for its reply (ms), asking again every 500 ms while
 *   nobody listens on `subject` (an orchestrator that is starting).
 * @returns the checkpoint, or null — never throws — when the trial has none, nobody answers within the
 *   timeout (no orchestrator, no responders, closed connection), trialId is not `t` + 16 hex digits, the
 *   orchestrator refuses the request, or the bytes keep failing the size/hash check. Null means: train
 *   the trial from step 0.
 */
export async function fetchCheckpoint(
  nc: NatsConnection,
  subject: string,
  trialId: string,
  timeoutMs: number,
  opts: FetchCheckpointOptions = {},
): Promise<FetchedCheckpoint | null> {
  const warn = (msg: string) => opts.onWarning?.(`checkpoint of ${trialId}: ${msg}`);
  if (!TRIAL_ID_PATTERN.test(trialId)) {
    warn('not a trial id');
    return null;
  }
  const maxTotal = opts.maxTotalBytes ?? 2 ** 31;
  const enc = new TextEncoder();
  for (let attemptNo = 0; attemptNo < RESTARTS; attemptNo++) {
    let pinned: { step: number; attempt: number; total: number; sha256: string } | null = null;
    let buf: Uint8Array | null = null;
    let offset = 0;
    let restart = false;
    while (!restart) {
      const req: CheckpointRequest = { trial_id: trialId, offset, ...(pinned ? { step: pinned.step } : {}) };
      let m: Msg;
      // Nobody subscribed yet (an orchestrator restarting: its checkpoint service comes up a few seconds
      // after it) fails a request at once: asked again every 500 ms until the timeout has passed.
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          m = await nc.request(subject, enc.encode(JSON.stringify(req)), { timeout: Math.max(1, deadline - Date.now()) });
          break;
        } catch (e) {
          if (/no responders/i.test((e as Error).message) && Date.now() + 500 < deadline) {
            await new Promise((r) => setTimeout(r, 500));
            continue;
          }
          warn(`no answer on ${subject} (${(e as Error).message})`);
          return null;
        }
      }
      const h = m.headers;
      const status = h?.get(CKPT_REPLY_HEADERS.status);
      if (status === 'none') {
        if (pinned) {
          restart = true; // the file went away meanwhile (replaced by a later one?): ask for the latest again
          break;
        }
        return null;
      }
      if (status !== 'ok' || !h) {
        warn(`refused: ${h?.get(CKPT_REPLY_HEADERS.error) || `status ${JSON.stringify(status ?? null)}`}`);
        return null;
      }
      const int = (k: string) => {
        const v = h.get(k);
        return /^[0-9]{1,15}$/.test(v) ? Number(v) : NaN;
      };
      const got = { step: int(CKPT_HEADERS.step), attempt: int(CKPT_HEADERS.attempt), total: int(CKPT_HEADERS.totalBytes), sha256: h.get(CKPT_HEADERS.sha256) };
      const at = int(CKPT_REPLY_HEADERS.offset);
      if ([got.step, got.attempt, got.total, at].some(Number.isNaN) || !/^[0-9a-f]{64}$/.test(got.sha256) || got.total > maxTotal) {
        warn('malformed reply headers');
        return null;
      }
      if (!pinned) {
        pinned = got;
        buf = new Uint8Array(got.total);
      } else if (got.step !== pinned.step || got.total !== pinned.total || got.sha256 !== pinned.sha256) {
        restart = true; // the file of that step was replaced between slices
        break;
      }
      const data = m.data;
      if (at !== offset || offset + data.length > pinned.total || (data.length === 0 && offset < pinned.total)) {
        warn(`slice at ${at} of ${data.length} bytes does not continue ${offset} of ${pinned.total}`);
        return null;
      }
      buf!.set(data, offset);
      offset += data.length;
      if (offset === pinned.total) {
        if (createHash('sha256').update(buf!).digest('hex') === pinned.sha256) return { attempt: pinned.attempt, step: pinned.step, bytes: buf! };
        warn('sha256 mismatch; fetching again');
        restart = true;
      }
    }
  }
  warn(`gave up after ${RESTARTS} tries`);
  return null;
}
