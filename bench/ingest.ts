/**
 * ingest: metric rows/s end to end — Arrow encoding in worker threads → a real nats-server (JetStream,
 * file storage) → the collector in its own process → Parquet parts durable on disk — for 1, 4 and 16
 * concurrent trial streams; plus the collector's RSS during the 16-stream runs.
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { DuckDBInstance } from '@duckdb/node-api';
import { jetstream } from '@nats-io/jetstream';
import { connectNats } from '../orchestrator/jetstream.js';
import { startEmbeddedNats } from '../orchestrator/nats-server.js';
import { transportNames } from '../schemas/transport.js';
import type { ProducerData, ProducerRun } from './ingest-producer.js';
import { cpus } from 'node:os';
import { benchEntry, figure, forkChild, median, tempDir, treeCpuSeconds, type Figure } from './lib.js';
import type { BenchOptions } from './train.js';

/** In-flight publishes per trial stream: worker/agent.ts PUBLISH_WINDOW (32 when this was written). */
const PUBLISH_WINDOW = 32;

/** Trial id of stream i of run r of the S-stream case (t + 16 hex digits). */
const idOf = (S: number, r: number, i: number) => `t${S.toString(16).padStart(4, '0')}${r.toString(16).padStart(4, '0')}${i.toString(16).padStart(8, '0')}`;

interface RunResult {
  seconds: number;
  publishSeconds: number;
  encodeMs: number;
  messages: number;
  rssPeakBytes: number;
  /** CPU seconds of every process of the path (this one with its producer threads, nats-server, the collector). */
  cpuSeconds: number | null;
}

export async function benchIngest(o: BenchOptions): Promise<Figure[]> {
  const rowsPerRun = o.quick ? 8_000 : 80_000;
  const chunkRows = 100; // trainTrial flushes rows every 100 rows (or 1 s)
  const maxBytes = 1024 * 1024 - 4096; // the worker agent's default (server max_payload − 4 KiB)
  const work = await tempDir('ingest');
  const nats = await startEmbeddedNats(join(work, 'store'));
  const figs: Figure[] = [];
  const ns = 'benchingest';
  const names = transportNames(ns);
  const nc = await connectNats(nats.url, 'bench-ingest-producer');
  const js = jetstream(nc);
  try {
    for (const S of [1, 4, 16]) {
      const sweep = `ingest${S}`;
      const dir = join(work, sweep);
      const runs = o.runs + 1; // run 0 is the warm-up
      const perStream = (r: number) => Math.ceil((r === 0 ? rowsPerRun / 4 : rowsPerRun) / S);
      const ids: string[] = [];
      for (let r = 0; r < runs; r++) for (let i = 0; i < S; i++) ids.push(idOf(S, r, i));
      const col = forkChild(benchEntry('ingest-collector.js'));
      col.child.send({ kind: 'start', url: nats.url, ns, sweep, dir, trialIds: ids });
      await col.next('ready');
      const results: RunResult[] = [];
      let collectorStop: { rssPeakBytes: number; hwmBytes: number } | null = null;
      // One thread per stream for all runs of this case, up and idle before any clock starts.
      const workers = Array.from({ length: S }, () => new Worker(benchEntry('ingest-producer.js'), { workerData: { chunkRows, maxBytes } satisfies ProducerData }));
      try {
        await Promise.all(workers.map((w) => new Promise((res) => w.once('online', res))));
        for (let r = 0; r < runs; r++) {
          o.log(`ingest: ${S} stream(s), ${r === 0 ? 'warm-up' : `run ${r}/${o.runs}`}, ${perStream(r) * S} rows`);
          let encodeMs = 0;
          let messages = 0;
          const cpu0 = treeCpuSeconds();
          const t0 = performance.now();
          const streams = workers.map((w, i) => new Promise<void>((resolve, reject) => {
            // Per trial: publishes issued in order, up to PUBLISH_WINDOW awaiting their JetStream ack, each
            // with its Nats-Msg-Id (as worker/agent.ts does).
            let issue: Promise<void> = Promise.resolve();
            const inflight = new Set<Promise<void>>();
            let failed: Error | null = null;
            let seq = 0;
            const id = idOf(S, r, i);
            const onMessage = (m: { kind: 'chunk'; bytes: Uint8Array } | { kind: 'end'; encodeMs: number; messages: number }) => {
              if (m.kind === 'chunk') {
                const msgID = `${id}.1.m${seq++}`;
                issue = issue.then(async () => {
                  while (inflight.size >= PUBLISH_WINDOW) await Promise.race(inflight);
                  const p: Promise<void> = js.publish(names.metrics(sweep), m.bytes, { msgID, timeout: 30_000 })
                    .then(() => undefined, (e: Error) => void (failed ??= e))
                    .finally(() => inflight.delete(p));
                  inflight.add(p);
                });
              } else {
                encodeMs += m.encodeMs;
                messages += m.messages;
                w.off('message', onMessage);
                w.off('error', reject);
                issue.then(() => Promise.all(inflight)).then(() => (failed ? reject(failed) : resolve()), reject);
              }
            };
            w.on('message', onMessage);
            w.on('error', reject);
            w.postMessage({ trialId: id, rows: perStream(r) } satisfies ProducerRun);
          }));
          await Promise.all(streams);
          const tPublished = performance.now();
          col.child.send({ kind: 'settle' });
          const settled = await col.next<{ rssPeakBytes: number; warnings: string[] }>('settled', 600_000);
          const t1 = performance.now();
          const cpu1 = treeCpuSeconds();
          if (settled.warnings.length) o.log(`ingest: collector warnings: ${settled.warnings.slice(0, 3).join(' | ')}`);
          results.push({ seconds: (t1 - t0) / 1000, publishSeconds: (tPublished - t0) / 1000, encodeMs, messages, rssPeakBytes: settled.rssPeakBytes, cpuSeconds: cpu0 === null || cpu1 === null ? null : cpu1 - cpu0 });
        }
      } finally {
        await Promise.all(workers.map((w) => w.terminate()));
        col.child.send({ kind: 'stop' });
        collectorStop = await col.next<{ rssPeakBytes: number; hwmBytes: number }>('stopped', 120_000).catch(() => null);
      }
      // Rows on disk, per trial (distinct steps: what a reader gets after the collector's dedup).
      const onDisk = await countRows(dir);
      const measured = results.slice(1);
      const rowsOk = measured.map((_x, k) => {
        let n = 0;
        for (let i = 0; i < S; i++) n += onDisk.get(idOf(S, k + 1, i)) ?? 0;
        return n;
      });
      const expected = perStream(1) * S;
      const bad = rowsOk.filter((n) => n !== expected);
      figs.push(figure({
        bench: 'ingest',
        figure: `ingest ${S} stream${S > 1 ? 's' : ''}`,
        unit: 'rows/s',
        samples: measured.map((x, k) => rowsOk[k]! / x.seconds),
        target: { op: '>=', value: 1_000_000, text: '≥ 1,000,000' },
        config: {
          streams: S, rows_per_run: expected, rows_per_message: chunkRows, messages_per_run: measured[0]?.messages,
          row: 'all §5 columns set, lists 5/4/4 (4x32 net)', nats: 'nats-server JetStream file storage, 127.0.0.1',
          median_publish_seconds: medianOf(measured.map((x) => x.publishSeconds)),
          median_total_seconds: medianOf(measured.map((x) => x.seconds)),
          median_encode_ms_all_threads: medianOf(measured.map((x) => x.encodeMs)),
          rows_on_disk_per_run: rowsOk,
        },
        method: 'rows on disk (DuckDB count) ÷ wall s from "go" to the producer threads until the collector has every message on disk and acked (settle)',
        ...(bad.length ? { error: `rows on disk ${rowsOk.join(', ')} ≠ ${expected} per run` } : {}),
      }));
      const cpuPerRow = measured.flatMap((x, k) => (x.cpuSeconds === null ? [] : [(x.cpuSeconds / rowsOk[k]!) * 1e6]));
      if (cpuPerRow.length) {
        const cores = cpus().length;
        figs.push(figure({
          bench: 'ingest',
          figure: `ingest ${S} stream${S > 1 ? 's' : ''}, CPU per row`,
          unit: 'µs/row',
          samples: cpuPerRow,
          target: null,
          config: {
            streams: S, cores, rows_per_run: expected,
            ceiling_rows_per_s_on_all_cores: Math.round((cores * 1e6) / median(cpuPerRow)),
            cpu_seconds_per_run: measured.map((x) => (x.cpuSeconds === null ? null : +x.cpuSeconds.toFixed(2))),
          },
          method: 'CPU s (user + system, every thread) of every process of the path — producers and publisher (this process), nats-server, the collector — from /proc over the run ÷ rows on disk; cores ÷ it is the most rows/s this machine could ingest with every core busy',
        }));
      }
      if (S === 16) {
        const peaks = measured.map((x) => x.rssPeakBytes / 2 ** 20);
        figs.push(figure({
          bench: 'memory',
          figure: 'memory collector, 16-stream ingest',
          unit: 'MiB',
          samples: peaks,
          target: { op: '<=', value: 512, text: '≤ 512' },
          config: { streams: 16, rows_per_run: expected, collector_process_hwm_mib: collectorStop ? +(collectorStop.hwmBytes / 2 ** 20).toFixed(1) : null },
          method: 'peak VmRSS of the collector process (sampled every 20 ms) during each 16-stream run',
        }));
      }
    }
  } finally {
    await nc.close();
    await nats.stop();
    await rm(work, { recursive: true, force: true });
  }
  return figs;
}

/** lib's `median` to 3 decimals (results.json config fields); null for no values. */
function medianOf(xs: number[]): number | null {
  return xs.length ? +median(xs).toFixed(3) : null;
}

async function countRows(dir: string): Promise<Map<string, number>> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    const r = await conn.runAndReadAll(
      `SELECT trial_id, count(DISTINCT step)::INTEGER AS n FROM read_parquet('${dir.replace(/'/g, "''")}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY trial_id`,
    );
    return new Map(r.getRowObjects().map((x) => [String(x.trial_id), Number(x.n)]));
  } finally {
    conn.closeSync();
  }
}
