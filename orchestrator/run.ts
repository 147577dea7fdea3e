/**
 * `phasemap run`: resolve the spec, work out which trials DIR still needs, start (or join) NATS,
 * publish, run a local worker and the collector, and wait until every trial of this run is done or failed.
 *
 * While it runs it watches DIR's free space (orchestrator/disk-space.ts: the collector pauses below
 * `--min-free`) and whether JetStream answers (an embedded server that stops answering ends the run with
 * an error). Its shutdown is bounded when interrupted or stopped by such an error: each step gets a
 * deadline, and the embedded nats-server is killed if it does not stop.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile, rename } from 'node:fs/promises';
import { availableParallelism, hostname } from 'node:os';
import { join, resolve } from 'node:path';
import type { NatsConnection } from '@nats-io/transport-node';
import type { JetStreamManager } from '@nats-io/jetstream';
import { METRICS_DIR, SWEEP_FILE, type TrialRecord } from '../schemas/parquet.js';
import type { AnalysisConfig, TrialConfig } from '../schemas/sweep.js';
import type { BackendRequest, ProblemModuleBundle, TrialMessage } from '../schemas/trial.js';
import { DEFAULT_NAMESPACE, transportNames, trialAckWaitMs, type ProgressMessage } from '../schemas/transport.js';
import { WorkerAgent } from '../worker/agent.js';
import { serveCheckpoints } from './checkpoints.js';
import { LiveReport } from './live-report.js';
import { Collector } from './collector.js';
import { claimSweepOwner, connectNats, ensureResources, publishTrials, resetCollectorConsumer, setSweepControl, watchJetStream, watchMaxDeliveries } from './jetstream.js';
import { DEFAULT_MIN_FREE, DiskGuard, embeddedStoreLimit, fmtBytes, STORE_BLOCK_SLACK, type MinFree } from './disk-space.js';
import { logConnectionEvents, redactUrl, type NatsAuth } from './nats-connect.js';
import { embeddedStoreDir, startEmbeddedNats, type EmbeddedNats } from './nats-server.js';
import { readTrialsParquet, writeTrialsParquet } from './parquet-store.js';
import { attemptPhases } from '../analysis/phases.js';
import { plainLogger, SweepProgress, type Logger } from './progress.js';
import { checkOutDir, ensureOutDir, SweepBusyError, WordedError } from './errors.js';
import { readRunFile, removeRunFile, RUN_FILE, runProcessAlive, writeRunFile } from './run-file.js';
import { loadSweep, type ResolvedSweep } from './spec.js';
import { trialLabels, withTrialLabels } from './trial-names.js';

export interface RunOptions {
  spec: string;
  /** The sweep already resolved (e.g. with refinement trials added: orchestrator/refine.ts); when set, `spec` is not read. */
  resolved?: ResolvedSweep;
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
  /** The local worker runs trials of user problem modules (worker/agent.ts AgentOptions.allowModules; docs/problems.md). */
  allowModules?: boolean;
  /** Live progress bar (default: stderr is a TTY). */
  tty?: boolean;
  log?: Logger;
  /** Stop waiting after this many ms (tests); default none. */
  signal?: AbortSignal;
  /** Keep DIR/report fresh while the sweep runs (orchestrator/live-report.ts); default false (the CLI turns it on). */
  liveReport?: boolean;
  /**
   * Seconds the end of the run waits for a live report being written (default 30: so that the final
   * report written after the run is the last word). 0 ends it at once — refinement rounds, whose
   * next round starts its own live report and whose last is followed by the final report.
   */
  liveReportWaitS?: number;
  /** Free space on DIR's filesystem under which the collector pauses (orchestrator/disk-space.ts); default 256 MiB. */
  minFree?: MinFree;
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
  /**
   * Why the run stopped by itself before every trial finished (its embedded nats-server stopped
   * answering or exited), worded for the user: what happened and what to do; null otherwise. Set
   * together with `interrupted`.
   */
  error: string | null;
}

/** Most of the time an interrupted (or failed) run's shutdown may take before its nats-server is stopped. */
const SHUTDOWN_MS = 6000;

/** Thrown inside runSweep when the run is stopped (interrupt or error) while it starts up. */
const STOPPED = Symbol('stopped');

/**
 * Awaits `p` for at most `ms`; past that, says which step was left unfinished and goes on (the step is
 * abandoned, not cancelled). An error of the step is logged, not thrown.
 * @returns true when `p` settled in time.
 */
async function within(p: Promise<unknown>, ms: number, what: string, log: Logger): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([
    p.then(
      () => true,
      (e: Error) => {
        log.warn(`${what}: ${e?.message ?? String(e)}`);
        return true;
      },
    ),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), Math.max(0, ms)))),
  ]);
  clearTimeout(timer);
  if (!done) log.warn(`stopping: ${what} did not finish within ${(ms / 1000).toFixed(1)} s; left unfinished`);
  return done;
}

/** DIR/sweep.json. */
export interface SweepFile {
  name: string;
  description?: string;
  spec: unknown;
  /** The resolved `analysis:` block the phase records in trials.parquet were read with. */
  analysis?: AnalysisConfig;
  trials: SweepFileTrial[];
  /** The sources of the sweep's problem modules by content hash (docs/problems.md): `phasemap refine` resolves the spec again from them. */
  problem_modules?: Record<string, ProblemModuleBundle>;
}

/** A trial as DIR/sweep.json lists it; `refine_round`: the refinement round that added it (none for a grid trial). */
export interface SweepFileTrial {
  trial_id: string;
  config: TrialConfig;
  grid_values?: Record<string, unknown>;
  refine_round?: number;
}

async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`);
  await rename(tmp, path);
}

/**
 * Merges this spec's trials with what DIR already holds (sweep.json + trials.parquet). Reads only.
 * @throws WordedError when DIR holds a different sweep, or a sweep.json that is not JSON.
 */
async function loadDirState(dir: string, sweep: ResolvedSweep): Promise<{ records: Map<string, TrialRecord>; file: SweepFile; prevAnalysis: AnalysisConfig | null }> {
  const path = join(dir, SWEEP_FILE);
  let prev: SweepFile | null = null;
  if (existsSync(path)) {
    try {
      prev = JSON.parse(await readFile(path, 'utf8')) as SweepFile;
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
      throw new WordedError(`--out ${dir}: ${SWEEP_FILE} is not valid JSON (${e.message}); choose another --out, or move that file away`);
    }
    if (prev?.name !== sweep.name)
      throw new WordedError(`--out ${dir}: holds sweep '${String(prev?.name)}', not '${sweep.name}'; choose another --out (or delete that directory)`);
  }
  const trials = new Map<string, SweepFile['trials'][number]>();
  for (const t of prev?.trials ?? []) trials.set(t.trial_id, t);
  for (const t of sweep.trials) {
    const round = t.refine_round ?? trials.get(t.trial_id)?.refine_round;
    trials.set(t.trial_id, { trial_id: t.trial_id, config: t.config, grid_values: t.grid_values, ...(round === undefined ? {} : { refine_round: round }) });
  }
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
  const modules = { ...prev?.problem_modules, ...sweep.problem_modules };
  const file: SweepFile = {
    name: sweep.name, description: sweep.description, spec: sweep.spec, analysis: sweep.analysis, trials: [...trials.values()],
    ...(Object.keys(modules).length ? { problem_modules: modules } : {}),
  };
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

/**
 * Refuses a DIR whose run.json names another live `phasemap run` on this host (read before anything
 * is written: not even the embedded server, whose store is in DIR, is started). A run file of another
 * host cannot be checked here: the owner record in NATS decides (claimSweepOwner).
 * @throws SweepBusyError naming the run's pid, start and sweep.
 */
async function refuseRunningDir(dir: string, label: string): Promise<void> {
  const run = await readRunFile(dir);
  if (!run || (run.pid === process.pid && run.host === hostname()) || runProcessAlive(run) !== true) return;
  throw new SweepBusyError(
    `${label}: sweep '${run.sweep}' in this DIR is being run by another orchestrator: ${run.host} pid ${run.pid}, since ${run.started_at} (${RUN_FILE}). ` +
      `Wait for it or stop it (phasemap status ${dir} shows it); if no such run lives, remove ${join(dir, RUN_FILE)}.`,
  );
}

/** The `problem_module` of a trial message: the sources of the trial's problem module, when it has one. */
function problemModuleOf(sweep: ResolvedSweep, config: TrialConfig): Pick<TrialMessage, 'problem_module'> {
  const hash = (config.problem as { module_hash?: string }).module_hash;
  const b = hash ? sweep.problem_modules?.[hash] : undefined;
  return b ? { problem_module: b } : {};
}

/** Runs a sweep to completion. Never throws for a trial's failure: see RunSummary.failed. */
export async function runSweep(opts: RunOptions): Promise<RunSummary> {
  const plain = opts.log ?? plainLogger();
  let base = plain;
  const sweep = opts.resolved ?? (await loadSweep(opts.spec));
  // On the private embedded server only the local worker can run trials: one that may not run modules would wait forever.
  if (sweep.problem_modules && !opts.allowModules && !opts.nats && (opts.slots ?? 1) > 0)
    throw new WordedError(
      `${opts.spec}: the sweep runs the problem module(s) ${Object.values(sweep.problem_modules).map((b) => b.path).join(', ')} (code): add --allow-modules to let the local worker run them (docs/problems.md), or use --nats with workers started with --allow-modules`,
    );
  if (sweep.duplicates) base.warn(`${sweep.duplicates} grid combination(s) resolve to a trial already in the grid (same config); each runs once`);
  const dir = resolve(opts.out ?? join('results', sweep.name));
  const label = opts.out === undefined ? `DIR ${dir}` : `--out ${opts.out}`;
  // Nothing is written into DIR before this run owns the sweep: a DIR another run uses (its run.json)
  // is refused now; a sweep an orchestrator elsewhere owns, once NATS says so (claimSweepOwner below),
  // before sweep.json is written. A bad DIR (a file, read-only) is refused now too.
  await checkOutDir(dir, label);
  await refuseRunningDir(dir, label);
  const { records, file, prevAnalysis } = await loadDirState(dir, sweep);
  // Every log line names a trial by its grid values beside its id.
  const labels = trialLabels(file.trials);
  base = withTrialLabels(plain, labels);
  /** Writes DIR's sweep.json (and trials.parquet re-read with this spec's analysis thresholds): only once this run owns the sweep. */
  const persist = async () => {
    await ensureOutDir(dir, label);
    if (!sameAnalysis(prevAnalysis, sweep.analysis)) {
      const n = await refreshPhases(dir, records, sweep.analysis, base);
      if (n) {
        // Before sweep.json names the new thresholds, so that the two never disagree on disk.
        await writeTrialsParquet(dir, [...records.values()]);
        base.info(`analysis thresholds differ from those ${dir} was read with: phases of ${n} done trial(s) re-read`);
      }
    }
    await writeJsonAtomic(join(dir, SWEEP_FILE), file);
  };

  let toRun = sweep.trials.filter((t) => records.get(t.trial_id)!.status !== 'done');
  const summary: RunSummary = { dir, total: sweep.trials.length, queued: toRun.length, done: 0, failed: [], cancelled: 0, interrupted: false, error: null };
  base.info(`sweep ${sweep.name}: ${sweep.trials.length} trial(s), ${sweep.trials.length - toRun.length} already done in ${dir}, ${toRun.length} to run`);
  if (toRun.length === 0) {
    await persist();
    await writeTrialsParquet(dir, [...records.values()]);
    return summary;
  }

  let embedded: EmbeddedNats | null = null;
  /** Set when the shutdown begins: the embedded server exiting is expected from then on. */
  let stopping = false;
  let nc: NatsConnection | null = null;
  let agent: WorkerAgent | null = null;
  let collector: Collector | null = null;
  let progress: SweepProgress | null = null;
  let log: Logger = base;
  let release: (() => Promise<void>) | null = null;
  let ckptService: { unsubscribe(): void } | null = null;
  let runFile = false;
  const dropRunFile = () => removeRunFile(dir);
  // Free space of DIR's filesystem, read now and every second: below --min-free the collector pauses.
  const disk = new DiskGuard(dir, opts.minFree ?? DEFAULT_MIN_FREE);
  await disk.start();
  let waitsIn = `the output stream on ${opts.nats ? redactUrl(opts.nats) : 'the NATS server'}`;
  disk.onChange((low) => (low ? log.warn(disk.pauseLine(waitsIn)) : log.info(disk.resumeLine())));
  const live = opts.liveReport ? new LiveReport(dir, base, undefined, () => !disk.low) : null;
  let jsWatch: { stop(): void } | null = null;
  let jsm: JetStreamManager | null = null;
  // The run stops early on an interrupt or when the embedded server fails (summary.error).
  let stop!: () => void;
  const stopped = new Promise<typeof STOPPED>((r) => (stop = () => r(STOPPED)));
  const fatal = (msg: string) => {
    if (summary.error !== null) return;
    summary.error = msg;
    stop();
  };
  if (opts.signal?.aborted) stop();
  opts.signal?.addEventListener('abort', () => stop(), { once: true });
  /** `p`, unless the run is stopped first (then STOPPED is thrown; `p` is left to settle by itself). */
  const unlessStopped = async <T>(p: Promise<T>): Promise<T> => {
    const r = await Promise.race([p, stopped]);
    if (r === STOPPED) throw STOPPED;
    return r as T;
  };
  try {
    if (!opts.nats) {
      // The embedded server's store is in DIR: DIR is made first (no other run uses it: see above).
      await ensureOutDir(dir, label);
      await disk.check(); // DIR exists now: its filesystem's free space sizes the store's cap
      const store = embeddedStoreDir(dir);
      // Its JetStream store is capped so that it never fills the disk (disk-space.ts embeddedStoreLimit).
      const cap = disk.space ? embeddedStoreLimit(disk.space.free, disk.minFreeBytes) : undefined;
      const e = (embedded = await startEmbeddedNats(store, undefined, { maxFileStore: cap }));
      waitsIn = `the embedded server's store ${store}${cap ? ` (at most ${fmtBytes(cap)})` : ''}`;
      log.info(`embedded nats-server on ${e.url} (pid ${e.pid}; store ${store}${cap ? `, at most ${fmtBytes(cap)}` : ''}; log ${e.logFile})`);
      if (disk.minFreeBytes < 2 * STORE_BLOCK_SLACK)
        log.warn(
          `--min-free ${disk.minFreeBytes ? `${fmtBytes(disk.minFreeBytes)} is under ${fmtBytes(2 * STORE_BLOCK_SLACK)}` : '0 turns the threshold off'}: the embedded server's store may meet a full disk (its files hold up to ${fmtBytes(STORE_BLOCK_SLACK)} beyond its cap); if it does, the run stops with an error and the same command goes on`,
        );
      void e.exited.then(({ code, signal }) => {
        if (!stopping) fatal(`the embedded nats-server (pid ${e.pid}) exited by itself (code ${code}, signal ${signal}): see its log ${e.logFile}. Run the same command again to go on; nothing written is lost`);
      });
    }
    if (disk.low) log.warn(disk.pauseLine(waitsIn));
    // Errors come worded (`--nats <URL, password redacted>: authorization failed …`): see nats-connect.ts.
    nc = await connectNats(opts.nats ?? embedded!.url, `phasemap-run-${sweep.name}`, opts.nats ? opts.natsAuth : undefined);
    // Through `log` as it is at the time (the progress bar's logger once the sweep runs).
    logConnectionEvents(nc, { info: (m) => log.info(m), warn: (m) => log.warn(m) });
    const names = transportNames(opts.namespace ?? DEFAULT_NAMESPACE);
    const transport = await unlessStopped(ensureResources(nc, names, sweep.name, opts.replicas ?? 1));
    jsm = transport.jsm;
    // Whether JetStream answers. nats-server 2.9 serves no JetStream request any more after its store
    // met a full disk (until it is restarted), and ignores SIGTERM then: an embedded server in that
    // state ends the run with an error; a cluster (--nats) may come back, so there it is only said.
    const where = opts.nats ? `JetStream on ${redactUrl(opts.nats)}` : `the embedded nats-server's JetStream (pid ${embedded!.pid})`;
    jsWatch = watchJetStream(transport.jsm, {
      onSilent: (ms) => log.warn(`${where} has not answered for ${Math.round(ms / 1000)} s${opts.nats ? '; waiting for it (workers retry their publishes for 10 minutes)' : ''}`),
      onBack: (ms) => log.info(`${where} answers again (after ${Math.round(ms / 1000)} s)`),
      onStuck: (ms) => {
        if (opts.nats) return;
        const store = embeddedStoreDir(dir);
        const full = disk.low || (disk.space !== null && disk.space.free < disk.resumeAt);
        const free = disk.space ? `${fmtBytes(disk.space.free)} free` : 'free space unknown';
        const why = full
          ? `Its store ${store} has probably met a full disk (${free} there now): nats-server then serves no JetStream request until it is restarted. Make room on that filesystem and run the same command again`
          : `Not a full disk (${free} on the filesystem of ${store}); its log ${embedded!.logFile} may say why. Run the same command again`;
        fatal(`${where} has not answered for ${Math.round(ms / 1000)} s: stopping. ${why}: the results on disk stay, those waiting in the store are written then, nothing is written twice`);
      },
    });
    release = await unlessStopped(claimSweepOwner(transport, sweep.name, dir));
    // Now that this run owns the sweep: DIR's sweep.json, and DIR/run.json, which tells `phasemap status DIR` where it runs.
    await persist();
    await writeRunFile(dir, { sweep: sweep.name, namespace: names.ns, url: embedded?.url ?? null, nats: opts.nats ? redactUrl(opts.nats) : null });
    runFile = true;
    process.once('exit', dropRunFile);
    await unlessStopped(resetCollectorConsumer(transport, sweep.name));
    // A new run of a cancelled sweep runs it again.
    await unlessStopped(setSweepControl(transport, sweep.name, { cancelled: false, updated_at: new Date().toISOString() }));

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
      disk,
      resetConsumer: () => resetCollectorConsumer(transport, sweep.name),
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
    await unlessStopped(collector.start());
    // Workers resuming a redelivered trial fetch its last checkpoint from DIR through this process.
    const payload = nc.info?.max_payload ?? 1024 * 1024;
    ckptService = serveCheckpoints(nc, names.checkpointRequest(sweep.name), dir, payload - Math.min(4096, Math.floor(payload / 8)), { onWarning: (m) => log.warn(m) });
    // Whatever an earlier, interrupted run left in the output stream is written first: a trial it
    // finished is not run again, and attempt numbers below never collide with an attempt on disk.
    await unlessStopped(collector.settle());
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
        ...problemModuleOf(sweep, t.config),
      });
    }
    const pub = await unlessStopped(publishTrials(transport, sweep.name, messages, runId));
    const n = pub.queued;
    if (pub.inStream)
      log.info(`${pub.inStream} trial(s) still queued or running from an earlier run: left as they are (one whose worker is gone, e.g. killed with its run, is handed out again once its ack wait has passed: ${Math.round(trialAckWaitMs() / 1000)} s unless the queue was made with another)`);
    if (pub.finishing) log.info(`${pub.finishing} trial(s) finished while no collector ran: their results are read from the output stream`);
    log.info(`queued ${n} trial(s) on ${opts.nats ? redactUrl(opts.nats) : 'the embedded server'}`);

    const slots = opts.slots ?? availableParallelism();
    if (slots > 0) {
      if (sweep.problem_modules && !opts.allowModules)
        log.warn(`this sweep runs problem modules (${Object.values(sweep.problem_modules).map((b) => b.path).join(', ')}); the local worker was started without --allow-modules and leaves their trials to workers that allow modules`);
      agent = new WorkerAgent({ nc, slots, backend: opts.backend ?? 'auto', namespace: names.ns, gpus: opts.gpus, slotsPerGpu: opts.slotsPerGpu, fuse: opts.fuse, log, labels, allowModules: opts.allowModules });
      await agent.start();
    } else log.info('no local worker (--slots 0): waiting for workers on the cluster');

    if (waiting.size === 0) allDone();
    if ((await Promise.race([finished.then(() => 'done' as const), stopped])) === STOPPED) summary.interrupted = true;
    sub.unsubscribe();
    lost.unsubscribe();
  } catch (e) {
    if (e !== STOPPED) throw e;
    summary.interrupted = true;
  } finally {
    stopping = true;
    // Interrupted or failed: every step gets a deadline (what it leaves undone is redone by the next
    // run, as after a crash), so that Ctrl-C returns within seconds even when JetStream is stuck.
    const hurry = summary.interrupted || summary.error !== null;
    const end = Date.now() + SHUTDOWN_MS;
    const cap = (ms: number) => (hurry ? Math.max(500, Math.min(ms, end - Date.now())) : ms);
    progress?.stop();
    disk.stop();
    jsWatch?.stop();
    // A JetStream that does not answer now (stuck, or its server stopped) would only make each step
    // below wait out its deadline: its steps are cut short, and the server gets a short grace.
    let stuck = false;
    if (hurry && jsm) {
      stuck = !(await Promise.race([jsm.getAccountInfo().then(() => true, () => false), new Promise<false>((r) => setTimeout(() => r(false), 1000))]));
      if (stuck) log.warn('stopping: JetStream does not answer; the local trials are not handed back (they are redelivered to the next run after the ack wait)');
    }
    if (agent) {
      const a = agent;
      if (!hurry) await a.stop(false).catch((e: Error) => log.warn(`stopping the local worker: ${e.message}`));
      else if (stuck || !(await within(a.stop(true), cap(4000), 'handing the local trials back', log))) await within(a.abort(), cap(2000), 'stopping the local slots', log);
    }
    // After an interrupt the report being written is ended at once: the final one follows.
    const liveWait = hurry ? 0 : (opts.liveReportWaitS ?? 30);
    if (live) await within(live.stop(liveWait), hurry ? cap(2000) : liveWait * 1000 + 5000, 'the live report', log);
    ckptService?.unsubscribe();
    if (collector) await within(collector.stop(), cap(stuck ? 1000 : hurry ? 3000 : 60_000), 'writing what the collector holds', log);
    if (runFile) {
      removeRunFile(dir);
      process.off('exit', dropRunFile);
    }
    // The owner record of a run that could not delete it goes stale (60 s); the same host takes over at once.
    if (release && !stuck) await within(release(), cap(2000), 'releasing the sweep', log);
    if (nc) {
      const c = nc;
      if (stuck || !(await within(c.drain(), cap(2000), 'closing the NATS connection', log))) await within(c.close(), 1000, 'closing the NATS connection', log);
    }
    // SIGTERM, then SIGKILL after a grace period: a server wedged by a full disk ignores SIGTERM.
    await embedded?.stop(stuck ? 1000 : undefined);
  }
  for (const t of toRun) {
    const r = records.get(t.trial_id)!;
    if (r.status === 'done') summary.done++;
    else if (r.status === 'failed') summary.failed.push({ trial_id: r.trial_id, error: r.error, label: labels.get(r.trial_id) ?? '' });
    else if (r.status === 'cancelled') summary.cancelled++;
  }
  return summary;
}
