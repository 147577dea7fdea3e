/**
 * Slot pools: where trials run. CPU slots are piscina worker threads (tfjs-wasm is single-threaded,
 * so one thread per trial is the parallelism); tensorflow slots are child processes, because
 * tfjs-node cannot live in worker threads and native code does not see a thread's env (a GPU slot is a
 * process started with CUDA_VISIBLE_DEVICES set).
 *
 * Every slot runs one trial, or one group of same-shaped trials trained fused (`runGroup`, issue 5), at
 * a time; `run`/`runGroup` wait for a free slot when all are busy. Each trial is told its slot id
 * (`cpu<i>`, `proc<i>`, `gpu<id>.<k>`), recorded in SlotOutcome.slot.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { BackendName } from '../schemas/trial.js';
import { resolveGpus } from './gpus.js';
import type { SlotProcessMessage, SlotProcessReply } from './slot-process.js';
import { MAX_GROUP } from './slot-stop.js';
import type { SlotEvent, SlotOutcome, SlotTask } from './slot-task.js';
import type { ThreadSlotEvent, ThreadSlotTask } from './slot-thread.js';

export interface SlotPool {
  /** Number of slots (trials that may run at once). */
  readonly size: number;
  /** Slot ids, `size` of them: `cpu<i>` (threads), `proc<i>` or `gpu<id>.<k>` (processes). */
  readonly slotIds: readonly string[];
  /**
   * Runs one trial on a free slot (waiting for one when all are busy); `onEvent` sees its metrics
   * chunks and progress in order, `end` last. When `signal` aborts, the trial stops before its next
   * training step, its rows are posted, and the outcome has `status: 'cancelled'` (a signal that
   * aborts after the trial ended changes nothing). Rejects only when the slot itself fails (a slot
   * process that exits mid-trial); the trial's own errors are `status: 'failed'` outcomes.
   */
  run(task: SlotTask, onEvent: (e: SlotEvent) => void, signal?: AbortSignal): Promise<SlotOutcome>;
  /**
   * Runs a group of same-shaped trials on one free slot, trained fused (worker/slot-task.ts
   * runSlotTasks: equal fusionKey, same backend, no `resume` when more than one; at most MAX_GROUP).
   * `onEvent(i, e)` sees trial i's events in order, its `end` last; `signals[i]` stops trial i only
   * (`cancelled`, as `run`'s signal). Resolves with one outcome per task, in order, once every trial
   * ended. Rejects when the slot itself fails (every trial of the group is lost with it) or the group
   * is not one runSlotTasks accepts. One task is `run`.
   */
  runGroup(tasks: SlotTask[], onEvent: (i: number, e: SlotEvent) => void, signals?: readonly (AbortSignal | undefined)[]): Promise<SlotOutcome[]>;
  close(): Promise<void>;
}

/** Checks a group for `runGroup` (the slot checks the rest). @throws Error for an empty group or one over MAX_GROUP. */
function checkGroup(tasks: SlotTask[]): void {
  if (!tasks.length) throw new Error('runGroup: no tasks');
  if (tasks.length > MAX_GROUP) throw new Error(`runGroup: ${tasks.length} trials, at most ${MAX_GROUP} run fused on one slot`);
}

/** Free slot indices, lowest first; `take` waits (FIFO) while none is free. */
class FreeSlots {
  private readonly free: number[];
  private readonly waiting: ((i: number) => void)[] = [];
  constructor(size: number) {
    this.free = Array.from({ length: size }, (_, i) => i);
  }
  take(): Promise<number> {
    if (this.free.length) return Promise.resolve(this.free.shift()!);
    return new Promise((r) => this.waiting.push(r));
  }
  give(i: number): void {
    const next = this.waiting.shift();
    if (next) next(i);
    else {
      this.free.push(i);
      this.free.sort((a, b) => a - b);
    }
  }
}

/** Calls `fn` once when `signal` aborts (at once if it already has); returns the un-subscriber. */
function onAbort(signal: AbortSignal | undefined, fn: () => void): () => void {
  if (!signal) return () => {};
  if (signal.aborted) {
    fn();
    return () => {};
  }
  signal.addEventListener('abort', fn, { once: true });
  return () => signal.removeEventListener('abort', fn);
}

/** CPU slots as worker threads, ids `cpu0 … cpu<size-1>` (an id names a running trial's slot, not a fixed thread). */
export class ThreadPool implements SlotPool {
  private readonly piscina: Piscina;
  private readonly slots: FreeSlots;
  readonly slotIds: readonly string[];
  constructor(readonly size: number) {
    this.slotIds = Array.from({ length: size }, (_, i) => `cpu${i}`);
    this.slots = new FreeSlots(size);
    this.piscina = new Piscina({
      filename: fileURLToPath(new URL('./slot-thread.js', import.meta.url)),
      minThreads: size,
      maxThreads: size,
      concurrentTasksPerWorker: 1,
      idleTimeout: 60_000,
      // Training must not be pre-empted by a queue of thousands: the agent only submits when a slot is free.
      maxQueue: size,
    });
  }

  async run(task: SlotTask, onEvent: (e: SlotEvent) => void, signal?: AbortSignal): Promise<SlotOutcome> {
    const [out] = await this.runGroup([task], (_, e) => onEvent(e), [signal]);
    return out!;
  }

  async runGroup(tasks: SlotTask[], onEvent: (i: number, e: SlotEvent) => void, signals: readonly (AbortSignal | undefined)[] = []): Promise<SlotOutcome[]> {
    checkGroup(tasks);
    const i = await this.slots.take();
    const { port1, port2 } = new MessageChannel();
    // The thread polls these before every step (Atomics): a busy thread handles no port messages.
    const stop = new SharedArrayBuffer(4 * tasks.length);
    const flags = new Int32Array(stop);
    const unsubscribe = tasks.map((_, k) => onAbort(signals[k], () => Atomics.store(flags, k, 1)));
    let open = tasks.length;
    const ended = new Promise<void>((resolve) => {
      port1.on('message', ({ i: k, e }: ThreadSlotEvent) => {
        onEvent(k, e);
        if (e.type === 'end' && --open === 0) resolve();
      });
    });
    try {
      const msg: ThreadSlotTask = { tasks, port: port2, slot: this.slotIds[i]!, stop };
      const out = (await this.piscina.run(msg, { transferList: [port2] })) as SlotOutcome[];
      await ended;
      return out;
    } finally {
      for (const u of unsubscribe) u();
      port1.close();
      this.slots.give(i);
    }
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}

/** One slot process of a ProcessPool: its id and the environment it is started with. */
export interface ProcessSlotSpec {
  id: string;
  /** Merged over the worker's environment; a key set to `undefined` is removed from the child's. */
  env: NodeJS.ProcessEnv;
}

/**
 * Slots as child processes, each started (lazily, and again after it died) with its own environment,
 * e.g. CUDA_VISIBLE_DEVICES. Slot ids default to `proc<i>`.
 */
export class ProcessPool implements SlotPool {
  private readonly children: { spec: ProcessSlotSpec; proc: ChildProcess | null }[];
  private readonly slots: FreeSlots;
  private seq = 0;
  /** `envs[i]` is slot i's environment; `ids[i]` its id (default `proc<i>`). */
  constructor(envs: NodeJS.ProcessEnv[], ids?: readonly string[]) {
    if (ids && ids.length !== envs.length) throw new Error(`ProcessPool: ${envs.length} environment(s) but ${ids.length} slot id(s)`);
    this.children = envs.map((env, i) => ({ spec: { id: ids?.[i] ?? `proc${i}`, env }, proc: null }));
    this.slots = new FreeSlots(envs.length);
  }
  get size(): number {
    return this.children.length;
  }
  get slotIds(): readonly string[] {
    return this.children.map((c) => c.spec.id);
  }

  private spawn(env: NodeJS.ProcessEnv): ChildProcess {
    const merged: NodeJS.ProcessEnv = { ...process.env, ...env };
    for (const [k, v] of Object.entries(env)) if (v === undefined) delete merged[k];
    const proc = fork(fileURLToPath(new URL('./slot-process.js', import.meta.url)), [], {
      env: merged,
      serialization: 'advanced',
      // fd 4: the stop pipe (slot-process.ts STOP_FD), read by a thread of the child while it trains.
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', 'pipe'],
    });
    proc.stdio[4]?.on('error', () => {});
    return proc;
  }

  async run(task: SlotTask, onEvent: (e: SlotEvent) => void, signal?: AbortSignal): Promise<SlotOutcome> {
    const [out] = await this.runGroup([task], (_, e) => onEvent(e), [signal]);
    return out!;
  }

  async runGroup(tasks: SlotTask[], onEvent: (i: number, e: SlotEvent) => void, signals: readonly (AbortSignal | undefined)[] = []): Promise<SlotOutcome[]> {
    checkGroup(tasks);
    const i = await this.slots.take();
    const slot = this.children[i]!;
    const seq = ++this.seq;
    const unsubscribe: (() => void)[] = [];
    try {
      const proc = slot.proc && slot.proc.exitCode === null && slot.proc.signalCode === null ? slot.proc : (slot.proc = this.spawn(slot.spec.env));
      return await new Promise<SlotOutcome[]>((resolve, reject) => {
        const onMsg = (m: SlotProcessReply) => {
          if (m.kind === 'event') onEvent(m.index, m.event);
          else {
            cleanup();
            if (m.error !== undefined || m.outcomes.length !== tasks.length) reject(new Error(`slot process ${slot.spec.id}: ${m.error ?? `${m.outcomes.length} outcome(s) for ${tasks.length} trial(s)`}`));
            else resolve(m.outcomes);
          }
        };
        const onExit = (code: number | null, sig: string | null) => {
          cleanup();
          slot.proc = null;
          reject(new Error(`slot process ${slot.spec.id} exited (code ${code}, signal ${sig}) during trial(s) ${tasks.map((t) => t.trial.trial_id).join(', ')}`));
        };
        const cleanup = () => {
          proc.off('message', onMsg);
          proc.off('exit', onExit);
        };
        proc.on('message', onMsg);
        proc.on('exit', onExit);
        const run: SlotProcessMessage = { kind: 'run', tasks, slot: slot.spec.id, seq, stopped: tasks.map((_, k) => signals[k]?.aborted ?? false) };
        proc.send(run);
        tasks.forEach((_, k) => {
          if (!signals[k]?.aborted) unsubscribe.push(onAbort(signals[k], () => {
            // The pipe is read by a thread of the child at once; the IPC copy is a fallback.
            (proc.stdio[4] as NodeJS.WritableStream | null)?.write(`${seq}:${k}\n`);
            if (proc.connected) proc.send({ kind: 'stop', seq, index: k } satisfies SlotProcessMessage);
          }));
        });
      });
    } finally {
      for (const u of unsubscribe) u();
      this.slots.give(i);
    }
  }

  async close(): Promise<void> {
    await Promise.all(
      this.children.map(async (c) => {
        const p = c.proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) return;
        const done = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await done;
      }),
    );
  }
}

/** Options of `makeSlotPool` / `planSlots` (the worker's `--slots`, `--gpus`, `--slots-per-gpu`). */
export interface SlotPoolOptions {
  /** Slots without GPUs (threads for wasm/cpu, processes for tensorflow); integer ≥ 1. Ignored when GPUs are used. */
  slots: number;
  /** `all` | `none` | GPU ids `0,2` (worker/gpus.ts `parseGpus`); absent: `all` for tensorflow when nvidia-smi lists GPUs, else `none`. */
  gpus?: string;
  /** Slot processes per GPU (integer ≥ 1, default 1). */
  slotsPerGpu?: number;
}

/** The slots a worker will have: threads (ids only) or processes (ids and environments). */
export type SlotPlan = { kind: 'threads'; ids: string[] } | { kind: 'processes'; slots: ProcessSlotSpec[] };

/**
 * Plans a worker's slots without starting any:
 * - GPUs (from `opts.gpus`, see `resolveGpus`): for each GPU id, `slotsPerGpu` processes `gpu<id>.<k>`
 *   with CUDA_VISIBLE_DEVICES=<id>, whatever the backend (wasm/cpu too: tests use that on GPU-less
 *   hosts). GPU slots replace the `slots` slots: `opts.slots` is then ignored.
 * - no GPUs, backend `tensorflow`: `slots` processes `proc<i>` with CUDA_VISIBLE_DEVICES=-1 (no GPU visible: the trial computes on the CPU, as its device says).
 * - no GPUs, wasm/cpu: `slots` threads `cpu<i>`.
 * @throws Error naming `--slots` / `--slots-per-gpu` when not an integer ≥ 1; errors of `resolveGpus`
 *   (bad `--gpus`, `--gpus all` without nvidia-smi or GPUs).
 */
export async function planSlots(backend: BackendName, opts: SlotPoolOptions): Promise<SlotPlan> {
  const perGpu = opts.slotsPerGpu ?? 1;
  if (!Number.isInteger(perGpu) || perGpu < 1) throw new Error(`--slots-per-gpu: got ${JSON.stringify(opts.slotsPerGpu)}, expected an integer >= 1`);
  const gpus = await resolveGpus(opts.gpus, backend);
  if (gpus.length) {
    return { kind: 'processes', slots: gpus.flatMap((id) => Array.from({ length: perGpu }, (_, k) => ({ id: `gpu${id}.${k}`, env: { CUDA_VISIBLE_DEVICES: String(id) } }))) };
  }
  if (!Number.isInteger(opts.slots) || opts.slots < 1) throw new Error(`--slots: got ${JSON.stringify(opts.slots)}, expected an integer >= 1`);
  if (backend === 'tensorflow') return { kind: 'processes', slots: Array.from({ length: opts.slots }, (_, i) => ({ id: `proc${i}`, env: { CUDA_VISIBLE_DEVICES: '-1' } })) };
  return { kind: 'threads', ids: Array.from({ length: opts.slots }, (_, i) => `cpu${i}`) };
}

/**
 * Builds a worker's slot pool (rules: `planSlots`): a ProcessPool of GPU-pinned slot processes when
 * GPUs are used, a ProcessPool of `proc<i>` slots for tensorflow without GPUs, else a ThreadPool.
 * Slot processes start on their first trial. Same errors as `planSlots`.
 */
export async function makeSlotPool(backend: BackendName, opts: SlotPoolOptions): Promise<SlotPool> {
  const plan = await planSlots(backend, opts);
  if (plan.kind === 'threads') return new ThreadPool(plan.ids.length);
  return new ProcessPool(plan.slots.map((s) => s.env), plan.slots.map((s) => s.id));
}
