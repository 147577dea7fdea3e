/**
 * `phasemap status DIR`: one sweep read from its results DIR. While a `phasemap run` of DIR lives
 * (DIR/run.json, orchestrator/run-file.ts), trial states come from its embedded nats-server (or from
 * the cluster `--nats` names); otherwise, and after the run, from DIR/trials.parquet. Either way each
 * trial's step, rel. L2 and phase so far come from its latest metrics in DIR (not from heartbeats),
 * and the sweep's ETA from the steps left of its running and queued trials over their recent steps/s.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import Table from 'cli-table3';
import { openResults } from '../analysis/query.js';
import { attemptPhases, DEFAULT_PHASE_PARAMS, type PhaseParams } from '../analysis/phases.js';
import { SWEEP_FILE, TRIALS_FILE } from '../schemas/parquet.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { isStale, TERMINAL } from '../schemas/trial-state.js';
import type { TrialState, TrialStatus } from '../schemas/trial.js';
import { DEFAULT_NAMESPACE, transportNames, trialAckWaitMs, type TransportNames } from '../schemas/transport.js';
import { sweepTrialStates, workerAckWaitMs, type SweepStatus } from './control.js';
import { fmtEta, sweepEta } from './progress.js';
import { readRunFile, RUN_FILE, runProcessAlive, type RunFile } from './run-file.js';
import { trialLabels, type GridValues } from './trial-names.js';

/** True when `dir` is a results DIR: it holds sweep.json or trials.parquet. */
export function isResultsDir(dir: string): boolean {
  return existsSync(join(dir, SWEEP_FILE)) || existsSync(join(dir, TRIALS_FILE));
}

/** One trial as `phasemap status DIR` shows it. */
export interface DirTrial {
  trial_id: string;
  /** Its grid values as text, e.g. `lr=1e-3 batch=full rba seed=0` (the sweep's varying axes only). */
  label: string;
  grid_values: GridValues;
  status: TrialStatus;
  /** The attempt shown: the running one, or the one recorded in trials.parquet; null before any. */
  attempt: number | null;
  /** final_phase of a done trial; for another, the phase its metrics so far read as (analysis/phases.ts); null without metrics. */
  phase: string | null;
  /** The step of its latest logged metrics row (0-based; the last is steps − 1); null without metrics. */
  step: number | null;
  steps: number;
  /** final_rel_l2 of a done trial, else its latest logged rel. L2; null when none yet. */
  rel_l2: number | null;
  /** Its recent speed from its metrics' wall clock (running trials), steps/s. */
  steps_per_s: number | null;
  /** Where it runs (from the trial state, while a run's server answers). */
  worker: string | null;
  host: string | null;
  slot: string | null;
  /** No heartbeat within the ack wait: its worker is gone. */
  stale: boolean;
  error: string | null;
}

/** `phasemap status DIR` of one sweep. */
export interface DirStatus {
  dir: string;
  sweep: string;
  /** Where the trial states came from: the run's NATS server, or DIR/trials.parquet. */
  source: 'server' | 'dir';
  /** The run DIR/run.json names, and whether it is alive; null when there is no run file. */
  run: (RunFile & { alive: boolean }) | null;
  /** Why the states were not read from a server although DIR/run.json names one (stale file, refused connection). */
  note: string | null;
  total: number;
  counts: Record<TrialStatus, number>;
  /** Recent steps/s of the running trials together, and the ETA of the running and queued ones (null when not known or no run lives). */
  steps_per_s: number | null;
  eta_s: number | null;
  trials: DirTrial[];
}

interface SweepFile {
  name: string;
  analysis?: Partial<PhaseParams>;
  trials: Array<{ trial_id: string; config: TrialConfig; grid_values?: GridValues }>;
}

const STATUSES: TrialStatus[] = ['queued', 'running', 'done', 'failed', 'cancelled'];

/** Latest metrics of one attempt. */
interface Latest {
  step: number;
  rel_l2: number | null;
  rate: number | null;
}

/** Seconds of a trial's own wall clock its recent speed is measured over. */
const RATE_WINDOW_S = 30;

const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/**
 * Reads trials.parquet and the latest metrics row of every attempt on disk (step, rel. L2, recent
 * steps/s) through analysis/query.ts's views. Empty maps when DIR has no trials.parquet yet.
 */
async function readDir(dir: string): Promise<{ rows: Map<string, Record<string, unknown>>; latest: Map<string, Latest> }> {
  const rows = new Map<string, Record<string, unknown>>();
  const latest = new Map<string, Latest>();
  if (!existsSync(join(dir, TRIALS_FILE))) return { rows, latest };
  const { conn, close } = await openResults(dir);
  try {
    const t = await conn.runAndReadAll(`SELECT trial_id, status, attempts, final_phase, final_rel_l2, steps, error FROM trials`);
    for (const r of t.getRowObjectsJS() as Record<string, unknown>[]) rows.set(r.trial_id as string, r);
    // Before any metrics part exists the view has only its key columns.
    const cols = await conn.runAndReadAll(`SELECT column_name FROM information_schema.columns WHERE table_name = 'metrics_all'`);
    const have = new Set((cols.getRowObjectsJS() as Array<{ column_name: string }>).map((c) => c.column_name));
    if (!have.has('wall_seconds') || !have.has('rel_l2')) return { rows, latest };
    const m = await conn.runAndReadAll(`
      WITH m AS (SELECT trial_id, attempt, step, wall_seconds, rel_l2, max(wall_seconds) OVER (PARTITION BY trial_id, attempt) AS last_wall FROM metrics_all)
      SELECT trial_id, attempt, max(step) AS step, max(wall_seconds) AS wall,
             min(step) FILTER (WHERE wall_seconds >= last_wall - ${RATE_WINDOW_S}) AS step0,
             min(wall_seconds) FILTER (WHERE wall_seconds >= last_wall - ${RATE_WINDOW_S}) AS wall0,
             arg_max(rel_l2, step) FILTER (WHERE rel_l2 IS NOT NULL) AS rel_l2
      FROM m GROUP BY trial_id, attempt`);
    for (const r of m.getRowObjectsJS() as Record<string, unknown>[]) {
      const step = num(r.step)!;
      const [wall, step0, wall0] = [num(r.wall), num(r.step0), num(r.wall0)];
      let rate: number | null = null;
      if (wall !== null && step0 !== null && wall0 !== null && wall - wall0 >= 0.5 && step > step0) rate = (step - step0) / (wall - wall0);
      else if (wall !== null && wall > 0 && step > 0) rate = step / wall;
      latest.set(`${r.trial_id as string}#${num(r.attempt)}`, { step, rel_l2: num(r.rel_l2), rate });
    }
  } finally {
    close();
  }
  return { rows, latest };
}

/** The highest attempt of a trial with metrics on disk (0 when none). */
function lastAttemptOnDisk(latest: Map<string, Latest>, id: string): number {
  let a = 0;
  for (const k of latest.keys()) if (k.startsWith(`${id}#`)) a = Math.max(a, Number(k.slice(id.length + 1)));
  return a;
}

/**
 * Connects to the server DIR/run.json names, when its process is alive; else says why not.
 * @returns the connection, or null and a note (stale run file, refused connection).
 */
async function connectRun(run: RunFile): Promise<{ nc: NatsConnection | null; alive: boolean; note: string | null }> {
  const alive = runProcessAlive(run);
  if (alive === false) return { nc: null, alive: false, note: `${RUN_FILE} names pid ${run.pid}, which is not running (a run that was killed): read from DIR` };
  // The embedded server listens on the run's own loopback only (DIR on shared storage, read from another host).
  if (alive === null && run.url && /^nats:\/\/127\.0\.0\.1:/.test(run.url)) return { nc: null, alive: true, note: `the run (pid ${run.pid}) is on host ${run.host}; its embedded server is reachable there only: read from DIR` };
  if (!run.url) return { nc: null, alive: true, note: `the run (pid ${run.pid}) uses ${run.nats ?? 'a NATS cluster'}: give --nats URL for its trial states; read from DIR` };
  try {
    const nc = await connect({ servers: run.url, reconnect: false, timeout: 2000, name: 'phasemap-status' });
    return { nc, alive: true, note: null };
  } catch (e) {
    return { nc: null, alive: alive === true, note: `the run's server ${run.url} did not answer (${(e as Error).message}): read from DIR` };
  }
}

/**
 * Status of the sweep in results DIR (module header).
 * @param opts.nc a connection to the cluster the run uses (`status DIR --nats URL`), with its `names`;
 *   without one, DIR/run.json's embedded server is used while its run lives.
 * @throws Error naming DIR when it is not a results DIR (no sweep.json).
 */
export async function dirStatus(dir: string, opts: { nc?: NatsConnection; names?: TransportNames; now?: number } = {}): Promise<DirStatus> {
  dir = resolve(dir);
  let file: SweepFile;
  try {
    file = JSON.parse(await readFile(join(dir, SWEEP_FILE), 'utf8')) as SweepFile;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${dir}: no ${SWEEP_FILE} (is it a phasemap results DIR? run a sweep with --out ${dir} first)`);
    throw e;
  }
  const runFile = await readRunFile(dir);
  let run: DirStatus['run'] = null;
  let note: string | null = null;
  let states: Map<string, TrialState> | null = null;
  let ackWaitMs = trialAckWaitMs();
  let own: NatsConnection | null = null;
  try {
    let nc = opts.nc ?? null;
    let names = opts.names ?? null;
    if (runFile) {
      if (!nc) {
        const c = await connectRun(runFile);
        own = nc = c.nc;
        note = c.note;
        names = transportNames(runFile.namespace || DEFAULT_NAMESPACE);
        run = { ...runFile, alive: c.alive };
      } else run = { ...runFile, alive: runProcessAlive(runFile) !== false };
    }
    if (nc) {
      names ??= transportNames(DEFAULT_NAMESPACE);
      try {
        states = await sweepTrialStates(nc, names, file.name);
        ackWaitMs = await workerAckWaitMs(nc, names, ackWaitMs);
      } catch (e) {
        note = `no trial states on the server (${(e as Error).message.split(';')[0]}): read from DIR`;
      }
    }
  } finally {
    await own?.close().catch(() => undefined);
  }
  const live = run !== null && run.alive;
  const { rows, latest } = await readDir(dir);
  const labels = trialLabels(file.trials);
  const params = { ...DEFAULT_PHASE_PARAMS, ...(file.analysis ?? {}) };
  const now = opts.now ?? Date.now();
  const trials: DirTrial[] = [];
  for (const t of file.trials) {
    const row = rows.get(t.trial_id);
    const st = states?.get(t.trial_id) ?? null;
    const steps = num(row?.steps) ?? t.config.train.steps;
    // A trial done on disk is done; else the server's state, else trials.parquet's.
    let status: TrialStatus = (row?.status as TrialStatus | undefined) ?? 'queued';
    if (status !== 'done' && st) status = st.status;
    let attempt: number | null = st && status === st.status ? st.attempt : num(row?.attempts);
    if (!st) {
      // Read from DIR: an attempt newer than the recorded one, with metrics, is running while the run lives.
      const onDisk = lastAttemptOnDisk(latest, t.trial_id);
      if (!TERMINAL.has(status) && onDisk > (attempt ?? 0)) {
        attempt = onDisk;
        if (live) status = 'running';
      }
    }
    if (attempt === 0) attempt = null;
    const l = attempt === null ? undefined : latest.get(`${t.trial_id}#${attempt}`);
    let phase: string | null = status === 'done' ? ((row?.final_phase as string | null | undefined) ?? null) : null;
    if (phase === null && l && attempt !== null) {
      phase = await attemptPhases(dir, t.trial_id, attempt, params).then(
        (p) => p.final_phase,
        () => null,
      );
    }
    const done = status === 'done';
    trials.push({
      trial_id: t.trial_id,
      label: labels.get(t.trial_id) ?? '',
      grid_values: t.grid_values ?? {},
      status,
      attempt,
      phase,
      step: l ? Math.max(l.step, done ? steps - 1 : 0) : done ? steps - 1 : st?.status === 'running' && typeof st.step === 'number' ? st.step : null,
      steps,
      rel_l2: (done ? num(row?.final_rel_l2) : null) ?? l?.rel_l2 ?? null,
      steps_per_s: status === 'running' ? (l?.rate ?? null) : null,
      worker: st?.owner ?? null,
      host: st?.host ?? null,
      slot: st?.slot ?? null,
      stale: st?.status === 'running' ? isStale(st, ackWaitMs, now) : false,
      error: (st?.error ?? (row?.error as string | null | undefined)) || null,
    });
  }
  const counts = Object.fromEntries(STATUSES.map((s) => [s, 0])) as Record<TrialStatus, number>;
  for (const t of trials) counts[t.status]++;
  let eta: { rate: number | null; eta_s: number | null } = { rate: null, eta_s: null };
  if (live) {
    // Queued trials of this run only: with server states, those the server holds queued (a trial that
    // left the spec stays `queued` in trials.parquet but is never run).
    const waiting = trials.filter((t) => t.status === 'running' || (t.status === 'queued' && (!states || states.has(t.trial_id))));
    eta = sweepEta(waiting.map((t) => ({ steps: t.steps, step: t.status === 'running' ? (t.step ?? 0) : null, rate: t.stale ? null : t.steps_per_s })));
  }
  return { dir, sweep: file.name, source: states ? 'server' : 'dir', run, note, total: trials.length, counts, steps_per_s: eta.rate, eta_s: eta.eta_s, trials };
}

const fmtRel = (x: number | null) => (x === null || !Number.isFinite(x) ? (x === null ? '-' : String(x)) : x.toPrecision(3));

/** The terminal view of dirStatus: a line about the sweep and its run, then one row per trial. */
export function renderDirStatus(s: DirStatus): string {
  const counts = STATUSES.filter((x) => s.counts[x] || x === 'done').map((x) => `${x} ${s.counts[x]}`).join(', ');
  let runText: string;
  if (s.run?.alive) {
    const where = s.source === 'dir' ? 'states from DIR' : s.run.url ? `embedded server ${s.run.url}` : `states from ${s.run.nats ?? 'the NATS server'}`;
    runText = `running: pid ${s.run.pid} since ${s.run.started_at}, ${where}; ${s.steps_per_s === null ? '-' : s.steps_per_s.toFixed(0)} steps/s, ETA ${fmtEta(s.eta_s)}`;
  } else runText = s.source === 'server' ? 'no run (states from the NATS server)' : `no run (read from ${TRIALS_FILE})`;
  let out = `sweep ${s.sweep} in ${s.dir}: ${s.total} trial(s) — ${counts}; ${runText}\n`;
  if (s.note) out += `note: ${s.note}\n`;
  const where = s.trials.some((t) => t.status === 'running' && t.worker);
  const t = new Table({
    head: ['trial', 'grid values', 'status', 'phase', 'step', 'rel. L2', ...(where ? ['worker / slot'] : [])],
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const r of s.trials) {
    const step = r.status === 'done' ? `${r.steps}/${r.steps}` : r.step === null ? '-' : `${r.step}/${r.steps}`;
    let status: string = r.status;
    if (r.status === 'running' && r.attempt && r.attempt > 1) status = `running (attempt ${r.attempt})`;
    // Metrics of an attempt that no living run goes on with: it runs again at the next `phasemap run`.
    else if (r.status === 'queued' && r.step !== null && !s.run?.alive) status = 'queued (interrupted)';
    const row = [r.trial_id, r.label || '-', status, r.phase ?? '-', step, fmtRel(r.rel_l2)];
    if (where) row.push(r.status === 'running' && r.worker ? `${r.worker}${r.slot ? ` ${r.slot}` : ''}${r.stale ? ' STALE' : ''}` : '');
    t.push(row);
  }
  out += `${t.toString()}\n`;
  const failed = s.trials.filter((r) => r.status === 'failed' && r.error);
  for (const f of failed) out += `failed ${f.trial_id}${f.label ? ` (${f.label})` : ''}: ${f.error!.split('\n')[0]}\n`;
  return out;
}

/**
 * Labels (grid values) for the trials of `phasemap status --nats` whose orchestrator's DIR is
 * readable here (its sweep.json), set on the running and failed entries in place.
 */
export async function labelSweepStatus(list: SweepStatus[]): Promise<void> {
  for (const s of list) {
    if (!s.owner?.dir) continue;
    let labels: Map<string, string>;
    try {
      labels = trialLabels((JSON.parse(await readFile(join(s.owner.dir, SWEEP_FILE), 'utf8')) as SweepFile).trials);
    } catch {
      continue;
    }
    for (const r of [...s.running, ...s.failed]) {
      const l = labels.get(r.trial_id);
      if (l) r.label = l;
    }
  }
}
