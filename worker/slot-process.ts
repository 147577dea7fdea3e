/**
 * Child-process entry for a slot that cannot live in a worker thread (tfjs-node / tfjs-node-gpu).
 * Started by ProcessPool with CUDA_VISIBLE_DEVICES already set; receives SlotTasks over IPC
 * (advanced serialization), answers with SlotEvents and a final `{type: 'outcome'}`.
 */
import { runSlotTask, type SlotTask } from './slot-task.js';

process.on('message', (task: SlotTask) => {
  void runSlotTask(task, (e) => process.send?.({ kind: 'event', event: e })).then((outcome) => process.send?.({ kind: 'outcome', outcome }));
});
process.on('disconnect', () => process.exit(0));
