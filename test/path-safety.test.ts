/**
 * Nothing from the wire steers a path outside DIR (issue 4, security): forged metrics rows, results and
 * checkpoint chunks naming trials DIR does not hold (`../../…`) are dropped by the collector; a spec is
 * data only (a YAML tag that would construct code is not evaluated).
 */
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { headers } from '@nats-io/transport-node';
import { Collector } from '../orchestrator/collector.js';
import { connectNats, ensureResources } from '../orchestrator/jetstream.js';
import { startEmbeddedNats } from '../orchestrator/nats-server.js';
import { resolveSweep, parseSpecText } from '../orchestrator/spec.js';
import type { TrialRecord } from '../schemas/parquet.js';
import type { TrialResultMessage } from '../schemas/trial.js';
import { CKPT_HEADERS, transportNames } from '../schemas/transport.js';
import { encodeMetricChunks } from '../worker/metrics-encoder.js';
import { duck, tempDir } from './helpers.js';
import { TINY_SPEC, specErrors } from './spec-helpers.js';

const row = (trial_id: string, step: number) => ({
  trial_id, attempt: 1, step, lr: 1e-3, loss: 1, loss_residual: 0.5, loss_boundary: 0.5, wall_seconds: 0.1, rel_l2: null, snr: null,
  snr_layers: null, grad_order: null, snr_adam: null, res_homogeneity: null, saturation_layers: null, entropy_layers: null, lambda_mean: null, lambda_max: null,
});

async function walk(d: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(d, { withFileTypes: true })) {
    const p = join(d, e.name);
    out.push(p);
    if (e.isDirectory()) out.push(...(await walk(p)));
  }
  return out;
}

test('the collector drops forged metrics, results and checkpoint chunks of trials DIR does not hold; nothing is written outside DIR', async (t) => {
  const work = await tempDir('paths');
  const dir = join(work, 'a', 'b', 'out');
  const nats = await startEmbeddedNats(join(work, 'store'));
  const nc = await connectNats(nats.url, 'path-test');
  try {
    const names = transportNames('pathtest');
    const tr = await ensureResources(nc, names, 'ps');
    const sweep = resolveSweep(parseSpecText(TINY_SPEC.replace('name: t', 'name: ps')), 'spec');
    const good = sweep.trials[0]!;
    const records = new Map<string, TrialRecord>([[good.trial_id, {
      trial_id: good.trial_id, sweep: 'ps', config: good.config, status: 'queued', attempts: 0, started_at: null, finished_at: null, wall_seconds: null,
      final_loss: null, final_rel_l2: null, diverged: null, host: null, device: null, backend: null, worker: null, slot: null, visible_devices: null,
      resumed_from_attempt: null, resumed_from_step: null, fused: null, error: null, t_diffusion: null, t_equilibrium: null, final_phase: null,
    }]]);
    const warnings: string[] = [];
    const collector = new Collector({ nc, names, sweep: 'ps', dir, records, kv: tr.kv, onWarning: (m) => warnings.push(m) });
    await collector.start();
    const evil = ['../../evil', '../../../../tmp/x', 'tffffffffffffffff'];
    for (const id of evil) {
      for (const bytes of encodeMetricChunks([row(id, 0), row(id, 5)], 1 << 20)) await tr.js.publish(names.metrics('ps'), bytes);
      const h = headers();
      for (const [k, v] of Object.entries({ trialId: id, attempt: '1', step: '0', chunk: '0', chunks: '1', totalBytes: '3', sha256: 'x'.repeat(64) })) h.set(CKPT_HEADERS[k as keyof typeof CKPT_HEADERS], v);
      await tr.js.publish(`${names.ns}.out.ps.checkpoint.x`, new Uint8Array([1, 2, 3]), { headers: h });
      const res = { sweep: 'ps', trial_id: id, attempt: 1, status: 'done', started_at: new Date().toISOString(), finished_at: new Date().toISOString() } as TrialResultMessage;
      await tr.js.publish(`${names.ns}.out.ps.result.x`, new TextEncoder().encode(JSON.stringify(res)));
    }
    // And the good trial's rows, so the test knows the collector did write.
    for (const bytes of encodeMetricChunks([row(good.trial_id, 0), row(good.trial_id, 5)], 1 << 20)) await tr.js.publish(names.metrics('ps'), bytes);
    await collector.settle(20_000);
    await collector.stop();
    const files = await walk(work);
    t.false(files.some((f) => /evil|tmp\/x|tffffffffffffffff/.test(f)), files.join('\n'));
    t.false(existsSync('/tmp/x'));
    t.true(files.every((f) => f.startsWith(dir) || f.startsWith(join(work, 'store')) || [join(work, 'a'), join(work, 'a', 'b')].includes(f)), files.join('\n'));
    const rows = await duck(`SELECT trial_id, list(step ORDER BY step) AS s FROM read_parquet('${dir}/metrics/**/*.parquet', hive_partitioning = true) GROUP BY trial_id`);
    t.deepEqual(rows.map((r) => [r.trial_id, (r.s as { items: number[] }).items]), [[good.trial_id, [0, 5]]]);
    t.is(warnings.filter((w) => /unknown trial|bad trial id|bad sha256/.test(w)).length, 9, warnings.join('\n'));
    t.false(warnings.some((w) => /not settled/.test(w)), warnings.join('\n'));
  } finally {
    await nc.close();
    await nats.stop();
  }
});

test('a sweep spec is data: YAML tags that would construct code are not evaluated', (t) => {
  const errs = specErrors(`${TINY_SPEC.replace('name: t', 'name: !!js/function "function(){ require(\'fs\').writeFileSync(\'/tmp/pwned\', \'x\') }"')}`);
  t.true(errs.length > 0);
  t.regex(errs.join('\n'), /name/);
  t.false(existsSync('/tmp/pwned'));
});
