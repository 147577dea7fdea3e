/**
 * The orchestrator's side of the transport: JetStream resources, trial publishing, trial state in
 * KV. (The collector's consumer lives in collector.ts; workers have their own side in worker/agent.ts.)
 */
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { nanos, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { TrialMessage, TrialState } from '../schemas/trial.js';
import { hostname } from 'node:os';
import { OUT_ACK_WAIT_MS, workerConsumerConfig, type SweepControl, type SweepOwner, type TransportNames } from '../schemas/transport.js';
import { pidAlive } from '../analysis/pid.js';
import { SweepBusyError } from './errors.js';

export interface Transport {
  names: TransportNames;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  kv: KV;
}

/** Connects with reconnects forever, with credentials and TLS: see nats-connect.ts. */
export { connectNats } from './nats-connect.js';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * JetStream's answers while a cluster elects new leaders, or while a node of it is down: a request
 * that times out, "JetStream system temporarily unavailable" (503), "leadership change", no responders.
 */
const TRANSIENT = /timeout|temporarily unavailable|leadership change|no responders|no suitable peers/i;

/** Runs `f` again while it fails with a transient JetStream error (TRANSIENT), for up to `ms`; other errors are thrown at once. */
async function whileElecting<T>(f: () => Promise<T>, ms = 60_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await f();
    } catch (e) {
      if (!TRANSIENT.test(`${(e as Error).name} ${(e as Error).message}`) || Date.now() > end) throw e;
      await sleep(1000);
    }
  }
}

/** Creates a stream unless it exists; across a leader election, and an add that timed out but created it (see addConsumer). */
async function ensureStream(jsm: JetStreamManager, name: string, subjects: string[], replicas: number): Promise<void> {
  await whileElecting(async () => {
    try {
      await jsm.streams.info(name);
    } catch (e) {
      if (!/stream not found/i.test((e as Error).message)) throw e;
      await jsm.streams.add({ name, subjects, retention: RetentionPolicy.Workqueue, storage: StorageType.File, max_msg_size: -1, num_replicas: replicas });
    }
  });
}

/**
 * Adds (or finds) a durable consumer. On a 3-node 2.9.10 cluster with one node down, creating a
 * replicated consumer (or stream) took up to ~5 s, nats.js's request timeout, so about one `phasemap
 * run` in two started during such an outage exited with "TimeoutError: timeout": a timed-out add is
 * retried (it may have created the consumer meanwhile: then it is there).
 */
async function addConsumer(jsm: JetStreamManager, stream: string, config: Parameters<JetStreamManager['consumers']['add']>[1] & { durable_name: string }): Promise<void> {
  await whileElecting(async () => {
    try {
      await jsm.consumers.add(stream, config);
    } catch (e) {
      if (!(await jsm.consumers.info(stream, config.durable_name).then(() => true, () => false))) throw e;
    }
  });
}

const collectorConsumerConfig = (names: TransportNames, sweep: string) => ({
  durable_name: names.collector(sweep),
  filter_subject: names.outOf(sweep),
  ack_policy: AckPolicy.Explicit,
  ack_wait: nanos(OUT_ACK_WAIT_MS),
  max_ack_pending: 20_000,
  max_deliver: -1,
});

/**
 * Replaces the sweep's collector consumer by a fresh one, so that what an earlier collector of this
 * sweep received but never acknowledged (it was killed) is delivered again at once and in stream
 * order, instead of after the ack wait and after newer messages: a trial's result must never be
 * written before its metrics. The output stream is a work queue: acknowledged messages are gone, and
 * a new consumer starts at the first message still there. Call only as the sweep's owner
 * (claimSweepOwner), before its collector starts.
 */
export async function resetCollectorConsumer(t: Transport, sweep: string): Promise<void> {
  await t.jsm.consumers.delete(t.names.outStream, t.names.collector(sweep)).catch(() => undefined);
  await addConsumer(t.jsm, t.names.outStream, collectorConsumerConfig(t.names, sweep));
}

/**
 * Creates (idempotently) the trials and output work-queue streams, the shared worker consumer,
 * the sweep's collector consumer and the trial-state KV bucket. `replicas` (1–5; 3 on a 3-node
 * cluster) applies to what this call creates; existing streams and buckets keep theirs.
 */
export async function ensureResources(nc: NatsConnection, names: TransportNames, sweep: string, replicas = 1): Promise<Transport> {
  const jsm = await jetstreamManager(nc);
  await ensureStream(jsm, names.trialsStream, [names.trialsAll], replicas);
  await ensureStream(jsm, names.outStream, [names.outAll], replicas);
  // Already there with the same name (another config, e.g. its own ack wait): fine.
  await addConsumer(jsm, names.trialsStream, workerConsumerConfig(names));
  await addConsumer(jsm, names.outStream, collectorConsumerConfig(names, sweep));
  const js = jetstream(nc);
  const kv = await whileElecting(() => new Kvm(js).create(names.stateBucket, { history: 1, replicas }));
  return { names, nc, js, jsm, kv };
}

/**
 * Trial ids of a sweep whose message is in the trials stream now: queued, or delivered to a worker
 * and not yet acked (running). One request (paged by the client for large sweeps).
 */
export async function trialsInStream(t: Transport, sweep: string): Promise<Set<string>> {
  const info = await t.jsm.streams.info(t.names.trialsStream, { subjects_filter: t.names.trialsOf(sweep) });
  const prefix = t.names.trialsOf(sweep).slice(0, -1);
  return new Set(Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length)));
}

/**
 * Queues the trials of a run on the work queue, subject `<ns>.trials.<sweep>.<trial_id>`, and sets
 * their state `queued`. Not queued a second time (it would run twice): a trial whose message is still
 * in the stream (queued, or running on a worker, e.g. after this orchestrator was killed and started
 * again), and a trial whose result is still in the output stream (it ended while no collector ran). Publishes are pipelined (up to 256 in flight); Nats-Msg-Id =
 * `<trial_id>.<runNonce>` makes a retried publish idempotent within the run.
 * @returns trials queued now, trials of this sweep found in the stream, trials whose result is on its way.
 */
export async function publishTrials(t: Transport, sweep: string, trials: TrialMessage[], runNonce: string): Promise<{ queued: number; inStream: number; finishing: number }> {
  const present = await trialsInStream(t, sweep);
  const enc = new TextEncoder();
  const now = new Date().toISOString();
  let todo = trials.filter((m) => !present.has(m.trial_id));
  // A trial whose result still waits in the output stream ended while no collector was writing (e.g.
  // this orchestrator was killed and its collector has not caught up yet): queuing it again would run
  // it twice to completion. One request for the whole sweep.
  const out = await t.jsm.streams.info(t.names.outStream, { subjects_filter: t.names.result(sweep, '*') });
  const resultPrefix = t.names.result(sweep, '');
  const ids = new Set(todo.map((m) => m.trial_id));
  const finishing = new Set(Object.keys(out.state.subjects ?? {}).map((s) => s.slice(resultPrefix.length)).filter((id) => ids.has(id)));
  todo = todo.filter((m) => !finishing.has(m.trial_id));
  const state = enc.encode(JSON.stringify({ status: 'queued', attempt: 0, owner: null, updated_at: now } satisfies TrialState));
  await pipelined(todo, async (m) => {
    // State first: a worker may take the message the moment it is published.
    await t.kv.put(t.names.stateKey(sweep, m.trial_id), state);
    await t.js.publish(t.names.trial(sweep, m.trial_id), enc.encode(JSON.stringify(m)), { msgID: `${runNonce}.${m.trial_id}` });
  });
  return { queued: todo.length, inStream: present.size, finishing: finishing.size };
}

/** Runs `f` over `items` with up to `window` calls in flight (a sliding window, not batches); rejects with the first error once the started calls have settled. */
async function pipelined<T>(items: T[], f: (x: T) => Promise<void>, window = 256): Promise<void> {
  let next = 0;
  let error: unknown = null;
  const lane = async () => {
    while (next < items.length && error === null) {
      const x = items[next++]!;
      try {
        await f(x);
      } catch (e) {
        error ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, items.length) }, lane));
  if (error !== null) throw error;
}

/**
 * Watches JetStream's max-deliveries advisory on the worker consumer: a trial whose message was
 * delivered `max_deliver` times without an ack (its workers kept dying) would otherwise wait forever.
 * Calls `onLost` for this sweep's trials and deletes the dead message from the queue.
 */
export function watchMaxDeliveries(t: Transport, sweep: string, onLost: (trialId: string, deliveries: number) => void): Subscription {
  const { names } = t;
  const subject = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${names.trialsStream}.${names.workerConsumer}`;
  const prefix = names.trialsOf(sweep).slice(0, -1);
  return t.nc.subscribe(subject, {
    callback: (_e, m) => {
      void (async () => {
        const adv = m.json<{ stream_seq: number; deliveries: number }>();
        const stored = await t.jsm.streams.getMessage(names.trialsStream, { seq: adv.stream_seq });
        if (!stored || !stored.subject.startsWith(prefix)) return;
        const trial = stored.json<TrialMessage>();
        await t.jsm.streams.deleteMessage(names.trialsStream, adv.stream_seq);
        onLost(trial.trial_id, adv.deliveries);
      })().catch(() => undefined);
    },
  });
}

/** An orchestrator that has not refreshed its owner record for this long is gone. */
const OWNER_STALE_MS = 60_000;

/**
 * Makes this process the owner of a sweep in its namespace (the one process whose collector writes
 * the sweep's DIR), so that a second `phasemap run` of a sweep with the same name — another user,
 * another DIR — is refused instead of sharing its subjects and trial states by accident. An owner that
 * is gone (silent for 60 s, or a dead process on this host) is replaced; so is one with the same DIR
 * on this host whose process is gone (a killed orchestrator started again).
 * @returns a release function (stops the refresh and deletes the record).
 * @throws SweepBusyError naming the sweep, the namespace and the owner when a live owner holds it.
 */
export async function claimSweepOwner(t: Transport, sweep: string, dir: string): Promise<() => Promise<void>> {
  const key = t.names.ownerKey(sweep);
  const host = hostname();
  const me = (): SweepOwner => ({ dir, host, pid: process.pid, started_at, heartbeat_at: new Date().toISOString() });
  const started_at = new Date().toISOString();
  for (let i = 0; ; i++) {
    const e = await t.kv.get(key);
    let cur: SweepOwner | null = null;
    try {
      cur = e && e.operation === 'PUT' ? e.json<SweepOwner>() : null;
    } catch {
      cur = null;
    }
    if (cur && !(cur.host === host && cur.pid === process.pid)) {
      const fresh = Date.now() - Date.parse(cur.heartbeat_at) < OWNER_STALE_MS;
      const deadHere = cur.host === host && !pidAlive(cur.pid);
      if (fresh && !deadHere)
        throw new SweepBusyError(
          `sweep '${sweep}' (namespace ${t.names.ns}) is being run by another orchestrator: ${cur.host} pid ${cur.pid}, DIR ${cur.dir}, since ${cur.started_at}. ` +
            `Wait for it, stop it, or use another sweep name or --namespace.`,
        );
    }
    try {
      void (e && e.operation === 'PUT' ? await t.kv.update(key, JSON.stringify(me()), e.revision) : await t.kv.create(key, JSON.stringify(me())));
      break;
    } catch (err) {
      if (i >= 5) throw err;
    }
  }
  const timer = setInterval(() => {
    void t.kv.put(key, JSON.stringify(me())).catch(() => undefined);
  }, 20_000);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await t.kv.delete(key).catch(() => undefined);
  };
}

/** Sets a sweep's control record (schemas/transport.ts SweepControl). */
export async function setSweepControl(t: Pick<Transport, 'kv' | 'names'>, sweep: string, c: SweepControl): Promise<void> {
  await whileElecting(() => t.kv.put(t.names.controlKey(sweep), JSON.stringify(c)));
}

/**
 * How long JetStream may go without answering before an embedded server counts as stuck (ms):
 * $PHASEMAP_JETSTREAM_STUCK_S seconds (1–86400), else 60 s (also for a value out of that range).
 */
export function jetStreamStuckMs(env: NodeJS.ProcessEnv = process.env): number {
  const s = Number(env.PHASEMAP_JETSTREAM_STUCK_S);
  return env.PHASEMAP_JETSTREAM_STUCK_S && s >= 1 && s <= 86_400 ? s * 1000 : 60_000;
}

/** What `watchJetStream` reports. */
export interface JetStreamWatchEvents {
  /** No answer for `slowMs` (once per silence). */
  onSilent?(silentMs: number): void;
  /** An answer after `onSilent`. */
  onBack?(silentMs: number): void;
  /** No answer for `stuckMs` (once per silence). */
  onStuck?(silentMs: number): void;
}

/**
 * Asks JetStream for the account info every `everyMs` (one request at a time, the manager's timeout)
 * and reports a silence: `onSilent` after `slowMs` without an answer, `onStuck` after `stuckMs`,
 * `onBack` when it answers again. A nats-server 2.9 whose store met a full disk answers no JetStream
 * request at all any more (not even the account info) until it is restarted, while its clients stay
 * connected: this is how a run finds out.
 * @returns stop(); and the time of the last answer.
 */
export function watchJetStream(jsm: JetStreamManager, events: JetStreamWatchEvents, opts: { everyMs?: number; slowMs?: number; stuckMs?: number } = {}): { stop(): void; lastAnswer(): number } {
  const stuckMs = opts.stuckMs ?? jetStreamStuckMs();
  const slowMs = opts.slowMs ?? Math.min(15_000, stuckMs / 2);
  let last = Date.now();
  let silent = false;
  let stuck = false;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  const tick = async () => {
    timer = null;
    try {
      await jsm.getAccountInfo();
      if (stopped) return;
      if (silent) events.onBack?.(Date.now() - last);
      last = Date.now();
      silent = stuck = false;
    } catch {
      if (stopped) return;
      const ms = Date.now() - last;
      if (!silent && ms >= slowMs) {
        silent = true;
        events.onSilent?.(ms);
      }
      if (!stuck && ms >= stuckMs) {
        stuck = true;
        events.onStuck?.(ms);
      }
    }
    if (!stopped) (timer = setTimeout(() => void tick(), opts.everyMs ?? 2000)).unref();
  };
  (timer = setTimeout(() => void tick(), opts.everyMs ?? 2000)).unref();
  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
    lastAnswer: () => last,
  };
}
