/**
 * Child process of the ingest benchmark: the sweep's collector (orchestrator/collector.ts) alone in a
 * process, so that its RSS is its own. Driven over IPC by bench/ingest.ts:
 *   {kind: 'start', url, ns, sweep, dir, trialIds} → {kind: 'ready'}
 *   {kind: 'settle'} → {kind: 'settled', rssPeakBytes}  (every message delivered, on disk and acked)
 *   {kind: 'stop'}   → {kind: 'stopped', rssPeakBytes, hwmBytes}, then exits
 * VmRSS is sampled every 20 ms; rssPeakBytes is the peak since the last report.
 */
import type { NatsConnection } from '@nats-io/transport-node';
import { Collector } from '../orchestrator/collector.js';
import { connectNats, ensureResources } from '../orchestrator/jetstream.js';
import type { TrialRecord } from '../schemas/parquet.js';
import { transportNames } from '../schemas/transport.js';
import { trialConfig, procStatusKb } from './lib.js';

type Msg = { kind: 'start'; url: string; ns: string; sweep: string; dir: string; trialIds: string[] } | { kind: 'settle' } | { kind: 'stop' };

let collector: Collector | null = null;
let nc: NatsConnection | null = null;
let peak = 0;
const sample = () => {
  const kb = procStatusKb('self', 'VmRSS');
  if (kb !== null) peak = Math.max(peak, kb * 1024);
};
const sampler = setInterval(sample, 20);
const send = (m: unknown) => process.send!(m);
const warnings: string[] = [];

process.on('message', (m: Msg) => {
  void (async () => {
    try {
      if (m.kind === 'start') {
        nc = await connectNats(m.url, 'bench-collector');
        const names = transportNames(m.ns);
        const t = await ensureResources(nc, names, m.sweep);
        const config = trialConfig('problem: {name: helmholtz2d}');
        const records = new Map<string, TrialRecord>(
          m.trialIds.map((id) => [id, {
            trial_id: id, sweep: m.sweep, config, status: 'running', attempts: 0, started_at: null, finished_at: null, wall_seconds: null,
            final_loss: null, final_rel_l2: null, diverged: null, host: null, device: null, backend: null, worker: null, slot: null, visible_devices: null,
            resumed_from_attempt: null, resumed_from_step: null, fused: null, error: null, t_diffusion: null, t_equilibrium: null, final_phase: null,
          }]),
        );
        collector = new Collector({ nc, names, sweep: m.sweep, dir: m.dir, records, kv: t.kv, onWarning: (w) => warnings.push(w) });
        await collector.start();
        sample();
        peak = 0;
        sample();
        send({ kind: 'ready' });
      } else if (m.kind === 'settle') {
        await collector!.settle(600_000);
        sample();
        send({ kind: 'settled', rssPeakBytes: peak, warnings: warnings.splice(0) });
        peak = 0;
      } else {
        await collector?.stop();
        await nc?.close();
        clearInterval(sampler);
        sample();
        send({ kind: 'stopped', rssPeakBytes: peak, hwmBytes: (procStatusKb('self', 'VmHWM') ?? 0) * 1024 });
        process.disconnect();
      }
    } catch (e) {
      send({ kind: 'error', message: (e as Error).stack ?? String(e) });
    }
  })();
});
