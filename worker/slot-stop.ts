/**
 * Stop watcher of a slot process (worker/slot-process.ts): a worker thread that reads the stop pipe
 * (ProcessPool writes `<seq>:<i>\n` to the child's fd 4 when trial `i` of the group run with sequence
 * number `seq` is to stop; `<seq>\n` means `<seq>:0`) and stores `seq` in a shared Int32 flag array at
 * index `1 + i` (STOP_FLAGS layout). The slot's main thread is busy in the training loop and would not
 * see an IPC message until it yields; this thread has its own event loop, so the trainer's
 * `shouldStop` (an Atomics.load, polled before every step) sees the stop at its next step.
 * End of the pipe (the worker process is gone) stores STOP_ALL at index 0: every running trial stops
 * too, so the slot's main thread gets back to its event loop, sees the IPC channel closed and exits.
 */
import { Socket } from 'node:net';
import { isMainThread, workerData } from 'node:worker_threads';

/** Flag value (at index 0) that stops any trial. */
export const STOP_ALL = -1;

/** Trials of one group a slot process can stop one by one (indices 0 … MAX_GROUP−1); also the largest group it runs. */
export const MAX_GROUP = 256;

/**
 * Layout of a slot process's shared stop flags: Int32 [1 + MAX_GROUP]; index 0 holds STOP_ALL (or 0),
 * index 1 + i the sequence number of the group run whose trial i is to stop (0 = none).
 */
export const STOP_FLAGS = 1 + MAX_GROUP;

if (!isMainThread && workerData && typeof (workerData as { fd?: unknown }).fd === 'number') {
  const { fd, flag } = workerData as { fd: number; flag: SharedArrayBuffer };
  const stop = new Int32Array(flag);
  const pipe = new Socket({ fd, readable: true, writable: false });
  pipe.setEncoding('utf8');
  let pending = '';
  pipe.on('data', (d: string) => {
    pending += d;
    for (let n = pending.indexOf('\n'); n >= 0; n = pending.indexOf('\n')) {
      const [seqText, indexText] = pending.slice(0, n).split(':');
      pending = pending.slice(n + 1);
      const seq = Number(seqText);
      const i = indexText === undefined ? 0 : Number(indexText);
      if (Number.isInteger(seq) && Number.isInteger(i) && i >= 0 && i < MAX_GROUP) Atomics.store(stop, 1 + i, seq);
    }
  });
  pipe.on('end', () => Atomics.store(stop, 0, STOP_ALL));
  pipe.on('error', () => {
    Atomics.store(stop, 0, STOP_ALL);
    pipe.destroy();
  });
}
