/**
 * The report page: one self-contained HTML file. vega, vega-lite and vega-embed are inlined from
 * their npm packages, the data ride along as one JSON payload, and a Content-Security-Policy with
 * `default-src 'none'` makes the browser refuse any request the page might make: it works offline
 * and from file://. While the sweep runs, the page reloads itself (every 15 s by default).
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { cellRows, datasetRows, PHASE_COLORS, VEGA_CONFIG, type Payload } from './figures.js';
import type { ReportData, ReportTrial } from './data.js';

const require = createRequire(import.meta.url);
/** The folder of an installed package (its `exports` may hide build files and package.json from require.resolve). */
function packageDir(name: string): string {
  let d = dirname(require.resolve(name));
  while (!existsSync(join(d, 'package.json')) || JSON.parse(readFileSync(join(d, 'package.json'), 'utf8')).name !== name) {
    const up = dirname(d);
    if (up === d) throw new Error(`${name}: package folder not found`);
    d = up;
  }
  return d;
}
let libs: string | null = null;
/** The three browser bundles, read once per process. `</script` cannot occur in them unescaped. */
function inlineLibs(): string {
  if (libs === null)
    libs = [['vega', 'build/vega.min.js'], ['vega-lite', 'build/vega-lite.min.js'], ['vega-embed', 'build/vega-embed.min.js']]
      .map(([p, f]) => `<script>${readFileSync(join(packageDir(p!), f!), 'utf8').replace(/<\/script/gi, '<\\/script')}</script>`)
      .join('\n');
  return libs;
}

const esc = (s: unknown) => String(s ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
const num = (v: number | null, digits = 3) => (v === null ? '' : Number.isInteger(v) ? String(v) : v.toPrecision(digits));

/** The status line: `running: 37/72 done, updated 12:04:31` while live, else `finished: …` or `stopped: …`. */
export function statusLine(c: ReportData['counts'], live: boolean, now: Date): string {
  const time = now.toTimeString().slice(0, 8);
  const extra = [c.failed ? `${c.failed} failed` : '', c.cancelled ? `${c.cancelled} cancelled` : ''].filter(Boolean).join(', ');
  const state = live ? 'running' : c.done + c.failed + c.cancelled === c.total ? 'finished' : 'stopped';
  return `${state}: ${c.done}/${c.total} done${extra ? `, ${extra}` : ''}${state === 'stopped' ? `, ${c.total - c.done - c.failed - c.cancelled} not finished` : ''}, updated ${time}`;
}

function trialsTable(data: ReportData): string {
  const gridKeys = [...new Set(data.trials.flatMap((t) => Object.keys(t.grid)))];
  const gridValue = (v: unknown) => (v !== null && typeof v === 'object' ? ((v as { name?: string }).name ?? JSON.stringify(v)) : String(v));
  const cols: Array<[string, (t: ReportTrial) => string | number | null]> = [
    ['trial', (t) => t.trial_id],
    ...gridKeys.map((k) => [k, (t: ReportTrial) => (k in t.grid ? gridValue(t.grid[k]) : '')] as [string, (t: ReportTrial) => string]),
    ['status', (t) => t.status],
    ['final phase', (t) => t.final_phase ?? ''],
    ['t_diffusion', (t) => t.t_diffusion],
    ['t_equilibrium', (t) => t.t_equilibrium],
    ['final loss', (t) => t.final_loss],
    ['final rel. L2', (t) => t.final_rel_l2],
    ['attempts', (t) => t.attempts],
    ['wall s', (t) => t.wall_seconds],
    ['host', (t) => t.host],
    ['device', (t) => t.device],
    ['backend', (t) => t.backend],
    ['fused', (t) => t.fused],
    ['error', (t) => t.error],
  ];
  const head = cols.map(([name], i) => `<th data-col="${i}" title="click to sort">${esc(name)}</th>`).join('');
  const rows = data.trials
    .map((t) => {
      const cells = cols.map(([name, get], i) => {
        const v = get(t);
        if (i === 0) return `<td data-v="${esc(v)}"><a href="#trial=${esc(v)}">${esc(v)}</a></td>`;
        const shown = typeof v === 'number' ? num(v) : esc(v);
        const cls = name === 'final phase' && v ? ` class="ph ph-${esc(v)}"` : '';
        return `<td${cls} data-v="${esc(v)}">${shown}</td>`;
      });
      return `<tr id="row-${esc(t.trial_id)}">${cells.join('')}</tr>`;
    })
    .join('\n');
  return `<table id="trials-table"><thead><tr>${head}</tr></thead><tbody>\n${rows}\n</tbody></table>`;
}

/** Lines listed under a figure (`<ul class="notes">`); '' when there are none. */
function notes(list: string[] | undefined): string {
  if (list === undefined) return '';
  if (list.length === 0) return '<p class="notes">no phase boundary between neighbouring samples</p>';
  return `<p class="notes-head">phase boundaries (neighbouring cells whose dominant phases differ):</p><ul class="notes">${list.map((l) => `<li>${esc(l)}</li>`).join('')}</ul>`;
}

/** The payload as a `<script type="application/json">` body (`<` escaped so that no `</script>` can end it early). */
const jsonScript = (v: unknown) => JSON.stringify(v).replace(/</g, '\\u003c');

export interface PageInput {
  data: ReportData;
  payload: Payload;
  /** Trial-view spec of each panel figure, by figure name. */
  trialSpecs: Record<string, Record<string, unknown>>;
  /** Seconds between the page's reloads while the sweep runs; null = finished (no reload). */
  live: number | null;
  now: Date;
}

/** The page's HTML (module header). */
export function renderPage(i: PageInput): string {
  const { data, payload } = i;
  const title = `${data.sweep} — phasemap report`;
  const status = statusLine(data.counts, i.live !== null, i.now);
  const legend = Object.keys(PHASE_COLORS)
    .map((k) => `<span class="sw ph-${k}"></span>${esc(k === 'equilibrium' ? 'diffusion equilibrium (DE)' : k)}`)
    .join(' ');
  const phaseCss = Object.entries(PHASE_COLORS).map(([k, c]) => `.ph-${k}{background:${c}}`).join('');
  const sections = payload.figures
    .map((f) => `<section id="${f.name}"><div class="fig" id="fig-${f.name}"></div>${notes(f.notes)}<p class="files">files: <a href="${f.name}.svg">${f.name}.svg</a> · <a href="${f.name}.png">${f.name}.png</a></p></section>`)
    .join('\n');
  const nav = payload.figures.map((f) => `<a href="#${f.name}">${esc(f.name)}</a>`).join(' · ');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:">
${i.live !== null ? `<meta http-equiv="refresh" content="${i.live}">` : ''}
<title>${esc(title)}</title>
<style>
body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:1.2em 2em;color:#222}
h1{font-size:1.5em;margin:.2em 0} h2{font-size:1.15em;margin:1.2em 0 .4em}
#status{font-weight:bold} #status.running{color:#0072B2} #status.stopped{color:#D55E00}
.sw{display:inline-block;width:.9em;height:.9em;margin:0 .25em 0 .8em;vertical-align:-.1em;border:1px solid #888}
${phaseCss}
td.ph{color:#000}
section{margin:1.5em 0} .files{font-size:.8em;color:#666} nav{font-size:.9em;margin:.6em 0}
table{border-collapse:collapse;font-size:.8em} th,td{border:1px solid #ddd;padding:2px 6px;text-align:left;white-space:nowrap}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0} tr:target,tr.sel{outline:2px solid #0072B2}
ul.notes,p.notes,.notes-head{font-size:.85em;margin:.3em 0} #trial-view:empty{display:none} .note{color:#666;font-size:.9em}
</style>
${inlineLibs()}
</head><body>
<header>
<h1>${esc(data.sweep)}</h1>
${data.description ? `<p>${esc(data.description)}</p>` : ''}
<p>${esc(data.problems.join(', '))} · ${data.counts.total} trial(s) · diagram: ${esc(data.axes.x)} × ${esc(data.axes.y)}${data.axes.facet ? `, one panel per ${esc(data.axes.facet)}` : ''}</p>
<p id="status" class="${status.split(':')[0]}">${esc(status)}</p>
<p class="legend">final phase:${legend}</p>
<p class="note">Curves show each done trial's completed attempt, thinned for display to about 40,000 points per figure (here at most ${data.points.snr} SNR points per trial; the Parquet data are not thinned). Hover for values; click a legend entry to highlight a phase; click a trial in the table for its curves.</p>
<nav>${nav} · <a href="#trials">trials</a></nav>
</header>
${sections}
<section id="trial"><h2 id="trial-title"></h2><div id="trial-view"></div></section>
<section id="trials"><h2>Trials</h2>
${trialsTable(data)}
</section>
<script type="application/json" id="payload">${jsonScript(payload)}</script>
<script type="application/json" id="trial-specs">${jsonScript(i.trialSpecs)}</script>
<script>
"use strict";
const datasetRows = ${datasetRows.toString()};
const cellRows = ${cellRows.toString()};
const CONFIG = ${JSON.stringify(VEGA_CONFIG)};
const P = JSON.parse(document.getElementById('payload').textContent);
const TRIAL_SPECS = JSON.parse(document.getElementById('trial-specs').textContent);
const cache = {};
function rows(def) { return cache[def.name] || (cache[def.name] = datasetRows(P, def)); }
function datasets(f) { const d = {}; for (const def of f.datasets) d[def.name] = rows(def); if (f.name === 'phase-diagram') d.cells = cellRows(P); return d; }
const opts = { renderer: 'svg', actions: false, config: CONFIG };
for (const f of P.figures) vegaEmbed('#fig-' + f.name, Object.assign({}, f.spec, { datasets: datasets(f) }), opts).catch((e) => console.error(f.name, e));
function showTrial() {
  const m = /^#trial=(t[0-9a-f]+)$/.exec(location.hash);
  if (!m) return;
  const id = m[1];
  document.querySelectorAll('tr.sel').forEach((r) => r.classList.remove('sel'));
  const row = document.getElementById('row-' + id); if (row) row.classList.add('sel');
  const idx = P.trials.findIndex((t) => t.trial_id === id);
  const view = document.getElementById('trial-view');
  view.innerHTML = '';
  const t = P.trials[idx];
  document.getElementById('trial-title').textContent = 'Trial ' + id + (t && t.cell >= 0 ? ' (seed ' + t.seed + ', ' + P.cells[t.cell].row + ', ' + P.cells[t.cell].col + '; drag to zoom, double-click to reset)' : ': not done, no curves');
  if (t && t.cell >= 0) for (const f of P.figures) {
    if (!TRIAL_SPECS[f.name]) continue;
    const div = document.createElement('div'); div.className = 'trial-fig'; view.appendChild(div);
    const spec = Object.assign({}, TRIAL_SPECS[f.name], { datasets: datasets(f) });
    spec.transform = [{ filter: { field: 'trial', equal: id } }, { calculate: "datum.trial + '/' + datum.series", as: 'line' }];
    vegaEmbed(div, spec, opts).catch((e) => console.error(f.name, e));
  }
  document.getElementById('trial').scrollIntoView();
}
window.addEventListener('hashchange', showTrial); showTrial();
// Sortable trials table: click a header; again to reverse.
document.querySelectorAll('#trials-table th').forEach((th) => th.addEventListener('click', () => {
  const i = +th.dataset.col, body = document.querySelector('#trials-table tbody');
  const dir = th.dataset.dir === 'asc' ? -1 : 1; th.dataset.dir = dir === 1 ? 'asc' : 'desc';
  const val = (r) => r.children[i].dataset.v;
  const rs = [...body.rows].sort((a, b) => { const x = val(a), y = val(b), nx = parseFloat(x), ny = parseFloat(y);
    return dir * (x === '' ? 1 : y === '' ? -1 : !isNaN(nx) && !isNaN(ny) && String(nx) === x && String(ny) === y ? nx - ny : x.localeCompare(y)); });
  rs.forEach((r) => body.appendChild(r));
}));
</script>
</body></html>
`;
}
