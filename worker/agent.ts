/**
 * Worker agent: pulls trials from JetStream, runs each on a free slot, publishes its metrics chunks,
 * checkpoint chunks (schemas/transport.ts) and result, keeps the trial message alive with in-progress acks while it trains, and acks only
 * after everything of the attempt is stored by JetStream. Never blocks its event loop: training runs
 * in slot threads or processes.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { promisify } from 'node:util';
import { jetstream, jetstreamManager, type Consumer, type JetStreamClient, type JsMsg } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../schemas/metrics.js';
import type { BackendName, BackendRequest, TrialMessage, TrialResultMessage, TrialState } from '../schemas/trial.js';
import { chunkBytes, CKPT_HEADERS, DEFAULT_NAMESPACE, transportNames, trialAckWaitMs, workerConsumerConfig, type ProgressMessage, type TransportNames } from '../schemas/transport.js';
import { ProcessPool, ThreadPool, type SlotPool } from './pool.js';
import type { SlotEvent } from './slot-task.js';

export interface AgentLog {
  info(msg: string): void;
  warn(msg: string): void;
}

export interface AgentOptions {
  nc: NatsConnection;
  slots: number;
  backend: BackendRequest;
  /** Worker name (owner in trial state). Default `<host>:<pid>`. */
  name?: string;
  /** Namespace of subjects, streams and the state bucket (schemas/transport.ts); default `phasemap`. */
  namespace?: string;
  /** GPUs for per-device slot processes: `all` (nvidia-smi), `none`, or ids `0,2`; see worker/pool.ts. */
  gpus?: string;
  /** Slots per GPU (default 1). */
  slotsPerGpu?: number;
  log?: AgentLog;
}

const TF_PACKAGES = ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node'];

/**
 * Resolves a backend request on this host: `auto` = `tensorflow` when @tensorflow/tfjs-node-gpu or
 * @tensorflow/tfjs-node is installed and loads (checked in a child process, since it is native),
 * else `wasm` when @tensorflow/tfjs-backend-wasm is installed, else `cpu`.
 */
export async function resolveBackend(req: BackendRequest): Promise<BackendName> {
  if (req !== 'auto') return req;
  const require = createRequire(import.meta.url);
  for (const pkg of TF_PACKAGES) {
    try {
      require.resolve(pkg);
    } catch {
      continue;
    }
    try {
      await promisify(execFile)(process.execPath, ['-e', `import(${JSON.stringify(pkg)}).then(()=>process.exit(0),()=>process.exit(1))`], { timeout: 60_000 });
      return 'tensorflow';
    } catch {
      /* installed but does not load: fall through */
    }
  }
  try {
    require.resolve('@tensorflow/tfjs-backend-wasm');
    return 'wasm';
  } catch {
    return 'cpu';
  }
}

/** Builds the slot pool for a backend: threads for wasm/cpu, processes for tensorflow. */
export function makePool(backend: BackendName, slots: number): SlotPool {
  if (backend === 'tensorflow') return new ProcessPool(Array.from({ length: slots }, () => ({})));
  return new ThreadPool(slots);
}

export class WorkerAgent {
  readonly name: string;
  private pool: SlotPool | null = null;
  private backend: BackendName | null = null;
  private js!: JetStreamClient;
  private kv!: KV;
  private consumer!: Consumer;
  private running = new Map<string, JsMsg>();
  private stopping = false;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private maxBytes = DEFAULT_MAX_MESSAGE_BYTES;
  private readonly names: TransportNames;

  constructor(private readonly opts: AgentOptions) {
    this.name = opts.name ?? `${hostname()}:${process.pid}`;
    this.names = transportNames(opts.namespace ?? DEFAULT_NAMESPACE);
  }

  /** Resolves the backend, starts the slots and begins pulling trials. */
  async start(): Promise<BackendName> {
    const { nc } = this.opts;
    this.backend = await resolveBackend(this.opts.backend);
    this.opts.log?.info(`worker ${this.name}: ${this.opts.slots} slot(s), backend ${this.backend}`);
    this.pool = makePool(this.backend, this.opts.slots);
    this.js = jetstream(nc);
    // Keep the payload limit a little under the server's: headers and framing share it.
    const maxPayload = nc.info?.max_payload ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxBytes = maxPayload - Math.min(4096, Math.floor(maxPayload / 8));
    const jsm = await jetstreamManager(nc);
    // A worker may join a cluster before any orchestrator has created the streams and the bucket.
    for (let waited = false; ; waited = true) {
      try {
        await jsm.streams.info(this.names.trialsStream);
        this.kv = await new Kvm(this.js).open(this.names.stateBucket);
        break;
      } catch {
        if (this.stopping) return this.backend;
        if (!waited) this.opts.log?.info(`worker ${this.name}: waiting for an orchestrator (phasemap run) to create the phasemap streams`);
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    await jsm.consumers.info(this.names.trialsStream, this.names.workerConsumer).catch(() => jsm.consumers.add(this.names.trialsStream, workerConsumerConfig(this.names)));
    this.consumer = await this.js.consumers.get(this.names.trialsStream, this.names.workerConsumer);
    this.loop = this.pull();
    return this.backend;
  }

  private async pull(): Promise<void> {
    while (!this.stopping) {
      if (this.running.size >= this.opts.slots) {
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      let m: JsMsg | null = null;
      try {
        m = await this.consumer.next({ expires: 2000 });
      } catch (e) {
        if (this.stopping) break;
        this.opts.log?.warn(`worker ${this.name}: pull failed (${(e as Error).message}); retrying`);
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (!m) continue;
      if (this.stopping) {
        m.nak();
        break;
      }
      void this.handle(m);
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    let trial: TrialMessage;
    try {
      trial = JSON.parse(m.string()) as TrialMessage;
    } catch (e) {
      this.opts.log?.warn(`worker ${this.name}: dropping a trial message that is not JSON (${(e as Error).message})`);
      m.term('not JSON');
      return;
    }
    const attempt = (trial.attempt_base ?? 0) + m.info.deliveryCount;
    const key = `${trial.trial_id}#${attempt}`;
    this.running.set(key, m);
    const heartbeat = setInterval(() => m.working(), trialAckWaitMs() / 3);
    const { nc } = this.opts;
    const enc = new TextEncoder();
    try {
      const state: TrialState = { status: 'running', attempt, owner: this.name, updated_at: new Date().toISOString() };
      await this.kv.put(this.names.stateKey(trial.sweep, trial.trial_id), JSON.stringify(state));
      let chain: Promise<unknown> = Promise.resolve();
      let publishError: Error | null = null;
      const onEvent = (e: SlotEvent) => {
        if (e.type === 'metrics') {
          chain = chain.then(() => this.js.publish(this.names.metrics(trial.sweep), e.bytes)).catch((err: Error) => {
            publishError ??= err;
          });
        } else if (e.type === 'checkpoint') {
          // One message per chunk, in order, before the result (schemas/transport.ts CKPT_HEADERS).
          const sha = createHash('sha256').update(e.bytes).digest('hex');
          // Headers count against max_payload too: keep each chunk 1 KiB under the server's limit.
          const serverMax = nc.info?.max_payload ?? DEFAULT_MAX_MESSAGE_BYTES;
          const parts = chunkBytes(e.bytes, Math.max(1024, Math.min(this.maxBytes, serverMax - 1024)));
          parts.forEach((part, i) => {
            const h = headers();
            h.set(CKPT_HEADERS.trialId, trial.trial_id);
            h.set(CKPT_HEADERS.attempt, String(attempt));
            h.set(CKPT_HEADERS.step, String(e.step));
            h.set(CKPT_HEADERS.chunk, String(i));
            h.set(CKPT_HEADERS.chunks, String(parts.length));
            h.set(CKPT_HEADERS.totalBytes, String(e.bytes.length));
            h.set(CKPT_HEADERS.sha256, sha);
            chain = chain.then(() => this.js.publish(this.names.checkpoint(trial.sweep, trial.trial_id), part, { headers: h })).catch((err: Error) => {
              publishError ??= err;
            });
          });
        } else if (e.type === 'progress') {
          const p: ProgressMessage = { trial_id: trial.trial_id, attempt, step: e.step, steps: e.steps, worker: this.name };
          nc.publish(this.names.progress(trial.sweep), enc.encode(JSON.stringify(p)));
        }
      };
      const out = await this.pool!.run({ trial, attempt, backend: this.backend!, maxBytes: this.maxBytes }, onEvent);
      await chain;
      if (publishError) throw publishError;
      const result: TrialResultMessage = {
        sweep: trial.sweep, trial_id: trial.trial_id, attempt, status: out.status, started_at: out.started_at, finished_at: out.finished_at,
        wall_seconds: out.wall_seconds, final_loss: out.final_loss, final_rel_l2: out.final_rel_l2, diverged: out.diverged,
        steps_done: out.steps_done, rows: out.rows, host: out.host, device: out.device, backend: out.backend, worker: this.name, slot: '', visible_devices: null, resumed_from: null, error: out.error,
      };
      await this.js.publish(this.names.result(trial.sweep, trial.trial_id), enc.encode(JSON.stringify(result)));
      await m.ackAck();
      this.opts.log?.info(`worker ${this.name}: trial ${trial.trial_id} attempt ${attempt} ${out.status}${out.error ? `: ${out.error}` : ''}`);
    } catch (e) {
      // Transport trouble (not the trial's own error): hand the trial back for another attempt.
      this.opts.log?.warn(`worker ${this.name}: trial ${trial.trial_id} attempt ${attempt} handed back: ${(e as Error).message}`);
      m.nak(1000);
    } finally {
      clearInterval(heartbeat);
      this.running.delete(key);
      this.wake?.();
      this.wake = null;
    }
  }

  /** Trials running on this worker now. */
  get inFlight(): number {
    return this.running.size;
  }

  /**
   * Stops pulling. With `handBack`, in-flight trials are nak'ed at once (redelivered elsewhere) and the
   * slots are torn down; otherwise it waits for them to finish.
   */
  async stop(handBack = false): Promise<void> {
    this.stopping = true;
    this.wake?.();
    if (handBack) for (const m of this.running.values()) m.nak();
    await this.loop;
    if (!handBack) while (this.running.size) await new Promise((r) => setTimeout(r, 200));
    await this.pool?.close();
  }
}
