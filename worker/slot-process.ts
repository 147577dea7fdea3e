/**
 * Child-process entry for a slot that cannot live in a worker thread (tfjs-node / tfjs-node-gpu).
 * Started by ProcessPool with CUDA_VISIBLE_DEVICES already set (GPU slots); receives
 * `{kind: 'run', tasks, slot, seq}` over IPC (advanced serialization): one trial, or a group of
 * same-shaped trials trained fused (worker/slot-task.ts runSlotTasks); answers with
 * `{kind: 'event', index}` SlotEvents of trial `index` and a final `{kind: 'outcome', outcomes}`, one
 * run at a time.
 * Stop of trial i: the pool writes `<seq>:<i>\n` to fd 4 (read by the slot-stop.ts thread, seen at the
 * trial's next step) and also sends `{kind: 'stop', seq, index}` over IPC (seen only when this thread
 * yields). When the worker process dies, the stop pipe ends: the running trials stop and this process exits.
 */
import { fstatSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { runSlotTasks, type SlotEvent, type SlotOutcome, type SlotTask } from './slot-task.js';
import { MAX_GROUP, STOP_ALL, STOP_FLAGS } from './slot-stop.js';

/** Messages ProcessPool sends a slot process. */
export type SlotProcessMessage =
  /** `stopped[i]`: trial i's signal had aborted already (it stops before step 0). At most MAX_GROUP tasks. */
  | { kind: 'run'; tasks: SlotTask[]; slot: string; seq: number; stopped?: boolean[] }
  | { kind: 'stop'; seq: number; index: number };

/**
 * Messages a slot process sends ProcessPool: trial `index`'s events, then the group's outcomes (one per
 * task, in order), or `error` (and no outcomes) when the group could not run (runSlotTasks threw).
 */
export type SlotProcessReply = { kind: 'event'; index: number; event: SlotEvent } | { kind: 'outcome'; outcomes: SlotOutcome[]; error?: string };

/** The child's end of the stop pipe (stdio index 4 of ProcessPool's fork). */
export const STOP_FD = 4;

/** slot-stop.ts STOP_FLAGS layout: [0] STOP_ALL or 0; [1 + i] sequence number of the run whose trial i is to stop. */
const stopFlags = new Int32Array(new SharedArrayBuffer(4 * STOP_FLAGS));
let hasStopPipe = true;
try {
  fstatSync(STOP_FD);
} catch {
  hasStopPipe = false;
}
if (hasStopPipe) {
  const watcher = new Worker(new URL('./slot-stop.js', import.meta.url), { workerData: { fd: STOP_FD, flag: stopFlags.buffer } });
  watcher.unref();
  watcher.on('error', (e) => process.stderr.write(`${new Date().toISOString()} [warn] slot ${process.pid}: stop watcher failed (${e.message}); stops are seen only between steps that yield\n`));
}

/** Sends to the pool; a failed send means the pool is gone (the 'disconnect' handler below exits). */
const send = (m: SlotProcessReply) => {
  if (process.connected && Atomics.load(stopFlags, 0) !== STOP_ALL) process.send?.(m, undefined, {}, () => {});
};

process.on('message', (m: SlotProcessMessage) => {
  if (m.kind === 'stop') {
    if (m.index >= 0 && m.index < MAX_GROUP) Atomics.store(stopFlags, 1 + m.index, m.seq);
    return;
  }
  const { tasks, slot, seq } = m;
  if (tasks.length > MAX_GROUP) {
    // ProcessPool never sends more; answer rather than leave the pool waiting.
    send({ kind: 'outcome', outcomes: [], error: `a slot process runs at most ${MAX_GROUP} trials at once, got ${tasks.length}` });
    return;
  }
  m.stopped?.forEach((s, i) => s && Atomics.store(stopFlags, 1 + i, seq));
  void runSlotTasks(tasks, (index, event) => send({ kind: 'event', index, event }), {
    slot,
    visibleDevices: process.env.CUDA_VISIBLE_DEVICES ?? null,
    // STOP_ALL: the worker is gone.
    shouldStop: (i) => Atomics.load(stopFlags, 1 + i) === seq || Atomics.load(stopFlags, 0) === STOP_ALL,
  }).then(
    (outcomes) => send({ kind: 'outcome', outcomes }),
    (e: Error) => send({ kind: 'outcome', outcomes: [], error: e.message }),
  );
});
process.on('disconnect', () => process.exit(0));
