/**
 * Collector: consumes a sweep's output stream (metrics chunks, checkpoint chunks and trial results),
 * writes Parquet and checkpoint files (orchestrator/checkpoints.ts), and acknowledges a message only after what it carried is durably on disk (at-least-once; rows
 * redelivered after a crash are dropped by (trial_id, attempt, step) in MetricsStore).
 *
 * Intake pauses — the consumer is closed, nothing more is taken from the stream — while DIR's disk is
 * low (a DiskGuard, orchestrator/disk-space.ts: under its threshold, or a write that met ENOSPC) or
 * while writing fails for another reason; what it holds stays unacknowledged and is written first
 * when intake resumes (with a fresh consumer, so that what it had not taken yet comes again at once and
 * in stream order). Nothing is acknowledged that is not on disk.
 */
import { jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { NatsConnection } from '@nats-io/transport-node';
import { Table, tableFromIPC } from 'apache-arrow';
import type { TrialRecord } from '../schemas/parquet.js';
import type { TrialResultMessage } from '../schemas/trial.js';
import { casState, TERMINAL } from '../schemas/trial-state.js';
import type { TransportNames } from '../schemas/transport.js';
import { CheckpointAssembler, parseChunkHeaders } from './checkpoints.js';
import { parseWireStream, partIpcStream, type WireBatch } from '../schemas/metrics-ipc.js';
import { decodeMetricsMessage, MetricsStore, splitMetricsTable, writeTrialsParquet } from './parquet-store.js';
import { attemptPhases, DEFAULT_PHASE_PARAMS, type PhaseParams } from '../analysis/phases.js';
import { isDiskFull, type DiskGuard } from './disk-space.js';

/** Lifetime of the collector's pull requests, and the heartbeat the server sends while one waits (see start()). */
const PULL_EXPIRES_MS = 3_000;
const PULL_HEARTBEAT_MS = 1_000;

export interface CollectorOptions {
  nc: NatsConnection;
  names: TransportNames;
  sweep: string;
  dir: string;
  /** Every trial of DIR (this run's and earlier runs'), keyed by trial id; updated in place. */
  records: Map<string, TrialRecord>;
  /** Trial-state bucket: terminal states are put there once on disk. */
  kv?: KV;
  /** Thresholds of the phase record of each done trial (the spec's `analysis:` block); default DEFAULT_PHASE_PARAMS. */
  analysis?: PhaseParams;
  /** Called after a trial's final record is on disk. */
  onTrialFinished?: (r: TrialRecord, result: TrialResultMessage) => void;
  onWarning?: (msg: string) => void;
  /** Informational lines (the output stream answers again after a stall). */
  onInfo?: (msg: string) => void;
  /** Flush buffered rows at least this often (ms); well under the consumer's ack wait. */
  flushEveryMs?: number;
  /** Flush when this many messages wait for their ack. */
  flushAtMessages?: number;
  /**
   * Flush when the metrics messages waiting for their ack hold this many bytes (default 8 MiB): bounds
   * the collector's memory whatever the sweep's size, while each part file gets thousands of rows.
   */
  flushAtBytes?: number;
  /**
   * trials.parquet (rewritten whole: O(trials)) is written at most this often (ms), and at least
   * ten times its last write time apart (so rewriting it takes ≤ ~10 % of the collector's time in a
   * large sweep), plus at settle/stop/markFailed; default 250. Result messages are acked, and
   * `onTrialFinished` called, only once a trials.parquet holding them is on disk: this is the delay
   * between a trial's end and its `done` (a fixed 3 s before, which showed in every short sweep).
   */
  trialsEveryMs?: number;
  /**
   * Free-space guard of DIR: while it is low nothing is taken from the stream or written (intake
   * pauses), and a write that fails with ENOSPC makes it low (`full()`). Without one, a full disk
   * pauses intake like any other write error.
   */
  disk?: DiskGuard;
  /**
   * Replaces the collector's consumer (jetstream.ts resetCollectorConsumer) before intake resumes after
   * a pause, so that messages the closed consumer had sent but this collector never took are delivered
   * again at once and in stream order (a trial's result never before its metrics). Without one, intake
   * resumes on the same consumer.
   */
  resetConsumer?: () => Promise<void>;
}

interface Buffered {
  trialId: string;
  attempt: number;
  /**
   * The attempt's rows in arrival order: record batches of messages that took the fast path
   * (schemas/metrics-ipc.ts), or part tables of messages decoded the general way (another writer,
   * several trials in one message, ...).
   */
  segments: Array<WireBatch | Table>;
  /** Every segment is a WireBatch. */
  fast: boolean;
}

export class Collector {
  private readonly store: MetricsStore;
  private readonly buffers = new Map<string, Buffered>();
  /** Metrics messages whose rows are buffered: acked once their parts are on disk. */
  private pending: JsMsg[] = [];
  /** Payload bytes of `pending`. */
  private pendingBytes = 0;
  /** flushSerial calls not yet settled. */
  private flushesQueued = 0;
  /** Result messages: acked once a trials.parquet holding what they changed is on disk. */
  private pendingResults: JsMsg[] = [];
  private recordsDirty = false;
  private lastTrialsWrite = 0;
  private lastTrialsWriteMs = 0;
  private trialsTimer: NodeJS.Timeout | null = null;
  private finished: Array<[TrialRecord, TrialResultMessage]> = [];
  /** Done attempts whose phase record is still to be read from their parts (after those are on disk). */
  private toAnalyze: Array<[TrialRecord, TrialResultMessage]> = [];
  private messages: ConsumerMessages | null = null;
  private loop: Promise<void> | null = null;
  /** Intake is closed (disk low, writes failing, or stopped): messages that still arrive are left unacknowledged. */
  private paused = false;
  private resuming = false;
  private stopped = false;
  /** The error of the last failed write (not a full disk), until a write succeeds again. */
  private writeError: string | null = null;
  private timer: NodeJS.Timeout | null = null;
  private flushing: Promise<void> = Promise.resolve();
  private readonly checkpoints: CheckpointAssembler<JsMsg>;
  /** When the output stream's consumer stopped sending heartbeats (null: it answers). */
  private stalledSince: number | null = null;

  constructor(private readonly opts: CollectorOptions) {
    this.store = new MetricsStore(opts.dir);
    this.checkpoints = new CheckpointAssembler<JsMsg>(opts.dir, opts.onWarning, (e) => {
      if (!isDiskFull(e)) return false;
      this.diskFull();
      return true;
    });
  }

  /** Intake is paused (DIR's disk low, or writes failing). */
  get isPaused(): boolean {
    return this.paused;
  }

  /** Starts consuming the sweep's output stream (paused at once when the disk guard is low). */
  async start(): Promise<void> {
    this.opts.disk?.onChange(() => this.updateIntake());
    this.timer = setInterval(() => void this.flushSerial().then(() => this.updateIntake()), this.opts.flushEveryMs ?? 5_000);
    if (this.opts.disk?.low) this.paused = true;
    else await this.openIntake();
  }

  /** A write met a full disk: the guard goes low (and says so), or without a guard the writes count as failing. */
  private diskFull(): void {
    if (this.opts.disk) this.opts.disk.full();
    else this.writeFailed(new Error('no space left on device (ENOSPC)'));
  }

  private writeFailed(e: Error): void {
    if (this.writeError === null)
      this.opts.onWarning?.(`collector: writing to ${this.opts.dir} failed (${e.message}); nothing more is taken or acknowledged until a write works again (retried every ${(this.opts.flushEveryMs ?? 5_000) / 1000} s)`);
    this.writeError = e.message;
    this.updateIntake();
  }

  /** Pauses or resumes intake as the disk guard and the last write say. */
  private updateIntake(): void {
    const want = !this.stopped && !this.opts.disk?.low && this.writeError === null;
    if (!want && !this.paused) {
      this.paused = true;
      const messages = this.messages;
      this.messages = null;
      // Not awaited: the loop may be inside a flush that waits for this chain.
      void messages?.close().catch(() => undefined);
    } else if (want && this.paused && !this.resuming) {
      this.resuming = true;
      // Behind any running flush: what is held is written (and acked) first, then a fresh consumer.
      void this.serial(async () => {
        try {
          await this.flush(true);
        } catch (e) {
          if (isDiskFull(e)) this.diskFull();
          else this.writeFailed(e as Error);
          return;
        }
        if (this.stopped || this.opts.disk?.low || this.writeError !== null) return;
        await this.opts.resetConsumer?.();
        await this.openIntake();
        this.paused = false;
      })
        .catch(() => undefined) // retried at the next tick; a JetStream that never answers is the run's to report
        .finally(() => (this.resuming = false));
    }
  }

  private async openIntake(): Promise<void> {
    const js = jetstream(this.opts.nc);
    const consumer = await js.consumers.get(this.opts.names.outStream, this.opts.names.collector(this.opts.sweep));
    // Pull requests live on the consumer's leader. When that NATS node dies (a cluster goes on with
    // the others), the open request dies with it: two missed heartbeats (or a reconnect) make nats.js
    // ask for the consumer's info until a new leader answers, waiting 0.5-1.5 times the pull's
    // lifetime between tries, then pull anew. With its defaults (30 s pulls, heartbeats every 15 s)
    // the collector sat idle 20-40 s after a node loss on a 3-node cluster while results piled up in
    // the stream; with 3 s pulls and 1 s heartbeats it goes on a few seconds after the new leader.
    const messages = await consumer.consume({ max_messages: 512, expires: PULL_EXPIRES_MS, idle_heartbeat: PULL_HEARTBEAT_MS });
    this.messages = messages;
    void this.watchStalls(messages);
    this.loop = (async () => {
      for await (const m of messages) {
        // Taken after intake closed: left unacknowledged, delivered again when it resumes.
        if (this.messages !== messages) continue;
        try {
          await this.handle(m);
        } catch (e) {
          this.opts.onWarning?.(`collector: message ${m.subject} #${m.seq} rejected: ${(e as Error).message}`);
          // Dropped for good. An ack, not a term: on nats-server 2.9 a termed message can stay counted as
          // unacknowledged on a work-queue stream, and the collector would never settle.
          m.ack();
        }
      }
    })();
  }

  /** Says when the output stream stops answering (a NATS node or leader lost) and when it delivers again. */
  private async watchStalls(messages: ConsumerMessages): Promise<void> {
    for await (const n of messages.status()) {
      // nats.js pulls anew after two missed heartbeats; a third before this says so (not for a busy moment).
      if (n.type === 'heartbeats_missed' && n.count >= 3 && this.stalledSince === null) {
        this.stalledSince = Date.now() - n.count * PULL_HEARTBEAT_MS;
        this.opts.onWarning?.(`collector: no heartbeat from the output stream for ${(n.count * PULL_HEARTBEAT_MS) / 1000} s (a NATS node down, a leader being elected?); pulling again until it answers`);
      } else if (n.type === 'next' && this.stalledSince !== null) {
        // A new pull request was accepted: the consumer has a leader again.
        this.opts.onInfo?.(`collector: the output stream answers again (after ${((Date.now() - this.stalledSince) / 1000).toFixed(1)} s)`);
        this.stalledSince = null;
      }
    }
  }

  private async handle(m: JsMsg): Promise<void> {
    if (m.subject.includes('.checkpoint.')) {
      // Written durably when its last chunk arrives; its messages are acked only then (not in flush).
      const info = parseChunkHeaders((k) => m.headers?.get(k) || undefined);
      if (!this.opts.records.has(info.trialId)) {
        this.opts.onWarning?.(`collector: checkpoint chunk of unknown trial ${info.trialId} (not in this sweep's DIR); dropped`);
        m.ack();
        return;
      }
      const rel = await this.checkpoints.add(info, m.data, m);
      for (const x of rel.ack) x.ack();
      for (const x of rel.term) x.ack(); // dropped for good (see start())
      for (const x of rel.nak) x.nak(5_000);
      return;
    }
    if (m.subject.endsWith('.metrics')) {
      // Fast path: one trial's rows, steps increasing, our encoder's layout: checked, not decoded.
      const batches = parseWireStream(m.data);
      const parts = batches
        ? [{ trial_id: batches[0].trialId, attempt: batches[0].attempt, batches, table: null }]
        : splitMetricsTable(decodeMetricsMessage(m.data)).map((p) => ({ ...p, batches: null }));
      for (const part of parts) {
        if (!this.opts.records.has(part.trial_id)) {
          // Never a path from the wire that DIR does not know (trial ids name directories).
          this.opts.onWarning?.(`collector: metrics of unknown trial ${JSON.stringify(part.trial_id).slice(0, 40)} (not in this sweep's DIR); dropped`);
          continue;
        }
        const key = `${part.trial_id}#${part.attempt}`;
        let b = this.buffers.get(key);
        if (b === undefined) {
          b = { trialId: part.trial_id, attempt: part.attempt, segments: [], fast: true };
          this.buffers.set(key, b);
        }
        if (part.batches) b.segments.push(...part.batches);
        else {
          b.segments.push(part.table);
          b.fast = false;
        }
      }
      this.pending.push(m);
      this.pendingBytes += m.data.length;
      if (this.pending.length >= (this.opts.flushAtMessages ?? 5_000) || this.pendingBytes >= (this.opts.flushAtBytes ?? 8 * 2 ** 20)) {
        // Written while the next messages are read; at most one such flush waits behind a running one
        // (memory: about two flushes' worth of messages).
        if (this.flushesQueued > 0) await this.flushing;
        void this.flushSerial();
      }
      return;
    }
    this.pendingResults.push(m);
    const result = JSON.parse(m.string()) as TrialResultMessage;
    if (!Number.isInteger(result.attempt) || result.attempt < 1) throw new Error(`result attempt ${JSON.stringify(result.attempt)} is not an integer >= 1`);
    for (const x of this.checkpoints.supersede(result.trial_id, result.attempt)) x.ack();
    this.applyResult(result);
    // A result ends its attempt: write its rows and read its phases now; trials.parquet (and the
    // result's ack) follows within trialsEveryMs (debounced: it is rewritten whole).
    await this.flushSerial();
  }

  /**
   * Records a trial as failed without a result from a worker (e.g. its message reached
   * max_deliver because its workers kept dying): state `failed` in the bucket unless it is already
   * terminal, and trials.parquet.
   */
  async markFailed(trialId: string, attempt: number, error: string): Promise<void> {
    const now = new Date().toISOString();
    const result: TrialResultMessage = {
      sweep: this.opts.sweep, trial_id: trialId, attempt, status: 'failed', started_at: now, finished_at: now, wall_seconds: 0,
      final_loss: null, final_rel_l2: null, diverged: false, steps_done: 0, rows: 0, host: '', device: '', backend: '', worker: '', slot: '', visible_devices: null, resumed_from: null, error,
    };
    if (this.opts.kv) {
      const w = await casState(this.opts.kv, this.opts.names.stateKey(this.opts.sweep, trialId), (cur) =>
        cur && TERMINAL.has(cur.status) ? null : { status: 'failed', attempt, owner: null, updated_at: now, error, result },
      ).catch(() => null);
      if (!w) return;
    }
    this.applyResult(result);
    await this.flushSerial(true);
  }

  private applyResult(result: TrialResultMessage): void {
    const r = this.opts.records.get(result.trial_id);
    if (!r) {
      this.opts.onWarning?.(`collector: result for unknown trial ${result.trial_id} (not in this sweep's DIR); kept in the stream's ack only`);
    } else if (r.status !== 'done' && !(result.status !== 'done' && (r.status === 'failed' || r.status === 'cancelled') && r.attempts > result.attempt)) {
      // A failed or cancelled attempt never overwrites a done one (or a later attempt's record); a later done overwrites failed.
      Object.assign(r, {
        status: result.status,
        attempts: Math.max(r.attempts, result.attempt),
        started_at: new Date(result.started_at),
        finished_at: new Date(result.finished_at),
        wall_seconds: result.wall_seconds,
        final_loss: result.final_loss,
        final_rel_l2: result.final_rel_l2,
        diverged: result.diverged,
        host: result.host,
        device: result.device,
        backend: result.backend,
        worker: result.worker || null,
        slot: result.slot || null,
        visible_devices: result.visible_devices,
        resumed_from_attempt: result.resumed_from?.attempt ?? null,
        resumed_from_step: result.resumed_from?.step ?? null,
        fused: result.fused ?? null,
        error: result.error,
        t_diffusion: null,
        t_equilibrium: null,
        final_phase: null,
      } satisfies Partial<TrialRecord>);
      this.recordsDirty = true;
      this.finished.push([r, result]);
      if (result.status === 'done') this.toAnalyze.push([r, result]);
    }
  }

  /**
   * Sets a done trial's phase record from its attempt's parts. A part that cannot be read leaves the
   * phases null with a warning rather than holding the trial's result back.
   */
  private async analyze(r: TrialRecord, res: TrialResultMessage): Promise<void> {
    if (r.status !== 'done') return;
    try {
      Object.assign(r, await attemptPhases(this.opts.dir, r.trial_id, res.attempt, this.opts.analysis ?? DEFAULT_PHASE_PARAMS, res.diverged));
    } catch (e) {
      this.opts.onWarning?.(`collector: phases of trial ${r.trial_id} attempt ${res.attempt} not read: ${(e as Error).message}`);
    }
  }

  /** Runs `f` after every flush queued before it; rejects with its error. */
  private serial(f: () => Promise<void>): Promise<void> {
    const run = this.flushing.then(f);
    this.flushing = run.catch(() => undefined);
    return run;
  }

  private flushSerial(force = false): Promise<void> {
    this.flushesQueued++;
    return this.serial(() => this.flush(force))
      .then(
        () => {
          if (this.writeError === null || this.opts.disk?.low) return;
          this.writeError = null;
          this.opts.onWarning?.(`collector: writing to ${this.opts.dir} works again`);
        },
        (e: Error) => (isDiskFull(e) ? this.diskFull() : this.writeFailed(e)),
      )
      .finally(() => void this.flushesQueued--);
  }

  /** Writes one attempt's buffered rows as a part. */
  private writeBuffered(b: Buffered): Promise<unknown> {
    if (b.fast) return this.store.writeBatches(b.trialId, b.attempt, b.segments as WireBatch[]);
    // Mixed: every segment as a part table, in arrival order (sorted runs stay on writePart's fast path).
    const tables = b.segments.map((x) => (x instanceof Table ? x : tableFromIPC(partIpcStream([x]))));
    return this.store.writePart(b.trialId, b.attempt, tables.length === 1 ? tables[0]! : tables[0]!.concat(...tables.slice(1)));
  }

  /**
   * Writes buffered parts (then acks their metrics messages), reads the phases of attempts whose
   * result came, and — when due (`trialsEveryMs`) or `force`d — the trials file, then acks the result
   * messages it holds and reports their trials finished.
   */
  private async flush(force = false): Promise<void> {
    if (!this.pending.length && !this.pendingResults.length && !this.recordsDirty) return;
    // Below the disk guard's threshold nothing is written: it all stays held, unacknowledged.
    if (this.opts.disk && !(await this.opts.disk.check())) return;
    const msgs = this.pending;
    const bytes = this.pendingBytes;
    this.pending = [];
    this.pendingBytes = 0;
    const buffers = [...this.buffers.values()];
    this.buffers.clear();
    try {
      // One part per attempt, written concurrently (their fsyncs overlap); every one on disk before any ack.
      const written = await Promise.allSettled(buffers.map((b) => this.writeBuffered(b)));
      for (const w of written) if (w.status === 'rejected') throw w.reason;
      // Every row of a done attempt is on disk now (its result came after its metrics): read its phases.
      while (this.toAnalyze.length) {
        const [r, res] = this.toAnalyze[0]!;
        // A resumed attempt holds its rows from the checkpoint step on; the earlier attempt's rows
        // before it are copied in so the completed attempt holds every step once.
        if (res.resumed_from) await this.store.copyEarlierRows(r.trial_id, res.resumed_from.attempt, res.attempt, res.resumed_from.step);
        await this.analyze(r, res);
        this.store.release(r.trial_id, res.attempt);
        this.toAnalyze.shift();
      }
    } catch (e) {
      // Nothing is acked and everything stays held, for the next flush (rows already written are then
      // dropped as duplicates by step); results keep waiting behind their metrics.
      this.pending = msgs.concat(this.pending);
      this.pendingBytes += bytes;
      for (const b of buffers) {
        const key = `${b.trialId}#${b.attempt}`;
        const later = this.buffers.get(key);
        if (later) {
          b.segments.push(...later.segments);
          b.fast &&= later.fast;
        }
        this.buffers.set(key, b);
      }
      throw e;
    }
    for (const m of msgs) m.ack();
    if (!this.recordsDirty) {
      // Results that changed no record (a redelivered result of a trial already done): nothing to write.
      for (const m of this.pendingResults.splice(0)) m.ack();
      return;
    }
    const every = Math.max(this.opts.trialsEveryMs ?? 250, 10 * this.lastTrialsWriteMs);
    const due = this.lastTrialsWrite + every - Date.now();
    if (!force && due > 0) {
      this.trialsTimer ??= setTimeout(() => {
        this.trialsTimer = null;
        void this.flushSerial();
      }, due);
      return;
    }
    if (this.trialsTimer) clearTimeout(this.trialsTimer);
    this.trialsTimer = null;
    const results = this.pendingResults;
    this.pendingResults = [];
    const done = this.finished;
    this.finished = [];
    this.recordsDirty = false;
    const t0 = Date.now();
    try {
      await writeTrialsParquet(this.opts.dir, [...this.opts.records.values()]);
    } catch (e) {
      // Not acked: held for the next write (their records are in memory).
      this.recordsDirty = true;
      this.finished = done.concat(this.finished);
      this.pendingResults = results.concat(this.pendingResults);
      throw e;
    }
    this.lastTrialsWrite = Date.now();
    this.lastTrialsWriteMs = this.lastTrialsWrite - t0;
    for (const m of results) m.ack();
    // Trial state in the bucket was set terminal by the worker that owned the attempt (schemas/trial-state.ts).
    for (const [r, res] of done) this.opts.onTrialFinished?.(r, res);
  }

  /**
   * Waits until the sweep's output stream holds nothing unwritten: every message delivered, on disk
   * and acked (what an earlier, interrupted run left behind). Gives up with a warning after `timeoutMs`.
   */
  async settle(timeoutMs = 30_000): Promise<void> {
    const jsm = await jetstreamManager(this.opts.nc);
    const t0 = Date.now();
    for (;;) {
      // Nothing can be written while paused (the run has said why): go on; what waits is written later.
      if (this.paused || this.stopped) return;
      const info = await jsm.consumers.info(this.opts.names.outStream, this.opts.names.collector(this.opts.sweep));
      if (info.num_pending === 0 && info.num_ack_pending === 0) return;
      const had = this.pending.length + this.pendingResults.length;
      await this.flushSerial(true);
      if (Date.now() - t0 > timeoutMs) {
        this.opts.onWarning?.(`collector: output stream not settled after ${timeoutMs / 1000} s (${info.num_pending} pending, ${info.num_ack_pending} unacked); going on`);
        return;
      }
      // Look again at once after a flush that acked something; else give deliveries a moment.
      if (had === 0) await new Promise((r) => setTimeout(r, 20));
    }
  }

  /**
   * Flushes what is buffered (unless the disk is low: then it stays unacknowledged, for the next run)
   * and stops consuming.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    await this.flushSerial(true);
    if (this.trialsTimer) clearTimeout(this.trialsTimer);
    this.trialsTimer = null;
    const messages = this.messages;
    this.messages = null;
    await messages?.close();
    await this.loop;
  }
}
