/**
 * Trial state transitions in the KV bucket (key `<sweep>.<trial_id>`, value TrialState JSON), shared by
 * the orchestrator, `phasemap cancel` and the workers. Every change is a compare-and-set on the entry's
 * revision, so two processes never both believe they moved a trial: the loser re-reads and decides again.
 *
 *   queued → running            a worker claims a delivered trial
 *   running → running           a worker takes over a redelivered trial (its last owner stopped heart-beating)
 *   running → queued            a trial that threw is handed back for a retry (below max_attempts), or a
 *                               stopping worker hands it back (SIGTERM)
 *   running → done | failed | cancelled   only by the owner of that attempt
 *   queued → cancelled          `phasemap cancel`
 *   any → queued                `phasemap run` queues a trial that is in no stream (new run)
 */
import type { KV } from '@nats-io/kv';
import type { TrialState, TrialStatus } from './trial.js';

export const TERMINAL: ReadonlySet<TrialStatus> = new Set(['done', 'failed', 'cancelled']);

/** A state with the revision it was read (or written) at. */
export interface Versioned {
  state: TrialState | null;
  /** 0 when the key does not exist (or was deleted). */
  revision: number;
}

/** Reads a trial's state; a deleted or unreadable entry reads as null. */
export async function readState(kv: KV, key: string): Promise<Versioned> {
  const e = await kv.get(key);
  if (!e || e.operation !== 'PUT') return { state: null, revision: e?.revision ?? 0 };
  try {
    return { state: e.json<TrialState>(), revision: e.revision };
  } catch {
    return { state: null, revision: e.revision };
  }
}

/** Writes `next` only if the entry is still at `revision` (0: only if absent/deleted). Returns the new revision, or null if someone else wrote first. */
export async function writeStateIf(kv: KV, key: string, next: TrialState, revision: number): Promise<number | null> {
  const data = JSON.stringify(next);
  try {
    return revision === 0 ? await kv.create(key, data) : await kv.update(key, data, revision);
  } catch (e) {
    // A lost race: JetStream answers "wrong last sequence" (10071); anything else is transport trouble.
    if (/wrong last sequence|key exists|10071/i.test(String((e as Error).message))) return null;
    throw e;
  }
}

/**
 * Compare-and-set loop: reads the state, asks `decide` for the next one (null = leave it), writes it
 * if nobody wrote in between, else reads again (at most `tries` times).
 * @returns the state written and its revision, or null when `decide` declined.
 * @throws Error after `tries` lost races, or on transport errors.
 */
export async function casState(kv: KV, key: string, decide: (cur: TrialState | null) => TrialState | null, tries = 8): Promise<{ state: TrialState; revision: number } | null> {
  for (let i = 0; i < tries; i++) {
    const cur = await readState(kv, key);
    const next = decide(cur.state);
    if (!next) return null;
    const revision = await writeStateIf(kv, key, next, cur.revision);
    if (revision !== null) return { state: next, revision };
  }
  throw new Error(`trial state ${key}: ${tries} compare-and-set races lost in a row`);
}

/** True when `st` is a running attempt whose owner has not heart-beaten for `staleMs` (its worker is gone or cut off). */
export function isStale(st: TrialState, staleMs: number, now = Date.now()): boolean {
  if (st.status !== 'running') return false;
  const at = Date.parse(st.heartbeat_at ?? st.updated_at);
  return !(now - at < staleMs);
}
