/**
 * Names of the JetStream resources and subjects: the wire contract between orchestrators,
 * collectors and workers. Sweep names are validated (schemas/sweep.ts) to be a single subject token.
 *
 * - Stream PHASEMAP_TRIALS (work queue): `phasemap.trials.<sweep>`, one TrialMessage per trial,
 *   Nats-Msg-Id = trial_id. All workers pull from the durable consumer WORKER_CONSUMER.
 * - Stream PHASEMAP_OUT (work queue): `phasemap.out.<sweep>.metrics` (Arrow IPC streams, ≤ max
 *   payload) and `phasemap.out.<sweep>.result.<trial_id>` (TrialResultMessage JSON), consumed by
 *   the sweep's collector (durable `collector-<sweep>`), acknowledged once on disk.
 * - Same stream: `phasemap.out.<sweep>.checkpoint.<trial_id>`: checkpoint files (safetensors, science.md
 *   §7) cut into chunks ≤ max payload, one message per chunk with the CKPT_HEADERS headers; all chunks of
 *   an attempt's checkpoints are published in order before its result message. The collector
 *   reassembles them, checks the sha256 and writes DIR/checkpoints/<trial_id>/step-<n>.safetensors.
 * - Core subject `phasemap.progress.<sweep>` (no persistence): ProgressMessage every ~second.
 * - KV bucket `phasemap_trials`: key `<sweep>.<trial_id>` → TrialState.
 */
export const TRIALS_STREAM = 'PHASEMAP_TRIALS';
export const OUT_STREAM = 'PHASEMAP_OUT';
export const WORKER_CONSUMER = 'phasemap-workers';
export const STATE_BUCKET = 'phasemap_trials';

export const trialsSubject = (sweep: string) => `phasemap.trials.${sweep}`;
export const metricsSubject = (sweep: string) => `phasemap.out.${sweep}.metrics`;
export const resultSubject = (sweep: string, trialId: string) => `phasemap.out.${sweep}.result.${trialId}`;
export const outFilter = (sweep: string) => `phasemap.out.${sweep}.>`;
export const checkpointSubject = (sweep: string, trialId: string) => `phasemap.out.${sweep}.checkpoint.${trialId}`;

/** NATS headers of a checkpoint chunk message (all decimal integers except the trial id and the sha256). */
export const CKPT_HEADERS = {
  trialId: 'Phasemap-Trial-Id',
  attempt: 'Phasemap-Attempt',
  /** The checkpoint's step n (file `step-<n>.safetensors`). */
  step: 'Phasemap-Step',
  /** 0-based index of this chunk. */
  chunk: 'Phasemap-Chunk',
  /** Number of chunks of this checkpoint (≥ 1). */
  chunks: 'Phasemap-Chunks',
  /** Size of the whole file in bytes. */
  totalBytes: 'Phasemap-Total-Bytes',
  /** Lowercase hex SHA-256 of the whole file. */
  sha256: 'Phasemap-Sha256',
} as const;

/** Cuts `bytes` into chunks of at most `maxBytes` (at least one chunk, even for an empty file). */
export function chunkBytes(bytes: Uint8Array, maxBytes: number): Uint8Array[] {
  if (!(maxBytes >= 1)) throw new Error(`chunkBytes: maxBytes ${maxBytes}`);
  const out: Uint8Array[] = [];
  for (let at = 0; at < bytes.length || out.length === 0; at += maxBytes) out.push(bytes.subarray(at, Math.min(bytes.length, at + maxBytes)));
  return out;
}
export const progressSubject = (sweep: string) => `phasemap.progress.${sweep}`;
export const collectorConsumer = (sweep: string) => `collector-${sweep}`;
export const stateKey = (sweep: string, trialId: string) => `${sweep}.${trialId}`;

/** How long JetStream waits for an ack before redelivering a trial; workers send in-progress acks at a third of it. */
export const TRIAL_ACK_WAIT_MS = 60_000;
/** Ack wait of the collector's consumer; the collector flushes buffered rows well within it. */
export const OUT_ACK_WAIT_MS = 120_000;

/** Live progress of one running trial (core NATS, best effort). */
export interface ProgressMessage {
  trial_id: string;
  attempt: number;
  step: number;
  steps: number;
  worker: string;
}

/**
 * Config of the shared worker consumer on TRIALS_STREAM, in JetStream's consumer-config shape
 * (`ack_wait` in nanoseconds), created by whichever side comes first.
 */
export const workerConsumerConfig = () => ({
  durable_name: WORKER_CONSUMER,
  ack_policy: 'explicit' as const,
  ack_wait: TRIAL_ACK_WAIT_MS * 1_000_000,
  /** Redeliveries after a crashed worker; a trial that throws is reported `failed`, not redelivered. */
  max_deliver: 5,
  max_ack_pending: 100_000,
});
