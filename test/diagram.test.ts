import { existsSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { axisLabels, buildDiagram, DIAGRAM_FILE, renderDiagram, type DiagramCell } from '../analysis/diagram.js';
import { writeTrialsParquet } from '../orchestrator/parquet-store.js';
import { parseSpecText, resolveSweep } from '../orchestrator/spec.js';
import type { FinalPhase } from '../schemas/trial.js';
import type { TrialRecord } from '../schemas/parquet.js';
import { duck, tempDir } from './helpers.js';

// 2 strategies × 2 lr × 3 seeds; phases, t_equilibrium and rel_l2 chosen per trial so every cell's
// aggregate is known by hand.
const sweep = resolveSweep(parseSpecText(`
name: diag
problem: {name: poisson2d, n_collocation: 64}
diagnostics: {snr_batches: 4}
grid:
  strategy: [{name: vanilla}, {name: rba}]
  train.lr: [0.001, 0.01]
  seed: [0, 1, 2]
`));

const plan: Record<string, Array<[FinalPhase, number | null, number]>> = {
  // [final_phase, t_equilibrium, final_rel_l2] for seeds 0, 1, 2
  'vanilla|0.001': [['equilibrium', 3000, 0.05], ['diffusion', null, 0.2], ['equilibrium', 4000, 0.03]],
  'vanilla|0.01': [['diverged', null, 10], ['diverged', null, 20], ['fitting', null, 1]],
  'rba|0.001': [['equilibrium', 1000, 0.004], ['equilibrium', 1200, 0.002], ['equilibrium', 1100, 0.003]],
  'rba|0.01': [['diffusion', null, 0.5], ['equilibrium', 800, 0.1], ['failed' as FinalPhase, null, NaN]],
};

function records(): TrialRecord[] {
  return sweep.trials.map((t) => {
    const [phase, tde, rel] = plan[`${t.config.strategy.name}|${t.config.train.lr}`]![t.config.seed]!;
    const failed = (phase as string) === 'failed';
    return {
      trial_id: t.trial_id, sweep: 'diag', config: t.config, status: failed ? 'failed' : 'done', attempts: 1,
      started_at: null, finished_at: null, wall_seconds: 1, final_loss: 1, final_rel_l2: failed ? null : rel,
      diverged: phase === 'diverged', host: 'h', device: 'cpu', backend: 'wasm', worker: 'w', slot: 'cpu0', visible_devices: null, resumed_from_attempt: null, resumed_from_step: null, fused: null, error: failed ? 'boom' : null,
      t_diffusion: null, t_equilibrium: tde, final_phase: failed ? null : phase,
    };
  });
}

test('phase_diagram.parquet aggregates done trials per (facet, x, y) cell', async (t) => {
  const dir = await tempDir('diagram');
  await writeTrialsParquet(dir, records());
  const cells = await buildDiagram(dir, { x: 'lr', y: 'batch_size', facet: 'strategy' });
  t.true(existsSync(join(dir, DIAGRAM_FILE)));
  const rows = await duck(`SELECT * FROM '${join(dir, DIAGRAM_FILE)}' ORDER BY strategy, lr`);
  t.is(rows.length, 4);
  t.deepEqual(rows.map((r) => [r.strategy, r.lr, r.batch_size, r.trials]), [
    ['rba', 0.001, 64, 3], ['rba', 0.01, 64, 2], ['vanilla', 0.001, 64, 3], ['vanilla', 0.01, 64, 3],
  ]);
  const by = (f: string, x: number) => cells.find((c) => c.facet === f && c.x === x)!;
  t.deepEqual([by('vanilla', 0.001).share_equilibrium, by('vanilla', 0.001).share_diffusion], [2 / 3, 1 / 3]);
  t.is(by('vanilla', 0.001).median_t_equilibrium, 3500);
  t.is(by('vanilla', 0.001).median_final_rel_l2, 0.05);
  t.is(by('vanilla', 0.001).best_final_rel_l2, 0.03);
  t.deepEqual([by('vanilla', 0.01).share_diverged, by('vanilla', 0.01).share_fitting], [2 / 3, 1 / 3]);
  t.is(by('vanilla', 0.01).median_t_equilibrium, null);
  t.is(by('rba', 0.001).share_equilibrium, 1);
  t.is(by('rba', 0.001).median_t_equilibrium, 1100);
  // The seeds' spread: DE at 1000, 1200, 1100; rel. L2 0.004, 0.002, 0.003.
  t.deepEqual([by('rba', 0.001).min_t_equilibrium, by('rba', 0.001).max_t_equilibrium], [1000, 1200]);
  t.deepEqual([by('rba', 0.001).best_final_rel_l2, by('rba', 0.001).worst_final_rel_l2], [0.002, 0.004]);
  t.is(by('rba', 0.001).median_final_rel_l2, 0.003);
  // The failed trial is not in the cell.
  t.deepEqual([by('rba', 0.01).share_diffusion, by('rba', 0.01).share_equilibrium, by('rba', 0.01).median_t_equilibrium], [0.5, 0.5, 800]);
  const types = await duck(`SELECT column_name, column_type FROM (DESCRIBE SELECT * FROM '${join(dir, DIAGRAM_FILE)}')`);
  t.deepEqual(types.map((r) => `${r.column_name}:${r.column_type}`), [
    'strategy:VARCHAR', 'lr:DOUBLE', 'batch_size:INTEGER', 'trials:INTEGER', 'share_diverged:DOUBLE', 'share_fitting:DOUBLE', 'share_steady:DOUBLE',
    'share_diffusion:DOUBLE', 'share_equilibrium:DOUBLE', 'median_t_equilibrium:DOUBLE', 'min_t_equilibrium:DOUBLE', 'max_t_equilibrium:DOUBLE',
    'median_final_rel_l2:DOUBLE', 'best_final_rel_l2:DOUBLE', 'worst_final_rel_l2:DOUBLE',
  ]);
  const text = renderDiagram(cells, { x: 'lr', y: 'batch_size', facet: 'strategy' });
  t.regex(text, /strategy = rba[\s\S]*DE 3\/3[\s\S]*t_DE 1100 \(1000–1200\)[\s\S]*rel_l2 3\.0e-3/);
  t.regex(text, /strategy = vanilla[\s\S]*div 2\/3/);
  // Full batches are shown as `full`, not as N = 64; a one-line legend closes the diagram.
  t.regex(text, /│ full +│/);
  t.notRegex(text, /│ 64 +│/);
  t.regex(text, /\ncell: dominant final phase \(div = diverged, fit = fitting, std = steady, diff = diffusion, DE = diffusion equilibrium\)[^\n]*\n$/);
  t.deepEqual(cells.map((c) => c.y_full), cells.map(() => true));
  // A 50/50 cell (seed 0, lr 0.01: vanilla diverged, rba diffusion) shows diverged; without a facet
  // there is no facet column.
  const seeds = await buildDiagram(dir, { x: 'seed', y: 'lr', facet: null });
  const cols = await duck(`SELECT column_name FROM (DESCRIBE SELECT * FROM '${join(dir, DIAGRAM_FILE)}')`);
  t.deepEqual(cols.slice(0, 3).map((r) => r.column_name), ['seed', 'lr', 'trials']);
  const split = seeds.find((c) => c.x === 0 && c.y === 0.01)!;
  t.deepEqual([split.trials, split.share_diverged, split.share_diffusion], [2, 0.5, 0.5]);
  t.regex(renderDiagram([split], { x: 'seed', y: 'lr', facet: null }), /div 1\/2/);
});

test('a diagram axis that is not a trials column is named in the error', async (t) => {
  const dir = await tempDir('diagram-bad');
  await writeTrialsParquet(dir, records());
  await t.throwsAsync(buildDiagram(dir, { x: 'lr; DROP TABLE x', y: 'batch_size', facet: null }), { message: /^--x: got "lr; DROP TABLE x", expected a trials\.parquet column: trial_id/ });
});

test('axisLabels: the fewest significant digits (at least 3) that keep the values apart; full and integers as they are', (t) => {
  const logspace = [1e-4, 1.58489319246e-4, 2.51188643151e-4, 0.0158489319246, 0.1];
  t.deepEqual([...axisLabels(logspace, () => false).values()], ['1e-4', '1.58e-4', '2.51e-4', '0.0158', '0.1']);
  // 1.2341e-3 and 1.2342e-3 differ in the 5th digit.
  t.deepEqual([...axisLabels([1.2341e-3, 1.2342e-3], () => false).values()], ['1.2341e-3', '1.2342e-3']);
  t.deepEqual([...axisLabels([256, 1024], (v) => v === 1024).values()], ['256', 'full']);
});

test('renderDiagram: columns and rows ascend, also when refinement put values in some rows only', (t) => {
  const cell = (x: number, y: number, y_full = false): DiagramCell => ({
    facet: 'vanilla', x, y, trials: 1, share_diverged: 0, share_fitting: 0, share_steady: 1, share_diffusion: 0, share_equilibrium: 0,
    median_t_equilibrium: null, min_t_equilibrium: null, max_t_equilibrium: null, median_final_rel_l2: 0.1, best_final_rel_l2: 0.1, worst_final_rel_l2: 0.1,
    x_full: false, y_full, facet_full: false,
  });
  // As the cells come (by y, then x): batch 64 has the grid's lr only; full has two refinement values.
  const cells = [cell(1e-4, 64), cell(1e-2, 64), cell(0.1, 64), cell(1e-4, 1024, true), cell(2.37e-4, 1024, true), cell(1e-2, 1024, true), cell(0.0422, 1024, true), cell(0.1, 1024, true), cell(1e-3, 128)];
  const text = renderDiagram(cells, { x: 'lr', y: 'batch_size', facet: 'strategy' });
  const head = text.split('\n').find((l) => l.includes('batch_size \\ lr'))!;
  t.deepEqual(head.split('│').map((x) => x.trim()).filter(Boolean), ['batch_size \\ lr', '1e-4', '2.37e-4', '1e-3', '0.01', '0.0422', '0.1'], head);
  const rows = text.split('\n').map((l) => /^│ (\S+) +│/.exec(l)?.[1]).filter((x) => x && x !== 'batch_size');
  t.deepEqual(rows, ['64', '128', 'full'], text);
});
