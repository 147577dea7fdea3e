/**
 * `phasemap run`: resolve the spec, work out which trials DIR still needs, start (or join) NATS,
 * publish, run a local worker and the collector, and wait until every trial of this run is done or failed.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile, rename } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import { METRICS_DIR, SWEEP_FILE, type TrialRecord } from '../schemas/parquet.js';
import type { AnalysisConfig, TrialConfig } from '../schemas/sweep.js';
import type { BackendRequest, TrialMessage } from '../schemas/trial.js';
import { DEFAULT_NAMESPACE, transportNames, type ProgressMessage } from '../schemas/transport.js';
import { WorkerAgent } from '../worker/agent.js';
import { serveCheckpoints } from './checkpoints.js';
import { LiveReport } from './live-report.js';
import { Collector } from './collector.js';
import { claimSweepOwner, connectNats, ensureResources, publishTrials, resetCollectorConsumer, setSweepControl, watchMaxDeliveries } from './jetstream.js';
import { logConnectionEvents, redactUrl, type NatsAuth } from './nats-connect.js';
import { embeddedStoreDir, startEmbeddedNats, type EmbeddedNats } from './nats-server.js';
import { readTrialsParquet, writeTrialsParquet } from './parquet-store.js';
import { attemptPhases } from '../analysis/phases.js';
import { plainLogger, SweepProgress, type Logger } from './progress.js';
import { removeRunFile, writeRunFile } from './run-file.js';
import { loadSweep, type ResolvedSweep } from './spec.js';
import { trialLabels, withTrialLabels } from './trial-names.js';

export interface RunOptions {
  spec: string;
  /** Output DIR; default `results/<sweep name>`. */
  out?: string;
  /** NATS URL(s), comma-separated; none = embedded nats-server. */
  nats?: string;
  /** Credentials and TLS for `nats` (orchestrator/nats-connect.ts); unused with the embedded server. */
  natsAuth?: NatsAuth;
  /** Local worker slots; 0 = no local worker. Default: CPU cores. */
  slots?: number;
  backend?: BackendRequest;
  /** Namespace of subjects, streams and the state bucket (schemas/transport.ts); default `phasemap`. */
  namespace?: string;
  /** JetStream replicas of the streams and bucket when this run creates them (3 on a 3-node cluster); default 1. */
  replicas?: number;
  /** GPUs of the local worker (`all`, `none`, `0,2`) and slots per GPU: see worker/pool.ts. */
  gpus?: string;
  slotsPerGpu?: number;
  /** Trial fusion of the local worker: most same-shaped trials per slot (worker/agent.ts AgentOptions.fuse); default $PHASEMAP_FUSE or auto. */
  fuse?: number | 'auto';
  /** Live progress bar (default: stderr is a TTY). */
  tty?: boolean;
  log?: Logger;
  /** Stop waiting after this many ms (tests); default none. */
  signal?: AbortSignal;
  /** Keep DIR/report fresh while the sweep runs (orchestrator/live-report.ts); default false (the CLI turns it on). */
  liveReport?: boolean;
}

export interface RunSummary {
  dir: string;
  total: number;
  queued: number;
  done: number;
  failed: Array<{ trial_id: string; error: string | null; /** Its grid values as text (orchestrator/trial-names.ts). */ label: string }>;
  /** Trials stopped by `phasemap cancel`. */
  cancelled: number;
  /** True when the run was interrupted before every trial finished. */
  interrupted: boolean;
}

interface SweepFile {
  name: string;
  description?: string;
  spec: unknown;
  /** The resolved `analysis:` block the phase records in trials.parquet were read with. */
  analysis?: AnalysisConfig;
  trials: Array<{ trial_id: string; config: TrialConfig; grid_values?: Record<string, unknown> }>;
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`);
  await rename(tmp, path);
}

/**
 * Merges this spec's trials with what DIR already holds (sweep.json + trials.parquet).
 * @throws Error when DIR holds a different sweep.
 */
async function loadDirState(dir: string, sweep: ResolvedSweep): Promise<{ records: Map<string, TrialRecord>; file: SweepFile; prevAnalysis: AnalysisConfig | null }> {
  const path = join(dir, SWEEP_FILE);
  let prev: SweepFile | null = null;
  if (existsSync(path)) {
    prev = JSON.parse(await readFile(path, 'utf8')) as SweepFile;
    if (prev.name !== sweep.name)
      throw new Error(`--out ${dir}: holds sweep '${prev.name}', not '${sweep.name}'; choose another --out (or delete that directory)`);
  }
  const trials = new Map<string, SweepFile['trials'][number]>();
  for (const t of prev?.trials ?? []) trials.set(t.trial_id, t);
  for (const t of sweep.trials) trials.set(t.trial_id, { trial_id: t.trial_id, config: t.config, grid_values: t.grid_values });
  const rows = new Map((await readTrialsParquet(dir)).map((r) => [r.trial_id, r]));
  const records = new Map<string, TrialRecord>();
  for (const t of trials.values()) {
    const row = rows.get(t.trial_id);
    const get = <T>(k: string) => (row?.[k] ?? null) as T | null;
    records.set(t.trial_id, {
      trial_id: t.trial_id,
      sweep: sweep.name,
      config: t.config,
      status: (row?.status as TrialRecord['status'] | undefined) ?? 'queued',
      attempts: row?.attempts ?? 0,
      started_at: row?.started_at ?? null,
      finished_at: row?.finished_at ?? null,
      wall_seconds: get<number>('wall_seconds'),
      final_loss: get<number>('final_loss'),
      final_rel_l2: get<number>('final_rel_l2'),
      diverged: get<boolean>('diverged'),
      host: get<string>('host'),
      device: get<string>('device'),
      backend: get<string>('backend'),
      worker: get<string>('worker'),
      slot: get<string>('slot'),
      visible_devices: get<string>('visible_devices'),
      resumed_from_attempt: get<number>('resumed_from_attempt'),
      resumed_from_step: get<number>('resumed_from_step'),
      fused: get<number>('fused'),
      error: get<string>('error'),
      t_diffusion: get<number>('t_diffusion'),
      t_equilibrium: get<number>('t_equilibrium'),
      final_phase: get<TrialRecord['final_phase'] & string>('final_phase'),
    });
  }
  const file: SweepFile = { name: sweep.name, description: sweep.description, spec: sweep.spec, analysis: sweep.analysis, trials: [...trials.values()] };
  return { records, file, prevAnalysis: prev?.analysis ?? null };
}

const sameAnalysis = (a: AnalysisConfig | null, b: AnalysisConfig): boolean =>
  a !== null && Object.keys(b).length === Object.keys(a).length && Object.entries(b).every(([k, v]) => (a as Record<string, unknown>)[k] === v);

/**
 * Re-reads the phase record of every done trial from its metrics on disk, when DIR's records were
 * read with other `analysis:` thresholds than this spec's (or before phases were recorded), so that
 * trials.parquet always matches the thresholds sweep.json names.
 */
async function refreshPhases(dir: string, records: Map<string, TrialRecord>, analysis: AnalysisConfig, log: Logger): Promise<number> {
  let n = 0;
  for (const r of records.values()) {
    if (r.status !== 'done' || r.attempts < 1) continue;
    try {
      Object.assign(r, await attemptPhases(dir, r.trial_id, r.attempts, analysis, r.diverged === true));
      n++;
    } catch (e) {
      log.warn(`phases of trial ${r.trial_id} not re-read: ${(e as Error).message}`);
    }
  }
  return n;
}

/** The highest attempt number with metrics on disk for a trial (0 when none). */
async function attemptsOnDisk(dir: string, trialId: string): Promise<number> {
  try {
    const names = await readdir(join(dir, METRICS_DIR, `trial_id=${trialId}`));
    return Math.max(0, ...names.map((n) => /^attempt=(\d+)$/.exec(n)?.[1]).filter(Boolean).map(Number));
  } catch {
    return 0;
  }
}

/** Runs a sweep to completion. Never throws for a trial's failure: see RunSummary.failed. */
export async function runSweep(opts: RunOptions): Promise<RunSummary> {
  const plain = opts.log ?? plainLogger();
  let base = plain;
  const sweep = await loadSweep(opts.spec);
  if (sweep.duplicates) base.warn(`${sweep.duplicates} grid combination(s) resolve to a trial already in the grid (same config); each runs once`);
  const dir = resolve(opts.out ?? join('results', sweep.name));
  await mkdir(dir, { recursive: true });
  const { records, file, prevAnalysis } = await loadDirState(dir, sweep);
  // Every log line names a trial by its grid values beside its id.
  const labels = trialLabels(file.trials);
  base = withTrialLabels(plain, labels);
  if (!sameAnalysis(prevAnalysis, sweep.analysis)) {
    const n = await refreshPhases(dir, records, sweep.analysis, base);
    if (n) {
      // Before sweep.json names the new thresholds, so that the two never disagree on disk.
      await writeTrialsParquet(dir, [...records.values()]);
      base.info(`analysis thresholds differ from those ${dir} was read with: phases of ${n} done trial(s) re-read`);
    }
  }
  await writeJsonAtomic(join(dir, SWEEP_FILE), file);

  let toRun = sweep.trials.filter((t) => records.get(t.trial_id)!.status !== 'done');
  const summary: RunSummary = { dir, total: sweep.trials.length, queued: toRun.length, done: 0, failed: [], cancelled: 0, interrupted: false };
  base.info(`sweep ${sweep.name}: ${sweep.trials.length} trial(s), ${sweep.trials.length - toRun.length} already done in ${dir}, ${toRun.length} to run`);
  if (toRun.length === 0) {
    await writeTrialsParquet(dir, [...records.values()]);
    return summary;
  }

  let embedded: EmbeddedNats | null = null;
  let nc: NatsConnection | null = null;
  let agent: WorkerAgent | null = null;
  let collector: Collector | null = null;
  let progress: SweepProgress | null = null;
  let log: Logger = base;
  let release: (() => Promise<void>) | null = null;
  let ckptService: { unsubscribe(): void } | null = null;
  let runFile = false;
  const dropRunFile = () => removeRunFile(dir);
  const live = opts.liveReport ? new LiveReport(dir, base) : null;
  try {
    if (!opts.nats) {
      embedded = await startEmbeddedNats(embeddedStoreDir(dir));
      log.info(`embedded nats-server on ${embedded.url} (store ${embeddedStoreDir(dir)})`);
    }
    // Errors come worded (`--nats <URL, password redacted>: authorization failed …`): see nats-connect.ts.
    nc = await connectNats(opts.nats ?? embedded!.url, `phasemap-run-${sweep.name}`, opts.nats ? opts.natsAuth : undefined);
    // Through `log` as it is at the time (the progress bar's logger once the sweep runs).
    logConnectionEvents(nc, { info: (m) => log.info(m), warn: (m) => log.warn(m) });
    const names = transportNames(opts.namespace ?? DEFAULT_NAMESPACE);
    const transport = await ensureResources(nc, names, sweep.name, opts.replicas ?? 1);
    release = await claimSweepOwner(transport, sweep.name, dir);
    // Now that this run owns the sweep: DIR/run.json tells `phasemap status DIR` where it runs.
    await writeRunFile(dir, { sweep: sweep.name, namespace: names.ns, url: embedded?.url ?? null, nats: opts.nats ? redactUrl(opts.nats) : null });
    runFile = true;
    process.once('exit', dropRunFile);
    await resetCollectorConsumer(transport, sweep.name);
    // A new run of a cancelled sweep runs it again.
    await setSweepControl(transport, sweep.name, { cancelled: false, updated_at: new Date().toISOString() });

    let waiting: Set<string> | null = null;
    let allDone!: () => void;
    const finished = new Promise<void>((r) => (allDone = r));
    collector = new Collector({
      nc,
      names,
      sweep: sweep.name,
      dir,
      records,
      kv: transport.kv,
      analysis: sweep.analysis,
      onWarning: (m) => log.warn(m),
      onInfo: (m) => log.info(m),
      onTrialFinished: (r, res) => {
        if (!waiting?.delete(r.trial_id)) return;
        live?.poke();
        progress?.onFinished(r.trial_id, r.status, res.steps_done, res.wall_seconds);
        log.info(
          `trial ${r.trial_id} ${r.status} (attempt ${res.attempt}, ${res.wall_seconds.toFixed(1)} s, final loss ${res.final_loss?.toPrecision(4) ?? '-'}, rel_l2 ${res.final_rel_l2?.toPrecision(4) ?? '-'}${res.diverged ? ', diverged' : ''}${res.error ? `, error: ${res.error}` : ''})`,
        );
        if (waiting.size === 0) allDone();
      },
    });
    await collector.start();
    // Workers resuming a redelivered trial fetch its last checkpoint from DIR through this process.
    const payload = nc.info?.max_payload ?? 1024 * 1024;
    ckptService = serveCheckpoints(nc, names.checkpointRequest(sweep.name), dir, payload - Math.min(4096, Math.floor(payload / 8)), { onWarning: (m) => log.warn(m) });
    // Whatever an earlier, interrupted run left in the output stream is written first: a trial it
    // finished is not run again, and attempt numbers below never collide with an attempt on disk.
    await collector.settle();
    toRun = toRun.filter((t) => records.get(t.trial_id)!.status !== 'done');
    // From here on (no await before it) a result that arrives deletes its trial from `waiting`: a trial
    // that finishes while this run starts (on a worker of an earlier run) is neither waited for forever
    // nor queued again.
    waiting = new Set(toRun.map((t) => t.trial_id));
    for (const t of toRun) records.get(t.trial_id)!.status = 'queued';
    await writeTrialsParquet(dir, [...records.values()]);
    summary.queued = toRun.length;
    if (toRun.length === 0) return summary;
    live?.poke();

    progress = new SweepProgress(
      toRun.map((t) => ({ trial_id: t.trial_id, steps: t.config.train.steps, label: labels.get(t.trial_id) })),
      opts.tty ?? Boolean(process.stderr.isTTY),
      base,
    );
    log = withTrialLabels(progress.log, labels);
    const sub = nc.subscribe(names.progress(sweep.name), {
      callback: (_e, m) => {
        try {
          progress!.onProgress(m.json<ProgressMessage>());
        } catch {
          /* best effort */
        }
      },
    });
    const lost = watchMaxDeliveries(transport, sweep.name, (id, deliveries) => {
      void collector!.markFailed(id, deliveries, `no worker finished it: delivered ${deliveries} times without an ack (workers died or were stopped)`);
    });

    const runId = `${sweep.name}-${randomBytes(6).toString('hex')}`;
    const messages: TrialMessage[] = [];
    for (const t of toRun) {
      if (!waiting.has(t.trial_id)) continue; // finished meanwhile
      const attempt_base = Math.max(records.get(t.trial_id)!.attempts, await attemptsOnDisk(dir, t.trial_id));
      messages.push({
        sweep: sweep.name, trial_id: t.trial_id, config: t.config, backend: opts.backend ?? 'auto', attempt_base,
        divergence_factor: sweep.analysis.divergence_factor, max_attempts: sweep.max_attempts, run_id: runId,
        ...(labels.get(t.trial_id) ? { label: labels.get(t.trial_id) } : {}),
      });
    }
    const pub = await publishTrials(transport, sweep.name, messages, runId);
    const n = pub.queued;
    if (pub.inStream) log.info(`${pub.inStream} trial(s) still queued or running from an earlier run: left as they are`);
    if (pub.finishing) log.info(`${pub.finishing} trial(s) finished while no collector ran: their results are read from the output stream`);
    log.info(`queued ${n} trial(s) on ${opts.nats ? redactUrl(opts.nats) : 'the embedded server'}`);

    const slots = opts.slots ?? availableParallelism();
    if (slots > 0) {
      agent = new WorkerAgent({ nc, slots, backend: opts.backend ?? 'auto', namespace: names.ns, gpus: opts.gpus, slotsPerGpu: opts.slotsPerGpu, fuse: opts.fuse, log, labels });
      await agent.start();
    } else log.info('no local worker (--slots 0): waiting for workers on the cluster');

    if (waiting.size === 0) allDone();
    const aborted = new Promise<'aborted'>((r) => {
      if (opts.signal?.aborted) r('aborted');
      opts.signal?.addEventListener('abort', () => r('aborted'), { once: true });
    });
    if ((await Promise.race([finished.then(() => 'done' as const), aborted])) === 'aborted') summary.interrupted = true;
    sub.unsubscribe();
    lost.unsubscribe();
  } finally {
    progress?.stop();
    await agent?.stop(summary.interrupted);
    // After an interrupt the report being written is ended at once: the final one follows.
    await live?.stop(summary.interrupted ? 0 : 30);
    ckptService?.unsubscribe();
    await collector?.stop();
    if (runFile) {
      removeRunFile(dir);
      process.off('exit', dropRunFile);
    }
    await release?.();
    await nc?.drain().catch(() => undefined);
    await embedded?.stop();
  }
  for (const t of toRun) {
    const r = records.get(t.trial_id)!;
    if (r.status === 'done') summary.done++;
    else if (r.status === 'failed') summary.failed.push({ trial_id: r.trial_id, error: r.error, label: labels.get(r.trial_id) ?? '' });
    else if (r.status === 'cancelled') summary.cancelled++;
  }
  return summary;
}
