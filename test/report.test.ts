/// <reference lib="dom" />
/// <reference lib="dom.iterable" />
/**
 * `phasemap report`: real sweeps run by the CLI, their reports opened in headless Chromium with the
 * network off (no request, no console error, one diagram cell per (strategy, lr, batch size), one SNR
 * line per trial, the DE rules at the steps trials.parquet records), every SVG parsed and every PNG
 * decoded by the browser; the live page of a running sweep; `report --watch`; and the report of a
 * sweep with a diverged trial, a trial without diagnostics, a failed trial and a retried one.
 */
import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import type { Browser, Page } from 'playwright-core';
import { thinIndices } from '../analysis/report/data.js';
import { statusLine } from '../analysis/report/page.js';
import { loadSweep } from '../orchestrator/spec.js';
import { launchChromium, openOffline } from './browser.js';
import { duck, tempDir, trackedCli, until } from './helpers.js';

const { cli, killStarted } = trackedCli();
test.afterEach.always(killStarted);

let browser: Browser | null = null;
test.before(async () => {
  browser = await launchChromium();
});
test.after.always(async () => {
  await browser?.close();
});

// 2 strategies × 2 lr × 2 batch sizes × 2 seeds = 16 trials, ~3 s each here, one after the other. The loose DE thresholds make
// some full-batch trials record diffusion equilibrium at this small scale (one RBA and one vanilla
// trial at lr 0.01: their smoothed SNR falls to ~0.1 and climbs back toward 1), so that the DE
// rules can be checked.
const LIVE_SPEC = `
name: reportlive
problem: {name: poisson2d, n_collocation: 256, n_boundary: 16, eval_grid: 21}
model: {width: 16, depth: 2}
train: {steps: 1500, log_every: 10, eval_every: 50}
diagnostics: {every: 10, snr_batches: 4}
analysis: {rise_decades: 0.5, rise_window: 30, sustain_points: 5, level_margin: 0.1}
grid:
  train.lr: [0.003, 0.01]
  train.batch_size: [full, 64]
  strategy: [{name: vanilla}, {name: rba}]
  seed: [0, 1]
`;

const FIGURES = ['phase-diagram', 'snr', 'rel-l2', 'loss', 'grad-order', 'snr-adam', 'res-homogeneity', 'snr-layers', 'saturation', 'entropy', 'lambda'];

/** The status line of a report page on disk, or null before the first report. */
async function statusOf(file: string): Promise<{ text: string; reloads: boolean } | null> {
  if (!existsSync(file)) return null;
  const html = await readFile(file, 'utf8');
  const m = /<p id="status"[^>]*>([^<]*)<\/p>/.exec(html);
  return m ? { text: m[1]!, reloads: html.includes('http-equiv="refresh"') } : null;
}

/** Waits until every figure of the page has drawn its SVG. */
async function rendered(page: Page): Promise<number> {
  await page.waitForFunction(() => document.querySelectorAll('.fig').length > 0 && document.querySelectorAll('.fig svg').length === document.querySelectorAll('.fig').length, undefined, { timeout: 60_000 });
  return page.evaluate(() => document.querySelectorAll('.fig svg').length);
}

/** In the page: counts of marks of the named Vega mark group inside a figure. */
function marks(page: Page, figure: string, group: string, el = 'path'): Promise<number> {
  return page.evaluate(([f, g, e]) => document.querySelectorAll(`#fig-${f} g.${g}_marks > ${e}`).length, [figure, group, el] as const);
}

/** In the page: aria-labels of the marks of a group (vega writes the encoded fields there). */
function labels(page: Page, figure: string, group: string, el: string): Promise<string[]> {
  return page.evaluate(([f, g, e]) => [...document.querySelectorAll(`#fig-${f} g.${g}_marks > ${e}`)].map((x) => x.getAttribute('aria-label') ?? ''), [figure, group, el] as const);
}

test.serial('a running sweep keeps its report live (the page reloads, its counts grow), report --watch follows it, and the final report is right in Chromium', async (t) => {
  const work = await tempDir('report-live');
  const spec = join(work, 'live.yaml');
  const out = join(work, 'out');
  await writeFile(spec, LIVE_SPEC);
  // The renderer at the run's own priority: at its default niceness it gets a few % of a core while the
  // other test files keep this machine busy, and the sweep could end before its second live report.
  const env = { PHASEMAP_REPORT_INTERVAL: '3', PHASEMAP_REPORT_NICE: '0' };
  // One slot, no fusion: the trials finish one after the other over ~50 s.
  const run = cli(['run', spec, '--out', out, '--slots', '1', '--fuse', '1', '--backend', 'wasm'], { env, timeoutMs: 300_000 });
  const index = join(out, 'report', 'index.html');
  // The watcher starts before DIR exists and waits for it.
  const watch = cli(['report', out, '--watch', '--out', join(out, 'watched')], { env, timeoutMs: 300_000 });

  // The first live page, opened at once: it says running and reloads itself (every 3 s here).
  const seen: string[] = [];
  const note = async () => {
    const s = await statusOf(index);
    if (s?.reloads && s.text.startsWith('running:') && !seen.includes(s.text)) seen.push(s.text);
  };
  await until(async () => (await note(), seen.length > 0), 120_000, 'the first live report', 50);
  t.regex(seen[0]!, /^running: \d+\/16 done, updated \d\d:\d\d:\d\d$/, seen.join(' | '));
  const live = await openOffline(browser!, index);
  const loads: string[] = [await live.page.locator('#status').innerText()];
  live.page.on('load', () => void live.page.locator('#status').innerText().then((s) => loads.push(s), () => undefined));
  // While the sweep runs, the report's count of done trials grows.
  const done = (s: string) => Number(/(\d+)\/16 done/.exec(s)?.[1] ?? -1);
  await until(async () => (await note(), seen.some((x) => done(x) > done(seen[0]!)) || run.child.exitCode !== null), 240_000, 'a live report with more trials done', 100);
  await until(() => loads.length >= 2, 60_000, 'the page to reload itself', 200);
  t.true(done(loads[1]!) >= done(loads[0]!), loads.join(' | '));
  t.deepEqual(live.requests, []);
  t.deepEqual(live.errors, []);
  await live.page.context().close();

  const r = await run;
  t.is(r.code, 0, r.stderr.split('\n').filter((l) => !/progress:/.test(l)).join('\n'));
  t.regex(r.stderr, /report: .*report\/index\.html/);
  // The diagram in the terminal: `full` as `full`, and its legend.
  t.regex(r.stdout, /│ full +│/);
  t.regex(r.stdout, /DE = diffusion equilibrium/);
  t.true(seen.length >= 2 && seen.some((x) => done(x) > done(seen[0]!)), `live reports while running: ${seen.join(' | ')}`);
  const final = await statusOf(index);
  t.regex(final!.text, /^finished: 16\/16 done, updated/);
  t.false(final!.reloads, 'the final page does not reload');
  const w = await watch;
  t.is(w.code, 0, w.stderr);
  const watched = await statusOf(join(out, 'watched', 'index.html'));
  t.regex(watched!.text, /^finished: 16\/16 done/);
  t.false(watched!.reloads);

  // The final report, offline in Chromium.
  const trials = await duck(`SELECT trial_id, strategy, lr, batch_size, t_diffusion, t_equilibrium, final_phase FROM '${out}/trials.parquet' WHERE status = 'done'`);
  t.is(trials.length, 16);
  const withDE = trials.filter((x) => x.t_equilibrium !== null);
  t.true(withDE.length >= 1, 'at least one trial records DE (else the rule check below checks nothing)');
  const { page, requests, errors } = await openOffline(browser!, index);
  t.is(await rendered(page), FIGURES.length);
  t.deepEqual(requests, [], 'no network request');
  t.deepEqual(errors, [], 'no console error');
  // One cell per (strategy, lr, batch size): 2 facets × 2 × 2; its seeds share it.
  const cells = new Set(trials.map((x) => `${x.strategy}|${x.lr}|${x.batch_size}`)).size;
  t.is(cells, 8);
  t.is(await marks(page, 'phase-diagram', 'cells'), cells);
  t.is(await page.evaluate(() => [...document.querySelectorAll('#fig-phase-diagram text')].filter((x) => x.textContent === 'full').length), 1, 'the shared y axis says full');
  // One smoothed SNR line per trial, the DE rules exactly at the recorded steps.
  t.is(await marks(page, 'snr', 'trial_lines'), trials.length);
  const rules = (await labels(page, 'snr', 'rule_equilibrium', 'line')).map((l) => `${/trial: (t[0-9a-f]+)/.exec(l)?.[1]}@${/step: ([\d,]+)/.exec(l)?.[1]?.replace(/,/g, '')}`).sort();
  t.deepEqual(rules, withDE.map((x) => `${x.trial_id}@${x.t_equilibrium}`).sort());
  const dRules = await labels(page, 'snr', 'rule_diffusion', 'line');
  t.is(dRules.length, trials.filter((x) => x.t_diffusion !== null).length);
  // A non-blank screenshot: many colours, not mostly white.
  const shot = (await page.screenshot({ fullPage: false })).toString('base64');
  const stats = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = img.width;
    c.height = img.height;
    const g = c.getContext('2d')!;
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const colours = new Set<number>();
    let ink = 0;
    for (let i = 0; i < d.length; i += 4) {
      colours.add((d[i]! << 16) | (d[i + 1]! << 8) | d[i + 2]!);
      if (d[i]! < 200 || d[i + 1]! < 200 || d[i + 2]! < 200) ink++;
    }
    return { colours: colours.size, ink: ink / (d.length / 4) };
  }, shot);
  t.true(stats.colours > 50 && stats.ink > 0.03, `screenshot: ${JSON.stringify(stats)}`);
  // The trials table: a row per trial, sortable; a trial's link shows its own curves.
  t.is(await page.locator('#trials-table tbody tr').count(), 16);
  await page.locator('#trials-table th', { hasText: 'final rel. L2' }).click();
  const col = await page.evaluate(() => [...document.querySelectorAll('#trials-table th')].findIndex((th) => th.textContent === 'final rel. L2') + 1);
  const rels = await page.locator(`#trials-table tbody tr td:nth-child(${col})`).evaluateAll((tds) => tds.map((x) => Number((x as HTMLElement).dataset.v)));
  t.is(rels.length, 16);
  t.deepEqual(rels, [...rels].sort((a, b) => a - b), 'sorted by final rel. L2');
  const id = withDE[0]!.trial_id as string;
  await page.locator(`a[href="#trial=${id}"]`).click();
  await page.waitForFunction(() => document.querySelectorAll('#trial-view svg').length >= 3, undefined, { timeout: 30_000 });
  t.regex(await page.locator('#trial-title').innerText(), new RegExp(`Trial ${id}`));
  t.is(await page.evaluate(() => document.querySelectorAll('#trial-view .trial-fig:first-child g.trial_lines_marks > path').length), 1, 'the trial view draws that one trial');

  // Every SVG parses and every PNG decodes, at twice the SVG's size.
  const dir = join(out, 'report');
  for (const f of FIGURES) {
    const svg = await readFile(join(dir, `${f}.svg`), 'utf8');
    const png = (await readFile(join(dir, `${f}.png`))).toString('base64');
    const got = await page.evaluate(async ([s, p]) => {
      const doc = new DOMParser().parseFromString(s, 'image/svg+xml');
      const root = doc.documentElement;
      const img = new Image();
      img.src = `data:image/png;base64,${p}`;
      await img.decode();
      return { error: doc.querySelector('parsererror') !== null, tag: root.tagName, w: Number(root.getAttribute('width')), h: Number(root.getAttribute('height')), pw: img.naturalWidth, ph: img.naturalHeight };
    }, [svg, png] as const);
    t.false(got.error, `${f}.svg parses`);
    t.is(got.tag, 'svg');
    t.is(got.pw, Math.round(got.w * 2), `${f}.png width`);
    t.is(got.ph, Math.round(got.h * 2), `${f}.png height`);
  }
});

test.serial('the report of a sweep with a diverged, an undiagnosed, a failed and a retried trial renders and shows completed attempts only', async (t) => {
  const work = await tempDir('report-fail');
  const spec = join(work, 'f.yaml');
  const out = join(work, 'out');
  await writeFile(spec, `
name: reportfail
problem: {name: poisson2d, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 300, log_every: 10, eval_every: 50}
diagnostics: {every: 20, snr_batches: 4}
analysis: {divergence_factor: 3}
max_attempts: 2
grid:
  train.lr: [0.003, 10]
  diagnostics.every: [0, 20]
`);
  const [plain, retried, failed, diverged] = (await loadSweep(spec)).trials.map((x) => x.trial_id);
  // Fault injection (worker/slot-task.ts): `failed` throws on every attempt, `retried` on its first.
  const r = await cli(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm'], { env: { PHASEMAP_FAULT_THROW: `${failed}:99,${retried}:1` }, timeoutMs: 180_000 });
  t.is(r.code, 1, r.stderr);
  const rows = new Map((await duck(`SELECT trial_id, status, attempts, final_phase, diverged FROM '${out}/trials.parquet'`)).map((x) => [x.trial_id as string, x]));
  t.deepEqual([rows.get(failed!)!.status, rows.get(retried!)!.attempts, rows.get(diverged!)!.final_phase, rows.get(plain!)!.final_phase], ['failed', 2, 'diverged', 'fitting']);
  // What an interrupted first attempt leaves: rows under attempt=1 (here the diverged trial's, so that
  // their values differ from the completed attempt's). The report must not show them.
  const from = join(out, 'metrics', `trial_id=${diverged}`, 'attempt=1');
  const leftover = join(out, 'metrics', `trial_id=${retried}`, 'attempt=1');
  await mkdir(leftover, { recursive: true });
  for (const f of await readdir(from)) await copyFile(join(from, f), join(leftover, f));

  const rep = await cli(['report', out]);
  t.is(rep.code, 0, rep.stderr);
  t.regex(rep.stderr, /report: .*index\.html/);
  const { page, requests, errors } = await openOffline(browser!, join(out, 'report', 'index.html'));
  t.is(await rendered(page), FIGURES.length - 1, 'every figure but λ (no rba or sa trial)');
  t.deepEqual(requests, []);
  t.deepEqual(errors, []);
  t.regex(await page.locator('#status').innerText(), /^finished: 3\/4 done, 1 failed, updated/);
  // Cells: lr 0.003 (two trials) and lr 10 (one; the failed one is not in the diagram).
  t.is(await marks(page, 'phase-diagram', 'cells'), 2);
  t.regex((await page.locator('#fig-phase-diagram').innerText()).replace(/\s+/g, ' '), /div 1\/1/);
  // SNR lines: the two trials with diagnostics (the undiagnosed one has none).
  t.is(await marks(page, 'snr', 'trial_lines'), 2);
  const failedRow = page.locator(`#row-${failed}`);
  t.regex(await failedRow.innerText(), /failed[\s\S]*injected fault/);
  // The retried trial's curves are its attempt 2, value for value.
  const want = await duck(`SELECT step, snr FROM read_parquet('${out}/metrics/**/*.parquet', hive_partitioning = true) WHERE trial_id = '${retried}' AND attempt = 2 AND snr IS NOT NULL ORDER BY step`);
  const got = await page.evaluate((id) => {
    const p = JSON.parse(document.getElementById('payload')!.textContent!) as { trials: Array<{ trial_id: string }>; tables: { snr: { t: number[]; step: number[]; cols: { raw: number[] } } } };
    const ti = p.trials.findIndex((x) => x.trial_id === id);
    const s = p.tables.snr;
    return s.t.map((x, i) => (x === ti ? [s.step[i], s.cols.raw[i]] : null)).filter(Boolean) as number[][];
  }, retried!);
  t.deepEqual(got, want.map((w) => [Number(w.step), Number(Math.log10(Number(w.snr)).toPrecision(4))]));
});

test.serial('a bad PHASEMAP_REPORT_NICE or PHASEMAP_REPORT_INTERVAL is a named error before DIR is made', async (t) => {
  const work = await tempDir('report-env');
  const spec = join(work, 'live.yaml');
  await writeFile(spec, LIVE_SPEC);
  for (const [name, value, expected] of [
    ['PHASEMAP_REPORT_NICE', '-1', 'an integer niceness between 0 and 19'],
    ['PHASEMAP_REPORT_NICE', '2.5', 'an integer niceness between 0 and 19'],
    ['PHASEMAP_REPORT_INTERVAL', 'soon', 'seconds between 1 and 3600'],
  ] as const) {
    const out = join(work, `out-${name}-${value}`);
    const r = await cli(['run', spec, '--out', out, '--slots', '1', '--backend', 'wasm'], { env: { [name]: value } });
    t.not(r.code, 0, r.stderr);
    t.true(r.stderr.includes(`${name}: got "${value}", expected ${expected}`), r.stderr);
    t.false(existsSync(out), `${out} was made`);
  }
});

test('display thinning keeps first, last, the transition steps and each log bucket\'s extremes', (t) => {
  // 1,000 points, budget 20: 8 buckets in log10(step + 1); the must-keep step 500 stays.
  const step = Array.from({ length: 1000 }, (_, i) => i);
  const v = step.map((s) => (s === 700 ? 100 : s === 701 ? -100 : Math.sin(s)));
  const keep = thinIndices(step, v, 20, new Set([500]));
  t.true(keep.length <= 20 + 3, `kept ${keep.length}`);
  for (const i of [0, 999, 500, 700, 701]) t.true(keep.includes(i), `keeps index ${i}`);
  t.deepEqual(keep, [...keep].sort((a, b) => a - b));
  // At or under the budget nothing is dropped.
  t.deepEqual(thinIndices([0, 10, 20], [1, 2, 3], 3, new Set()), [0, 1, 2]);
});

test('the status line: running, finished, stopped', (t) => {
  const now = new Date(2026, 11, 6, 12, 4, 31);
  const c = { total: 72, done: 37, failed: 0, cancelled: 0, running: 4, queued: 31 };
  t.is(statusLine(c, true, now), 'running: 37/72 done, updated 12:04:31');
  t.is(statusLine({ ...c, done: 70, failed: 2, running: 0, queued: 0 }, false, now), 'finished: 70/72 done, 2 failed, updated 12:04:31');
  t.is(statusLine(c, false, now), 'stopped: 37/72 done, 35 not finished, updated 12:04:31');
});
