/** piscina entry: one CPU slot = one worker thread, one trial at a time. */
import type { MessagePort } from 'node:worker_threads';
import { runSlotTask, type SlotOutcome, type SlotTask } from './slot-task.js';

export default async function run(task: SlotTask & { port: MessagePort }): Promise<SlotOutcome> {
  const { port, ...t } = task;
  try {
    return await runSlotTask(t, (e, transfer) => port.postMessage(e, transfer ?? []));
  } finally {
    port.close();
  }
}
