/**
 * Child-process entry for a slot that cannot live in a worker thread (tfjs-node / tfjs-node-gpu).
 * Started by ProcessPool with CUDA_VISIBLE_DEVICES already set (GPU slots); receives
 * `{kind: 'run', task, slot, seq}` over IPC (advanced serialization), answers with
 * `{kind: 'event'}` SlotEvents and a final `{kind: 'outcome'}`, one trial at a time.
 * Stop: the pool writes `<seq>\n` to fd 4 (read by the slot-stop.ts thread, seen at the trial's next
 * step) and also sends `{kind: 'stop', seq}` over IPC (seen only when this thread yields). When the
 * worker process dies, the stop pipe ends: the running trial stops and this process exits.
 */
import { fstatSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { runSlotTask, type SlotTask } from './slot-task.js';

/** Messages ProcessPool sends a slot process. */
export type SlotProcessMessage =
  /** `stopped`: the trial's signal had aborted already (it stops before step 0). */
  | { kind: 'run'; task: SlotTask; slot: string; seq: number; stopped?: boolean }
  | { kind: 'stop'; seq: number };

/** The child's end of the stop pipe (stdio index 4 of ProcessPool's fork). */
export const STOP_FD = 4;

/** Int32 [1]: sequence number of the trial to stop (0 = none). */
const stopFlag = new Int32Array(new SharedArrayBuffer(4));
let hasStopPipe = true;
try {
  fstatSync(STOP_FD);
} catch {
  hasStopPipe = false;
}
if (hasStopPipe) {
  const watcher = new Worker(new URL('./slot-stop.js', import.meta.url), { workerData: { fd: STOP_FD, flag: stopFlag.buffer } });
  watcher.unref();
  watcher.on('error', (e) => process.stderr.write(`slot ${process.pid}: stop watcher failed (${e.message}); stops are seen only between steps that yield\n`));
}

/** Sends to the pool; a failed send means the pool is gone (the 'disconnect' handler below exits). */
const send = (m: unknown) => {
  if (process.connected && Atomics.load(stopFlag, 0) !== -1) process.send?.(m, undefined, {}, () => {});
};

process.on('message', (m: SlotProcessMessage) => {
  if (m.kind === 'stop') {
    Atomics.store(stopFlag, 0, m.seq);
    return;
  }
  const { task, slot, seq } = m;
  if (m.stopped) Atomics.store(stopFlag, 0, seq);
  void runSlotTask(task, (e) => send({ kind: 'event', event: e }), {
    slot,
    visibleDevices: process.env.CUDA_VISIBLE_DEVICES ?? null,
    shouldStop: () => {
      const v = Atomics.load(stopFlag, 0);
      return v === seq || v === -1; // -1: slot-stop.ts STOP_ALL, the worker is gone
    },
  }).then((outcome) => send({ kind: 'outcome', outcome }));
});
process.on('disconnect', () => process.exit(0));
