/**
 * Adaptive refinement of phase boundaries: a pure planner. Given the done trials of a sweep (their
 * values on the x and y axes, the group they belong to, their seed and final phase), it proposes new
 * points between neighbouring cells whose phases differ, at the log-space midpoint (geometric mean)
 * of the coordinate in which they differ; once no such pair is left, between agreeing neighbours of a
 * boundary that are still far apart (`explore`). Nothing here runs or reads anything
 * (orchestrator/refine.ts runs what it plans; analysis/refine-replay.ts replays it on recorded trials).
 */
import { PHASES, type Phase } from './diagram.js';

/** One done trial as the planner sees it. */
export interface RefineSample {
  /**
   * The trial's group: everything of its config but the x and y axes and the seed (the facet among
   * it). Only cells of one group are neighbours.
   */
  group: string;
  /** Value on the x axis (> 0: the axes are logarithmic). */
  x: number;
  /** Value on the y axis (> 0; a full batch as its size N). */
  y: number;
  seed: number;
  phase: Phase;
}

/** A point already in the sweep (done or not): never proposed again. */
export type RefinePoint = Pick<RefineSample, 'group' | 'x' | 'y' | 'seed'>;

/** One proposed trial: its group, its new coordinates and a seed of the cells it lies between. */
export interface RefineProposal extends RefinePoint {
  /** The axis whose midpoint it is; 'xy' for the midpoint of two samples that differ in both. */
  axis: 'x' | 'y' | 'xy';
  /** Present (true) when it lies between agreeing neighbours of a boundary (`explore`), not on a boundary. */
  explore?: true;
}

export interface RefinePlanOptions {
  /** Stop refining a pair of neighbours once the larger coordinate is within this factor of the smaller (> 1). */
  resolution: number;
  /** Most trials to propose (the budget left). */
  budget: number;
  /** Round the x midpoint to an integer (batch_size, width…). */
  xInteger?: boolean;
  /** Round the y midpoint to an integer. */
  yInteger?: boolean;
  /** Between two powers of two on x, take the power of two nearest the log midpoint (batch sizes). */
  xPowersOfTwo?: boolean;
  /** The same on y. */
  yPowersOfTwo?: boolean;
  /**
   * Once no boundary is left to split, agreeing neighbours of a boundary are split while further apart
   * than this factor (> 1; 0 or absent: never). A boundary found between two samples may bend before
   * the next, and a pocket of another phase may sit between two coarse samples of one phase.
   */
  explore?: number;
}

/** The consensus phase of a cell's seeds: the most frequent; ties go to the first in PHASES order (diverged first). */
export function consensusPhase(phases: readonly Phase[]): Phase {
  let best: Phase = PHASES[0];
  let bestN = -1;
  for (const p of PHASES) {
    const n = phases.filter((q) => q === p).length;
    if (n > bestN) {
      best = p;
      bestN = n;
    }
  }
  return best;
}

/** The log-space midpoint of `a` and `b`: their geometric mean, to 4 significant digits (or the nearest integer). */
export function logMidpoint(a: number, b: number, integer = false): number {
  const m = Math.sqrt(a * b);
  return integer ? Math.round(m) : Number(m.toPrecision(4));
}

/**
 * The point between `a` < `b` that a refinement adds: the log midpoint, rounded to an integer when
 * `integer`; with `powersOfTwo` and both ends powers of two, the power of two nearest the log
 * midpoint (the upper on a tie). Null when the rounded point is not strictly between them.
 */
function between(a: number, b: number, integer = false, powersOfTwo = false): number | null {
  const p2 = (v: number) => Number.isInteger(Math.log2(v));
  const m = powersOfTwo && p2(a) && p2(b) ? 2 ** Math.round((Math.log2(a) + Math.log2(b)) / 2) : logMidpoint(a, b, integer);
  return m > a && m < b ? m : null;
}

/** Values of an axis within this factor of each other are one value to refinement (`snap`). */
export const SNAP = 1.001;

/** `v`, or the first of `values` within a factor SNAP of it. */
function snap(v: number, values: readonly number[]): number {
  return values.find((u) => Math.max(u, v) / Math.min(u, v) < SNAP) ?? v;
}

interface Cell {
  x: number;
  y: number;
  /** Phase by seed. */
  seeds: Map<number, Phase>;
}

/** Whether two neighbouring cells disagree: their consensus phases differ, a cell's seeds disagree, or one seed ended in different phases in the two. */
function disagree(a: Cell, b: Cell): boolean {
  const pa = [...a.seeds.values()];
  const pb = [...b.seeds.values()];
  if (consensusPhase(pa) !== consensusPhase(pb)) return true;
  if (new Set(pa).size > 1 || new Set(pb).size > 1) return true;
  for (const [s, p] of a.seeds) if (b.seeds.has(s) && b.seeds.get(s) !== p) return true;
  return false;
}

const pointKey = (p: RefinePoint) => JSON.stringify([p.group, p.x, p.y, p.seed]);

/**
 * The index of the point nearest to (cx, cy) among (lx[k], ly[k]) — Euclidean, in whatever units the
 * caller uses (log10 x, log10 y for phase maps) — the first on a tie; −1 when there are none.
 */
export function nearestIndex(lx: ArrayLike<number>, ly: ArrayLike<number>, cx: number, cy: number): number {
  let best = -1;
  let bestD = Infinity;
  for (let k = 0; k < lx.length; k++) {
    const d = (lx[k]! - cx) ** 2 + (ly[k]! - cy) ** 2;
    if (d < bestD) {
      best = k;
      bestD = d;
    }
  }
  return best;
}

/** Raster of the touching-regions test, per axis. */
const TOUCH_RASTER = 160;

/**
 * Pairs of cells whose nearest-sample regions (Euclidean in log10 x, log10 y, as the phase map draws
 * them) share an edge: a TOUCH_RASTER² raster over the cells' log extent (padded by one raster step),
 * each raster cell given its nearest cell, and every two edge-adjacent raster cells of different
 * nearest cells make a pair. On a regular grid these are the neighbours along x and along y only.
 */
function touchingPairs(cells: Cell[]): Array<[Cell, Cell]> {
  if (cells.length < 2) return [];
  const lx = cells.map((c) => Math.log10(c.x));
  const ly = cells.map((c) => Math.log10(c.y));
  const ext = (l: number[]) => {
    const lo = Math.min(...l);
    const hi = Math.max(...l);
    const w = hi - lo || 1;
    return [lo - w / TOUCH_RASTER, hi + w / TOUCH_RASTER] as const;
  };
  const [x0, x1] = ext(lx);
  const [y0, y1] = ext(ly);
  const n = TOUCH_RASTER;
  const owner = new Int32Array(n * n);
  for (let j = 0; j < n; j++)
    for (let i = 0; i < n; i++) {
      owner[j * n + i] = nearestIndex(lx, ly, x0 + ((i + 0.5) * (x1 - x0)) / n, y0 + ((j + 0.5) * (y1 - y0)) / n);
    }
  const pairs = new Map<string, [Cell, Cell]>();
  const add = (a: number, b: number) => {
    if (a === b) return;
    const [p, q] = a < b ? [a, b] : [b, a];
    pairs.set(`${p},${q}`, [cells[p]!, cells[q]!]);
  };
  for (let j = 0; j < n; j++)
    for (let i = 0; i < n; i++) {
      if (i + 1 < n) add(owner[j * n + i]!, owner[j * n + i + 1]!);
      if (j + 1 < n) add(owner[j * n + i]!, owner[(j + 1) * n + i]!);
    }
  return [...pairs.values()];
}

/**
 * Plans one round of refinement. For each group, its cells' neighbours are the consecutive cells
 * along x at equal y and along y at equal x and, once rounds have added samples off the grid's
 * lines, the samples whose nearest-sample regions touch in log space (the regions the phase map
 * draws). A pair of neighbours further apart than `resolution` gets a new point between them when
 * they disagree (see `disagree`: a boundary). In a round with no such pair, a pair that agrees gets
 * one when one of them lies on a boundary and they are further apart than `explore` (a boundary
 * that bends, a pocket between coarse samples). The point is the log midpoint of
 * the coordinate they differ in (of both, for a touching pair off each other's lines), rounded as
 * the axis asks (`between`) and onto a value of the group (or of its points in `existing`) within a
 * factor SNAP (`snap`), with the seeds of both cells. A point the group has already, or any point in `existing`, is skipped.
 * @returns the proposals, deduplicated, widest gaps first (then by group, axis, x, y, seed), at most `budget`.
 * @throws Error when `resolution` ≤ 1 or `explore` is neither 0 nor > 1.
 */
export function planRefinement(samples: readonly RefineSample[], opts: RefinePlanOptions, existing: readonly RefinePoint[] = []): RefineProposal[] {
  if (!(opts.resolution > 1)) throw new Error(`resolution: got ${opts.resolution}, expected a number > 1`);
  const explore = opts.explore ? opts.explore : Infinity;
  if (!(explore > 1)) throw new Error(`explore: got ${opts.explore}, expected 0 (never) or a number > 1`);
  const taken = new Set([...samples, ...existing].map(pointKey));
  const groups = new Map<string, Map<string, Cell>>();
  for (const s of samples) {
    let cells = groups.get(s.group);
    if (!cells) groups.set(s.group, (cells = new Map()));
    const k = `${s.x}|${s.y}`;
    let c = cells.get(k);
    if (!c) cells.set(k, (c = { x: s.x, y: s.y, seeds: new Map() }));
    c.seeds.set(s.seed, s.phase);
  }
  const found: Array<RefineProposal & { gap: number }> = [];
  const seen = new Set<string>();
  for (const [group, cells] of [...groups].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    // Neighbours: consecutive cells along x at equal y and along y at equal x; and, once rounds have
    // added samples off the grid's lines, samples whose nearest-sample regions touch in log space —
    // the regions the phase map draws — which get the midpoint in both coordinates.
    const pairs: Array<{ a: Cell; b: Cell; axis: 'x' | 'y' | 'xy' }> = [];
    for (const axis of ['x', 'y'] as const) {
      const other = axis === 'x' ? 'y' : 'x';
      const lines = new Map<number, Cell[]>();
      for (const c of cells.values()) lines.set(c[other], [...(lines.get(c[other]) ?? []), c]);
      for (const line of lines.values()) {
        line.sort((a, b) => a[axis] - b[axis]);
        for (let i = 1; i < line.length; i++) pairs.push({ a: line[i - 1]!, b: line[i]!, axis });
      }
    }
    for (const [a, b] of touchingPairs([...cells.values()])) if (a.x !== b.x && a.y !== b.y) pairs.push({ a, b, axis: 'xy' });
    // The group's values on each axis (its samples', its points in `existing`) and those proposed in
    // this round: a midpoint within SNAP of one of them takes it (4-digit rounding of midpoints of
    // rounded values would otherwise add a value 1e-4 apart from one already there, e.g. lr 7.499e-3
    // beside 7.498e-3).
    const mine = [...cells.values(), ...existing.filter((p) => p.group === group)];
    const known = { x: mine.map((c) => c.x), y: mine.map((c) => c.y) };
    const judged = pairs.map((p) => ({ ...p, differ: disagree(p.a, p.b) }));
    const frontier = new Set(judged.filter((p) => p.differ).flatMap((p) => [p.a, p.b]));
    for (const { a, b, axis, differ } of judged) {
      const ratio = (v: 'x' | 'y') => Math.max(a[v], b[v]) / Math.min(a[v], b[v]);
      const gap = axis === 'xy' ? Math.max(ratio('x'), ratio('y')) : ratio(axis);
      if (gap <= opts.resolution) continue;
      if (!differ && !(gap > explore && (frontier.has(a) || frontier.has(b)))) continue;
      const mid = (v: 'x' | 'y') =>
        v === axis || axis === 'xy' ? between(Math.min(a[v], b[v]), Math.max(a[v], b[v]), v === 'x' ? opts.xInteger : opts.yInteger, v === 'x' ? opts.xPowersOfTwo : opts.yPowersOfTwo) : a[v];
      const [mx0, my0] = [mid('x'), mid('y')];
      if (mx0 === null || my0 === null) continue;
      const [mx, my] = [snap(mx0, known.x), snap(my0, known.y)];
      if (cells.has(`${mx}|${my}`)) continue;
      const seeds = [...new Set([...a.seeds.keys(), ...b.seeds.keys()])].sort((p, q) => p - q);
      known.x.push(mx);
      known.y.push(my);
      for (const seed of seeds) {
        const p: RefineProposal = { group, x: mx, y: my, seed, axis, ...(differ ? {} : { explore: true as const }) };
        const k = pointKey(p);
        if (taken.has(k) || seen.has(k)) continue;
        seen.add(k);
        found.push({ ...p, gap });
      }
    }
  }
  found.sort((p, q) => q.gap - p.gap || (p.group < q.group ? -1 : p.group > q.group ? 1 : 0) || (p.axis < q.axis ? -1 : p.axis > q.axis ? 1 : 0) || p.x - q.x || p.y - q.y || p.seed - q.seed);
  // Boundaries first: agreeing neighbours are explored only in a round with no boundary left to split.
  const list = found.some((p) => !p.explore) ? found.filter((p) => !p.explore) : found;
  return list.slice(0, Math.max(0, Math.floor(opts.budget))).map(({ gap: _gap, ...p }) => p);
}

/** One point of a phase map: a group (facet), its coordinates (> 0) and a phase. */
export interface MapPoint {
  group: string;
  x: number;
  y: number;
  phase: Phase;
}

/** How well a map of samples reproduces a reference map (`mapAgreement`). */
export interface MapAgreement {
  /** Reference points compared (those whose group has samples). */
  points: number;
  /** Of them, those whose nearest sample has their phase. */
  agree: number;
  /** The others: the reference point and the nearest sample's phase. */
  misses: Array<MapPoint & { nearest: Phase }>;
}

/**
 * The phase at every reference point read off a map of samples — the phase of the nearest sample of
 * the same group, Euclidean in (log10 x, log10 y) as the report's phase map draws it — against the
 * reference point's own phase. A point equally near several samples (on the edge of their regions:
 * e.g. batch 512 between samples at 256 and 1,024) agrees only when every one of them has its phase,
 * so that the count does not depend on the samples' order. Used to measure refinement against a
 * dense grid: reference = the dense grid's trials, samples = the refined sweep's (consensus per cell).
 * Points of a group without samples are not counted.
 */
export function mapAgreement(reference: readonly MapPoint[], samples: readonly MapPoint[]): MapAgreement {
  const out: MapAgreement = { points: 0, agree: 0, misses: [] };
  const groups = new Map<string, { pts: MapPoint[]; lx: number[]; ly: number[] }>();
  for (const s of samples) {
    let g = groups.get(s.group);
    if (!g) groups.set(s.group, (g = { pts: [], lx: [], ly: [] }));
    g.pts.push(s);
    g.lx.push(Math.log10(s.x));
    g.ly.push(Math.log10(s.y));
  }
  for (const r of reference) {
    const g = groups.get(r.group);
    if (!g) continue;
    const [cx, cy] = [Math.log10(r.x), Math.log10(r.y)];
    const d = g.pts.map((_, k) => (g.lx[k]! - cx) ** 2 + (g.ly[k]! - cy) ** 2);
    const min = Math.min(...d);
    const nearest = g.pts.filter((_, k) => d[k]! <= min + 1e-12);
    out.points++;
    const other = nearest.find((s) => s.phase !== r.phase);
    if (!other) out.agree++;
    else out.misses.push({ ...r, nearest: other.phase });
  }
  return out;
}
