/** piscina entry: one CPU slot = one worker thread, one trial at a time. */
import type { MessagePort } from 'node:worker_threads';
import { runSlotTask, type SlotOutcome, type SlotTask } from './slot-task.js';

/** What ThreadPool hands a thread: the task, its slot id, the event port and the stop flag. */
export interface ThreadSlotTask extends SlotTask {
  port: MessagePort;
  slot: string;
  /** Int32 [1] shared with the pool: non-zero = stop the trial before its next step. */
  stop: SharedArrayBuffer;
}

export default async function run(task: ThreadSlotTask): Promise<SlotOutcome> {
  const { port, slot, stop, ...t } = task;
  // A thread busy in the training loop handles no port messages, but it sees shared memory at once.
  const flag = new Int32Array(stop);
  try {
    return await runSlotTask(t, (e, transfer) => port.postMessage(e, transfer ?? []), {
      slot,
      // A thread shares the worker's environment: CUDA_VISIBLE_DEVICES there says nothing about the slot.
      visibleDevices: null,
      shouldStop: () => Atomics.load(flag, 0) !== 0,
    });
  } finally {
    port.close();
  }
}
