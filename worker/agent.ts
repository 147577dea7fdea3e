/**
 * Worker agent: pulls trials from JetStream, claims each in the trial-state bucket (compare-and-set,
 * schemas/trial-state.ts), runs it on a free slot, publishes its metrics chunks, checkpoint chunks
 * (schemas/transport.ts) and result, keeps the trial message alive with in-progress acks and its state
 * with heartbeats while it trains, and acks only after everything of the attempt is stored by JetStream.
 * Never blocks its event loop: training runs in slot threads or processes.
 *
 * Failure rules: a trial that throws is handed back (nak) for a retry until it has failed `max_attempts`
 * times in this run, then recorded `failed` with its error; a redelivered trial (its worker died) is
 * taken over and, when its sweep checkpoints, resumes from the last checkpoint the orchestrator holds;
 * a worker that finds it no longer owns a trial (another took it over) stops it and publishes nothing
 * more for it; `phasemap cancel` (the sweep's control key) stops running trials at their next step.
 *
 * Trial fusion (issue 5): a free slot may train a group of same-shaped trials (equal `fusionKey`) as one
 * batched computation (pool `runGroup`), up to K trials (K: the `fuse` option, default the trainer's
 * `fusionLimit` for the config and backend). The pull loop forms the groups of all free slots at once:
 * it tops a small local queue up with one pull of this worker's share of what the stream holds
 * undelivered (idle slots of other workers get theirs; expiry 1 s, the client's least), sized so that
 * the trials spread evenly over the slots and rounds (`balancedGroupSize`), then cuts the queue into
 * groups per key (`planGroups`). Trials that do not fit wait in the queue (kept alive with in-progress
 * acks, nak'ed when the agent stops) and are served before new pulls. A trial that may resume from a
 * checkpoint runs alone. Each trial of a group keeps its own claim, heartbeats,
 * publish pipeline, retries, cancel, take-over ('lost' stops that trial only) and result (`fused` = the
 * group's size).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { hostname } from 'node:os';
import { promisify } from 'node:util';
import { jetstream, jetstreamManager, type Consumer, type JetStreamClient, type JetStreamManager, type JsMsg } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { headers, type NatsConnection } from '@nats-io/transport-node';
import { DEFAULT_MAX_MESSAGE_BYTES } from '../schemas/metrics.js';
import { TRIAL_ID_PATTERN } from '../schemas/parquet.js';
import { casState, readState, TERMINAL, writeStateIf } from '../schemas/trial-state.js';
import type { BackendName, BackendRequest, TrialMessage, TrialResultMessage, TrialState } from '../schemas/trial.js';
import { chunkBytes, CKPT_HEADERS, DEFAULT_NAMESPACE, MAX_DELIVER, transportNames, workerConsumerConfig, type ProgressMessage, type SweepControl, type TransportNames } from '../schemas/transport.js';
import { logConnectionEvents } from '../orchestrator/nats-connect.js';
import { fetchCheckpoint } from './checkpoint-fetch.js';
import { makeSlotPool, type SlotPool } from './pool.js';
import { parseFuse } from './fuse.js';
import { MAX_GROUP } from './slot-stop.js';
import type { SlotEvent, SlotOutcome, SlotTask } from './slot-task.js';
import { blasStatus, fusionKey, fusionLimit, nativeStreams } from './trainer/index.js';

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
  /**
   * Most trials one slot trains fused (issue 5): `auto` = the trainer's `fusionLimit(config, backend)`
   * for each trial (1 where fusion does not pay); an integer N in 1…MAX_GROUP = up to N same-shaped
   * trials per slot whatever that rule says (1 = never fuse). Default: $PHASEMAP_FUSE when set (as
   * `parseFuse` reads it; `phasemap run --fuse` sets it for its local worker), else `auto`.
   */
  fuse?: number | 'auto';
  /**
   * Run trials of user problem modules (`problem.module`: code from whoever can publish trials; see
   * docs/problems.md). Without it such a trial is refused: handed back (nak, with a jittered delay that
   * grows per delivery) for a worker that allows modules, and failed only on its last delivery. Each
   * refusal is a delivery: the attempt numbers of such a trial have gaps (its max_attempts count failures).
   */
  allowModules?: boolean;
  log?: AgentLog;
  /** Trial labels by id (orchestrator/trial-names.ts): filled from the `label` of each trial message pulled, for a logger that names trials. */
  labels?: Map<string, string>;
}

/** Parses a `--fuse` value (worker/fuse.ts). */
export { parseFuse };

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


/** Default of a trial's max_attempts when its message does not say. */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** How long a publish is retried (e.g. across a nats-server restart) before the attempt is handed back. */
const PUBLISH_RETRY_MS = 10 * 60_000;
/** Metrics and checkpoint publishes of one attempt awaiting their JetStream ack at once. */
const PUBLISH_WINDOW = 32;

/**
 * Prefix of a trial attempt's Nats-Msg-Ids: unique per run of a sweep (`run_id`), so JetStream's
 * duplicate window never drops the messages of another sweep (or another run) with the same trial
 * config, while a retried publish of the same message stays idempotent.
 */
const msgBase = (t: TrialMessage) => `${t.run_id ?? t.sweep}.${t.trial_id}`;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * The delay of the nak that hands a trial message back for redelivery at once (`handBackMsg`). Not a
 * bare nak: nats-server keeps a bare nak only in the consumer's in-memory redelivery queue and leaves
 * the stored pending record as it was (stamped with the last in-progress ack), so when the server
 * restarts before another worker takes the message — the embedded server of an interrupted
 * `phasemap run` stops with it — the restored consumer redelivers it only once the ack wait has passed
 * since that heartbeat (up to a minute). A nak with a delay backdates the pending record to "ack wait
 * expired" and stores it: the message is redelivered at once, by a live server (within ~10 ms) and by
 * a restarted one as soon as it is up.
 */
const HANDBACK_NAK_DELAY_MS = 1;

/** Hands a trial message back for redelivery at once, also across a server restart (HANDBACK_NAK_DELAY_MS). */
const handBackMsg = (m: JsMsg) => m.nak(HANDBACK_NAK_DELAY_MS);

/** The namespace's streams or bucket do not exist (yet). */
class NoStreams extends Error {}

/** One trial running on this worker. */
interface Running {
  trial: TrialMessage;
  attempt: number;
  msg: JsMsg;
  key: string;
  /** Revision of our last write of the trial's state. */
  revision: number;
  state: TrialState;
  /** Aborts the slot's training at its next step. */
  stop: AbortController;
  /** Why it was stopped: cancelled (sweep cancel), lost (another worker owns it), handback (this worker stops). */
  why: 'cancelled' | 'lost' | 'handback' | null;
  step: number;
  /** Set once training returned: heartbeats stop writing (the end state is written by compare-and-set). */
  ending: boolean;
  /** Where it runs, from the slot's `start` event (written with the next heartbeat). */
  where: Pick<TrialState, 'slot' | 'device' | 'backend'>;
}

/** A pulled trial message, parsed, not yet claimed (a slot's first trial, a group-mate, or one waiting in the local queue). */
interface Pulled {
  m: JsMsg;
  trial: TrialMessage;
  /** This delivery's attempt number: attempt_base + delivery count. */
  attempt: number;
  /** `fusionKey` of its config when it may be fused (it will not resume from a checkpoint); null: it runs alone. */
  key: string | null;
}

/** A claimed trial ready to run on a slot: its state, its slot task and its publish pipeline. */
interface Prepared {
  r: Running;
  task: SlotTask;
  heartbeat: ReturnType<typeof setInterval>;
  /** Publishes the slot's events of this trial (metrics, checkpoints) and follows its progress. */
  onEvent: (e: SlotEvent) => void;
  /** Resolves once every publish issued so far is stored (or failed: see `publishError`). */
  drain: () => Promise<void>;
  /** The first publish of the attempt that failed for good, if any. */
  publishError: () => Error | null;
}

/** How long stop() waits for the server to confirm the hand-back naks (a flush) before it goes on regardless. */
const FLUSH_MS = 5000;
/** How long a top-up pull for the free slots waits for its messages (the client's minimum pull expiry). */
const GATHER_EXPIRES_MS = 1000;
/**
 * A trial that arrived while the worker waited for one starts its slot this much later, when it may be
 * fused: the rest of its submission (published a few ms apart) then lands first and can join its group.
 */
const SUBMISSION_SETTLE_MS = 30;

export class WorkerAgent {
  readonly name: string;
  private pool: SlotPool | null = null;
  private backend: BackendName | null = null;
  private js!: JetStreamClient;
  private kv!: KV;
  private consumer!: Consumer;
  private running = new Map<string, Running>();
  /** Slots taken: slot runs (one trial or a fused group) pulled and not trained yet (claiming or running). */
  private taken = 0;
  /** Slot runs not ended yet: taken ones and those whose trials are still ending (results, acks). */
  private slotRuns = 0;
  /** Pulled trials waiting for a slot (they did not fit a group); served before new pulls. */
  private queue: Pulled[] = [];
  private keepAlive: ReturnType<typeof setInterval> | null = null;
  private readonly fuse: number | 'auto';
  /** Set by stop(true): a trial claimed from now on is handed back at once. */
  private handingBack = false;
  private stopping = false;
  /** Set by abort(): retries give up at once. */
  private aborted = false;
  /** Pulls failed in a row, and when the last warning about it was logged. */
  private pullFailures = 0;
  private pullWarnedAt = 0;
  private loop: Promise<void> | null = null;
  private wake: (() => void) | null = null;
  private maxBytes = DEFAULT_MAX_MESSAGE_BYTES;
  private readonly names: TransportNames;
  private ackWaitMs = 60_000;
  private cancelled = new Set<string>();
  private watcher: { stop(): void } | null = null;
  private jsm!: JetStreamManager;
  /** A pollControl is running. */
  private polling = false;
  private readonly host = hostname();

  constructor(private readonly opts: AgentOptions) {
    this.name = opts.name ?? `${hostname()}:${process.pid}`;
    this.names = transportNames(opts.namespace ?? DEFAULT_NAMESPACE);
    const env = process.env.PHASEMAP_FUSE;
    this.fuse = opts.fuse ?? (env ? parseFuse(env, 'PHASEMAP_FUSE') : 'auto');
    if (this.fuse !== 'auto') parseFuse(String(this.fuse), 'fuse');
  }

  /** Resolves the backend, starts the slots and begins pulling trials. */
  async start(): Promise<BackendName> {
    const { nc } = this.opts;
    if (this.opts.log) logConnectionEvents(nc, this.opts.log);
    this.backend = await resolveBackend(this.opts.backend);
    this.pool = await makeSlotPool(this.backend, { slots: this.opts.slots, gpus: this.opts.gpus, slotsPerGpu: this.opts.slotsPerGpu });
    this.opts.log?.info(`worker ${this.name}: ${this.pool.size} slot(s), backend ${this.backend}${this.backend === 'wasm' ? ` (${wasmNativeSummary()})` : ''}, namespace ${this.names.ns}`);
    this.js = jetstream(nc);
    // Keep the payload limit a little under the server's: headers and framing share it.
    const maxPayload = nc.info?.max_payload ?? DEFAULT_MAX_MESSAGE_BYTES;
    this.maxBytes = maxPayload - Math.min(4096, Math.floor(maxPayload / 8));
    const jsm = await jetstreamManager(nc);
    this.jsm = jsm;
    // A worker may join a cluster before any orchestrator has created the streams and the bucket, or
    // while a NATS node is lost and its streams and consumers elect new leaders (JetStream answers
    // "temporarily unavailable" or not at all for a few seconds): it waits, then starts.
    let said = '';
    for (;;) {
      try {
        await jsm.streams.info(this.names.trialsStream).catch((e: Error) => {
          throw /stream not found/i.test(e.message) ? new NoStreams() : e;
        });
        this.kv = await new Kvm(this.js).open(this.names.stateBucket);
        // open() does not prove the bucket exists yet (an orchestrator creates it after the streams).
        await this.kv.status().catch((e: Error) => {
          throw /stream not found/i.test(e.message) ? new NoStreams() : e;
        });
        const ci = await jsm.consumers.info(this.names.trialsStream, this.names.workerConsumer).catch((e: Error) => {
          if (/consumer not found/i.test(e.message)) return jsm.consumers.add(this.names.trialsStream, workerConsumerConfig(this.names));
          throw e;
        });
        this.ackWaitMs = Math.max(1000, Math.round((ci.config.ack_wait ?? 60e9) / 1e6));
        this.consumer = await this.js.consumers.get(this.names.trialsStream, this.names.workerConsumer);
        break;
      } catch (e) {
        if (this.stopping) return this.backend;
        const why = e instanceof NoStreams ? 'streams' : (e as Error).message;
        if (why !== said) {
          this.opts.log?.info(
            e instanceof NoStreams
              ? `worker ${this.name}: waiting for an orchestrator (phasemap run) to create the ${this.names.ns} streams`
              : `worker ${this.name}: JetStream not ready (${why}); trying again`,
          );
          said = why;
        }
        await sleep(1000);
      }
    }
    await this.watchControl();
    // Trials waiting in the local queue keep their messages (in-progress acks, as running ones do).
    this.keepAlive = setInterval(() => {
      for (const q of this.queue) q.m.working();
      void this.pollControl();
    }, Math.max(500, this.ackWaitMs / 3));
    this.loop = this.pull();
    return this.backend;
  }

  /**
   * Follows the sweeps' control keys: a cancelled sweep's running trials stop at their next step. The
   * watcher is a one-replica consumer: on nats-server 2.9 with a node of the cluster down, creating
   * one fails about half the time (it is placed on the dead node and the request times out), and
   * nats.js gives a watcher up after 30 failed re-creations. So a worker does not fail to start for
   * it: it tries again every few seconds until it has one (pollControl covers the gap), and starts a
   * new one should the old one end.
   */
  private async watchControl(): Promise<void> {
    const open = async () => {
      const it = await this.kv.watch({ key: '*._control' });
      this.watcher = it;
      if (this.stopping) it.stop(); // stop() ran meanwhile
      return it;
    };
    const follow = async (it: Awaited<ReturnType<typeof open>>) => {
      for await (const e of it) {
        let c: SweepControl | null = null;
        try {
          c = e.operation === 'PUT' ? e.json<SweepControl>() : null;
        } catch {
          c = null;
        }
        this.applyControl(e.key.slice(0, -'._control'.length), c);
      }
    };
    let first: Awaited<ReturnType<typeof open>> | null = await open().catch(() => null);
    void (async () => {
      let warned = false;
      while (!this.stopping) {
        const it = first ?? (await open().catch(() => null));
        first = null;
        if (it) {
          if (warned) this.opts.log?.info(`worker ${this.name}: watching the sweeps' cancel flags again`);
          warned = false;
          await follow(it).catch(() => undefined);
        } else if (!warned) {
          warned = true;
          this.opts.log?.warn(`worker ${this.name}: cannot watch the sweeps' cancel flags now (a NATS node down?); reading them every ${Math.round(Math.max(500, this.ackWaitMs / 3) / 1000)} s meanwhile, trying again`);
        }
        if (!this.stopping) await sleep(3000);
      }
    })();
  }

  private applyControl(sweep: string, c: SweepControl | null): void {
    if (c?.cancelled) {
      this.cancelled.add(sweep);
      for (const r of this.running.values()) if (r.trial.sweep === sweep) this.halt(r, 'cancelled');
    } else this.cancelled.delete(sweep);
  }

  /**
   * A sweep's control record as the bucket's stream leader has it (not a possibly lagging replica's
   * copy, as a direct get may return); null when there is none, undefined when it cannot be read now.
   */
  private async readControl(sweep: string): Promise<SweepControl | null | undefined> {
    try {
      const m = await this.jsm.streams.getMessage(`KV_${this.names.stateBucket}`, { last_by_subj: `$KV.${this.names.stateBucket}.${this.names.controlKey(sweep)}` });
      const op = m?.header?.get('KV-Operation');
      return !m || op === 'DEL' || op === 'PURGE' ? null : m.json<SweepControl>();
    } catch {
      return undefined;
    }
  }

  /**
   * The watcher's back-up, every third of the ack wait: reads the control record of each sweep this
   * worker runs trials of or holds cancelled. The watcher is a consumer on one NATS node; when that
   * node dies, nats.js notices only after two missed 30 s heartbeats and recreates it elsewhere, and
   * meanwhile a `phasemap cancel` went unnoticed here for up to ~1.5 minutes.
   */
  private async pollControl(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      const sweeps = new Set([...[...this.running.values()].map((r) => r.trial.sweep), ...this.cancelled]);
      for (const sweep of sweeps) {
        const c = await this.readControl(sweep);
        if (c !== undefined) this.applyControl(sweep, c);
      }
    } finally {
      this.polling = false;
    }
  }

  private halt(r: Running, why: NonNullable<Running['why']>): void {
    if (r.why) return;
    r.why = why;
    r.stop.abort(why);
  }

  private async pull(): Promise<void> {
    while (!this.stopping) {
      if (this.taken >= this.pool!.size) {
        await new Promise<void>((r) => (this.wake = r));
        continue;
      }
      // Trials already pulled (that did not fit a group) first; else wait for one.
      if (!this.queue.length) {
        let m: JsMsg | null = null;
        const t0 = Date.now();
        try {
          m = await this.consumer.next({ expires: 2000 });
        } catch (e) {
          if (this.stopping) break;
          // Once, then at most once a minute while it goes on (not a line per retry).
          this.pullFailures++;
          if (this.pullFailures === 1 || Date.now() - this.pullWarnedAt >= 60_000) {
            this.pullWarnedAt = Date.now();
            this.opts.log?.warn(`worker ${this.name}: pull failed (${(e as Error).message})${this.pullFailures > 1 ? `, ${this.pullFailures} times in a row` : ''}; retrying every second`);
          }
          await sleep(1000);
          continue;
        }
        if (this.pullFailures > 1) this.opts.log?.info(`worker ${this.name}: pulling works again (after ${this.pullFailures} failed pulls)`);
        this.pullFailures = 0;
        if (!m) continue;
        if (this.stopping) {
          handBackMsg(m);
          break;
        }
        const p = this.parse(m);
        if (!p) continue;
        this.queue.push(p);
        // It arrived while we waited: the rest of its submission is likely still being published.
        if (Date.now() - t0 > SUBMISSION_SETTLE_MS && this.groupLimit(p) > 1) await sleep(SUBMISSION_SETTLE_MS);
      }
      const free = this.pool!.size - this.taken;
      const known = await this.topUp(free);
      if (this.stopping) break;
      // Every free slot gets its group now, formed from the whole local queue (not one slot at a time).
      const picked = planGroups(this.queue.map((p) => ({ key: p.key, size: balancedGroupSize(known.trials, this.groupLimit(p), known.slots) })), free);
      const groups = picked.map((g) => g.map((i) => this.queue[i]!));
      const used = new Set(picked.flat());
      this.queue = this.queue.filter((_, i) => !used.has(i));
      for (const group of groups) {
        this.taken++;
        this.slotRuns++;
        const seq = group[0]!.m.seq;
        let released = false;
        // The slot is free for the next group as soon as it has trained this one (its trials' results,
        // state writes and acks go on meanwhile).
        const release = () => {
          if (released) return;
          released = true;
          this.taken--;
          this.wake?.();
          this.wake = null;
        };
        void this.runSlot(group, release)
          .catch((e: Error) => this.opts.log?.warn(`worker ${this.name}: slot run of trial message #${seq} failed: ${e.message}`))
          .finally(() => {
            release();
            this.slotRuns--;
          });
      }
    }
  }

  /**
   * Parses a pulled trial message. A message that is not a trial is terminated (logged) and null returned.
   * @returns the trial with its attempt and, when it may be fused, its fusion key.
   */
  private parse(m: JsMsg): Pulled | null {
    let trial: TrialMessage;
    try {
      trial = JSON.parse(m.string()) as TrialMessage;
      if (!TRIAL_ID_PATTERN.test(trial.trial_id) || !/^[A-Za-z0-9_-]{1,64}$/.test(trial.sweep)) throw new Error(`bad trial_id ${JSON.stringify(trial.trial_id)} or sweep ${JSON.stringify(trial.sweep)}`);
    } catch (e) {
      this.opts.log?.warn(`worker ${this.name}: dropping a trial message that is not a trial (${(e as Error).message})`);
      m.term('not a trial message');
      return null;
    }
    if (typeof trial.label === 'string' && trial.label) this.opts.labels?.set(trial.trial_id, trial.label.slice(0, 200));
    const attempt = (trial.attempt_base ?? 0) + m.info.deliveryCount;
    const mod = (trial.config?.problem as { module?: unknown } | undefined)?.module;
    if (mod !== undefined && !this.opts.allowModules) {
      this.refuseModule(m, trial, attempt, String(mod));
      return null;
    }
    let key: string | null = null;
    // A trial that may resume from a checkpoint, or is on its last delivery, runs alone.
    if (!mayResume(trial, attempt) && m.info.deliveryCount < MAX_DELIVER) {
      try {
        key = fusionKey(trial.config);
      } catch {
        key = null; // a config the trainer will reject: it fails alone
      }
    }
    return { m, trial, attempt, key };
  }

  /**
   * Refuses a trial of a problem module on a worker without --allow-modules: it is not claimed and goes
   * back to the queue (nak, delayed about 1 s, 2 s, 4 s … up to 60 s by delivery, jittered) for a worker that allows
   * modules; on its last delivery it is failed, saying why.
   */
  private refuseModule(m: JsMsg, trial: TrialMessage, attempt: number, path: string): void {
    const why = `trial ${trial.trial_id} runs the problem module ${path} (user code); this worker was started without --allow-modules`;
    if (m.info.deliveryCount >= MAX_DELIVER) {
      this.opts.log?.warn(`worker ${this.name}: ${why}; last delivery: failing it`);
      void this.finishWithoutTraining(trial, attempt, 'failed', `no worker started with --allow-modules took it in ${m.info.deliveryCount} deliveries (it runs the problem module ${path})`)
        .catch(() => undefined)
        .then(() => m.ackAck().catch(() => undefined));
      return;
    }
    // Jittered: a delay in step with this worker's own pull requests (which expire every 2 s) would hand
    // the message back to this worker's oldest waiting request each time, not to another worker's.
    const delay = Math.round(Math.min(60_000, 1000 * 2 ** Math.min(m.info.deliveryCount - 1, 6) * (0.5 + Math.random())));
    this.opts.log?.warn(`worker ${this.name}: ${why}: handed back for a worker that allows modules (start one with: phasemap worker --allow-modules)`);
    m.nak(delay);
  }

  /** Most trials a slot trains fused with `p` (1: alone): the `fuse` option, or the trainer's rule for `auto`. */
  private groupLimit(p: Pulled): number {
    if (p.key === null || this.fuse === 1) return 1;
    let k = this.fuse;
    if (k === 'auto') {
      try {
        k = fusionLimit(p.trial.config, this.backend!);
      } catch {
        k = 1;
      }
    }
    return Math.max(1, Math.min(MAX_GROUP, Math.floor(k)));
  }

  /**
   * Tops the local queue up for `free` slots: reads what the stream holds undelivered and the idle pull
   * requests of other workers, then pulls this worker's share in one fetch — enough for a balanced group
   * (`balancedGroupSize`) on each free slot, counting what the queue holds already. A queue of trials
   * that run alone pulls one per free slot.
   * @returns the trials known (queue + undelivered) and the slots sharing them, to size the groups by.
   */
  private async topUp(free: number): Promise<{ trials: number; slots: number }> {
    let pending = 0;
    let idle = 0;
    try {
      const ci = await this.consumer.info(false);
      pending = ci.num_pending;
      idle = ci.num_waiting ?? 0; // other workers' idle slots: this worker's loop is not pulling now
    } catch {
      return { trials: this.queue.length, slots: free }; // transport trouble: form groups from what we have
    }
    const known = { trials: this.queue.length + pending, slots: Math.max(1, free + idle) };
    const limit = Math.max(...this.queue.map((p) => this.groupLimit(p)));
    const share = Math.ceil((pending * free) / known.slots);
    const want = Math.min(share, free * balancedGroupSize(known.trials, limit, known.slots) - this.queue.length);
    if (want <= 0 || this.stopping) return known;
    try {
      const it = await this.consumer.fetch({ max_messages: want, expires: GATHER_EXPIRES_MS });
      for await (const m of it) {
        if (this.stopping) {
          handBackMsg(m);
          continue;
        }
        const p = this.parse(m);
        if (p) this.queue.push(p);
      }
    } catch (e) {
      this.opts.log?.warn(`worker ${this.name}: pulling trials for the free slots failed (${(e as Error).message}); running what is pulled`);
    }
    return known;
  }

  /**
   * One slot run: a group of one trial, or of same-shaped trials trained fused (`planGroups`). Every
   * trial is claimed and set up on its own (`prepare`), the group runs on one slot (pool `runGroup`),
   * `release` frees the slot for the next group, and every trial ends on its own (`finish`: result,
   * retry, ack). A trial whose preparation or ending throws is handed back (nak) for redelivery; a slot
   * that fails hands back every trial of its group.
   */
  private async runSlot(group: Pulled[], release: () => void): Promise<void> {
    const giveBack = (p: Pulled, e: Error) => {
      // After abort() the slots were torn down on purpose: the stop already said so.
      if (!this.aborted) this.opts.log?.warn(`worker ${this.name}: trial message #${p.m.seq} handed back: ${e.message}`);
      p.m.nak(1000);
    };
    const prepared = (await Promise.all(group.map((p) => this.prepare(p).catch((e: Error) => (giveBack(p, e), null))))).filter((p): p is Prepared => p !== null);
    if (!prepared.length) return;
    if (prepared.length > 1) this.opts.log?.info(`worker ${this.name}: ${prepared.length} trials fused on one slot: ${prepared.map((p) => `${p.r.trial.trial_id}#${p.r.attempt}`).join(', ')}`);
    let outs: Array<SlotOutcome | Error>;
    try {
      outs = await this.pool!.runGroup(prepared.map((p) => p.task), (i, e) => prepared[i]!.onEvent(e), prepared.map((p) => p.r.stop.signal));
    } catch (e) {
      outs = prepared.map(() => e as Error);
    }
    release();
    await Promise.all(prepared.map((p, i) => this.finish(p, outs[i]!).catch((e: Error) => giveBack({ m: p.r.msg, trial: p.r.trial, attempt: p.r.attempt, key: null }, e))));
  }

  /** Retries a JetStream publish until it is stored (Nats-Msg-Id makes a retry idempotent), for up to PUBLISH_RETRY_MS. */
  private async publish(subject: string, data: Uint8Array, msgID: string, h?: ReturnType<typeof headers>): Promise<void> {
    const t0 = Date.now();
    for (let wait = 250; ; wait = Math.min(wait * 2, 5000)) {
      try {
        await this.js.publish(subject, data, { msgID, headers: h, timeout: 10_000 });
        return;
      } catch (e) {
        if (this.aborted || Date.now() - t0 > PUBLISH_RETRY_MS) throw e;
        await sleep(wait);
      }
    }
  }

  /** Retries a trial-state operation across transport trouble (not across lost races: casState handles those). */
  private async retry<T>(what: string, f: () => Promise<T>): Promise<T> {
    const t0 = Date.now();
    for (let wait = 250; ; wait = Math.min(wait * 2, 5000)) {
      try {
        return await f();
      } catch (e) {
        if (this.aborted || Date.now() - t0 > PUBLISH_RETRY_MS) throw new Error(`${what}: ${(e as Error).message}`);
        await sleep(wait);
      }
    }
  }

  private result(trial: TrialMessage, attempt: number, out: SlotOutcome, status: TrialResultMessage['status']): TrialResultMessage {
    return {
      sweep: trial.sweep, trial_id: trial.trial_id, attempt, status, started_at: out.started_at, finished_at: out.finished_at,
      wall_seconds: out.wall_seconds, final_loss: out.final_loss, final_rel_l2: out.final_rel_l2, diverged: out.diverged,
      steps_done: out.steps_done, rows: out.rows, host: out.host, device: out.device, backend: out.backend, worker: this.name,
      slot: out.slot ?? '', visible_devices: out.visible_devices ?? null, resumed_from: out.resumed_from ?? null, error: out.error,
      fused: out.fused ?? 1,
    };
  }

  /**
   * Claims a pulled trial and sets it up to run: the last-delivery check, the claim (compare-and-set to
   * running under this worker), its heartbeat, its publish pipeline and its resume point.
   * @returns null when it is not to run (finished already, sweep cancelled, last delivery, handed back
   *   because the agent stops): its message is then acked or nak'ed here.
   * @throws Error when the claim fails for good (transport); the caller hands the message back.
   */
  private async prepare(p: Pulled): Promise<Prepared | null> {
    const { m, trial, attempt } = p;
    const key = this.names.stateKey(trial.sweep, trial.trial_id);
    const now = () => new Date().toISOString();
    if (m.info.deliveryCount >= MAX_DELIVER) {
      // JetStream's last delivery: its workers kept dying (or being cut off) while training it.
      await this.finishWithoutTraining(trial, attempt, 'failed', `no worker finished it: delivered ${m.info.deliveryCount} times without an ack (its workers died or were stopped each time)`);
      await m.ackAck().catch(() => undefined);
      return null;
    }

    // Claim the trial: compare-and-set its state to running under this worker.
    let finished: TrialState | null = null;
    if (this.cancelled.has(trial.sweep)) {
      // Held cancelled: make sure it still is (a new run of the sweep clears it, and the watcher may be behind).
      const c = await this.readControl(trial.sweep);
      if (c !== undefined) this.applyControl(trial.sweep, c);
    }
    let cancelled = this.cancelled.has(trial.sweep);
    // Whether an earlier delivery was claimed (trained, or started to): else they were all handed back
    // unclaimed (refused by workers without --allow-modules, or by a stopping worker).
    let claimedBefore = false;
    const claim = await this.retry('claim', () =>
      casState(this.kv, key, (cur) => {
        finished = null;
        claimedBefore = (cur?.attempt ?? 0) > (trial.attempt_base ?? 0);
        if (cur && TERMINAL.has(cur.status)) {
          // Finished already (its worker died after recording it, before its ack): nothing to run.
          finished = cur;
          return null;
        }
        if (cancelled) return null;
        return {
          status: 'running', attempt, owner: this.name, host: this.host, device: null, slot: null, backend: this.backend,
          step: 0, steps: trial.config.train.steps, heartbeat_at: now(), updated_at: now(), failures: cur?.failures ?? 0, error: cur?.error ?? null,
        };
      }),
    );
    if (!claim) {
      const done = finished as TrialState | null;
      if (done) {
        if (done.result) await this.publish(this.names.result(trial.sweep, trial.trial_id), new TextEncoder().encode(JSON.stringify(done.result)), `${msgBase(trial)}.${done.result.attempt}.result`);
        this.opts.log?.info(`worker ${this.name}: trial ${trial.trial_id} is ${done.status} already (attempt ${done.attempt}); dropping its message`);
      } else if (cancelled) {
        await this.finishWithoutTraining(trial, attempt, 'cancelled', 'sweep cancelled before this trial started');
      }
      await m.ackAck().catch(() => undefined);
      return null;
    }
    if (m.info.deliveryCount > 1)
      this.opts.log?.info(
        claimedBefore
          ? `worker ${this.name}: trial ${trial.trial_id} attempt ${attempt}: delivery ${m.info.deliveryCount}, taken over (its last attempt ${claim.state.error ? 'failed' : 'did not finish'})`
          : `worker ${this.name}: trial ${trial.trial_id} attempt ${attempt}: delivery ${m.info.deliveryCount} (the earlier ones were handed back unclaimed)`,
      );
    const r: Running = { trial, attempt, msg: m, key, revision: claim.revision, state: claim.state, stop: new AbortController(), why: null, step: 0, ending: false, where: {} };
    this.running.set(`${trial.trial_id}#${attempt}`, r);
    if (this.handingBack) {
      // stop(true) ran while this trial was being claimed: hand it back as stop() does the running ones.
      await this.handBack(r);
      this.running.delete(`${trial.trial_id}#${attempt}`);
      return null;
    }
    const heartbeat = setInterval(() => void this.heartbeat(r), Math.max(500, this.ackWaitMs / 3));
    try {
      const { nc } = this.opts;
      const enc = new TextEncoder();
      // Publishes are pipelined: issued in order, up to PUBLISH_WINDOW awaiting their JetStream ack.
      // A retried publish may be stored after later ones (the collector deduplicates by the exact
      // steps on disk, not by order). A checkpoint chunk waits until everything before it is stored
      // and is stored before anything after it (resume relies on the rows before a checkpoint being
      // stored); the result is published only once every publish of the attempt is stored.
      let issue: Promise<void> = Promise.resolve();
      const inflight = new Set<Promise<void>>();
      let publishError: Error | null = null;
      let seq = 0;
      const send = (subject: string, data: Uint8Array, id: string, h?: ReturnType<typeof headers>, exclusive = false) => {
        issue = issue.then(async () => {
          if (exclusive) await Promise.all(inflight);
          while (inflight.size >= PUBLISH_WINDOW) await Promise.race(inflight);
          if (publishError) return;
          const p: Promise<void> = this.publish(subject, data, id, h)
            .catch((err: Error) => {
              publishError ??= err;
            })
            .finally(() => inflight.delete(p));
          inflight.add(p);
          if (exclusive) await p;
        });
      };
      const drain = async () => {
        await issue;
        await Promise.all(inflight);
      };
      const onEvent = (e: SlotEvent) => {
        if (r.why === 'lost' || r.why === 'handback') return;
        if (e.type === 'metrics') {
          send(this.names.metrics(trial.sweep), e.bytes, `${msgBase(trial)}.${attempt}.m${seq++}`);
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
            send(this.names.checkpoint(trial.sweep, trial.trial_id), part, `${msgBase(trial)}.${attempt}.c${e.step}.${i}`, h, true);
          });
        } else if (e.type === 'start') {
          r.where = { slot: e.slot, device: e.device, backend: e.backend };
          void this.heartbeat(r);
        } else if (e.type === 'progress') {
          r.step = e.step;
          const p: ProgressMessage = { trial_id: trial.trial_id, attempt, step: e.step, steps: e.steps, worker: this.name };
          nc.publish(this.names.progress(trial.sweep), enc.encode(JSON.stringify(p)));
        }
      };
      const task: SlotTask = { trial, attempt, backend: this.backend!, maxBytes: this.maxBytes, resume: await this.resumePoint(trial, attempt) };
      return { r, task, heartbeat, onEvent, drain, publishError: () => publishError };
    } catch (e) {
      clearInterval(heartbeat);
      this.running.delete(`${trial.trial_id}#${attempt}`);
      throw e;
    }
  }

  /**
   * Ends a prepared trial once its slot run ended (`out`: its outcome, or the slot's error): waits for its
   * publishes, then records a retry (state queued, message nak'ed), or its result (state, result message,
   * ack). A lost or handed-back trial publishes nothing more.
   * @throws Error when `out` is an Error, a publish failed for good or the state cannot be written; the
   *   caller hands the message back.
   */
  private async finish(prep: Prepared, out: SlotOutcome | Error): Promise<void> {
    const { r, heartbeat } = prep;
    const { trial, attempt, msg: m } = r;
    const now = () => new Date().toISOString();
    const enc = new TextEncoder();
    try {
      // A handed-back trial's slot may end with an error (stop() tears the slots down): nak'ed by stop() already.
      if (out instanceof Error && r.why === 'handback') return;
      if (out instanceof Error) throw out;
      r.ending = true;
      await prep.drain();
      if (r.why === 'lost') {
        this.opts.log?.warn(`worker ${this.name}: trial ${trial.trial_id} attempt ${attempt}: another worker owns it now; this attempt's result is dropped`);
        return;
      }
      if (r.why === 'handback') return; // naked by stop()
      const publishError = prep.publishError();
      if (publishError) throw publishError;
      const maxAttempts = trial.max_attempts ?? DEFAULT_MAX_ATTEMPTS;
      const failures = (r.state.failures ?? 0) + (out.status === 'failed' ? 1 : 0);
      if (out.status === 'failed' && failures < maxAttempts && r.why !== 'cancelled') {
        // Retry: back to queued with the error, and the message back to the queue.
        const w = await this.retry('hand back', () => this.ownedWrite(r, { ...r.state, status: 'queued', owner: null, failures, error: out.error, updated_at: now(), heartbeat_at: null }));
        if (!w) return this.lostAtEnd(r);
        this.opts.log?.warn(`worker ${this.name}: trial ${trial.trial_id} attempt ${attempt} failed (${failures}/${maxAttempts}), retrying: ${out.error}`);
        m.nak(1000);
        return;
      }
      const status = r.why === 'cancelled' || out.status === 'cancelled' ? 'cancelled' : out.status;
      const result = this.result(trial, attempt, out, status);
      const final: TrialState = {
        ...r.state, status, failures, error: out.error, device: out.device, slot: out.slot ?? null, backend: out.backend,
        step: out.steps_done, updated_at: now(), result,
      };
      const w = await this.retry('record result', () => this.ownedWrite(r, final));
      if (!w) return this.lostAtEnd(r);
      await this.publish(this.names.result(trial.sweep, trial.trial_id), enc.encode(JSON.stringify(result)), `${msgBase(trial)}.${attempt}.result`);
      // The result is stored: an ack that fails (message purged by a cancel, server restarting) is tried a few times, then left to redelivery, which finds the trial done.
      for (let i = 0; i < 5 && !(await m.ackAck().catch(() => false)); i++) await sleep(1000 * (i + 1));
      this.opts.log?.info(`worker ${this.name}: trial ${trial.trial_id} attempt ${attempt} ${status}${out.fused > 1 ? ` (fused with ${out.fused - 1} other trial(s))` : ''}${out.error ? `: ${out.error}` : ''}`);
    } finally {
      clearInterval(heartbeat);
      this.running.delete(`${trial.trial_id}#${attempt}`);
    }
  }

  /**
   * Writes `next` over a trial's state if this worker still owns the attempt (running, owner, attempt),
   * whatever revision its own heartbeats left it at. @returns false when another worker owns it now.
   */
  private async ownedWrite(r: Running, next: TrialState): Promise<boolean> {
    const w = await casState(this.kv, r.key, (cur) =>
      cur && cur.status === 'running' && cur.owner === this.name && cur.attempt === r.attempt ? next : null,
    );
    if (w) {
      r.revision = w.revision;
      r.state = w.state;
    }
    return w !== null;
  }

  private lostAtEnd(r: Running): void {
    this.opts.log?.warn(`worker ${this.name}: trial ${r.trial.trial_id} attempt ${r.attempt}: its state changed under this worker (taken over); result dropped`);
  }

  /** Records a trial as cancelled or failed without training it (state compare-and-set, then its result). */
  private async finishWithoutTraining(trial: TrialMessage, attempt: number, status: 'cancelled' | 'failed', error: string): Promise<void> {
    const t = new Date().toISOString();
    const result: TrialResultMessage = {
      sweep: trial.sweep, trial_id: trial.trial_id, attempt, status, started_at: t, finished_at: t, wall_seconds: 0,
      final_loss: null, final_rel_l2: null, diverged: false, steps_done: 0, rows: 0, host: this.host, device: '', backend: '',
      worker: this.name, slot: '', visible_devices: null, resumed_from: null, error,
    };
    const w = await this.retry(status, () =>
      casState(this.kv, this.names.stateKey(trial.sweep, trial.trial_id), (cur) =>
        cur && TERMINAL.has(cur.status) ? null : { status, attempt, owner: this.name, updated_at: t, error, result },
      ),
    );
    if (w) await this.publish(this.names.result(trial.sweep, trial.trial_id), new TextEncoder().encode(JSON.stringify(result)), `${msgBase(trial)}.${attempt}.result`);
  }

  /**
   * Heartbeat of a running trial: keeps its message from being redelivered (in-progress ack) and its
   * state fresh; stops it when its state shows another owner (it was taken over while this worker was cut off).
   */
  private async heartbeat(r: Running): Promise<void> {
    if (r.why === 'lost' || r.why === 'handback') return;
    // Keep the message while publishing (possibly across a server restart), but the state is written by the end.
    r.msg.working();
    if (r.why || r.ending) return;
    try {
      const next: TrialState = { ...r.state, ...r.where, step: r.step, heartbeat_at: new Date().toISOString() };
      const rev = r.ending ? null : await writeStateIf(this.kv, r.key, next, r.revision);
      if (r.ending) return;
      if (rev !== null) {
        r.revision = rev;
        r.state = next;
        return;
      }
      const cur = await readState(this.kv, r.key);
      if (!cur.state || cur.state.owner !== this.name || cur.state.attempt !== r.attempt || cur.state.status !== 'running') {
        this.halt(r, cur.state?.status === 'cancelled' ? 'cancelled' : 'lost');
      } else {
        r.revision = cur.revision;
        r.state = cur.state;
      }
    } catch {
      /* transport trouble: try again at the next heartbeat */
    }
  }

  /**
   * Where a redelivered trial resumes: the last checkpoint the orchestrator holds, when the trial
   * checkpoints and an earlier attempt exists; null = start at step 0.
   */
  private async resumePoint(trial: TrialMessage, attempt: number): Promise<SlotTask['resume']> {
    if (!mayResume(trial, attempt)) return null;
    const got = await fetchCheckpoint(this.opts.nc, this.names.checkpointRequest(trial.sweep), trial.trial_id, 10_000).catch(() => null);
    if (!got) return null;
    this.opts.log?.info(`worker ${this.name}: trial ${trial.trial_id} attempt ${attempt} resumes from step ${got.step} (checkpoint of attempt ${got.attempt})`);
    return { attempt: got.attempt, step: got.step, checkpoint: got.bytes };
  }

  /** Trials running on this worker now. */
  get inFlight(): number {
    return this.running.size;
  }

  /** Stops a running trial and hands it back: nak (redelivered elsewhere at once), state back to queued. */
  private async handBack(r: Running): Promise<void> {
    this.halt(r, 'handback');
    handBackMsg(r.msg);
    await this.ownedWrite(r, { ...r.state, status: 'queued', owner: null, heartbeat_at: null, updated_at: new Date().toISOString() }).catch(() => null);
  }

  /**
   * Gives up on a `stop` that does not finish (JetStream not answering, so hand-backs and publishes
   * keep being retried): retries end at their next try, pulling stops, and the slots are torn down.
   * Trials not handed back are redelivered after the ack wait, as after a crash.
   */
  async abort(): Promise<void> {
    this.aborted = true;
    this.stopping = true;
    this.handingBack = true;
    this.wake?.();
    if (this.keepAlive) clearInterval(this.keepAlive);
    this.watcher?.stop();
    await this.pool?.close();
  }

  /**
   * Stops pulling and hands the trials waiting in the local queue back (nak). With `handBack`,
   * in-flight trials are stopped, set back to queued and nak'ed at once (redelivered elsewhere) and the
   * slots are torn down; otherwise it waits for them to finish. The naks have reached the server when it
   * returns (a flush, bounded by FLUSH_MS), so that the caller may close the connection or stop the server.
   */
  async stop(handBack = false): Promise<void> {
    this.stopping = true;
    this.handingBack ||= handBack;
    this.wake?.();
    for (const q of this.queue.splice(0)) handBackMsg(q.m);
    if (this.keepAlive) clearInterval(this.keepAlive);
    if (handBack) await Promise.all([...this.running.values()].map((r) => this.handBack(r)));
    await this.loop;
    for (const q of this.queue.splice(0)) handBackMsg(q.m);
    await Promise.race([this.opts.nc.flush().catch(() => undefined), sleep(FLUSH_MS)]);
    if (!handBack) while (this.slotRuns) await sleep(200);
    this.watcher?.stop();
    await this.pool?.close();
  }
}

/**
 * The size of the fused groups that spread `n` same-shaped trials over `slots` slots in the fewest rounds
 * a group limit of `limit` allows, evenly: 12 trials, limit 4, 2 slots → 3 (4 groups of 3 in 2 rounds,
 * not 3 groups of 4 with one slot idle in the second); 8 trials, limit 4, 2 slots → 4; 4 trials → 2.
 * @param n trials known (≥ 1); @param limit most trials per group (≥ 1); @param slots slots sharing them (≥ 1).
 * @returns a size in 1…limit.
 */
export function balancedGroupSize(n: number, limit: number, slots: number): number {
  if (limit <= 1 || n <= 1) return 1;
  const rounds = Math.ceil(Math.ceil(n / limit) / Math.max(1, slots));
  return Math.max(1, Math.min(limit, Math.ceil(n / (rounds * Math.max(1, slots)))));
}

/**
 * Forms the groups of up to `free` slots from a queue of pulled trials: trials of one fusion key (null:
 * runs alone) are cut, in queue order, into groups of that key's `size`; the groups start in the order
 * of their first trial. So two interleaved shapes (quick start: A B A B …) give one group per shape, not
 * groups mixed up by which slot pulled first.
 * @param items the queue, oldest first: each trial's fusion key and the group size its slot aims at.
 * @param free slots free now (≥ 0).
 * @returns at most `free` groups, each the queue indices of its trials (ascending); the rest stay queued.
 */
export function planGroups(items: Array<{ key: string | null; size: number }>, free: number): number[][] {
  const groups: number[][] = [];
  const open = new Map<string, number[]>();
  items.forEach((it, i) => {
    if (it.key === null || it.size <= 1) {
      groups.push([i]);
      return;
    }
    let g = open.get(it.key);
    if (!g || g.length >= it.size) {
      g = [];
      open.set(it.key, g);
      groups.push(g);
    }
    g.push(i);
  });
  return groups.slice(0, Math.max(0, free)); // created at their first trial: in queue order
}

/** Whether a trial's attempt may resume from a checkpoint (its sweep checkpoints, an earlier attempt exists): it then runs alone. */
function mayResume(trial: TrialMessage, attempt: number): boolean {
  return trial.config.train.checkpoint_every > 0 && attempt > 1;
}

/** What the wasm slots run natively (backend.ts): the matmuls' library or why not, and the stream loops. */
function wasmNativeSummary(): string {
  const b = blasStatus();
  const mm = b.available ? `matmuls: ${b.library}${b.core ? ` ${b.core}` : ''}${b.serialised ? ', serialised' : ''}` : `matmuls: wasm (${b.error})`;
  return `${mm}; stream loops: ${nativeStreams() ? 'C' : 'JS'}`;
}
