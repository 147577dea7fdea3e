/**
 * The report's refined phase map (`phase-map`), drawn when a sweep's samples do not form a regular
 * grid on the diagram's axes (refinement trials, `phasemap refine`): per facet, each sample's
 * region — the nearest-sample cells in log space (a Voronoi diagram on log10 x, log10 y),
 * rasterised into MAP_COLS × MAP_ROWS rectangles of equal size in log space, each coloured by the
 * consensus phase of its nearest sample's seeds — the samples as points (grid trials filled squares,
 * refinement trials open circles), and the estimated boundaries: for neighbouring samples (along x at
 * equal y, along y at equal x) whose phases differ, a short segment at their log midpoint across the
 * axis. The rows ride inside the spec (no payload dataset): they are computed here, in Node.
 */
import { renderBoundaries, type Phase } from '../diagram.js';
import { consensusPhase, nearestIndex } from '../refine.js';
import type { ReportData } from './data.js';
import { PHASE_COLORS, type FigureDef } from './figures.js';

/** Rectangles of the raster along x and along y. */
export const MAP_COLS = 60;
export const MAP_ROWS = 40;

/** One sample of the map: a (facet, x, y) point with the consensus phase of its done seeds. */
export interface MapSample {
  x: number;
  y: number;
  phase: Phase;
  /** Every trial of the sample came from a refinement round. */
  refined?: boolean;
}

/** The raster's extent in log10 units: [lo, hi] on each axis. */
export interface LogDomain {
  x: [number, number];
  y: [number, number];
}

/** One rectangle of the raster, in data units (x0 < x1, y0 < y1), and the index of its nearest sample. */
export interface MapRect {
  x0: number;
  x1: number;
  y0: number;
  y1: number;
  phase: Phase;
  sample: number;
}

/** One boundary segment in data units: at x = x0 = x1 from y0 to y1 (a boundary along x), or the transpose. */
export interface MapEdge {
  x0: number;
  x1: number;
  y0: number;
  y1: number;
  from: Phase;
  to: Phase;
}

/**
 * The log extent of a set of positive values: their log10 range padded on each side by half the
 * mean gap between distinct values (a quarter decade when there is one value).
 */
function logExtent(values: number[]): [number, number] {
  const l = [...new Set(values.map(Math.log10))].sort((a, b) => a - b);
  const lo = l[0]!;
  const hi = l[l.length - 1]!;
  const pad = l.length > 1 ? (hi - lo) / (2 * (l.length - 1)) : 0.25;
  return [lo - pad, hi + pad];
}

/** The default raster extent of samples (logExtent of their x and of their y). */
export function mapDomain(samples: readonly MapSample[]): LogDomain {
  return { x: logExtent(samples.map((s) => s.x)), y: logExtent(samples.map((s) => s.y)) };
}

/**
 * Rasterises the nearest-sample regions: `cols` × `rows` rectangles of equal size in log space over
 * `domain`, each assigned the phase of the sample nearest (Euclidean in log10 x, log10 y) to its
 * centre; a tie goes to the earlier sample. Pure. Rectangles run row by row from the lowest y, each
 * row from the lowest x.
 */
export function rasterise(samples: readonly MapSample[], domain: LogDomain = mapDomain(samples), cols = MAP_COLS, rows = MAP_ROWS): MapRect[] {
  if (samples.length === 0) return [];
  const lx = samples.map((s) => Math.log10(s.x));
  const ly = samples.map((s) => Math.log10(s.y));
  const dx = (domain.x[1] - domain.x[0]) / cols;
  const dy = (domain.y[1] - domain.y[0]) / rows;
  const out: MapRect[] = [];
  for (let j = 0; j < rows; j++)
    for (let i = 0; i < cols; i++) {
      const best = nearestIndex(lx, ly, domain.x[0] + (i + 0.5) * dx, domain.y[0] + (j + 0.5) * dy);
      out.push({ x0: 10 ** (domain.x[0] + i * dx), x1: 10 ** (domain.x[0] + (i + 1) * dx), y0: 10 ** (domain.y[0] + j * dy), y1: 10 ** (domain.y[0] + (j + 1) * dy), phase: samples[best]!.phase, sample: best });
    }
  return out;
}

/**
 * The boundary segments of a facet's samples: for each pair of neighbouring samples (consecutive
 * along x at equal y, or along y at equal x) whose phases differ, a segment at the log midpoint of
 * the coordinate they differ in, spanning across the other axis from the log midpoint with the
 * previous distinct value of that axis to the one with the next (the domain's edge at either end).
 */
export function boundaryEdges(samples: readonly MapSample[], domain: LogDomain = mapDomain(samples)): MapEdge[] {
  const out: MapEdge[] = [];
  for (const [along, across] of [['x', 'y'], ['y', 'x']] as const) {
    const acrossValues = [...new Set(samples.map((s) => s[across]))].sort((a, b) => a - b);
    for (let v = 0; v < acrossValues.length; v++) {
      const value = acrossValues[v]!;
      const lo = v > 0 ? Math.sqrt(acrossValues[v - 1]! * value) : 10 ** domain[across][0];
      const hi = v < acrossValues.length - 1 ? Math.sqrt(acrossValues[v + 1]! * value) : 10 ** domain[across][1];
      const line = samples.filter((s) => s[across] === value).sort((a, b) => a[along] - b[along]);
      for (let i = 1; i < line.length; i++) {
        const a = line[i - 1]!;
        const b = line[i]!;
        if (a.phase === b.phase) continue;
        const m = Math.sqrt(a[along] * b[along]);
        out.push(along === 'x' ? { x0: m, x1: m, y0: lo, y1: hi, from: a.phase, to: b.phase } : { x0: lo, x1: hi, y0: m, y1: m, from: a.phase, to: b.phase });
      }
    }
  }
  return out;
}

/** A number to 4 significant digits (the page stays small). */
const r4 = (v: number) => Number(v.toPrecision(4));

/** The map's samples per facet label: one per diagram cell, phase = consensus over its done trials' phases. */
function facetSamples(data: ReportData): Map<string, Array<MapSample & { trials: number }>> {
  const out = new Map<string, Array<MapSample & { trials: number }>>();
  data.cells.forEach((c, i) => {
    const members = data.trials.filter((t) => t.cell === i && t.final_phase !== null);
    if (members.length === 0) return;
    const s = { x: Number(c.x), y: Number(c.y), phase: consensusPhase(members.map((t) => t.final_phase!)), refined: members.every((t) => t.refine_round !== null), trials: members.length };
    out.set(c.facetLabel, [...(out.get(c.facetLabel) ?? []), s]);
  });
  return out;
}

/**
 * The cells of the starting grid under a facet's samples: for each grid sample (not `refined`), the
 * rectangle in data units from the log midpoint with the previous distinct grid value to the log
 * midpoint with the next, on each axis (the domain's edge at either end), with the sample's phase.
 * Samples that are not on the grid's x values × y values (irregular samples) get no cell. Pure.
 */
export function gridCells(samples: readonly MapSample[], domain: LogDomain = mapDomain(samples)): Array<Omit<MapRect, 'sample'>> {
  const grid = samples.filter((s) => !s.refined);
  const lx = [...new Set(grid.map((s) => Math.log10(s.x)))].sort((a, b) => a - b);
  const ly = [...new Set(grid.map((s) => Math.log10(s.y)))].sort((a, b) => a - b);
  const edges = (l: number[], d: [number, number], i: number): [number, number] => [i > 0 ? (l[i - 1]! + l[i]!) / 2 : d[0], i < l.length - 1 ? (l[i]! + l[i + 1]!) / 2 : d[1]];
  return grid.map((s) => {
    const [x0, x1] = edges(lx, domain.x, lx.indexOf(Math.log10(s.x)));
    const [y0, y1] = edges(ly, domain.y, ly.indexOf(Math.log10(s.y)));
    return { x0: 10 ** x0, x1: 10 ** x1, y0: 10 ** y0, y1: 10 ** y1, phase: s.phase };
  });
}

/**
 * Whether a report gets the phase map: the diagram's axes are numeric and > 0 (log scales), and
 * some trial came from a refinement round, or the trials sweep.json plans (whatever their status, so
 * that failed or unfinished trials leave no hole) do not form, in some facet, a full grid of its x
 * values × its y values.
 */
export function wantsPhaseMap(data: Pick<ReportData, 'cells' | 'trials' | 'planned'>): boolean {
  const positive = (v: unknown) => typeof v === 'number' && v > 0;
  if (data.cells.length === 0 || !data.cells.every((c) => positive(c.x) && positive(c.y))) return false;
  if (data.trials.some((t) => t.refine_round !== null) || data.planned.some((t) => t.refine_round !== null)) return true;
  const facets = new Map<string, Set<string>>();
  for (const t of data.planned) {
    if (t.at.x === null || t.at.y === null) return false;
    const f = JSON.stringify(String(t.at.facet));
    if (!facets.has(f)) facets.set(f, new Set());
    facets.get(f)!.add(JSON.stringify([t.at.x, t.at.y]));
  }
  for (const points of facets.values()) {
    const xy = [...points].map((p) => JSON.parse(p) as [unknown, unknown]);
    if (new Set(xy.map((p) => String(p[0]))).size * new Set(xy.map((p) => String(p[1]))).size !== points.size) return true;
  }
  return false;
}

/** The boundary lines of the diagram's cells (renderBoundaries), one string each, without the heading. */
export function boundaryLines(data: ReportData): string[] {
  return renderBoundaries(data.cells, data.axes)
    .split('\n')
    .slice(1)
    .map((l) => l.trim())
    .filter(Boolean);
}

/** At most this many distinct sample values on an axis get a tick each; more get the grid's values. */
export const MAX_SAMPLE_TICKS = 10;

/**
 * The tick values of a phase-map axis, ascending: every distinct value the samples take when there
 * are at most MAX_SAMPLE_TICKS (e.g. the batch-size rows refinement added between the grid's), else
 * the starting grid's values; null (Vega's own ticks) when there are more and no grid. Pure.
 */
export function mapTicks(gridValues: number[], sampleValues: number[]): number[] | null {
  const samples = [...new Set(sampleValues)];
  const use = samples.length <= MAX_SAMPLE_TICKS ? samples : gridValues.length ? [...new Set(gridValues)] : null;
  return use ? use.sort((a, b) => a - b) : null;
}

/**
 * The `phase-map` figure of a report (module header), or null when the report does not want one
 * (wantsPhaseMap). Its `notes` are the boundary lines (boundaryLines), listed under it on the page.
 */
export function phaseMapFigure(data: ReportData, title: string): FigureDef | null {
  if (!wantsPhaseMap(data)) return null;
  const byFacet = facetSamples(data);
  const all = [...byFacet.values()].flat();
  if (all.length === 0) return null;
  const domain = mapDomain(all);
  const rows: Array<Record<string, unknown>> = [];
  for (const [facet, samples] of byFacet) {
    for (const c of gridCells(samples, domain)) rows.push({ layer: 'grid', facet, x0: r4(c.x0), x1: r4(c.x1), y0: r4(c.y0), y1: r4(c.y1), phase: c.phase });
    for (const r of rasterise(samples, domain)) rows.push({ layer: 'region', facet, x0: r4(r.x0), x1: r4(r.x1), y0: r4(r.y0), y1: r4(r.y1), phase: r.phase });
    for (const e of boundaryEdges(samples, domain)) rows.push({ layer: 'edge', facet, x0: r4(e.x0), x1: r4(e.x1), y0: r4(e.y0), y1: r4(e.y1), phase: e.to, between: `${e.from} → ${e.to}` });
    for (const s of samples) rows.push({ layer: 'sample', facet, x0: s.x, y0: s.y, phase: s.phase, kind: s.refined ? 'refinement' : 'grid', trials: s.trials });
  }
  const fullY = [...new Set(data.cells.filter((c) => c.y_full).map((c) => Number(c.y)))];
  const gridTrials = data.trials.filter((t) => t.refine_round === null && typeof t.at.y === 'number');
  const yTicks = mapTicks(gridTrials.map((t) => t.at.y as number), all.map((s) => s.y));
  const xTicks = mapTicks(data.trials.filter((t) => t.refine_round === null && typeof t.at.x === 'number').map((t) => t.at.x as number), all.map((s) => s.x));
  const xScale = { type: 'log', domain: domain.x.map((v) => r4(10 ** v)), nice: false };
  const yScale = { type: 'log', domain: domain.y.map((v) => r4(10 ** v)), nice: false };
  const xTitle = data.axes.x === 'lr' ? 'learning rate lr₀ (log)' : `${data.axes.x} (log)`;
  const yTitle = data.axes.y === 'batch_size' ? 'batch size (log; full at N)' : `${data.axes.y} (log)`;
  const x = { field: 'x0', type: 'quantitative', scale: xScale, title: xTitle, axis: { ...(xTicks ? { values: xTicks } : {}), format: '.3~g', grid: false } };
  const y = {
    field: 'y0', type: 'quantitative', scale: yScale, title: yTitle,
    axis: { ...(yTicks ? { values: yTicks } : {}), format: '.4~g', grid: false, ...(fullY.length ? { labelExpr: `indexof(${JSON.stringify(fullY)}, datum.value) >= 0 ? 'full ' + datum.label : datum.label` } : {}) },
  };
  const color = { field: 'phase', type: 'nominal', scale: { domain: Object.keys(PHASE_COLORS), range: Object.values(PHASE_COLORS) }, legend: { title: 'consensus phase', titleLimit: 400, orient: 'top', labelExpr: "datum.label == 'equilibrium' ? 'diffusion equilibrium (DE)' : datum.label", labelLimit: 260 } };
  const unit = {
    width: 420,
    height: 280,
    layer: [
      // The starting grid's cells, faint beneath the refined map: coloured by the grid's own phases, dashed outlines.
      { name: 'grid-cells', transform: [{ filter: "datum.layer == 'grid'" }], mark: { type: 'rect', opacity: 0.3, stroke: '#555555', strokeWidth: 0.8, strokeDash: [3, 2] }, encoding: { x, x2: { field: 'x1' }, y, y2: { field: 'y1' }, color } },
      { name: 'regions', transform: [{ filter: "datum.layer == 'region'" }], mark: { type: 'rect', opacity: 0.45, strokeWidth: 0 }, encoding: { x, x2: { field: 'x1' }, y, y2: { field: 'y1' }, color } },
      {
        name: 'edges', transform: [{ filter: "datum.layer == 'edge'" }], mark: { type: 'rule', color: 'black', strokeWidth: 2 },
        encoding: { x: { field: 'x0', type: 'quantitative', scale: xScale }, x2: { field: 'x1' }, y: { field: 'y0', type: 'quantitative', scale: yScale }, y2: { field: 'y1' }, tooltip: [{ field: 'between', title: 'boundary' }] },
      },
      {
        name: 'samples', transform: [{ filter: "datum.layer == 'sample'" }], mark: { type: 'point', stroke: 'black', strokeWidth: 1.3, size: 45, filled: true, opacity: 1 },
        encoding: {
          x: { field: 'x0', type: 'quantitative', scale: xScale }, y: { field: 'y0', type: 'quantitative', scale: yScale },
          shape: { field: 'kind', type: 'nominal', scale: { domain: ['grid', 'refinement'], range: ['square', 'circle'] }, legend: { title: 'sample', orient: 'top' } },
          fill: { field: 'kind', type: 'nominal', scale: { domain: ['grid', 'refinement'], range: ['#222222', 'transparent'] }, legend: { title: 'sample', orient: 'top' } },
          tooltip: [{ field: 'x0', title: data.axes.x, format: '.3g' }, { field: 'y0', title: data.axes.y }, { field: 'phase', title: 'consensus phase' }, { field: 'trials', title: 'done trials' }, { field: 'kind', title: 'sample' }],
        },
      },
    ],
  };
  const subtitle = [
    'colour: the consensus phase of the nearest sample in log space (nearest-sample regions)',
    'filled squares: grid trials; open circles: refinement trials',
    'faint beneath, with dashed outlines: the cells of the starting grid, coloured by its own phases',
    'black segments: estimated boundaries, at the log midpoint of neighbouring samples whose phases differ',
  ];
  const facetted = data.axes.facet !== null;
  const spec = facetted
    ? { data: { values: rows }, facet: { column: { field: 'facet', type: 'nominal', title: null, header: { labelFontSize: 12, labelFontWeight: 'bold' } } }, spec: unit, resolve: { scale: { color: 'shared' } } }
    : { data: { values: rows }, ...unit };
  return { name: 'phase-map', title, datasets: [], notes: boundaryLines(data), spec: { title: { text: title, subtitle }, ...spec } };
}
