/** `phasemap query`: the views over a results DIR and the three output formats, on a DIR written by the project's own writers. */
import test from 'ava';
import { runQuery } from '../analysis/query.js';
import { writeTrialsParquet } from '../orchestrator/parquet-store.js';
import { parseSpecText, resolveSweep } from '../orchestrator/spec.js';
import type { TrialRecord } from '../schemas/parquet.js';
import { tempDir } from './helpers.js';

const sweep = resolveSweep(parseSpecText(`
name: q
problem: {name: poisson2d, n_collocation: 64}
diagnostics: {snr_batches: 4}
grid:
  train.lr: [0.001, 0.01]
`));

function records(): TrialRecord[] {
  return sweep.trials.map((t, i) => ({
    trial_id: t.trial_id, sweep: 'q', config: t.config, status: 'done', attempts: 1, started_at: null, finished_at: null, wall_seconds: 1,
    final_loss: 1, final_rel_l2: i === 0 ? 0.5 : 0.25, diverged: false, host: 'h', device: 'cpu', backend: 'wasm', worker: 'w', slot: 'cpu0', visible_devices: null,
    resumed_from_attempt: null, resumed_from_step: null, fused: 1, error: i === 0 ? 'a "quoted", comma' : null, t_diffusion: null, t_equilibrium: null, final_phase: 'fitting',
  }));
}

test('query: views, csv quoting, json numbers, a table; no metrics yet gives empty metrics views', async (t) => {
  const dir = await tempDir('query');
  await writeTrialsParquet(dir, records());
  const csv = await runQuery(dir, 'SELECT lr, final_rel_l2, error FROM trials ORDER BY lr', 'csv');
  t.is(csv, 'lr,final_rel_l2,error\n0.001,0.5,"a ""quoted"", comma"\n0.01,0.25,\n');
  const json = JSON.parse(await runQuery(dir, 'SELECT count(*) AS n, sum(attempts) AS a FROM trials', 'json')) as unknown;
  t.deepEqual(json, [{ n: 2, a: 2 }]);
  const table = await runQuery(dir, 'SELECT (SELECT count(*) FROM metrics) AS m, (SELECT count(*) FROM metrics_all) AS m_all');
  t.regex(table, /│ 0 +│ 0 +│/);
  t.regex(table, /\(1 row\)\n$/);
  const views = await runQuery(dir, undefined, 'csv');
  t.true(views.startsWith('view,column,type\ntrials,trial_id,VARCHAR\n'), views.slice(0, 80));
  t.regex(views, /\nmetrics,trial_id,VARCHAR\n/);
  await t.throwsAsync(runQuery(`${dir}/nope`, 'SELECT 1'), { message: /nope: no trials\.parquet/ });
});
