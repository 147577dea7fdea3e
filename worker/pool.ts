/**
 * Slot pools: where trials run. CPU slots are piscina worker threads (tfjs-wasm is single-threaded,
 * so one thread per trial is the parallelism); tensorflow slots are child processes, because
 * tfjs-node cannot live in worker threads and native code does not see a thread's env (a GPU slot is a
 * process started with CUDA_VISIBLE_DEVICES set).
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { MessageChannel } from 'node:worker_threads';
import { Piscina } from 'piscina';
import type { SlotEvent, SlotOutcome, SlotTask } from './slot-task.js';

export interface SlotPool {
  /** Number of slots (trials that may run at once). */
  readonly size: number;
  /** Runs one trial on a free slot; `onEvent` sees its metrics chunks and progress in order, `end` last. */
  run(task: SlotTask, onEvent: (e: SlotEvent) => void): Promise<SlotOutcome>;
  close(): Promise<void>;
}

/** CPU slots as worker threads. */
export class ThreadPool implements SlotPool {
  private readonly piscina: Piscina;
  constructor(readonly size: number) {
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

  async run(task: SlotTask, onEvent: (e: SlotEvent) => void): Promise<SlotOutcome> {
    const { port1, port2 } = new MessageChannel();
    const ended = new Promise<void>((resolve) => {
      port1.on('message', (e: SlotEvent) => {
        onEvent(e);
        if (e.type === 'end') resolve();
      });
    });
    try {
      const out = (await this.piscina.run({ ...task, port: port2 }, { transferList: [port2] })) as SlotOutcome;
      await ended;
      return out;
    } finally {
      port1.close();
    }
  }

  async close(): Promise<void> {
    await this.piscina.destroy();
  }
}

/** Slots as child processes, each started with its own environment (e.g. CUDA_VISIBLE_DEVICES). */
export class ProcessPool implements SlotPool {
  private readonly children: { env: NodeJS.ProcessEnv; proc: ChildProcess | null; busy: boolean }[];
  constructor(envs: NodeJS.ProcessEnv[]) {
    this.children = envs.map((env) => ({ env, proc: null, busy: false }));
  }
  get size(): number {
    return this.children.length;
  }

  private spawn(env: NodeJS.ProcessEnv): ChildProcess {
    return fork(fileURLToPath(new URL('./slot-process.js', import.meta.url)), [], {
      env: { ...process.env, ...env },
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
  }

  async run(task: SlotTask, onEvent: (e: SlotEvent) => void): Promise<SlotOutcome> {
    const slot = this.children.find((c) => !c.busy);
    if (!slot) throw new Error('ProcessPool.run: no free slot (the agent must not submit more trials than slots)');
    slot.busy = true;
    const proc = (slot.proc && slot.proc.exitCode === null ? slot.proc : (slot.proc = this.spawn(slot.env)));
    try {
      return await new Promise<SlotOutcome>((resolve, reject) => {
        const onMsg = (m: { kind: 'event'; event: SlotEvent } | { kind: 'outcome'; outcome: SlotOutcome }) => {
          if (m.kind === 'event') onEvent(m.event);
          else {
            cleanup();
            resolve(m.outcome);
          }
        };
        const onExit = (code: number | null, sig: string | null) => {
          cleanup();
          slot.proc = null;
          reject(new Error(`slot process exited (code ${code}, signal ${sig}) during trial ${task.trial.trial_id}`));
        };
        const cleanup = () => {
          proc.off('message', onMsg);
          proc.off('exit', onExit);
        };
        proc.on('message', onMsg);
        proc.on('exit', onExit);
        proc.send(task);
      });
    } finally {
      slot.busy = false;
    }
  }

  async close(): Promise<void> {
    await Promise.all(
      this.children.map(async (c) => {
        const p = c.proc;
        if (!p || p.exitCode !== null) return;
        const done = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        await done;
      }),
    );
  }
}
