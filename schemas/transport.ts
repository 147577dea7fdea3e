/**
 * Names of the JetStream resources and subjects: the wire contract between orchestrators,
 * collectors and workers, all under one **namespace** `ns` (default `phasemap`; `--namespace` or
 * PHASEMAP_NAMESPACE), so that two users or teams on one cluster never see each other's trials.
 * Sweep names are validated (schemas/sweep.ts) to be a single subject token; namespaces likewise.
 *
 * - Stream `<ns>-trials` (work queue): `<ns>.trials.<sweep>.<trial_id>`, one TrialMessage per trial.
 *   All workers of the namespace pull from the durable consumer `<ns>-workers`.
 * - Stream `<ns>-out` (work queue): `<ns>.out.<sweep>.metrics` (Arrow IPC streams, ≤ max payload) and
 *   `<ns>.out.<sweep>.result.<trial_id>` (TrialResultMessage JSON), consumed by the sweep's collector
 *   (durable `collector-<sweep>`), acknowledged once on disk.
 * - Same stream: `<ns>.out.<sweep>.checkpoint.<trial_id>`: checkpoint files (safetensors, science.md
 *   §7) cut into chunks ≤ max payload, one message per chunk with the CKPT_HEADERS headers; all chunks of
 *   an attempt's checkpoints are published in order before its result message. The collector
 *   reassembles them, checks the sha256 and writes DIR/checkpoints/<trial_id>/step-<n>.safetensors.
 * - Core subject `<ns>.progress.<sweep>` (no persistence): ProgressMessage every ~second.
 * - Core request subject `<ns>.ckpt.<sweep>`: the orchestrator that owns DIR serves a trial's latest
 *   checkpoint to a worker that resumes it (orchestrator/checkpoints.ts).
 * - KV bucket `<ns>_trials`: key `<sweep>.<trial_id>` → TrialState (compare-and-set transitions);
 *   `<sweep>._control` → SweepControl; `<sweep>._owner` → the orchestrator that owns the sweep's DIR.
 */
export const DEFAULT_NAMESPACE = 'phasemap';

/**
 * Checks a namespace: 1–32 letters, digits, `_` or `-` (it becomes part of subjects, stream and bucket names).
 * @throws Error naming the source (`field`), the value and what was expected.
 */
export function checkNamespace(ns: string, field = '--namespace'): string {
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(ns)) throw new Error(`${field}: got ${JSON.stringify(ns)}, expected 1-32 letters, digits, '_' or '-'`);
  return ns;
}

/** Every JetStream/KV name of one namespace. */
export interface TransportNames {
  ns: string;
  trialsStream: string;
  outStream: string;
  workerConsumer: string;
  stateBucket: string;
  /** Subjects the trials stream holds (`<ns>.trials.>`). */
  trialsAll: string;
  /** Subjects the output stream holds (`<ns>.out.>`). */
  outAll: string;
  /** All trial subjects of one sweep (a filter). */
  trialsOf(sweep: string): string;
  trial(sweep: string, trialId: string): string;
  metrics(sweep: string): string;
  result(sweep: string, trialId: string): string;
  checkpoint(sweep: string, trialId: string): string;
  outOf(sweep: string): string;
  progress(sweep: string): string;
  checkpointRequest(sweep: string): string;
  collector(sweep: string): string;
  stateKey(sweep: string, trialId: string): string;
  controlKey(sweep: string): string;
  ownerKey(sweep: string): string;
}

/** The names of namespace `ns` (checked with checkNamespace). */
export function transportNames(ns: string = DEFAULT_NAMESPACE): TransportNames {
  checkNamespace(ns);
  return {
    ns,
    trialsStream: `${ns}-trials`,
    outStream: `${ns}-out`,
    workerConsumer: `${ns}-workers`,
    stateBucket: `${ns}_trials`,
    trialsAll: `${ns}.trials.>`,
    outAll: `${ns}.out.>`,
    trialsOf: (sweep) => `${ns}.trials.${sweep}.>`,
    trial: (sweep, trialId) => `${ns}.trials.${sweep}.${trialId}`,
    metrics: (sweep) => `${ns}.out.${sweep}.metrics`,
    result: (sweep, trialId) => `${ns}.out.${sweep}.result.${trialId}`,
    checkpoint: (sweep, trialId) => `${ns}.out.${sweep}.checkpoint.${trialId}`,
    outOf: (sweep) => `${ns}.out.${sweep}.>`,
    progress: (sweep) => `${ns}.progress.${sweep}`,
    checkpointRequest: (sweep) => `${ns}.ckpt.${sweep}`,
    collector: (sweep) => `collector-${sweep}`,
    stateKey: (sweep, trialId) => `${sweep}.${trialId}`,
    controlKey: (sweep) => `${sweep}._control`,
    ownerKey: (sweep) => `${sweep}._owner`,
  };
}

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

/**
 * How long JetStream waits for an ack before redelivering a trial: the time a SIGKILLed worker's trial
 * waits before another worker takes it. Workers send in-progress acks at a third of the consumer's
 * actual ack wait. Default 60 s; PHASEMAP_TRIAL_ACK_WAIT_S sets it when the consumer is first created
 * (an existing consumer keeps its own).
 */
export function trialAckWaitMs(env: NodeJS.ProcessEnv = process.env): number {
  const v = env.PHASEMAP_TRIAL_ACK_WAIT_S;
  if (v === undefined || v === '') return 60_000;
  const s = Number(v);
  if (!(s >= 1 && s <= 86_400)) throw new Error(`PHASEMAP_TRIAL_ACK_WAIT_S: got ${JSON.stringify(v)}, expected seconds between 1 and 86400`);
  return Math.round(s * 1000);
}
/** Ack wait of the collector's consumer; the collector flushes buffered rows well within it. */
export const OUT_ACK_WAIT_MS = 60_000;

/** Live progress of one running trial (core NATS, best effort). */
export interface ProgressMessage {
  trial_id: string;
  attempt: number;
  step: number;
  steps: number;
  worker: string;
}

/**
 * Config of the namespace's shared worker consumer on its trials stream, in JetStream's consumer-config
 * shape (`ack_wait` in nanoseconds), created by whichever side comes first.
 */
export const workerConsumerConfig = (names: TransportNames) => ({
  durable_name: names.workerConsumer,
  filter_subject: names.trialsAll,
  ack_policy: 'explicit' as const,
  ack_wait: trialAckWaitMs() * 1_000_000,
  /**
   * Backstop only: workers enforce a trial's `max_attempts` (≤ 10) themselves (a trial that throws is
   * naked for a retry, then reported failed); a trial whose workers keep dying reaches this: the worker
   * that gets its last delivery records it failed without training it, and should that worker die too,
   * the orchestrator records it failed on JetStream's max-deliveries advisory.
   */
  max_deliver: MAX_DELIVER,
  max_ack_pending: 100_000,
});

/** Deliveries of one trial message before JetStream gives up on it (see workerConsumerConfig). */
export const MAX_DELIVER = 30;

/** Sweep-level control record in the state bucket (key `controlKey(sweep)`). */
export interface SweepControl {
  /** Set by `phasemap cancel`: workers stop the sweep's running trials at their next step and drop queued ones. */
  cancelled: boolean;
  updated_at: string;
  by?: string;
}

/** Who owns a sweep's DIR (key `ownerKey(sweep)`): a second orchestrator for the same sweep with another DIR is refused. */
export interface SweepOwner {
  dir: string;
  host: string;
  pid: number;
  started_at: string;
  /** Refreshed every ~20 s while the orchestrator runs; an owner silent for 60 s is gone. */
  heartbeat_at: string;
}
