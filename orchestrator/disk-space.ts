/**
 * Free space on the results DIR's filesystem, watched rather than discovered: `phasemap run` checks it
 * (fs.statfs) every second and before every write of the collector, and pauses its intake below a
 * threshold (`--min-free`, PHASEMAP_MIN_FREE, default 256 MiB) so that neither the Parquet writes nor
 * the embedded nats-server's store ever meet a full disk. nats-server 2.9 stops serving JetStream for
 * good (until restarted) after one failed write to a full disk, so its store is capped too
 * (`embeddedStoreLimit`): the cap is what lets the store hold the results that wait while the
 * collector is paused without filling the reserve.
 *
 * The default threshold, 256 MiB, is an absolute size, not a share: it must hold what is being written
 * when the pause begins (a flush of at most 8 MiB of messages as part files, a trials.parquet rewrite,
 * a checkpoint, a live report of a few MB) plus the embedded store's growth while paused (its cap,
 * 120 MiB, and the slack of its block files, ~16 MiB), whatever the size of the disk; 5 % of a 4 TB disk
 * would stop a run with 200 GB free, 5 % of a 20 GB one leave too little.
 */
import { statfs } from 'node:fs/promises';

/** What `--min-free` / PHASEMAP_MIN_FREE says: bytes, or a share of the filesystem's size. */
export type MinFree = { bytes: number } | { percent: number };

/** The default threshold: see docs/limits.md (one flush, a trials.parquet rewrite, a report, and the embedded store's cap of half of it). */
export const DEFAULT_MIN_FREE: MinFree = { bytes: 256 * 2 ** 20 };

const UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 2 ** 10, ki: 2 ** 10, kib: 2 ** 10, kb: 1e3,
  m: 2 ** 20, mi: 2 ** 20, mib: 2 ** 20, mb: 1e6,
  g: 2 ** 30, gi: 2 ** 30, gib: 2 ** 30, gb: 1e9,
  t: 2 ** 40, ti: 2 ** 40, tib: 2 ** 40, tb: 1e12,
};

/**
 * Parses a free-space threshold: a size (`256MiB`, `1G`, `500MB`, `0`; K/M/G/T and KiB… are powers of
 * 1024, KB/MB… of 1000, a bare number is bytes) or a share of the filesystem (`5%`). `0` turns the
 * threshold off (a full disk still pauses the run when a write fails with ENOSPC).
 * @param what names the value in the error (`--min-free`, `PHASEMAP_MIN_FREE`).
 * @throws Error "<what>: got "<v>", expected …".
 */
export function parseMinFree(v: string, what = '--min-free'): MinFree {
  const s = v.trim().toLowerCase();
  const bad = () => new Error(`${what}: got ${JSON.stringify(v)}, expected a size like 256MiB, 2G, 500MB or 0 (off), or a share of the filesystem like 5%`);
  const pct = /^(\d+(?:\.\d+)?)\s*%$/.exec(s);
  if (pct) {
    const p = Number(pct[1]);
    if (!(p >= 0 && p < 100)) throw bad();
    return { percent: p };
  }
  const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/.exec(s);
  if (!m || UNITS[m[2]!] === undefined) throw bad();
  const bytes = Math.round(Number(m[1]) * UNITS[m[2]!]!);
  if (!Number.isFinite(bytes)) throw bad();
  return { bytes };
}

/** The threshold in bytes on a filesystem of `total` bytes. */
export function minFreeBytes(m: MinFree, total: number): number {
  return 'bytes' in m ? m.bytes : Math.ceil((total * m.percent) / 100);
}

/** Bytes as `3.9 MiB`, `256 MiB`, `1.2 GiB` (powers of 1024). */
export function fmtBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let x = n;
  while (Math.abs(x) >= 1024 && i < units.length - 1) {
    x /= 1024;
    i++;
  }
  return `${i === 0 || x >= 100 || Number.isInteger(x) ? Math.round(x) : x.toFixed(1)} ${units[i]}`;
}

/** Free (available to this user) and total bytes of a filesystem. */
export interface DiskSpace {
  free: number;
  total: number;
}

/** Free and total bytes of the filesystem that holds `path` (statfs). */
export async function diskSpace(path: string): Promise<DiskSpace> {
  const s = await statfs(path);
  return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
}

/** The smallest JetStream store cap the embedded server gets. */
const MIN_STORE = 2 ** 20;

/**
 * What nats-server 2.9's file store may hold on disk beyond its accounted bytes: each stream keeps
 * writing into its last block file, deleted (acknowledged) messages included, until the block is full
 * (4 MiB for the work-queue streams, 8 MiB for the trial-state bucket) — measured: a work queue with
 * 250 KB in it used up to 4.2 MB of disk.
 */
export const STORE_BLOCK_SLACK = 16 * 2 ** 20;

/**
 * The embedded nats-server's JetStream file store cap (`jetstream { max_file_store }`): half of what
 * the reserve (`minFree`, or the free space when less is free at start) leaves after the store's block
 * slack (STORE_BLOCK_SLACK), at least 1 MiB; 120 MiB for the default 256 MiB. The collector stops
 * writing when less than `minFree` is free; then the results that keep coming wait in the store,
 * which can grow to this cap (plus its slack) and not further (publishes get "insufficient resources"
 * and are retried), so the rest of the reserve is left for what was being written when the pause
 * began. nats-server's own default (75 % of the free space at its start, shared with the Parquet
 * writes) lets the two together fill the disk. A reserve under 2 × STORE_BLOCK_SLACK leaves the store
 * room to meet a full disk after all.
 */
export function embeddedStoreLimit(free: number, minFree: number): number {
  const reserve = Math.min(minFree > 0 ? minFree : free, free);
  return Math.max(MIN_STORE, Math.floor((reserve - STORE_BLOCK_SLACK) / 2));
}

/** True for an error of a write that found no space (ENOSPC) or no quota (EDQUOT) left. */
export function isDiskFull(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/** Why the guard pauses: free space under the threshold, or a write that failed for want of space. */
export type LowReason = 'threshold' | 'enospc';

export interface DiskGuardOptions {
  /** Check every this many ms (default 1000). */
  everyMs?: number;
  /** After a write failed with ENOSPC, stay paused at least this long (ms, default 10 s): statfs may not show what the write met (quota, inodes). */
  fullHoldMs?: number;
  /** statfs stand-in (tests). */
  space?: (path: string) => Promise<DiskSpace>;
}

/**
 * Watches the free space of the filesystem of `dir` against a threshold: `low` below it (or after a
 * write failed with ENOSPC), back to ok once `resumeAt` is free again (a margin above the threshold,
 * so that a pause is not left and entered again with every part written). Listeners hear each change
 * once. A statfs that fails counts as ok.
 */
export class DiskGuard {
  private isLow = false;
  private reason: LowReason = 'threshold';
  private holdUntil = 0;
  private last: DiskSpace | null = null;
  private threshold = 0;
  private timer: NodeJS.Timeout | null = null;
  private checking: Promise<boolean> | null = null;
  private readonly listeners: Array<(low: boolean) => void> = [];

  constructor(
    /** The results DIR. */
    readonly dir: string,
    /** The threshold as given (bytes or a share of the filesystem). */
    readonly minFree: MinFree,
    private readonly opts: DiskGuardOptions = {},
  ) {}

  /** Below the threshold (or paused after ENOSPC) at the last check. */
  get low(): boolean {
    return this.isLow;
  }

  /** The threshold in bytes (known after the first check). */
  get minFreeBytes(): number {
    return this.threshold;
  }

  /** Free bytes at which a pause ends: the threshold plus a quarter of it, at least 4 MiB more. */
  get resumeAt(): number {
    return this.threshold + Math.max(Math.ceil(this.threshold / 4), 4 * 2 ** 20);
  }

  /** The last statfs reading, or null before the first. */
  get space(): DiskSpace | null {
    return this.last;
  }

  /** Calls `f(low)` on every change between ok and low. */
  onChange(f: (low: boolean) => void): void {
    this.listeners.push(f);
  }

  private set(low: boolean, reason: LowReason = 'threshold'): void {
    if (low === this.isLow) return;
    this.isLow = low;
    this.reason = reason;
    for (const f of this.listeners) f(low);
  }

  /** Reads the free space now. @returns true when there is room (not low). */
  check(): Promise<boolean> {
    this.checking ??= (async () => {
      try {
        const s = await (this.opts.space ?? diskSpace)(this.dir);
        this.last = s;
        this.threshold = minFreeBytes(this.minFree, s.total);
        if (this.isLow) {
          if (s.free >= this.resumeAt && Date.now() >= this.holdUntil) this.set(false);
        } else if (this.threshold > 0 && s.free < this.threshold) this.set(true, 'threshold');
      } catch {
        /* not measurable (e.g. statfs unsupported): only ENOSPC pauses */
      }
      return !this.isLow;
    })().finally(() => (this.checking = null));
    return this.checking;
  }

  /** A write failed for want of space: low now (whatever statfs says), for at least `fullHoldMs`. */
  full(): void {
    this.holdUntil = Date.now() + (this.opts.fullHoldMs ?? 10_000);
    this.set(true, 'enospc');
  }

  /** First check, then one every `everyMs`. */
  async start(): Promise<void> {
    await this.check();
    this.timer ??= setInterval(() => void this.check(), this.opts.everyMs ?? 1000);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /**
   * The one line that says the run paused: where, how much is free, the threshold, and what to do.
   * @param waitsIn where the results wait meanwhile (e.g. "the embedded server's store, at most 128 MiB").
   */
  pauseLine(waitsIn: string): string {
    const free = this.last ? fmtBytes(this.last.free) : 'unknown';
    const why =
      this.reason === 'enospc'
        ? `a write to ${this.dir} found no space left (ENOSPC; ${free} free)`
        : `${free} free on the filesystem of ${this.dir}, under the --min-free threshold of ${fmtBytes(this.threshold)}`;
    return `disk: ${why}: results are no longer written or acknowledged, they wait in ${waitsIn}. Free space there and the run goes on by itself (at ${fmtBytes(this.resumeAt)} free); or stop it (Ctrl-C) and run the same command later; nothing is lost. --min-free / PHASEMAP_MIN_FREE sets the threshold`;
  }

  /** The line that says the pause is over. */
  resumeLine(): string {
    return `disk: ${this.last ? fmtBytes(this.last.free) : 'enough'} free on the filesystem of ${this.dir} again: results are written again`;
  }
}
