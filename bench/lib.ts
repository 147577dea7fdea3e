/**
 * Shared pieces of `npm run bench` (bench/run.ts): the result record, statistics, the machine block,
 * child processes that report JSON, /proc memory readings and the analytic FLOP count of a training step.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { cpus, freemem, loadavg, release, tmpdir, totalmem, type as osType } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseSpecText, resolveSweep } from '../orchestrator/spec.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { blasStatus, nativeStreams } from '../worker/trainer/index.js';

/** Repository root (bench/lib.ts compiles to dist/bench/lib.js). */
export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
/** The compiled CLI, as `phasemap` runs it. */
export const cliPath = join(repoRoot, 'dist/orchestrator/cli.js');
/** A compiled bench entry next to this file (e.g. `train-child.js`). */
export const benchEntry = (name: string) => fileURLToPath(new URL(`./${name}`, import.meta.url));

/** A target a figure is held against. */
export interface Target {
  op: '<=' | '>=' | '<';
  value: number;
  /** How it reads in the table, e.g. `≤ 19.6 ms (PyTorch 1.13 CPU, 1 thread)`. */
  text: string;
}

/** One row of the table and of results.json. */
export interface Figure {
  /** Benchmark group: train-step | snr-cost | ingest | dispatch | scaling | memory. */
  bench: string;
  figure: string;
  unit: string;
  median: number | null;
  min: number | null;
  max: number | null;
  /** Measured runs (after the warm-up). */
  runs: number;
  /** Every run's value, in order. */
  samples: number[];
  target: Target | null;
  /** null when there is no target or no value. */
  pass: boolean | null;
  /** What was measured on what (problem, network, N, streams, trials, ...). */
  config: Record<string, unknown>;
  /** How the figure is measured (one line). */
  method: string;
  /** Set when the measurement failed (the figure then has no value and fails its target). */
  error?: string;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** A Figure from its samples (median, min, max, pass). An empty sample list with `error` is a failed measurement. */
export function figure(f: Omit<Figure, 'median' | 'min' | 'max' | 'runs' | 'pass'>): Figure {
  const xs = f.samples.filter((x) => Number.isFinite(x));
  const med = xs.length ? median(xs) : null;
  let pass: boolean | null = null;
  if (f.target) {
    if (med === null) pass = f.error ? false : null;
    else pass = f.target.op === '<=' ? med <= f.target.value : f.target.op === '<' ? med < f.target.value : med >= f.target.value;
    if (f.error) pass = false;
  }
  return { ...f, median: med, min: xs.length ? Math.min(...xs) : null, max: xs.length ? Math.max(...xs) : null, runs: xs.length, pass };
}

/** The machine block of results.json. */
export function machine(backend: string): Record<string, unknown> {
  const c = cpus();
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: c.length,
    node: process.version,
    backend,
    // Whether the wasm backend's matmuls ran on the native BLAS (worker/trainer/native/blas.c), and
    // the stream loops in C (native/streams.c) or JS.
    matmul: (() => {
      const b = blasStatus();
      return b.available ? `native BLAS: ${b.library}${b.core ? ` (${b.core})` : ''}` : `wasm XNNPACK (${b.error})`;
    })(),
    stream_loops: nativeStreams() ? 'C (native addon)' : 'JS',
    os: `${osType()} ${release()}`,
    total_memory_gib: +(totalmem() / 2 ** 30).toFixed(1),
    free_memory_gib_at_start: +(freemem() / 2 ** 30).toFixed(1),
    loadavg_at_start: loadavg().map((x) => +x.toFixed(2)),
  };
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `phasemap-bench-${prefix}-`));
}

/** A field (kB) of /proc/<pid>/status, e.g. VmRSS, VmHWM; null when unreadable (not Linux, process gone). */
export function procStatusKb(pid: number | 'self', field: 'VmRSS' | 'VmHWM'): number | null {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * CPU seconds (user + system, all threads) of this process and every live descendant (child processes
 * such as a collector, `phasemap` CLIs, nats-server under its guard shell), plus what the reaped ones
 * used (each live process's cutime + cstime): the difference of two readings is the CPU the whole
 * tree spent in between, on every core. Linux /proc only; null elsewhere.
 */
export function treeCpuSeconds(): number | null {
  try {
    const stats = new Map<number, { ppid: number; ticks: number }>();
    for (const d of readdirSync('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      let text: string;
      try {
        text = readFileSync(`/proc/${d}/stat`, 'utf8');
      } catch {
        continue; // exited meanwhile
      }
      // Fields after the command (which may hold spaces) in parentheses: state ppid … utime(14) stime cutime cstime.
      const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
      stats.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
    }
    const inTree = new Set([process.pid]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const [pid, st] of stats) if (!inTree.has(pid) && inTree.has(st.ppid)) (inTree.add(pid), (grew = true));
    }
    let ticks = 0;
    for (const pid of inTree) ticks += stats.get(pid)?.ticks ?? 0;
    return ticks / CLOCK_TICKS;
  } catch {
    return null;
  }
}

/** USER_HZ: the unit of /proc/<pid>/stat times (100 on Linux x86 and arm). */
const CLOCK_TICKS = 100;

/** Peak RSS of this process in bytes: VmHWM where /proc has it, else process.resourceUsage().maxRSS. */
export function peakRssBytes(): number {
  const kb = procStatusKb('self', 'VmHWM');
  return (kb ?? process.resourceUsage().maxRSS) * 1024;
}

/**
 * Runs `node <entry> <json>` and resolves with the JSON object the child prints as its last stdout
 * line. A child that exits without one rejects with its exit code and the tail of its stderr.
 */
export function runJsonChild<T>(entry: string, input: unknown, opts: { timeoutMs?: number; execArgv?: string[] } = {}): Promise<T> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...(opts.execArgv ?? []), entry, JSON.stringify(input)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 600_000);
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(last) as T);
      } catch {
        reject(new Error(`${entry} exited (code ${code}, signal ${sig}) without a result${err ? `: ${err.trim().split('\n').slice(-3).join(' | ')}` : ''}`));
      }
    });
  });
}

/** A forked child (IPC) and a way to wait for its next message of a kind. */
export function forkChild(entry: string): { child: ChildProcess; next<T>(kind: string, timeoutMs?: number): Promise<T> } {
  const child = fork(entry, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const queue: Array<{ kind: string }> = [];
  const waiters: Array<{ kind: string; resolve: (m: unknown) => void; reject: (e: Error) => void }> = [];
  const deliver = () => {
    for (let i = 0; i < waiters.length; i++) {
      const j = queue.findIndex((m) => m.kind === waiters[i]!.kind || m.kind === 'error');
      if (j >= 0) {
        const m = queue.splice(j, 1)[0]! as { kind: string; message?: string };
        const w = waiters.splice(i--, 1)[0]!;
        if (m.kind === 'error') w.reject(new Error(m.message));
        else w.resolve(m);
      }
    }
  };
  child.on('message', (m: { kind: string }) => {
    queue.push(m);
    deliver();
  });
  child.on('exit', (code) => {
    for (const w of waiters.splice(0)) w.reject(new Error(`${entry} exited (code ${code}) before sending '${w.kind}'`));
  });
  return {
    child,
    next<T>(kind: string, timeoutMs = 300_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${entry}: no '${kind}' within ${timeoutMs / 1000} s`)), timeoutMs);
        waiters.push({
          kind,
          resolve: (m) => {
            clearTimeout(timer);
            resolve(m as T);
          },
          reject: (e) => {
            clearTimeout(timer);
            reject(e);
          },
        });
        deliver();
      });
    },
  };
}

/** A resolved trial config from a spec body (the real resolver: defaults applied, validated). */
export function trialConfig(yaml: string): TrialConfig {
  return resolveSweep(parseSpecText(`name: bench\n${yaml}`, 'bench'), 'bench').trials[0]!.config;
}

/**
 * Matmul FLOPs of one training step (loss + gradients), counted analytically; see bench/README.md.
 *
 * A matmul [m, k] @ [k, n] counts 2·m·k·n FLOPs. The network has d inputs, `depth` hidden layers of
 * `width` units and one output. Forward on the n_b batch points carries S = 1 + |first| + |second|
 * streams (poisson2d/helmholtz2d: u, u_x, u_y, u_xx, u_yy, S = 5): layer 0 is one matmul of the
 * value stream only (its derivative streams are rows of W0, no matmul), every later layer one matmul
 * over all S streams. The boundary term is a value-only forward over the M boundary points.
 * Backward ≈ 2 × the forward matmuls (dX = dZ·Wᵀ and dW = Xᵀ·dZ per matmul). Elementwise ops (tanh,
 * the derivative recursions, Adam) are not counted.
 * @returns forward, backward and total FLOPs.
 */
export function stepFlops(o: { d: number; width: number; depth: number; streams: number; batch: number; boundary: number }): { forward: number; backward: number; total: number } {
  const { d, width: w, depth, streams: S, batch, boundary } = o;
  const perPointStreams = d * w + S * ((depth - 1) * w * w + w); // layer 0 value stream, hidden→hidden and output over S streams
  const perPointValue = d * w + (depth - 1) * w * w + w;
  const forward = 2 * (batch * perPointStreams + boundary * perPointValue);
  return { forward, backward: 2 * forward, total: 3 * forward };
}

/** Sleeps ms. */
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
