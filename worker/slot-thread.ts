/** piscina entry: one CPU slot = one worker thread, one trial or one group of fused trials at a time. */
import type { MessagePort } from 'node:worker_threads';
import { runSlotTasks, type SlotEvent, type SlotOutcome, type SlotTask } from './slot-task.js';

/**
 * What ThreadPool hands a thread: the group's tasks (one or more, see `runSlotTasks`), its slot id, the
 * event port and the stop flags.
 */
export interface ThreadSlotTask {
  tasks: SlotTask[];
  port: MessagePort;
  slot: string;
  /** Int32 [tasks.length] shared with the pool: flag i non-zero = stop trial i before its next step. */
  stop: SharedArrayBuffer;
}

/** What a thread posts on its port: event `e` of the group's trial `i`. */
export interface ThreadSlotEvent {
  i: number;
  e: SlotEvent;
}

/** Runs the group; resolves with one outcome per task, in order. */
export default async function run(task: ThreadSlotTask): Promise<SlotOutcome[]> {
  const { port, slot, stop, tasks } = task;
  // A thread busy in the training loop handles no port messages, but it sees shared memory at once.
  const flags = new Int32Array(stop);
  try {
    return await runSlotTasks(tasks, (i, e, transfer) => port.postMessage({ i, e } satisfies ThreadSlotEvent, transfer ?? []), {
      slot,
      // A thread shares the worker's environment: CUDA_VISIBLE_DEVICES there says nothing about the slot.
      visibleDevices: null,
      shouldStop: (i) => Atomics.load(flags, i) !== 0,
    });
  } finally {
    port.close();
  }
}
