/// <reference lib="dom" />
/**
 * The report's refined phase map: the nearest-sample rasteriser and boundary segments on hand-made
 * samples, and the `phase-map` figure of a DIR with refinement trials (sweep.json and
 * trials.parquet written directly), its SVG parsed and its page drawn in headless Chromium.
 */
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import test from 'ava';
import type { Phase } from '../analysis/diagram.js';
import { writeReport } from '../analysis/report/index.js';
import { boundaryEdges, gridCells, MAP_COLS, MAP_ROWS, mapTicks, MAX_SAMPLE_TICKS, rasterise, wantsPhaseMap, type MapSample } from '../analysis/report/phase-map.js';
import type { ReportData } from '../analysis/report/data.js';
import { CELL_TEXT_PX, PHASE_COLORS } from '../analysis/report/figures.js';
import { writeTrialsParquet } from '../orchestrator/parquet-store.js';
import { parseSpecText, resolveSweep, trialId } from '../orchestrator/spec.js';
import type { TrialRecord } from '../schemas/parquet.js';
import type { TrialConfig } from '../schemas/sweep.js';
import { launchChromium, openOffline } from './browser.js';
import { tempDir } from './helpers.js';

test('rasterise: each rectangle takes the phase of the nearest sample in log space', (t) => {
  // Domain 1..1000 on both axes (log10 0..3), 3 × 3 rectangles of one decade: centres at 10^0.5, 10^1.5, 10^2.5.
  const samples: MapSample[] = [
    { x: 10 ** 0.5, y: 10 ** 0.5, phase: 'steady' },
    { x: 10 ** 2.5, y: 10 ** 0.5, phase: 'diverged' },
    { x: 10 ** 1.5, y: 10 ** 2.5, phase: 'equilibrium' },
  ];
  const rects = rasterise(samples, { x: [0, 3], y: [0, 3] }, 3, 3);
  t.is(rects.length, 9);
  // By hand, rows from the lowest y: row 0 = samples 0, 0|1 tie (→ 0, the earlier), 1; row 1: centre (0.5, 1.5) is 1 from
  // sample 0 and √2 from sample 2 → 0; (1.5, 1.5): 1 from 2, √2 from 0 and 1 → 2; (2.5, 1.5): 1 from 1 → 1; row 2: all sample 2
  // ((0.5, 2.5): 1 from 2, 2 from 0).
  t.deepEqual(rects.map((r) => r.sample), [0, 0, 1, 0, 2, 1, 2, 2, 2]);
  t.deepEqual(rects.map((r) => r.phase), ['steady', 'steady', 'diverged', 'steady', 'equilibrium', 'diverged', 'equilibrium', 'equilibrium', 'equilibrium']);
  t.deepEqual([rects[0]!.x0, rects[0]!.x1, rects[0]!.y0, rects[0]!.y1], [1, 10, 1, 10]);
  t.true(Math.abs(rects[8]!.x1 - 1000) < 1e-9 && Math.abs(rects[8]!.y1 - 1000) < 1e-9);
  t.deepEqual(rasterise([]), []);
});

test('boundaryEdges: a segment at the log midpoint of neighbours whose phases differ, across to the neighbouring lines', (t) => {
  const s = (x: number, y: number, phase: Phase): MapSample => ({ x, y, phase });
  const edges = boundaryEdges([s(1e-3, 16, 'steady'), s(1e-2, 16, 'diverged'), s(1e-3, 64, 'steady'), s(1e-2, 64, 'steady')], { x: [-3.5, -1.5], y: [1, 2] });
  // Along x at y 16: midpoint 10^-2.5, from the bottom edge (10) to the midpoint of 16 and 64 (32); along y at lr 1e-2: at 32.
  t.is(edges.length, 2);
  t.true(Math.abs(edges[0]!.x0 - 10 ** -2.5) < 1e-12 && edges[0]!.x0 === edges[0]!.x1);
  t.true(Math.abs(edges[0]!.y0 - 10) < 1e-9 && Math.abs(edges[0]!.y1 - 32) < 1e-9);
  t.deepEqual([edges[0]!.from, edges[0]!.to], ['steady', 'diverged']);
  t.true(Math.abs(edges[1]!.y0 - 32) < 1e-9 && edges[1]!.y0 === edges[1]!.y1);
  t.deepEqual([edges[1]!.from, edges[1]!.to], ['diverged', 'steady']);
});

test('wantsPhaseMap: refinement trials or an irregular plan on numeric axes; not holes left by failed or unfinished trials', (t) => {
  const cells = [{ x: 1e-3, y: 16 }, { x: 1e-2, y: 64 }] as unknown as ReportData['cells'];
  const plan = (points: Array<[number, number]>, round: number | null = null) => points.map(([x, y]) => ({ at: { facet: 'vanilla', x, y }, refine_round: round }));
  const grid = plan([[1e-3, 16], [1e-2, 16], [1e-3, 64], [1e-2, 64]]);
  t.false(wantsPhaseMap({ cells, trials: [], planned: grid }));
  t.true(wantsPhaseMap({ cells, trials: [], planned: [...grid, ...plan([[3e-3, 16]], 1)] }));
  t.true(wantsPhaseMap({ cells, trials: [], planned: [...grid, ...plan([[3e-3, 16]])] }));
  t.false(wantsPhaseMap({ cells: [{ x: 'a', y: 16 }] as unknown as ReportData['cells'], trials: [], planned: [...grid, ...plan([[3e-3, 16]], 1)] }));
});

// 3 lr × 2 batch sizes × 2 seeds on the grid, then one refinement round at lr 3.162e-2 (both batch sizes, both seeds).
const sweep = resolveSweep(parseSpecText(`
name: refmap
problem: {name: poisson2d, n_collocation: 64}
diagnostics: {snr_batches: 4}
grid:
  train.lr: [0.001, 0.01, 0.1]
  train.batch_size: [16, full]
  seed: [0, 1]
`));
const phaseAt = (lr: number, full: boolean): Phase => (lr > 2e-2 ? 'diverged' : full && lr === 0.01 ? 'equilibrium' : 'steady');

function record(config: TrialConfig, id: string): TrialRecord {
  const phase = phaseAt(config.train.lr, config.train.batch_size === 'full');
  return {
    trial_id: id, sweep: 'refmap', config, status: 'done', attempts: 1,
    started_at: null, finished_at: null, wall_seconds: 1, final_loss: 1, final_rel_l2: 0.1,
    diverged: phase === 'diverged', host: 'h', device: 'cpu', backend: 'wasm', worker: 'w', slot: 'cpu0', visible_devices: null, resumed_from_attempt: null, resumed_from_step: null, fused: null, error: null,
    t_diffusion: null, t_equilibrium: phase === 'equilibrium' ? 500 : null, final_phase: phase,
  };
}

/** A results DIR of the sweep above, with the refinement round when `refined`. */
async function makeDir(refined: boolean, refineLrs = [3.162e-2]): Promise<string> {
  const dir = await tempDir('phase-map');
  const trials: Array<{ trial_id: string; config: TrialConfig; grid_values: Record<string, unknown>; refine_round?: number }> = sweep.trials.map((tr) => ({ trial_id: tr.trial_id, config: tr.config, grid_values: tr.grid_values }));
  if (refined)
    for (const tr of sweep.trials.filter((x) => x.config.train.lr === 0.01))
      for (const lr of refineLrs) {
        const config = structuredClone(tr.config);
        config.train.lr = lr;
        trials.push({ trial_id: trialId(config), config, grid_values: { 'train.lr': lr, 'train.batch_size': config.train.batch_size, seed: config.seed }, refine_round: 1 });
      }
  await writeFile(join(dir, 'sweep.json'), JSON.stringify({ name: 'refmap', trials }));
  await writeTrialsParquet(dir, trials.map((x) => record(x.config, x.trial_id)));
  return dir;
}

test('a DIR with refinement trials gets the phase-map figure: SVG and PNG, its rectangles coloured as the rasteriser says, drawn in Chromium with the boundary lines under it', async (t) => {
  const dir = await makeDir(true);
  const r = await writeReport(dir);
  const out = join(dir, 'report');
  t.true(existsSync(join(out, 'phase-map.svg')) && existsSync(join(out, 'phase-map.png')));
  t.true(r.pngSizes['phase-map']!.width > 400);
  // The expected raster: samples are the 8 (lr, batch) cells, full batch at N = 64.
  const cells: MapSample[] = [];
  for (const lr of [0.001, 0.01, 3.162e-2, 0.1]) for (const full of [false, true]) cells.push({ x: lr, y: full ? 64 : 16, phase: phaseAt(lr, full) });
  const want = rasterise(cells);
  const wantColours = new Map<string, number>();
  for (const x of want) wantColours.set(PHASE_COLORS[x.phase].toLowerCase(), (wantColours.get(PHASE_COLORS[x.phase].toLowerCase()) ?? 0) + 1);
  const svg = await readFile(join(out, 'phase-map.svg'), 'utf8');

  const browser = await launchChromium();
  try {
    // The SVG file parses, and its region rectangles match the raster (count and colours).
    const svgPage = await (await browser.newContext()).newPage();
    const parsed = await svgPage.evaluate((text) => {
      const doc = new DOMParser().parseFromString(text, 'image/svg+xml');
      const paths = [...doc.querySelectorAll('g.regions_marks > path')];
      const colours: Record<string, number> = {};
      for (const p of paths) { const c = (p.getAttribute('fill') ?? '').toLowerCase(); colours[c] = (colours[c] ?? 0) + 1; }
      return { error: doc.querySelector('parsererror') !== null, root: doc.documentElement.nodeName, rects: paths.length, colours, samples: doc.querySelectorAll('g.samples_marks > path').length, edges: doc.querySelectorAll('g.edges_marks > line').length };
    }, svg);
    t.false(parsed.error);
    t.is(parsed.root, 'svg');
    t.is(parsed.rects, MAP_COLS * MAP_ROWS);
    t.deepEqual(parsed.colours, Object.fromEntries(wantColours));
    t.is(parsed.samples, 8);
    // Boundaries: along x at batch 16 (steady → diverged) and at full (steady → equilibrium → diverged), along y at lr 1e-2 (steady → equilibrium).
    t.is(parsed.edges, 4);

    const { page, requests, errors } = await openOffline(browser, r.index);
    await page.waitForFunction(() => document.querySelectorAll('.fig').length > 0 && document.querySelectorAll('.fig svg').length === document.querySelectorAll('.fig').length, undefined, { timeout: 60_000 });
    t.deepEqual(requests, []);
    t.deepEqual(errors, []);
    t.is(await page.evaluate(() => document.querySelectorAll('#fig-phase-map g.regions_marks > path').length), MAP_COLS * MAP_ROWS);
    // A tick at each sampled lr (the refinement sample at 0.0316 among the grid's) and batch size (full at N = 64).
    const ticks = await page.evaluate(() => [...document.querySelectorAll('#fig-phase-map g.role-axis-label text')].map((x) => x.textContent));
    t.deepEqual([...ticks].sort(), ['0.001', '0.01', '0.0316', '0.1', '16', 'full 64'].sort(), ticks.join(' | '));
    // Figure order: the phase map right after the phase diagram.
    t.deepEqual((await page.evaluate(() => [...document.querySelectorAll('section .fig')].map((d) => d.id))).slice(0, 2), ['fig-phase-diagram', 'fig-phase-map']);
    const lines = await page.evaluate(() => [...document.querySelectorAll('#phase-map ul.notes li')].map((li) => li.textContent));
    t.deepEqual(lines, [
      'vanilla, batch 16: steady → diverged between lr 0.01 and 0.032',
      'vanilla, batch full: steady → equilibrium between lr 1e-3 and 0.01',
      'vanilla, batch full: equilibrium → diverged between lr 0.01 and 0.032',
      'vanilla, lr 0.01: steady → equilibrium between batch 16 and full',
    ]);
  } finally {
    await browser.close();
  }
});

test('a regular grid without refinement trials gets no phase map', async (t) => {
  const dir = await makeDir(false);
  const r = await writeReport(dir, { png: false });
  t.false(existsSync(join(dir, 'report', 'phase-map.svg')));
  t.false(r.files.some((f) => basename(f).startsWith('phase-map')));
  t.false((await readFile(r.index, 'utf8')).includes('id="phase-map"'));
});

test('gridCells: the cells of the starting grid span the log midpoints to the neighbouring grid values (the domain edge at the ends); refinement samples get none', (t) => {
  // Grid lr 1e-4, 1e-2 × batch 16, 256; a refinement sample at lr 1e-3. Domain: log10 x −5…−1, y 1…3.
  const samples: MapSample[] = [
    { x: 1e-4, y: 16, phase: 'steady' }, { x: 1e-2, y: 16, phase: 'diffusion' },
    { x: 1e-4, y: 256, phase: 'steady' }, { x: 1e-2, y: 256, phase: 'steady' },
    { x: 1e-3, y: 16, phase: 'diffusion', refined: true },
  ];
  const cells = gridCells(samples, { x: [-5, -1], y: [1, 3] });
  t.is(cells.length, 4);
  const close = (a: number, b: number) => Math.abs(a / b - 1) < 1e-9;
  // lr 1e-4 at batch 16: x from 10^-5 to the log midpoint 10^-3 of 1e-4 and 1e-2; y from 10^1 to √(16·256) = 64.
  const c0 = cells[0]!;
  t.true(close(c0.x0, 1e-5) && close(c0.x1, 1e-3) && close(c0.y0, 10) && close(c0.y1, 64), JSON.stringify(c0));
  t.is(c0.phase, 'steady');
  // lr 1e-2 at batch 256: x 1e-3 … 1e-1, y 64 … 1000.
  const c3 = cells[3]!;
  t.true(close(c3.x0, 1e-3) && close(c3.x1, 1e-1) && close(c3.y0, 64) && close(c3.y1, 1000), JSON.stringify(c3));
  t.deepEqual(cells.map((c) => c.phase), ['steady', 'diffusion', 'steady', 'steady']);
});

test('mapTicks: a tick at every sampled value while there are few (refinement rows between grid rows), else the grid\'s values', (t) => {
  // A 4 × 3 start (batch 32, 256, full = 1024) refined at batch 64, 128 and 512.
  t.deepEqual(mapTicks([32, 256, 1024, 32], [1024, 32, 64, 256, 128, 512, 64]), [32, 64, 128, 256, 512, 1024]);
  const many = Array.from({ length: MAX_SAMPLE_TICKS + 1 }, (_, i) => 10 ** (-4 + i * 0.3));
  t.deepEqual(mapTicks([1e-2, 1e-4], many), [1e-4, 1e-2]);
  t.is(mapTicks([], many), null);
  t.deepEqual(mapTicks([], [3, 1]), [1, 3]);
});

test('the phase diagram of a refined sweep writes a cell\'s text only where it fits, centred in the cell (Chromium)', async (t) => {
  // Refinement samples at lr 0.0103 and 0.0106 beside the grid's 0.01: the cell of 0.0103, between two
  // samples a factor 1.03 away, is narrow; the others are wide.
  const dir = await makeDir(true, [1.03e-2, 1.06e-2]);
  const r = await writeReport(dir);
  const browser = await launchChromium();
  try {
    const { page, errors } = await openOffline(browser, r.index);
    await page.waitForFunction(() => document.querySelectorAll('#fig-phase-diagram svg').length === 1, undefined, { timeout: 60_000 });
    t.deepEqual(errors, []);
    const diag = await page.evaluate(() => {
      // On-screen boxes (the figure is drawn at its own size: 1 px = 1 px of the spec).
      const box = (e: Element) => e.getBoundingClientRect();
      const rects = [...document.querySelectorAll('#fig-phase-diagram g.cells_marks > path')].map(box);
      const texts = [...document.querySelectorAll('#fig-phase-diagram g[class*="child_layer_1_marks"] > text')].map(box);
      return { widths: rects.map((b) => b.width), centres: rects.map((b) => b.x + b.width / 2), texts: texts.map((b) => b.x + b.width / 2) };
    });
    const shown = diag.widths.map((w) => w.toFixed(0)).join(', ');
    const wide = diag.widths.filter((w) => w >= CELL_TEXT_PX).length;
    t.true(wide >= 1 && wide < diag.widths.length, `cell widths ${shown}`);
    t.is(diag.texts.length, wide, `cell widths ${shown}`);
    t.log(`cell widths ${shown} px; ${diag.texts.length} with text`);
    for (const cx of diag.texts) t.true(diag.centres.some((x) => Math.abs(x - cx) < 1.5), `text centred at ${cx.toFixed(1)}, cells centred at ${diag.centres.map((x) => x.toFixed(1)).join(', ')}`);
  } finally {
    await browser.close();
  }
});
