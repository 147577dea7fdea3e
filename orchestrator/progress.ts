/**
 * Live progress of a sweep: trials done / running / failed of total, steps/s and ETA, and which trials
 * run (named by their grid values). A progress bar on a TTY (cli-progress), plain log lines otherwise.
 * Also the log line format of every phasemap process: `<ISO time> [level] message`.
 */
import cliProgress from 'cli-progress';
import type { ProgressMessage } from '../schemas/transport.js';
import { shortId } from './trial-names.js';

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

/** One log line: `2025-01-31T12:00:00.000Z [info] message` (UTC, ISO 8601), no trailing newline. */
export function logLine(level: 'info' | 'warn' | 'error', msg: string, at = new Date()): string {
  return `${at.toISOString()} [${level}] ${msg}`;
}

/** Plain `<ISO time> [level] message` lines on stderr; stdout stays for data. */
export function plainLogger(stream: NodeJS.WritableStream = process.stderr): Logger {
  const line = (level: 'info' | 'warn' | 'error') => (m: string) => {
    stream.write(`${logLine(level, m)}\n`);
  };
  return { info: line('info'), warn: line('warn'), error: line('error') };
}

/** Seconds as `45s`, `3m07s`, `2h05m`; `--` when not known. */
export function fmtEta(s: number | null): string {
  if (s === null || !Number.isFinite(s) || s < 0) return '--';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

/** A trial as the ETA sees it: its steps, the step it is at (null: not started) and its recent speed. */
export interface EtaTrial {
  steps: number;
  /** Latest step reported (0-based), or null while queued. */
  step: number | null;
  /** Its recent steps/s, when measured. */
  rate?: number | null;
}

/**
 * The ETA of the trials still to finish: steps remaining of running and queued trials over the recent
 * steps/s of the running ones. A running trial whose speed is not measured yet counts at the mean speed
 * of the others (else at `fallbackRate`, e.g. that of finished trials); queued trials add their steps
 * but no speed (they start as running ones finish).
 * @returns remaining steps, steps/s (null when no running trial has a speed) and seconds (null likewise).
 */
export function sweepEta(trials: Iterable<EtaTrial>, fallbackRate: number | null = null): { remaining: number; rate: number | null; eta_s: number | null } {
  let remaining = 0;
  let running = 0;
  let known = 0;
  let sum = 0;
  for (const t of trials) {
    remaining += Math.max(0, t.steps - (t.step === null ? 0 : t.step + 1));
    if (t.step === null) continue;
    running++;
    if (t.rate !== null && t.rate !== undefined && Number.isFinite(t.rate) && t.rate > 0) {
      known++;
      sum += t.rate;
    }
  }
  const each = known ? sum / known : fallbackRate;
  const rate = running && each ? sum + (running - known) * each : null;
  if (remaining === 0) return { remaining, rate, eta_s: 0 };
  return { remaining, rate, eta_s: rate ? remaining / rate : null };
}

/** A trial of the run being watched. */
interface Watched {
  steps: number;
  label: string;
  step: number | null;
  attempt: number;
  /** Step and time (ms) of the message the speed is measured from. */
  baseStep: number;
  baseAt: number;
  lastAt: number;
  rate: number | null;
}

/** A running trial that sent nothing for this long is not counted in steps/s (its worker may be gone). */
const SILENT_MS = 30_000;

/**
 * Progress of one `phasemap run`: counts, steps/s and an ETA over the steps left of its running and
 * queued trials (sweepEta), and the running trials by id and grid values.
 */
export class SweepProgress {
  private done = 0;
  private failed = 0;
  private cancelled = 0;
  private readonly trials = new Map<string, Watched>();
  private readonly total: number;
  /** Speed of finished trials (steps/s of each, averaged): the ETA's guess for a trial not measured yet. */
  private finishedRate: number | null = null;
  private readonly bar: cliProgress.MultiBar | null;
  private readonly single: cliProgress.SingleBar | null;
  private readonly timer: NodeJS.Timeout;
  readonly log: Logger;

  /**
   * @param trials the trials this run waits for: id, Adam steps and label (trial-names.ts)
   * @param tty a progress bar on stderr, else a plain log line every 10 s
   * @param base the logger of plain lines
   */
  constructor(trials: Array<{ trial_id: string; steps: number; label?: string }>, tty: boolean, base: Logger) {
    for (const t of trials) this.trials.set(t.trial_id, { steps: t.steps, label: t.label ?? '', step: null, attempt: 0, baseStep: 0, baseAt: 0, lastAt: 0, rate: null });
    const total = trials.length;
    this.total = total;
    if (tty) {
      this.bar = new cliProgress.MultiBar(
        {
          format: ' {bar} {value}/{total} trials done | {running} running | {failed} failed | {sps} steps/s | ETA {eta_s}{names}',
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      this.single = this.bar.create(total, 0, { running: 0, failed: 0, sps: '0', eta_s: '--', names: '' });
      const via = (level: 'info' | 'warn' | 'error') => (m: string) => this.bar!.log(`${logLine(level, m)}\n`);
      this.log = { info: via('info'), warn: via('warn'), error: via('error') };
    } else {
      this.bar = null;
      this.single = null;
      this.log = base;
    }
    this.timer = setInterval(() => this.tick(), tty ? 500 : 10_000);
  }

  /** A progress message from a worker (trials of other runs are ignored). */
  onProgress(p: ProgressMessage, now = Date.now()): void {
    const t = this.trials.get(p.trial_id);
    if (!t) return;
    if (p.steps > 0) t.steps = p.steps;
    if (t.step === null || p.attempt !== t.attempt || p.step < t.baseStep) {
      // A new attempt (a retry, or a resume from a checkpoint): its speed is measured from here.
      t.attempt = p.attempt;
      t.baseStep = p.step;
      t.baseAt = now;
    } else if (now - t.baseAt >= 1000 && p.step > t.baseStep) {
      const inst = ((p.step - t.baseStep) * 1000) / (now - t.baseAt);
      t.rate = t.rate === null ? inst : 0.6 * t.rate + 0.4 * inst;
      t.baseStep = p.step;
      t.baseAt = now;
    }
    t.step = p.step;
    t.lastAt = now;
  }

  /**
   * A trial reached a terminal state.
   * @param stepsDone steps it trained; with `wallSeconds`, its speed joins the guess for trials not measured yet
   */
  onFinished(trialId: string, status: string, stepsDone: number, wallSeconds?: number): void {
    this.trials.delete(trialId);
    if (wallSeconds && wallSeconds > 0 && stepsDone > 0 && status === 'done') {
      const r = stepsDone / wallSeconds;
      this.finishedRate = this.finishedRate === null ? r : 0.7 * this.finishedRate + 0.3 * r;
    }
    if (status === 'done') this.done++;
    else if (status === 'cancelled') this.cancelled++;
    else this.failed++;
    this.tick();
  }

  /** Running trials (those that reported a step) and the ETA of everything this run still waits for. */
  snapshot(now = Date.now()): { running: Array<{ trial_id: string; label: string; step: number; steps: number }>; rate: number | null; eta_s: number | null } {
    const running: Array<{ trial_id: string; label: string; step: number; steps: number }> = [];
    const eta: EtaTrial[] = [];
    for (const [id, t] of this.trials) {
      if (t.step !== null) running.push({ trial_id: id, label: t.label, step: t.step, steps: t.steps });
      // A silent trial keeps its steps in the ETA but not its speed.
      eta.push({ steps: t.steps, step: t.step, rate: now - t.lastAt < SILENT_MS ? t.rate : null });
    }
    const e = sweepEta(eta, this.finishedRate);
    return { running, rate: e.rate, eta_s: e.eta_s };
  }

  /** The running trials as text: `t648c1a… lr=1e-3 rba seed=0 120/400, …` (at most `max`, then `+N more`). */
  private runningText(running: Array<{ trial_id: string; label: string; step: number; steps: number }>, max: number): string {
    const shown = running.slice(0, max).map((r) => `${shortId(r.trial_id)}${r.label ? ` ${r.label}` : ''} ${r.step}/${r.steps}`);
    return `${shown.join(', ')}${running.length > max ? `, +${running.length - max} more` : ''}`;
  }

  private tick(): void {
    const { running, rate, eta_s } = this.snapshot();
    // Every step trained but trials not yet recorded: their results are still being written (a
    // collector behind, or paused for disk space), which an "ETA 0s" would hide.
    const eta = eta_s === 0 && running.length ? `-- (training done; writing the results of ${running.length} trial(s))` : fmtEta(eta_s);
    const sps = rate === null ? '0' : rate.toFixed(0);
    if (this.single) {
      // As many running trials as the terminal's width leaves room for.
      const room = (process.stderr.columns ?? 120) - 100;
      let names = '';
      for (let k = running.length; k >= 1 && room > 20; k--) {
        names = ` | ${this.runningText(running, k)}`;
        if (names.length <= room) break;
        names = '';
      }
      this.single.update(this.done + this.failed + this.cancelled, { running: running.length, failed: this.failed, sps, eta_s: eta, names });
    } else
      this.log.info(
        `progress: ${this.done}/${this.total} trials done, ${running.length} running, ${this.failed} failed${this.cancelled ? `, ${this.cancelled} cancelled` : ''}, ${sps} steps/s, ETA ${eta}${running.length ? `; running: ${this.runningText(running, 4)}` : ''}`,
      );
  }

  /** Stops the timer (and the bar, after a last update). */
  stop(): void {
    clearInterval(this.timer);
    if (this.single) {
      this.tick();
      this.bar!.stop();
    }
  }
}
