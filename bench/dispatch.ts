/**
 * dispatch: (1) time to expand and submit a 100,000-trial spec — loadSweep (orchestrator/spec.ts) and
 * publishTrials (orchestrator/jetstream.ts) to a real nats-server; (2) trials/s from submission to start
 * with `phasemap run SPEC --nats URL --slots 0` and a `phasemap worker --slots 2` process on 1-step trials.
 */
import { randomBytes } from 'node:crypto';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats, ensureResources, publishTrials } from '../orchestrator/jetstream.js';
import { startEmbeddedNats } from '../orchestrator/nats-server.js';
import { loadSweep } from '../orchestrator/spec.js';
import type { TrialMessage, TrialState } from '../schemas/trial.js';
import { transportNames } from '../schemas/transport.js';
import { cpus } from 'node:os';
import { figure, median, tempDir, treeCpuSeconds, type Figure } from './lib.js';
import { startCli, stopCli } from './procs.js';
import type { BenchOptions } from './train.js';

/** A spec of lrs × seeds trials of `steps` steps each (tiny network: dispatch, not training, is measured). */
function gridSpec(name: string, lrs: number, seeds: number, steps: number, seed0 = 0): string {
  const lr = Array.from({ length: lrs }, (_x, i) => +(1e-4 * (i + 1)).toPrecision(6));
  return `name: ${name}
problem: {name: helmholtz2d, a1: 1, a2: 1, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: ${steps}, log_every: 1, eval_every: 1}
diagnostics: {every: 0, snr_batches: 8}
grid:
  train.lr: [${lr.join(', ')}]
  seed: [${Array.from({ length: seeds }, (_x, i) => seed0 + i).join(', ')}]
`;
}

/** Deletes a namespace's streams and state bucket (frees the server's disk between runs). */
async function dropNamespace(nc: NatsConnection, ns: string): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const names = transportNames(ns);
  for (const s of [names.trialsStream, names.outStream, `KV_${names.stateBucket}`]) await jsm.streams.delete(s).catch(() => undefined);
}

async function submitOnce(nc: NatsConnection, file: string, ns: string): Promise<{ expand: number; publish: number; trials: number }> {
  const t0 = performance.now();
  const sweep = await loadSweep(file);
  const t1 = performance.now();
  const messages: TrialMessage[] = sweep.trials.map((t) => ({
    sweep: sweep.name, trial_id: t.trial_id, config: t.config, backend: 'auto', attempt_base: 0,
    divergence_factor: sweep.analysis.divergence_factor, max_attempts: sweep.max_attempts,
  }));
  const transport = await ensureResources(nc, transportNames(ns), sweep.name);
  const pub = await publishTrials(transport, sweep.name, messages, randomBytes(4).toString('hex'));
  const t2 = performance.now();
  if (pub.queued !== sweep.trials.length) throw new Error(`queued ${pub.queued} of ${sweep.trials.length}`);
  return { expand: (t1 - t0) / 1000, publish: (t2 - t1) / 1000, trials: sweep.trials.length };
}

export async function benchDispatch(o: BenchOptions): Promise<Figure[]> {
  const work = await tempDir('dispatch');
  const nats = await startEmbeddedNats(join(work, 'store'));
  const nc = await connectNats(nats.url, 'bench-dispatch');
  const figs: Figure[] = [];
  try {
    // (1) Submission of a big spec.
    const [lrs, seeds] = o.quick ? [10, 100] : [100, 1000];
    const bigFile = join(work, 'big.yaml');
    await writeFile(bigFile, gridSpec('dispatchbig', lrs, seeds, 1000));
    const warmFile = join(work, 'warm.yaml');
    await writeFile(warmFile, gridSpec('dispatchbig', 10, o.quick ? 20 : 1000, 1000));
    const subRuns = o.quick ? 1 : o.runs;
    const sub: Array<{ expand: number; publish: number; trials: number }> = [];
    for (let r = 0; r <= subRuns; r++) {
      const ns = `benchsub${r}`;
      o.log(`dispatch: submit ${r === 0 ? 'warm-up (small spec)' : `run ${r}/${subRuns}`} (${r === 0 ? (o.quick ? 200 : 10_000) : lrs * seeds} trials)`);
      const res = await submitOnce(nc, r === 0 ? warmFile : bigFile, ns);
      if (r > 0) sub.push(res);
      await dropNamespace(nc, ns);
    }
    const n = lrs * seeds;
    const subConfig = { trials: n, grid: `train.lr ${lrs} × seed ${seeds}`, nats: 'nats-server JetStream file storage, 127.0.0.1' };
    figs.push(
      figure({
        bench: 'dispatch', figure: `dispatch expand ${n.toLocaleString('en-US')}-trial spec (loadSweep)`, unit: 's', samples: sub.map((x) => x.expand), target: null,
        config: subConfig, method: 'wall s of loadSweep: parse, cartesian expansion, validation, trial ids (SHA-256 of canonical JSON)',
      }),
      figure({
        bench: 'dispatch', figure: `dispatch submit ${n.toLocaleString('en-US')}-trial spec (loadSweep + publishTrials)`, unit: 's', samples: sub.map((x) => x.expand + x.publish),
        target: o.quick ? null : { op: '<', value: 60, text: '< 60' },
        config: { ...subConfig, median_publish_s: sub.length ? +sub.map((x) => x.publish).sort((a, b) => a - b)[sub.length >> 1]!.toFixed(2) : null },
        method: 'wall s of loadSweep + ensureResources + publishTrials (state put + JetStream publish per trial) on a fresh namespace',
      }),
      figure({
        bench: 'dispatch', figure: 'dispatch submit rate', unit: 'trials/s', samples: sub.map((x) => x.trials / (x.expand + x.publish)), target: null,
        config: subConfig, method: 'trials ÷ (loadSweep + publishTrials) s',
      }),
    );

    // (2) Submission to start on workers, 1-step trials. One worker process serves every run (workers
    // are up before a sweep is submitted); each run is a new sweep (name) in the same namespace.
    const M = o.quick ? 100 : 1000;
    const ns = 'benchstart';
    const startRates: number[] = [];
    const doneRates: number[] = [];
    const walls: number[] = [];
    const cpuPerTrial: number[] = [];
    const startRuns = o.quick ? 1 : o.runs;
    await ensureResources(nc, transportNames(ns), 'dispatchstart0');
    const worker = startCli(['worker', '--nats', nats.url, '--slots', '2', '--namespace', ns, '--backend', 'wasm', '--name', 'bench-worker']);
    try {
      await worker.waitFor(/pulling trials/);
      for (let r = 0; r <= startRuns; r++) {
        o.log(`dispatch: submission → start ${r === 0 ? 'warm-up' : `run ${r}/${startRuns}`} (${M} one-step trials, 1 worker × 2 slots)`);
        const file = join(work, `start-${r}.yaml`);
        // Other seeds each run: trial ids are config hashes, and the worker's Nats-Msg-Ids
        // (`<trial_id>.<attempt>.…`) do not name the sweep, so JetStream would drop a second sweep's
        // output of the same configs as duplicates within its 2-minute window.
        await writeFile(file, gridSpec(`dispatchstart${r}`, M / 100, 100, 1, 1000 * r));
        const res = await startOnce(nc, nats.url, file, `dispatchstart${r}`, ns, join(work, `start-${r}`), M);
        if (r > 0) {
          if (res.cpuSeconds !== null) cpuPerTrial.push((res.cpuSeconds / M) * 1000);
          startRates.push(res.startRate);
          doneRates.push(res.doneRate);
          walls.push(res.wall);
        }
      }
    } finally {
      await stopCli(worker);
      await dropNamespace(nc, ns);
    }
    const sc = { trials: M, steps: 1, network: '2x8, N=64, diagnostics off', workers: '1 × `phasemap worker --slots 2 --backend wasm`, up for all runs', orchestrator: '`phasemap run --slots 0 --nats URL`', orchestrator_wall_s: walls.map((w) => +w.toFixed(2)) };
    figs.push(
      figure({
        bench: 'dispatch', figure: `dispatch submission → start (${M} 1-step trials)`, unit: 'trials/s', samples: startRates,
        target: { op: '>=', value: 1000, text: '≥ 1,000' }, config: sc,
        method: 'trials ÷ s from the first trial state `queued` to the last trial seen started (running/done), both seen by a KV watch',
      }),
      figure({
        bench: 'dispatch', figure: `dispatch submission → done (${M} 1-step trials)`, unit: 'trials/s', samples: doneRates, target: null, config: sc,
        method: 'trials ÷ s from the first trial state `queued` to the last trial state `done` (KV watch): claim, train, publish, collector',
      }),
    );
    if (cpuPerTrial.length) {
      const cores = cpus().length;
      figs.push(figure({
        bench: 'dispatch', figure: `dispatch CPU per 1-step trial`, unit: 'ms/trial', samples: cpuPerTrial, target: null,
        config: { ...sc, cores, ceiling_trials_per_s_on_all_cores: Math.round((cores * 1000) / median(cpuPerTrial)) },
        method: 'CPU s (user + system, every thread) of every process — orchestrator (`phasemap run`: submission, collector, Parquet), worker (claims, slots, publishes), nats-server, this process\'s KV watch — from /proc, read when the KV watch sees the first `queued` state and the last `done` one (the window of the submission → done row), ÷ trials; cores ÷ it is the most trials/s this machine could take from queued to done with every core busy',
      }));
    }
  } finally {
    await nc.close();
    await nats.stop();
    await rm(work, { recursive: true, force: true });
  }
  return figs;
}

/**
 * One submission → start run: `phasemap run SPEC --slots 0` against the worker, timed by a KV watch.
 * @returns the rates, the orchestrator's wall s and the CPU s of every process from the first `queued`
 *   state to the last `done` one (null without /proc).
 */
async function startOnce(nc: NatsConnection, url: string, spec: string, sweepName: string, ns: string, dir: string, M: number): Promise<{ startRate: number; doneRate: number; wall: number; cpuSeconds: number | null }> {
  const names = transportNames(ns);
  const kv = await new Kvm(jetstream(nc)).open(names.stateBucket);
  let firstQueued = Infinity;
  let cpuAtQueued: number | null = null;
  let cpuAtDone: number | null = null;
  const started = new Map<string, number>();
  const done = new Map<string, number>();
  let allDone!: () => void;
  const finished = new Promise<void>((r) => (allDone = r));
  const watch = await kv.watch({ key: `${sweepName}.*` });
  void (async () => {
    for await (const e of watch) {
      if (e.operation !== 'PUT' || e.key.endsWith('._control') || e.key.endsWith('._owner')) continue;
      const t = performance.now();
      let st: TrialState;
      try {
        st = e.json<TrialState>();
      } catch {
        continue;
      }
      if (st.status === 'queued') {
        if (firstQueued === Infinity) cpuAtQueued = treeCpuSeconds();
        firstQueued = Math.min(firstQueued, t);
      } else {
        if (!started.has(e.key)) started.set(e.key, t);
        if (st.status === 'done' || st.status === 'failed') {
          if (!done.has(e.key)) done.set(e.key, t);
          if (done.size === M) {
            cpuAtDone = treeCpuSeconds();
            allDone();
          }
        }
      }
    }
  })();
  let wall = 0;
  try {
    const t0 = performance.now();
    const orch = startCli(['run', spec, '--nats', url, '--slots', '0', '--namespace', ns, '--out', dir, '--backend', 'wasm']);
    const code = await orch.exited;
    wall = (performance.now() - t0) / 1000;
    if (code !== 0) throw new Error(`phasemap run exited ${code}: ${orch.lines.slice(-5).map((l) => l.line).join(' | ')}`);
    await Promise.race([finished, new Promise((r) => setTimeout(r, 5000))]);
    if (process.env.BENCH_DEBUG) process.stderr.write(`run ${wall.toFixed(1)} s, first queued at ${((firstQueued - t0) / 1000).toFixed(1)} s, last done at ${((Math.max(...done.values()) - t0) / 1000).toFixed(1)} s\n`);
  } finally {
    watch.stop();
  }
  if (done.size < M) throw new Error(`KV watch saw ${done.size} of ${M} trials done`);
  const lastStart = Math.max(...started.values());
  const lastDone = Math.max(...done.values());
  const cpuSeconds = cpuAtQueued !== null && cpuAtDone !== null ? cpuAtDone - cpuAtQueued : null;
  return { startRate: M / ((lastStart - firstQueued) / 1000), doneRate: M / ((lastDone - firstQueued) / 1000), wall, cpuSeconds };
}
