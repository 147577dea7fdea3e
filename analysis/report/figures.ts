/**
 * The report's figures as Vega-Lite specs over named datasets, and the functions that turn a
 * report's compact payload into those datasets. The same specs are rendered to SVG/PNG in Node
 * (render.ts) and embedded, interactive, in the page (page.ts: vega-embed); the dataset functions are
 * self-contained (no imports, no closures) so that the page runs the very same code (inlined with
 * Function.prototype.toString).
 *
 * One colour-blind-safe palette (Okabe & Ito, 2008) for the five final phases, in every figure:
 * diverged vermillion, fitting yellow, steady reddish purple, diffusion sky blue, diffusion
 * equilibrium bluish green.
 */
import type { ReportData, SeriesTable } from './data.js';

export const PHASE_COLORS = { diverged: '#D55E00', fitting: '#F0E442', steady: '#CC79A7', diffusion: '#56B4E9', equilibrium: '#009E73' } as const;
const PHASE_DOMAIN = Object.keys(PHASE_COLORS);
const PHASE_RANGE = Object.values(PHASE_COLORS);
/** Colours of series other than phases (loss parts, layers): Okabe–Ito's remaining hues, then black. */
const SERIES_RANGE = ['#0072B2', '#CC79A7', '#E69F00', '#000000', '#56B4E9', '#009E73', '#D55E00', '#999999'];

/** What the page and Node need to draw every figure: the payload's trials, cells and series tables. */
export interface Payload {
  sweep: string;
  problems: string[];
  axes: ReportData['axes'];
  rows: string[];
  cols: string[];
  cells: Array<{ row: string; col: string; facet: string; xLabel: string; yLabel: string; x: unknown; phase: string; count: number; trials: number; median_t_equilibrium: number | null; de_range: string; rel_l2_range: string; median_final_rel_l2: number | null; members: string }>;
  trials: Array<{ trial_id: string; seed: number | null; phase: string | null; cell: number; t_diffusion: number | null; t_equilibrium: number | null }>;
  tables: Record<string, SeriesTable>;
  figures: FigureDef[];
}

/** One figure: its file name (without extension), its title, the datasets it reads and its Vega-Lite spec. */
export interface FigureDef {
  name: string;
  title: string;
  /** Dataset definitions: `name` ← rows of `table` for `cols` (each a series; `labels` renames them). */
  datasets: DatasetDef[];
  spec: Record<string, unknown>;
  /** Lines the page lists under the figure (the phase map's boundaries). */
  notes?: string[];
}

export interface DatasetDef {
  name: string;
  table: string;
  cols: string[];
  labels?: string[];
  /** Only rows whose value is > 0 (for log scales). */
  positive?: boolean;
  /** Plot log10 of the value. */
  log10?: boolean;
  /**
   * Many trials: lines are drawn as one path per colour (phase or series) in a panel, broken between
   * trials (a row with a null value after each trial's run), instead of one path per trial; rows carry
   * their order `i`. Vega builds a dataflow per path, so this draws a 1,000-trial figure many times
   * faster; such lines carry no tooltip.
   */
  joined?: boolean;
}

/**
 * Rows of one dataset: for every kept point of every shown trial and every column of `def`, one row
 * {trial, seed, phase, row, col, kind: 'value', series, step, value}; then, per shown trial, its
 * t_diffusion and t_equilibrium as rows {kind: 'diffusion' | 'equilibrium', step}. Self-contained:
 * it is also run by the page.
 */
export function datasetRows(p: Payload, def: DatasetDef): Array<Record<string, unknown>> {
  const tab = p.tables[def.table];
  const out: Array<Record<string, unknown>> = [];
  if (!tab) return out;
  const head = (ti: number) => {
    const t = p.trials[ti]!;
    const c = p.cells[t.cell]!;
    return { trial: t.trial_id, seed: t.seed, phase: t.phase, row: c.row, col: c.col };
  };
  const heads = p.trials.map((t, i) => (t.cell >= 0 ? head(i) : null));
  for (let k = 0; k < def.cols.length; k++) {
    const vals = tab.cols[def.cols[k]!];
    if (!vals) continue;
    const series = def.labels ? def.labels[k] : def.cols[k];
    let last: Record<string, unknown> | null = null;
    const brk = () => {
      if (def.joined && last) out.push({ ...last, value: null, i: out.length });
      last = null;
    };
    for (let i = 0; i < tab.t.length; i++) {
      let v = vals[i];
      const h = heads[tab.t[i]!];
      if (i > 0 && tab.t[i] !== tab.t[i - 1]) brk();
      if (v === null || v === undefined || !h) continue;
      if (def.positive && !(v > 0)) continue;
      if (def.log10) v = Math.log10(v);
      last = { ...h, kind: 'value', series, step: tab.step[i], value: v, i: out.length };
      out.push(last);
    }
    brk();
  }
  p.trials.forEach((t, i) => {
    const h = heads[i];
    if (!h) return;
    if (t.t_diffusion !== null) out.push({ ...h, kind: 'diffusion', step: t.t_diffusion });
    if (t.t_equilibrium !== null) out.push({ ...h, kind: 'equilibrium', step: t.t_equilibrium });
  });
  return out;
}

/** The rows of the phase-diagram figure: one per cell. Self-contained: it is also run by the page. */
export function cellRows(p: Payload): Array<Record<string, unknown>> {
  const xs = [...new Set(p.cells.map((c) => c.x))].filter((x): x is number => typeof x === 'number' && x > 0).sort((a, b) => a - b);
  const logX = xs.length > 0 && p.cells.every((c) => typeof c.x === 'number' && c.x > 0);
  // Cell bounds in log space: geometric midpoints between neighbouring x values, mirrored at the ends.
  const bounds = (x: number): [number, number] => {
    const i = xs.indexOf(x);
    const lo = i > 0 ? Math.sqrt(xs[i - 1]! * x) : xs.length > 1 ? x / Math.sqrt(xs[1]! / xs[0]!) : x / 2;
    const hi = i < xs.length - 1 ? Math.sqrt(xs[i + 1]! * x) : xs.length > 1 ? x * Math.sqrt(xs[xs.length - 1]! / xs[xs.length - 2]!) : x * 2;
    return [lo, hi];
  };
  const fmt = (v: number | null) => (v === null ? '-' : v < 0.01 || v >= 1e4 ? v.toExponential(1) : v.toPrecision(2));
  return p.cells.map((c) => {
    const [xlo, xhi] = logX ? bounds(c.x as number) : [null, null];
    const short: Record<string, string> = { diverged: 'div', fitting: 'fit', steady: 'std', diffusion: 'diff', equilibrium: 'DE' };
    return {
      facet: c.facet, xlabel: c.xLabel, ylabel: c.yLabel, x: logX ? c.x : c.xLabel, xlo, xhi, phase: c.phase,
      text: `${short[c.phase] ?? c.phase} ${c.count}/${c.trials}\nt_DE ${c.de_range.replace(' (', '\n(')}\nrel_l2 ${fmt(c.median_final_rel_l2)}`,
      seeds: `${c.count}/${c.trials} seeds ${c.phase}`,
      t_DE: c.de_range, rel_l2: c.median_final_rel_l2, rel_l2_range: c.rel_l2_range, trials: c.members,
    };
  });
}

const phaseScale = { domain: PHASE_DOMAIN, range: PHASE_RANGE };
const phaseLegend = { title: 'final phase', labelExpr: "datum.label == 'equilibrium' ? 'diffusion equilibrium (DE)' : datum.label", orient: 'top', labelLimit: 260, symbolOpacity: 1 };

/** A subtitle as lines of at most ~110 characters, broken after '; ' (vega sizes a figure by its longest line). */
function lines(text: string): string[] {
  const out: string[] = [];
  for (const part of text.split('; ')) {
    const last = out[out.length - 1];
    if (last !== undefined && last.length + part.length + 2 <= 110) out[out.length - 1] = `${last}; ${part}`;
    else out.push(part);
  }
  return out;
}

/** Decade ticks 1, 10, 100, … up to the largest step (log axes without the 2…9 clutter). */
function decades(maxStep: number): number[] {
  const out = [1];
  while (out[out.length - 1]! * 10 <= Math.max(10, maxStep) * 1.0001) out.push(out[out.length - 1]! * 10);
  return out;
}

/** Narrowest cell of the phase diagram, in px, that gets its text (`rel_l2 0.029` at 10 px is ~60 px wide). */
export const CELL_TEXT_PX = 64;

/** The phase-diagram figure (module header; cell colour = dominant final phase, text = count, median DE step, median final rel. L2). */
function diagramFigure(p: Payload, title: string, subtitle: string): FigureDef {
  const logX = p.cells.length > 0 && p.cells.every((c) => typeof c.x === 'number' && (c.x as number) > 0);
  // p.rows run from the largest y down (full batches on top): the y axis keeps that order.
  const yDomain = [...new Set(p.rows.map((r) => p.cells.find((c) => c.row === r)!.yLabel))];
  // An ordinal x axis in the order of p.cols (`lr 1e-3` → `1e-3`).
  const xOrder = p.cols.map((c) => c.replace(/^\S+ /, ''));
  const nx = new Set(p.cells.map((c) => c.xLabel)).size;
  const xTitle = p.axes.x === 'lr' ? 'learning rate lr₀ (log)' : p.axes.x;
  const yTitle = p.axes.y === 'batch_size' ? 'batch size' : p.axes.y;
  const xv = [...new Set(p.cells.map((c) => c.x as number))].sort((a, b) => a - b);
  const rows = cellRows(p);
  const xDomain = logX ? [Math.min(...rows.map((r) => r.xlo as number)), Math.max(...rows.map((r) => r.xhi as number))] : undefined;
  const xScale = { type: 'log', domain: xDomain, nice: false };
  const x = logX
    ? { field: 'xlo', type: 'quantitative', scale: xScale, title: xTitle, axis: { values: xv, format: '.3~g', grid: false } }
    : { field: 'x', type: 'ordinal', title: xTitle, sort: xOrder };
  const width = Math.max(180, 96 * nx);
  // On a log x axis a cell is as wide as its share of the domain: its text is centred in it (a cell of
  // an irregular sample is not centred on the sample's tick), and only where it fits (a narrow cell
  // between close refinement samples keeps its colour and tooltip).
  const pxPerE = logX && xDomain ? width / Math.log(xDomain[1]! / xDomain[0]!) : 0;
  const textLayout = pxPerE ? [{ filter: `log(datum.xhi / datum.xlo) * ${pxPerE} >= ${CELL_TEXT_PX}` }, { calculate: 'sqrt(datum.xlo * datum.xhi)', as: 'xmid' }] : null;
  const unit = {
    width,
    height: Math.max(80, 56 * yDomain.length),
    layer: [
      {
        name: 'cells',
        mark: { type: 'rect', stroke: 'white', strokeWidth: 2 },
        params: [{ name: 'pick', select: { type: 'point', fields: ['phase'] }, bind: 'legend' }],
        encoding: {
          x,
          ...(logX ? { x2: { field: 'xhi' } } : {}),
          y: { field: 'ylabel', type: 'ordinal', sort: yDomain, title: yTitle },
          color: { field: 'phase', type: 'nominal', scale: phaseScale, legend: phaseLegend },
          opacity: { condition: { param: 'pick', value: 1 }, value: 0.25 },
          tooltip: [
            { field: 'xlabel', title: p.axes.x }, { field: 'ylabel', title: p.axes.y }, { field: 'seeds', title: 'cell' },
            { field: 't_DE', title: 't_equilibrium (steps): median (seeds\' range)' }, { field: 'rel_l2', title: 'median final rel. L2', format: '.3g' }, { field: 'rel_l2_range', title: 'final rel. L2 over the seeds' }, { field: 'trials', title: 'trials' },
          ],
        },
      },
      {
        ...(textLayout ? { transform: textLayout } : {}),
        mark: { type: 'text', lineBreak: '\n', fontSize: 10, color: 'black', baseline: 'middle', dy: -12 },
        encoding: {
          x: logX ? { field: textLayout ? 'xmid' : 'x', type: 'quantitative', scale: xScale } : { field: 'x', type: 'ordinal', sort: xOrder },
          y: { field: 'ylabel', type: 'ordinal', sort: yDomain },
          text: { field: 'text' },
        },
      },
    ],
  };
  const spec = p.axes.facet
    ? { data: { name: 'cells' }, facet: { column: { field: 'facet', type: 'nominal', title: null, header: { labelFontSize: 12, labelFontWeight: 'bold' } } }, spec: unit }
    : { data: { name: 'cells' }, ...unit };
  return { name: 'phase-diagram', title, datasets: [], spec: { title: { text: title, subtitle: lines(subtitle) }, ...spec } };
}

interface PanelOptions {
  name: string;
  title: string;
  subtitle: string;
  dataset: DatasetDef;
  yTitle: string;
  yScale?: Record<string, unknown>;
  /** Colour lines by the trial's final phase (else by series). */
  byPhase: boolean;
  /** Raw values as faint points under the line (the SNR figure: raw points, smoothed line from another column). */
  points?: { series: string; line: string };
  /** A horizontal reference line at this y. */
  refY?: number;
}

/** The layers of one small panel (module header): lines per trial, optional faint points, the transition rules. */
function panelLayers(o: PanelOptions, zoom: boolean, maxStep: number): unknown[] {
  const x = { field: 'step', type: 'quantitative', scale: { type: 'log' }, title: 'step (Adam updates, log)', axis: { values: decades(maxStep), format: '~s' } };
  const y = { field: 'value', type: 'quantitative', title: o.yTitle, ...(o.yScale ? { scale: o.yScale } : {}), axis: { tickCount: 5 } };
  const color = o.byPhase
    ? { field: 'phase', type: 'nominal', scale: phaseScale, legend: phaseLegend }
    : { field: 'series', type: 'nominal', scale: { range: SERIES_RANGE }, legend: { title: null, orient: 'top' } };
  const values = { filter: "datum.kind == 'value' && datum.step >= 1" };
  const tooltip = [{ field: 'trial' }, { field: 'seed' }, { field: 'phase', title: 'final phase' }, { field: 'series' }, { field: 'step' }, { field: 'value', title: o.yTitle, format: '.4g' }];
  // Clicking a legend entry (a phase, or a series) picks out its lines; the others fade.
  const pickField = o.byPhase ? 'phase' : 'series';
  const faded = (on: number, off: number) => ({ opacity: { condition: { param: 'pick', value: on, empty: true }, value: off } });
  const layers: unknown[] = [];
  if (o.points)
    layers.push({
      name: 'raw_points',
      transform: [values, { filter: `datum.series == '${o.points.series}'` }],
      mark: { type: 'circle', size: 8 },
      encoding: { x, y, color, tooltip, ...faded(0.3, 0.03) },
    });
  const joined = o.dataset.joined === true && !zoom;
  layers.push({
    name: 'trial_lines',
    transform: [values, ...(o.points ? [{ filter: `datum.series == '${o.points.line}'` }] : [])],
    mark: { type: 'line', strokeWidth: joined ? 0.8 : 1.3, interpolate: 'linear', ...(joined ? { invalid: 'break-paths-filter-domains' } : {}) },
    params: [
      { name: 'pick', select: { type: 'point', fields: [pickField] }, bind: 'legend' },
      ...(zoom ? [{ name: 'zoom', select: { type: 'interval', encodings: ['x', 'y'] }, bind: 'scales' }] : []),
    ],
    encoding: joined
      ? { x, y, color, order: { field: 'i', type: 'quantitative' }, ...faded(1, 0.1) }
      : { x, y, color, detail: o.byPhase ? { field: 'trial' } : { field: 'line' }, tooltip, ...faded(1, 0.1) },
  });
  if (o.refY !== undefined) layers.push({ name: 'reference', mark: { type: 'rule', color: '#888', strokeWidth: 0.7 }, encoding: { y: { datum: o.refY } } });
  for (const [kind, colour] of [['diffusion', PHASE_COLORS.diffusion], ['equilibrium', PHASE_COLORS.equilibrium]] as const)
    layers.push({
      name: `rule_${kind}`,
      transform: [{ filter: `datum.kind == '${kind}'` }],
      mark: { type: 'rule', strokeDash: [4, 3], strokeWidth: 1.3, color: colour },
      encoding: { x: { field: 'step', type: 'quantitative' }, tooltip: [{ field: 'trial' }, { field: 'seed' }, { field: 'kind', title: 'transition' }, { field: 'step' }] },
    });
  return layers;
}

/** The largest step in any series of the payload. */
function maxStep(p: Payload): number {
  let m = 1;
  for (const t of Object.values(p.tables)) for (const s of t.step) if (s > m) m = s;
  return m;
}

/** A figure of small panels laid out like the diagram: rows = facet × y, columns = x. */
function panelFigure(p: Payload, o: PanelOptions): FigureDef {
  const w = Math.max(110, Math.min(200, Math.floor(900 / Math.max(1, p.cols.length))));
  const lineKey = o.byPhase ? [] : [{ calculate: "datum.trial + '/' + datum.series", as: 'line' }];
  return {
    name: o.name,
    title: o.title,
    datasets: [o.dataset],
    spec: {
      title: { text: o.title, subtitle: lines(o.subtitle) },
      data: { name: o.dataset.name },
      transform: lineKey,
      facet: {
        row: { field: 'row', type: 'nominal', sort: p.rows, title: null, header: { labelAngle: 0, labelAlign: 'left', labelFontSize: 11, labelExpr: "split(datum.label, ' · ')" } },
        column: { field: 'col', type: 'nominal', sort: p.cols, title: null, header: { labelFontSize: 11 } },
      },
      spec: { width: w, height: Math.round(w * 0.62), layer: panelLayers(o, false, maxStep(p)) },
      resolve: { scale: { x: 'shared', y: 'shared' } },
    },
  };
}

/** Panels of one trial (the page's trial view): the same layers, no facet, zoomable. */
export function trialFigureSpec(p: Payload, f: FigureDef, panel: PanelOptions): Record<string, unknown> {
  return { title: f.title, data: { name: f.datasets[0]!.name }, width: 420, height: 220, layer: panelLayers(panel, true, maxStep(p)) };
}

/** Above this many shown trials, lines are drawn joined (DatasetDef.joined). */
export const JOIN_ABOVE = 100;

const RULES = 'dashed: t_diffusion (sky blue) and t_equilibrium (green) of each trial';

/** Every figure of a report, in page order, with the panel options the trial view reuses. */
export function figureDefs(p: Payload, layers: { snr: number; hidden: number }, hasLambda: boolean, maxN: number): Array<FigureDef & { panel?: PanelOptions }> {
  const where = p.problems.join(', ');
  const t = (what: string) => `${p.sweep} · ${where}: ${what}`;
  const layerNames = (prefix: string, n: number) => Array.from({ length: n }, (_, l) => `${prefix}.${l}`);
  const layerLabels = (n: number, hidden: boolean) => Array.from({ length: n }, (_, l) => (hidden ? `hidden layer ${l + 1}` : l === n - 1 ? `W${l} (output)` : `W${l}`));
  const panels: PanelOptions[] = [
    {
      name: 'snr', title: t('gradient SNR vs step'), byPhase: true, refY: 0, points: { series: 'raw', line: 'smoothed' },
      subtitle: `lines: smoothed log10 SNR the phase detector reads, one per trial (seed), coloured by its final phase; dots: raw logged values; ${RULES}; grey: SNR = 1`,
      dataset: { name: 'snr', table: 'snr', cols: ['raw', 'smoothed'] }, yTitle: 'log10 SNR',
    },
    {
      name: 'rel-l2', title: t('test error vs step'), byPhase: true, subtitle: `relative L2 error ‖u − u*‖/‖u*‖ on the evaluation grid, one line per trial, coloured by its final phase; ${RULES}`,
      dataset: { name: 'rel_l2', table: 'error', cols: ['rel_l2'], positive: true }, yTitle: 'rel. L2 error (log)', yScale: { type: 'log' },
    },
    {
      name: 'loss', title: t('loss vs step'), byPhase: false, subtitle: `loss = residual term (mean (λ r)² over the batch) + boundary/initial term, one line per trial and part; ${RULES}`,
      dataset: { name: 'loss', table: 'loss', cols: ['loss', 'loss_residual', 'loss_boundary'], labels: ['loss', 'residual term', 'boundary term'], positive: true }, yTitle: 'loss (log)', yScale: { type: 'log' },
    },
    {
      name: 'grad-order', title: t('gradient order vs step'), byPhase: true, subtitle: `grad_order = ‖μ‖/‖RMS‖ = SNR/√(1 + SNR²) over the SNR batches; ${RULES}`,
      dataset: { name: 'grad_order', table: 'signals', cols: ['grad_order'] }, yTitle: 'gradient order', yScale: { domain: [0, 1] },
    },
    {
      name: 'snr-adam', title: t('Adam SNR vs step'), byPhase: true, subtitle: `snr_adam = ‖m̂‖/‖√v̂ + ε‖ from the optimizer's moments; ${RULES}`,
      dataset: { name: 'snr_adam', table: 'signals', cols: ['snr_adam'], positive: true }, yTitle: 'Adam SNR (log)', yScale: { type: 'log' },
    },
    {
      name: 'res-homogeneity', title: t('residual homogeneity vs step'), byPhase: true, subtitle: `φ_R over a 10 × 10 grid of the domain, 1 = uniform residuals (science.md §5); ${RULES}`,
      dataset: { name: 'res_homogeneity', table: 'signals', cols: ['res_homogeneity'] }, yTitle: 'φ_R', yScale: { domain: [0, 1] },
    },
    {
      name: 'snr-layers', title: t('per-layer gradient SNR vs step'), byPhase: false, subtitle: `‖μ_l‖/‖σ_l‖ per weight matrix, input layer first, one line per trial and layer; ${RULES}`,
      dataset: { name: 'snr_layers', table: 'signals', cols: layerNames('snr_layers', layers.snr), labels: layerLabels(layers.snr, false), positive: true, log10: true }, yTitle: 'log10 SNR of the layer',
    },
    {
      name: 'saturation', title: t('hidden-layer saturation vs step'), byPhase: false, subtitle: `% of collocation points in a unit's lowest or highest activation bin, mean over the layer's units; ${RULES}`,
      dataset: { name: 'saturation', table: 'signals', cols: layerNames('saturation_layers', layers.hidden), labels: layerLabels(layers.hidden, true) }, yTitle: 'saturation (%)',
    },
    {
      name: 'entropy', title: t('hidden-layer entropy vs step'), byPhase: false, refY: Math.log2(Math.max(2, maxN)),
      subtitle: `H(T) of the binned activations of each hidden layer, in bits; grey: log2 N = ${Math.log2(Math.max(2, maxN)).toFixed(2)} bits, the most it can read with N collocation points (every point in a bin pattern of its own); ${RULES}`,
      dataset: { name: 'entropy', table: 'signals', cols: layerNames('entropy_layers', layers.hidden), labels: layerLabels(layers.hidden, true) }, yTitle: 'entropy (bits)', yScale: { zero: false },
    },
  ];
  if (hasLambda)
    panels.push({
      name: 'lambda', title: t('point weights λ vs step'), byPhase: false, subtitle: `mean and max of the per-point weights λ over the N collocation points (rba, sa; 1 for vanilla); ${RULES}`,
      dataset: { name: 'lambda', table: 'signals', cols: ['lambda_mean', 'lambda_max'], labels: ['λ mean', 'λ max'] }, yTitle: 'λ',
    });
  // Many trials: broken paths instead of one path per trial (DatasetDef.joined).
  if (p.trials.filter((x) => x.cell >= 0).length > JOIN_ABOVE) for (const o of panels) o.dataset.joined = true;
  const diagram = diagramFigure(p, t('phase diagram'), 'cell colour: dominant final phase; text: that phase with its count of the cell\'s seeds, median DE step (the seeds\' range), median final rel. L2; on the report page, hover a cell for its trials');
  return [diagram, ...panels.map((o) => ({ ...panelFigure(p, o), panel: o }))];
}

/** Vega config shared by the page and the files. */
export const VEGA_CONFIG = {
  font: 'DejaVu Sans, Verdana, sans-serif',
  title: { anchor: 'start', fontSize: 14, subtitleFontSize: 11, subtitleColor: '#444' },
  axis: { labelFontSize: 10, titleFontSize: 11 },
  view: { stroke: '#ccc' },
  background: 'white',
};
