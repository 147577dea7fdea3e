/**
 * The report of a running sweep, kept fresh by `phasemap run`: `phasemap report DIR --live` in a child
 * process (so rendering never blocks the orchestrator's acks and heartbeats; at a low CPU priority, so
 * it yields to the training slots; $PHASEMAP_REPORT_NICE), once at the start and again after trials finish, never more often
 * than every `minInterval` seconds ($PHASEMAP_REPORT_INTERVAL, 15) nor than 2 × the last report's duration (a large sweep's
 * report takes seconds: at most a third of the machine's time goes to it, at low priority). One child at a time.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { setPriority } from 'node:os';
import { fileURLToPath } from 'node:url';
import { reportInterval } from '../analysis/report/index.js';
import type { Logger } from './progress.js';

/**
 * The niceness the live report renders at: $PHASEMAP_REPORT_NICE, default 10 (it yields to the
 * training slots; on a machine whose cores are all busy it then gets ~10 % of a core). 0 renders it at
 * the run's own priority, for a report that keeps up on a loaded machine.
 * @throws Error naming the variable when it is not an integer in [0, 19].
 */
export function reportNice(): number {
  const v = process.env.PHASEMAP_REPORT_NICE;
  if (v === undefined || v === '') return 10;
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= 0 && n <= 19)) throw new Error(`PHASEMAP_REPORT_NICE: got ${JSON.stringify(v)}, expected an integer niceness between 0 and 19`);
  return n;
}

const CLI = fileURLToPath(new URL('./cli.js', import.meta.url));

export class LiveReport {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | null = null;
  private lastStart = 0;
  private lastMs = 0;
  private pending = false;
  private stopped = false;
  private failures = 0;

  /**
   * @param mayWrite asked before each report: false (e.g. DIR's disk is low) puts it off by one interval.
   */
  constructor(
    private readonly dir: string,
    private readonly log: Logger,
    private readonly minInterval = reportInterval(),
    private readonly mayWrite: () => boolean = () => true,
    private readonly nice = reportNice(),
  ) {}

  /** Asks for a fresh report (a trial finished): written now, or as soon as the interval allows. */
  poke(): void {
    if (this.stopped) return;
    this.pending = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped || this.child || this.timer || !this.pending) return;
    const gap = Math.max(this.minInterval * 1000, 2 * this.lastMs);
    const wait = Math.max(0, this.lastStart + gap - Date.now());
    this.timer = setTimeout(() => {
      this.timer = null;
      this.start();
    }, wait);
    this.timer.unref();
  }

  private start(): void {
    if (this.stopped) return;
    this.lastStart = Date.now();
    if (!this.mayWrite()) {
      this.schedule();
      return;
    }
    this.pending = false;
    const child = spawn(process.execPath, [CLI, 'report', this.dir, '--live'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    try {
      if (child.pid && this.nice > 0) setPriority(child.pid, this.nice);
    } catch {
      /* not permitted: it runs at normal priority */
    }
    let err = '';
    child.stderr?.on('data', (b: Buffer) => {
      if (err.length < 4000) err += b.toString();
    });
    this.exited = new Promise((resolve) =>
      child.on('exit', (code) => {
        this.lastMs = Date.now() - this.lastStart;
        this.child = null;
        if (code !== 0 && !this.stopped && this.failures++ < 3)
          this.log.warn(`live report not written (exit ${code}): ${err.split('\n').find((l) => l.includes('[error]')) ?? err.trim().split('\n')[0] ?? ''}`);
        resolve();
        this.schedule();
      }),
    );
  }

  /** Stops refreshing; a report being written is waited for (up to `waitS` seconds, then ended), so that the final report written after this is the last word. */
  async stop(waitS = 30): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const child = this.child;
    if (!child) return;
    const t = setTimeout(() => child.kill('SIGTERM'), waitS * 1000);
    if (waitS <= 0) child.kill('SIGTERM');
    await this.exited;
    clearTimeout(t);
  }
}
