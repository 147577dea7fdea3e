/**
 * The quick start's science, on a real run of its shortened twin: sweeps/quickstart.yaml with its
 * problem, network, cadence and strategies unchanged, cut to its full-batch cell at lr 2e-3 and
 * 2,000 steps (README: there vanilla reaches DE at 1,440 steps and RBA at 580, and RBA ends far more
 * accurate).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { parse, stringify } from 'yaml';
import { duck, repoRoot, runCli, tempDir } from './helpers.js';

test('quick-start twin: both trials learn (rel. L2 < 0.3, far below step 0); both go fitting → diffusion → DE, RBA earlier; RBA ends lower', async (t) => {
  const spec = parse(await readFile(join(repoRoot, 'sweeps/quickstart.yaml'), 'utf8')) as Record<string, any>;
  delete spec.$schema;
  spec.name = 'quickstart-twin';
  spec.train.steps = 2000;
  spec.grid['train.lr'] = [0.002];
  spec.grid['train.batch_size'] = ['full'];
  t.deepEqual(spec.grid.strategy.map((s: { name: string }) => s.name), ['vanilla', 'rba']);
  const work = await tempDir('quickstart-twin');
  const file = join(work, 'twin.yaml');
  await writeFile(file, stringify(spec));
  const out = join(work, 'out');
  // One slot (the two trials fuse into it): the suite runs two test files at once on two cores.
  const r = await runCli(['run', file, '--out', out, '--slots', '1', '--backend', 'wasm'], { timeoutMs: 240_000 });
  t.is(r.code, 0, r.stderr);

  const trials = await duck(`SELECT strategy, final_phase, t_diffusion, t_equilibrium, final_rel_l2 FROM '${out}/trials.parquet' ORDER BY strategy`);
  const start = await duck(`SELECT t.strategy, m.rel_l2 FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) m JOIN '${out}/trials.parquet' t USING (trial_id) WHERE m.step = 0 ORDER BY t.strategy`);
  const [rba, vanilla] = trials as Array<{ strategy: string; final_phase: string; t_diffusion: number | null; t_equilibrium: number | null; final_rel_l2: number }>;
  t.deepEqual([rba!.strategy, vanilla!.strategy], ['rba', 'vanilla']);
  for (const [i, tr] of [rba!, vanilla!].entries()) {
    const r0 = Number(start[i]!.rel_l2);
    t.true(r0 > 0.9, `${tr.strategy} starts near rel. L2 1 (${r0})`);
    t.true(tr.final_rel_l2 < 0.3 && tr.final_rel_l2 < r0 / 3, `${tr.strategy} final rel. L2 ${tr.final_rel_l2}`);
  }
  // Vanilla: fitting → diffusion within the first hundred steps → DE (the full quick start: 1,440).
  t.is(vanilla!.final_phase, 'equilibrium');
  t.true(vanilla!.t_diffusion !== null && vanilla!.t_diffusion <= 100, `t_diffusion ${vanilla!.t_diffusion}`);
  t.true(vanilla!.t_equilibrium !== null && vanilla!.t_equilibrium >= 1000 && vanilla!.t_equilibrium <= 1800, `t_equilibrium ${vanilla!.t_equilibrium}`);
  // RBA: its shorter, shallower diffusion (from ~140) ends in DE well before vanilla's (the full quick
  // start: 580), and it ends more than 5× more accurate.
  t.is(rba!.final_phase, 'equilibrium');
  t.true(rba!.t_diffusion !== null && rba!.t_diffusion > vanilla!.t_diffusion! && rba!.t_diffusion <= 300, `rba t_diffusion ${rba!.t_diffusion}`);
  t.true(rba!.t_equilibrium !== null && rba!.t_equilibrium >= 400 && rba!.t_equilibrium <= 800, `rba t_equilibrium ${rba!.t_equilibrium}`);
  t.true(rba!.t_equilibrium! * 2 < vanilla!.t_equilibrium!, `RBA reaches DE earlier: ${rba!.t_equilibrium} vs ${vanilla!.t_equilibrium}`);
  t.true(rba!.final_rel_l2 * 5 < vanilla!.final_rel_l2, `rba ${rba!.final_rel_l2} vs vanilla ${vanilla!.final_rel_l2}`);
});
