/**
 * Stop watcher of a slot process (worker/slot-process.ts): a worker thread that reads the stop pipe
 * (ProcessPool writes `<seq>\n` to the child's fd 4 when the trial with that sequence number is to
 * stop) and stores `seq` in a shared Int32 flag. The slot's main thread is busy in the training loop
 * and would not see an IPC message until it yields; this thread has its own event loop, so the
 * trainer's `shouldStop` (an Atomics.load, polled before every step) sees the stop at its next step.
 * End of the pipe (the worker process is gone) stores STOP_ALL: the running trial stops too, so the
 * slot's main thread gets back to its event loop, sees the IPC channel closed and exits.
 */
import { Socket } from 'node:net';
import { workerData } from 'node:worker_threads';

/** Flag value that stops any trial. */
export const STOP_ALL = -1;

const { fd, flag } = workerData as { fd: number; flag: SharedArrayBuffer };
const stop = new Int32Array(flag);
const pipe = new Socket({ fd, readable: true, writable: false });
pipe.setEncoding('utf8');
let pending = '';
pipe.on('data', (d: string) => {
  pending += d;
  for (let i = pending.indexOf('\n'); i >= 0; i = pending.indexOf('\n')) {
    const seq = Number(pending.slice(0, i));
    pending = pending.slice(i + 1);
    if (Number.isInteger(seq)) Atomics.store(stop, 0, seq);
  }
});
pipe.on('end', () => Atomics.store(stop, 0, STOP_ALL));
pipe.on('error', () => {
  Atomics.store(stop, 0, STOP_ALL);
  pipe.destroy();
});
