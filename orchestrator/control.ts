/**
 * `phasemap status` and `phasemap cancel`: read and steer sweeps through the trial-state bucket and
 * the trials stream of one namespace (schemas/transport.ts), from any machine that reaches the cluster.
 */
import { hostname } from 'node:os';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import Table from 'cli-table3';
import { casState, isStale, TERMINAL } from '../schemas/trial-state.js';
import type { TrialResultMessage, TrialState, TrialStatus } from '../schemas/trial.js';
import type { ProgressMessage, SweepControl, SweepOwner, TransportNames } from '../schemas/transport.js';
import { jetStreamError, isJetStreamUnavailable } from './nats-connect.js';

/** The ack wait of the namespace's worker consumer (ms): how long a running trial may go without a heartbeat before it is stale; `fallback` when there is no consumer. */
export async function workerAckWaitMs(nc: NatsConnection, names: TransportNames, fallback: number): Promise<number> {
  try {
    const ci = await (await jetstreamManager(nc)).consumers.info(names.trialsStream, names.workerConsumer);
    return ci.config.ack_wait ? Math.round(ci.config.ack_wait / 1e6) : fallback;
  } catch {
    return fallback;
  }
}

const STATUSES: TrialStatus[] = ['queued', 'running', 'done', 'failed', 'cancelled'];

/** One sweep as the bucket describes it. */
export interface SweepStatus {
  sweep: string;
  total: number;
  counts: Record<TrialStatus, number>;
  cancelled: boolean;
  /** The orchestrator that owns the sweep's DIR, if one is running (or was, until it went silent). */
  owner: (SweepOwner & { stale: boolean }) | null;
  running: Array<{
    trial_id: string;
    /** Its grid values as text, when the orchestrator's DIR is readable here (orchestrator/dir-status.ts labelSweepStatus). */
    label?: string;
    attempt: number; owner: string | null; host: string | null; device: string | null; slot: string | null;
    backend: string | null; step: number | null; steps: number | null;
    /** Where `step` came from: the worker's live progress messages, or its last heartbeat (which may be many seconds old). */
    step_from: 'progress' | 'heartbeat' | null;
    heartbeat_age_s: number | null;
    /** No heartbeat within the ack wait: its worker is gone; JetStream redelivers the trial to another. */
    stale: boolean;
  }>;
  failed: Array<{ trial_id: string; label?: string; attempt: number; failures: number; error: string | null }>;
}

async function openBucket(nc: NatsConnection, names: TransportNames): Promise<KV> {
  try {
    return await new Kvm(jetstream(nc)).open(names.stateBucket);
  } catch (e) {
    if (isJetStreamUnavailable(e)) throw jetStreamError(nc, e, `opening the trial-state bucket ${names.stateBucket}`);
    throw new Error(`namespace '${names.ns}': no trial-state bucket ${names.stateBucket} on this server (${(e as Error).message}); has a 'phasemap run' with this --namespace started here?`);
  }
}

/**
 * The keys of the bucket under `filter` (deleted ones too), from the subjects of its stream: one
 * request its leader answers. Not `kv.keys()`, which creates a one-replica consumer: on nats-server
 * 2.9 with a node of the cluster down, about half of those are placed on the dead node and the
 * request times out, so `status` and `cancel` failed half the time while a node was down.
 */
async function keysOf(nc: NatsConnection, names: TransportNames, filter: string): Promise<string[]> {
  const prefix = `$KV.${names.stateBucket}.`;
  const info = await (await jetstreamManager(nc)).streams.info(`KV_${names.stateBucket}`, { subjects_filter: `${prefix}${filter}` });
  return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length));
}

/** Every key of the bucket under `filter`, then their values (deleted keys left out), 256 reads in flight. */
async function readAll(nc: NatsConnection, names: TransportNames, kv: KV, filter: string): Promise<Map<string, unknown>> {
  const keys = await keysOf(nc, names, filter);
  const out = new Map<string, unknown>();
  for (let i = 0; i < keys.length; i += 256) {
    await Promise.all(
      keys.slice(i, i + 256).map(async (k) => {
        const e = await kv.get(k);
        if (!e || e.operation !== 'PUT') return;
        try {
          out.set(k, e.json());
        } catch {
          /* not ours */
        }
      }),
    );
  }
  return out;
}

/**
 * Every trial state of one sweep, by trial id (the sweep's control and owner keys left out).
 * @throws Error when the namespace has no bucket on this server.
 */
export async function sweepTrialStates(nc: NatsConnection, names: TransportNames, sweep: string): Promise<Map<string, TrialState>> {
  const all = await readAll(nc, names, await openBucket(nc, names), `${sweep}.>`).catch((e: unknown) => {
    throw jetStreamError(nc, e, 'reading trial states');
  });
  const out = new Map<string, TrialState>();
  for (const [k, v] of all) {
    const id = k.slice(sweep.length + 1);
    if (/^t[0-9a-f]{16}$/.test(id)) out.set(id, v as TrialState);
  }
  return out;
}

/**
 * Status of one sweep (or every sweep of the namespace): trials by state, who runs what, failures.
 * @param ackWaitMs a running trial without a heartbeat for this long is reported stale.
 * @param liveStepsMs listen this long (at most) for the running trials' progress messages, whose step
 *   replaces the heartbeat's; 0 = the heartbeat's step.
 * @throws Error when the namespace has no bucket on this server.
 */
export async function sweepStatus(nc: NatsConnection, names: TransportNames, sweep?: string, ackWaitMs = 60_000, liveStepsMs = 0): Promise<SweepStatus[]> {
  const kv = await openBucket(nc, names);
  const all = await readAll(nc, names, kv, sweep ? `${sweep}.>` : '>').catch((e: unknown) => {
    throw jetStreamError(nc, e, 'reading trial states');
  });
  const by = new Map<string, SweepStatus>();
  const get = (s: string) => {
    let st = by.get(s);
    if (!st) {
      st = { sweep: s, total: 0, counts: Object.fromEntries(STATUSES.map((x) => [x, 0])) as Record<TrialStatus, number>, cancelled: false, owner: null, running: [], failed: [] };
      by.set(s, st);
    }
    return st;
  };
  const now = Date.now();
  for (const [key, value] of all) {
    const dot = key.lastIndexOf('.');
    const s = key.slice(0, dot);
    const leaf = key.slice(dot + 1);
    if (leaf === '_control') get(s).cancelled = Boolean((value as SweepControl).cancelled);
    else if (leaf === '_owner') {
      const o = value as SweepOwner;
      get(s).owner = { ...o, stale: !(now - Date.parse(o.heartbeat_at) < 60_000) };
    } else if (leaf.startsWith('t')) {
      const st = value as TrialState;
      const sw = get(s);
      sw.total++;
      sw.counts[st.status] = (sw.counts[st.status] ?? 0) + 1;
      if (st.status === 'running') {
        const hb = st.heartbeat_at ? Date.parse(st.heartbeat_at) : NaN;
        sw.running.push({
          trial_id: leaf, attempt: st.attempt, owner: st.owner, host: st.host ?? null, device: st.device ?? null, slot: st.slot ?? null,
          backend: st.backend ?? null, step: st.step ?? null, steps: st.steps ?? null, step_from: typeof st.step === 'number' ? 'heartbeat' : null,
          heartbeat_age_s: Number.isFinite(hb) ? Math.round((now - hb) / 100) / 10 : null, stale: isStale(st, ackWaitMs, now),
        });
      } else if (st.status === 'failed' || (st.error && st.status !== 'done' && st.status !== 'cancelled')) {
        sw.failed.push({ trial_id: leaf, attempt: st.attempt, failures: st.failures ?? 0, error: st.error ?? null });
      }
    }
  }
  const list = [...by.values()].sort((a, b) => a.sweep.localeCompare(b.sweep));
  if (liveStepsMs > 0) await addLiveSteps(nc, names, list, liveStepsMs);
  return list;
}

/**
 * Sets the step of running trials from their workers' progress messages (`<ns>.progress.<sweep>`,
 * about one a second per trial), listening up to `ms` or until every running trial has reported: a
 * heartbeat's step can be many seconds old.
 */
async function addLiveSteps(nc: NatsConnection, names: TransportNames, list: SweepStatus[], ms: number): Promise<void> {
  const want = new Map<string, SweepStatus['running'][number]>();
  for (const s of list) for (const r of s.running) want.set(`${s.sweep}.${r.trial_id}`, r);
  if (!want.size) return;
  const seen = new Set<string>();
  const subs = list.filter((s) => s.running.length).map((s) =>
    nc.subscribe(names.progress(s.sweep), {
      callback: (_e, m) => {
        try {
          const p = m.json<ProgressMessage>();
          const r = want.get(`${s.sweep}.${p.trial_id}`);
          if (!r || p.attempt !== r.attempt) return;
          r.step = p.step;
          r.steps = p.steps;
          r.step_from = 'progress';
          seen.add(`${s.sweep}.${p.trial_id}`);
        } catch {
          /* not a progress message */
        }
      },
    }),
  );
  const end = Date.now() + ms;
  while (Date.now() < end && seen.size < want.size) await new Promise((r) => setTimeout(r, 50));
  for (const sub of subs) sub.unsubscribe();
}

/** Terminal tables of `sweepStatus` (one block per sweep). */
export function renderStatus(list: SweepStatus[], ns: string): string {
  if (!list.length) return `namespace ${ns}: no sweeps\n`;
  let out = '';
  for (const s of list) {
    const owner = s.owner ? `orchestrator ${s.owner.host} pid ${s.owner.pid}, DIR ${s.owner.dir}${s.owner.stale ? ' (silent: gone?)' : ''}` : 'no orchestrator running';
    out += `sweep ${s.sweep} (namespace ${ns})${s.cancelled ? ' CANCELLED' : ''}: ${s.total} trial(s) — ${STATUSES.map((x) => `${x} ${s.counts[x]}`).join(', ')}; ${owner}\n`;
    if (s.running.length) {
      const t = new Table({ head: ['running trial', 'attempt', 'worker', 'host', 'slot', 'device', 'backend', 'step', 'heartbeat'], style: { head: [], border: [] } });
      for (const r of s.running)
        t.push([r.label ? `${r.trial_id}\n${r.label}` : r.trial_id, r.attempt, r.owner ?? '-', r.host ?? '-', r.slot ?? '-', r.device ?? '-', r.backend ?? '-', r.step === null ? '-' : `${r.step}/${r.steps ?? '?'}`, r.heartbeat_age_s === null ? '-' : `${r.heartbeat_age_s} s ago${r.stale ? ' STALE' : ''}`]);
      out += `${t.toString()}\n`;
    }
    if (s.failed.length) {
      const t = new Table({ head: ['trial', 'attempt', 'failures', 'error'], style: { head: [], border: [] }, colWidths: [20, 9, 10, 80], wordWrap: true });
      for (const f of s.failed) t.push([f.label ? `${f.trial_id}\n${f.label}` : f.trial_id, f.attempt, f.failures, (f.error ?? '').split('\n')[0]!]);
      out += `${t.toString()}\n`;
    }
  }
  return out;
}

/** `phasemap cancel` of a sweep with no trials in the namespace (a typo must not look like a cancel). */
export class UnknownSweep extends Error {
  constructor(sweep: string, ns: string) {
    super(`sweep '${sweep}': no trials in namespace ${ns} on this server; nothing was cancelled (phasemap status lists the sweeps)`);
    this.name = 'UnknownSweep';
  }
}

export interface CancelSummary {
  /** Queued trials recorded cancelled (removed from the queue). */
  queued: number;
  /** Running trials that stopped at their next step and were recorded cancelled by their worker. */
  running: number;
  /** Running trials whose worker was gone (stale heartbeat), recorded cancelled here. */
  forced: number;
  /** Running trials still running when the wait ended (their workers record them when they stop). */
  left: number;
}

/**
 * Cancels a sweep: sets its control key (workers stop its running trials at their next step and record
 * them cancelled; they drop its queued ones), removes its queued trials from the trials stream, records
 * each queued trial cancelled (state and a result on the output stream, so the orchestrator's collector
 * writes it to trials.parquet), then waits up to `waitMs` for running trials to stop; a running trial
 * whose worker is gone is recorded cancelled here. A later `phasemap run` of the spec runs it again.
 * @throws UnknownSweep when the sweep has no trials in the namespace (nothing is changed); Error when
 *   the namespace has no phasemap streams on this server; NatsConnectError (nats-connect.ts
 *   jetStreamError) when JetStream does not answer.
 */
export async function cancelSweep(nc: NatsConnection, names: TransportNames, sweep: string, opts: { waitMs?: number; ackWaitMs?: number; log?: (m: string) => void } = {}): Promise<CancelSummary> {
  return cancelSweepNow(nc, names, sweep, opts).catch((e: unknown) => {
    throw jetStreamError(nc, e, `cancelling sweep ${sweep}`);
  });
}

async function cancelSweepNow(nc: NatsConnection, names: TransportNames, sweep: string, opts: { waitMs?: number; ackWaitMs?: number; log?: (m: string) => void }): Promise<CancelSummary> {
  const kv = await openBucket(nc, names);
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const by = `${hostname()}:${process.pid}`;
  const now = () => new Date().toISOString();
  const enc = new TextEncoder();
  /**
   * Records a trial cancelled unless its state moved on from `cur`. @returns whether it did, and the
   * state it found (a worker may have recorded the trial cancelled itself).
   */
  const record = async (trialId: string, cur: TrialState | null, error: string): Promise<{ recorded: boolean; found: TrialState | null }> => {
    const t = now();
    const attempt = cur?.attempt ?? 0;
    const result: TrialResultMessage = {
      sweep, trial_id: trialId, attempt: Math.max(1, attempt), status: 'cancelled', started_at: t, finished_at: t, wall_seconds: 0,
      final_loss: null, final_rel_l2: null, diverged: false, steps_done: cur?.step ?? 0, rows: 0, host: '', device: '', backend: '',
      worker: '', slot: '', visible_devices: null, resumed_from: null, error,
    };
    let found: TrialState | null = null;
    const w = await casState(kv, names.stateKey(sweep, trialId), (c) => {
      found = c;
      return !c || TERMINAL.has(c.status) || (c.status === 'running' && c.owner !== cur?.owner) ? null : { ...c, status: 'cancelled', owner: c.owner, updated_at: t, error, result };
    });
    if (!w) return { recorded: false, found };
    await js.publish(names.result(sweep, trialId), enc.encode(JSON.stringify(result)), { msgID: `${sweep}.${trialId}.${result.attempt}.cancel.${Date.now()}` });
    return { recorded: true, found };
  };
  const summary: CancelSummary = { queued: 0, running: 0, forced: 0, left: 0 };
  const states = async () => {
    const all = await readAll(nc, names, kv, `${sweep}.>`);
    return [...all].filter(([k]) => /\.t[0-9a-f]{16}$/.test(k)).map(([k, v]) => [k.slice(k.lastIndexOf('.') + 1), v as TrialState] as const);
  };
  // States before the control key: a running trial may record itself cancelled at once after it.
  const before = await states();
  if (!before.length) throw new UnknownSweep(sweep, names.ns);
  await kv.put(names.controlKey(sweep), JSON.stringify({ cancelled: true, updated_at: now(), by } satisfies SweepControl));
  await jsm.streams.purge(names.trialsStream, { filter: names.trialsOf(sweep) });
  const initiallyRunning = new Set<string>();
  for (const [id, st] of before) {
    if (st.status === 'queued') {
      const { recorded, found } = await record(id, st, 'cancelled while queued (phasemap cancel)');
      if (recorded) summary.queued++;
      // Pulled meanwhile by a worker that saw the sweep cancelled and recorded it so itself: it never ran.
      else if (found?.status === 'cancelled' && (found.step ?? 0) === 0) summary.queued++;
      // Claimed by a worker meanwhile: it stops it at its first step.
      else initiallyRunning.add(id);
    } else if (st.status === 'running') initiallyRunning.add(id);
  }
  const deadline = Date.now() + (opts.waitMs ?? (opts.ackWaitMs ?? 60_000) + 10_000);
  for (;;) {
    const running = (await states()).filter(([id, st]) => initiallyRunning.has(id) && st.status === 'running');
    for (const [id, st] of running) {
      if (isStale(st, opts.ackWaitMs ?? 60_000) && (await record(id, st, `cancelled; its worker ${st.owner ?? '?'} was gone (phasemap cancel)`)).recorded) {
        summary.forced++;
        initiallyRunning.delete(id);
      }
    }
    const still = running.filter(([id]) => initiallyRunning.has(id)).length;
    if (still === 0 || Date.now() > deadline) {
      summary.left = still;
      break;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
  summary.running = initiallyRunning.size - summary.left + summary.forced;
  return summary;
}
