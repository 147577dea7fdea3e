/**
 * Live progress of a sweep: trials done / running / failed of total, steps/s and ETA. A progress
 * bar on a TTY (cli-progress), plain log lines otherwise.
 */
import cliProgress from 'cli-progress';
import { createConsola } from 'consola';
import type { ProgressMessage } from '../schemas/transport.js';

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

/** Plain `[level] message` lines on stderr (consola's basic reporter); stdout stays for data. */
export function plainLogger(stream: NodeJS.WriteStream = process.stderr): Logger {
  // An explicit level: consola would otherwise hide info lines under NODE_ENV=test or CI.
  const c = createConsola({ stdout: stream, stderr: stream, fancy: false, level: 3 });
  return { info: (m) => c.info(m), warn: (m) => c.warn(m), error: (m) => c.error(m) };
}

function fmtEta(s: number): string {
  if (!Number.isFinite(s) || s < 0) return '--';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, '0')}m` : m ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

export class SweepProgress {
  private done = 0;
  private failed = 0;
  private cancelled = 0;
  private readonly steps = new Map<string, { step: number; steps: number }>();
  private stepsSeen = 0;
  private rate = 0;
  private lastRateAt = Date.now();
  private lastRateSteps = 0;
  private readonly bar: cliProgress.MultiBar | null;
  private readonly single: cliProgress.SingleBar | null;
  private readonly timer: NodeJS.Timeout;
  readonly log: Logger;

  /**
   * @param total trials this run waits for
   * @param stepsPerTrial Adam steps of each of those trials (for the ETA)
   */
  constructor(private readonly total: number, private readonly stepsTotal: number, tty: boolean, base: Logger) {
    if (tty) {
      this.bar = new cliProgress.MultiBar(
        {
          format: ' {bar} {value}/{total} trials done | {running} running | {failed} failed | {sps} steps/s | ETA {eta_s}',
          hideCursor: true,
          clearOnComplete: false,
          stopOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      this.single = this.bar.create(total, 0, { running: 0, failed: 0, sps: '0', eta_s: '--' });
      const via = (level: string) => (m: string) => this.bar!.log(`[${level}] ${m}\n`);
      this.log = { info: via('info'), warn: via('warn'), error: via('error') };
    } else {
      this.bar = null;
      this.single = null;
      this.log = base;
    }
    this.timer = setInterval(() => this.tick(), tty ? 500 : 10_000);
  }

  /** A progress message from a worker. */
  onProgress(p: ProgressMessage): void {
    const key = p.trial_id;
    const prev = this.steps.get(key);
    const delta = prev && prev.step <= p.step ? p.step - prev.step : p.step + 1;
    this.stepsSeen += Math.max(0, delta);
    this.steps.set(key, { step: p.step, steps: p.steps });
  }

  /** A trial reached a terminal state. */
  onFinished(trialId: string, status: string, stepsDone: number): void {
    const prev = this.steps.get(trialId);
    if (prev) this.stepsSeen += Math.max(0, stepsDone - 1 - prev.step);
    this.steps.delete(trialId);
    if (status === 'done') this.done++;
    else if (status === 'cancelled') this.cancelled++;
    else this.failed++;
    this.tick();
  }

  private tick(): void {
    const now = Date.now();
    const dt = (now - this.lastRateAt) / 1000;
    if (dt >= 1) {
      const inst = (this.stepsSeen - this.lastRateSteps) / dt;
      this.rate = this.rate === 0 ? inst : 0.7 * this.rate + 0.3 * inst;
      this.lastRateAt = now;
      this.lastRateSteps = this.stepsSeen;
    }
    const remaining = Math.max(0, this.stepsTotal - this.stepsSeen);
    const eta = this.rate > 0 ? fmtEta(remaining / this.rate) : '--';
    const payload = { running: this.steps.size, failed: this.failed, sps: this.rate.toFixed(0), eta_s: eta };
    if (this.single) this.single.update(this.done + this.failed + this.cancelled, payload);
    else
      this.log.info(
        `progress: ${this.done}/${this.total} trials done, ${payload.running} running, ${this.failed} failed${this.cancelled ? `, ${this.cancelled} cancelled` : ''}, ${payload.sps} steps/s, ETA ${eta}`,
      );
  }

  stop(): void {
    clearInterval(this.timer);
    if (this.single) {
      this.tick();
      this.bar!.stop();
    }
  }
}
