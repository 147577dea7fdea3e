/**
 * The orchestrator's side of the transport: JetStream resources, trial publishing, trial state in
 * KV. (The collector's consumer lives in collector.ts; workers have their own side in worker/agent.ts.)
 */
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { connect, nanos, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { TrialMessage, TrialState } from '../schemas/trial.js';
import { OUT_ACK_WAIT_MS, workerConsumerConfig, type TransportNames } from '../schemas/transport.js';

export interface Transport {
  names: TransportNames;
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  kv: KV;
}

/** Connects with reconnects forever (a restarted server is waited for). */
export async function connectNats(url: string, name: string): Promise<NatsConnection> {
  return connect({ servers: url.split(','), name, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
}

async function ensureStream(jsm: JetStreamManager, name: string, subjects: string[]): Promise<void> {
  try {
    await jsm.streams.info(name);
  } catch {
    await jsm.streams.add({ name, subjects, retention: RetentionPolicy.Workqueue, storage: StorageType.File, max_msg_size: -1 });
  }
}

/**
 * Creates (idempotently) the trials and output work-queue streams, the shared worker consumer,
 * the sweep's collector consumer and the trial-state KV bucket.
 */
export async function ensureResources(nc: NatsConnection, names: TransportNames, sweep: string): Promise<Transport> {
  const jsm = await jetstreamManager(nc);
  await ensureStream(jsm, names.trialsStream, [names.trialsAll]);
  await ensureStream(jsm, names.outStream, [names.outAll]);
  await jsm.consumers.add(names.trialsStream, workerConsumerConfig(names)).catch(async (e) => {
    // Already there with the same name: fine.
    await jsm.consumers.info(names.trialsStream, names.workerConsumer).catch(() => { throw e; });
  });
  await jsm.consumers.add(names.outStream, {
    durable_name: names.collector(sweep),
    filter_subject: names.outOf(sweep),
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(OUT_ACK_WAIT_MS),
    max_ack_pending: 20_000,
    max_deliver: -1,
  }).catch(async (e) => {
    await jsm.consumers.info(names.outStream, names.collector(sweep)).catch(() => { throw e; });
  });
  const js = jetstream(nc);
  const kv = await new Kvm(js).create(names.stateBucket, { history: 1 });
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
 * their state `queued`. A trial whose message is still in the stream (queued, or running on a worker,
 * e.g. after this orchestrator was killed and started again) is not queued a second time: it would run
 * twice. Publishes are pipelined (up to 256 in flight); Nats-Msg-Id = `<trial_id>.<runNonce>` makes a
 * retried publish idempotent within the run.
 * @returns trials queued now and trials left as they were (already in the stream).
 */
export async function publishTrials(t: Transport, sweep: string, trials: TrialMessage[], runNonce: string): Promise<{ queued: number; inStream: number }> {
  const present = await trialsInStream(t, sweep);
  const enc = new TextEncoder();
  const now = new Date().toISOString();
  const todo = trials.filter((m) => !present.has(m.trial_id));
  const state = enc.encode(JSON.stringify({ status: 'queued', attempt: 0, owner: null, updated_at: now } satisfies TrialState));
  for (let i = 0; i < todo.length; i += 256) {
    await Promise.all(
      todo.slice(i, i + 256).map(async (m) => {
        // State first: a worker may take the message the moment it is published.
        await t.kv.put(t.names.stateKey(sweep, m.trial_id), state);
        await t.js.publish(t.names.trial(sweep, m.trial_id), enc.encode(JSON.stringify(m)), { msgID: `${m.trial_id}.${runNonce}` });
      }),
    );
  }
  return { queued: todo.length, inStream: trials.length - todo.length };
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
