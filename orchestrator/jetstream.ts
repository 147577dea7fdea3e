/**
 * The orchestrator's side of the transport: JetStream resources, trial publishing, trial state in
 * KV. (The collector's consumer lives in collector.ts; workers have their own side in worker/agent.ts.)
 */
import { AckPolicy, jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import { connect, nanos, type NatsConnection, type Subscription } from '@nats-io/transport-node';
import type { TrialMessage, TrialState } from '../schemas/trial.js';
import {
  collectorConsumer,
  OUT_ACK_WAIT_MS,
  OUT_STREAM,
  outFilter,
  STATE_BUCKET,
  stateKey,
  TRIALS_STREAM,
  trialsSubject,
  WORKER_CONSUMER,
  workerConsumerConfig,
} from '../schemas/transport.js';

export interface Transport {
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
export async function ensureResources(nc: NatsConnection, sweep: string): Promise<Transport> {
  const jsm = await jetstreamManager(nc);
  await ensureStream(jsm, TRIALS_STREAM, ['phasemap.trials.>']);
  await ensureStream(jsm, OUT_STREAM, ['phasemap.out.>']);
  await jsm.consumers.add(TRIALS_STREAM, workerConsumerConfig()).catch(async (e) => {
    // Already there with the same name: fine.
    await jsm.consumers.info(TRIALS_STREAM, WORKER_CONSUMER).catch(() => { throw e; });
  });
  await jsm.consumers.add(OUT_STREAM, {
    durable_name: collectorConsumer(sweep),
    filter_subject: outFilter(sweep),
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(OUT_ACK_WAIT_MS),
    max_ack_pending: 20_000,
    max_deliver: -1,
  }).catch(async (e) => {
    await jsm.consumers.info(OUT_STREAM, collectorConsumer(sweep)).catch(() => { throw e; });
  });
  const js = jetstream(nc);
  const kv = await new Kvm(js).create(STATE_BUCKET, { history: 1 });
  return { nc, js, jsm, kv };
}

/**
 * Publishes trials to the work queue after removing this sweep's stale queued messages (from an
 * interrupted earlier run). Nats-Msg-Id = trial_id; when the server's duplicate window still holds
 * that id from a run seconds ago, the trial is republished under `<trial_id>.<runNonce>` so it is queued.
 * @returns the number of trials queued.
 */
export async function publishTrials(t: Transport, sweep: string, trials: TrialMessage[], runNonce: string): Promise<number> {
  await t.jsm.streams.purge(TRIALS_STREAM, { filter: trialsSubject(sweep) });
  const enc = new TextEncoder();
  const now = new Date().toISOString();
  let n = 0;
  for (const m of trials) {
    const data = enc.encode(JSON.stringify(m));
    const ack = await t.js.publish(trialsSubject(sweep), data, { msgID: m.trial_id });
    if (ack.duplicate) await t.js.publish(trialsSubject(sweep), data, { msgID: `${m.trial_id}.${runNonce}` });
    const state: TrialState = { status: 'queued', attempt: 0, owner: null, updated_at: now };
    await t.kv.put(stateKey(sweep, m.trial_id), JSON.stringify(state));
    n++;
  }
  return n;
}

/**
 * Watches JetStream's max-deliveries advisory on the worker consumer: a trial whose message was
 * delivered `max_deliver` times without an ack (its workers kept dying) would otherwise wait forever.
 * Calls `onLost` for this sweep's trials and deletes the dead message from the queue.
 */
export function watchMaxDeliveries(t: Transport, sweep: string, onLost: (trialId: string, deliveries: number) => void): Subscription {
  const subject = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${TRIALS_STREAM}.${WORKER_CONSUMER}`;
  return t.nc.subscribe(subject, {
    callback: (_e, m) => {
      void (async () => {
        const adv = m.json<{ stream_seq: number; deliveries: number }>();
        const stored = await t.jsm.streams.getMessage(TRIALS_STREAM, { seq: adv.stream_seq });
        if (!stored || stored.subject !== trialsSubject(sweep)) return;
        const trial = stored.json<TrialMessage>();
        await t.jsm.streams.deleteMessage(TRIALS_STREAM, adv.stream_seq);
        onLost(trial.trial_id, adv.deliveries);
      })().catch(() => undefined);
    },
  });
}
