/**
 * Point sets on box domains: evenly spaced points, the edges of a 2-D box, the two ends of one input of
 * a 2-D domain, tensor-product grids. Shared by the trainer and the problem API (problem-api.ts).
 * Point arrays are row-major float64 [n, d].
 */
import type { ConditionKind, ConditionSet } from './problems.js';

/** `n` evenly spaced points from lo to hi inclusive (the midpoint if n = 1). */
export function linspace(lo: number, hi: number, n: number): Float64Array {
  const out = new Float64Array(n);
  if (n === 1) out[0] = (lo + hi) / 2;
  else for (let i = 0; i < n; i++) out[i] = lo + ((hi - lo) * i) / (n - 1);
  return out;
}

/**
 * Boundary of the box [x0,x1]×[y0,y1]: `perEdge` evenly spaced points (linspace, corners included,
 * so each corner appears on two edges) on each of the 4 edges, in the order bottom (y = y0), top,
 * left (x = x0), right; 4·perEdge points, targets 0.
 */
export function boxBoundary2d(domain: ReadonlyArray<readonly [number, number]>, perEdge: number): ConditionSet {
  const [[x0, x1], [y0, y1]] = domain as [[number, number], [number, number]];
  const xs = linspace(x0, x1, perEdge);
  const ys = linspace(y0, y1, perEdge);
  const m = 4 * perEdge;
  const points = new Float64Array(m * 2);
  let j = 0;
  const put = (x: number, y: number) => {
    points[2 * j] = x;
    points[2 * j + 1] = y;
    j++;
  };
  for (const x of xs) put(x, y0);
  for (const x of xs) put(x, y1);
  for (const y of ys) put(x0, y);
  for (const y of ys) put(x1, y);
  return { points, values: new Float64Array(m), count: m };
}

/** Tensor-product grid of `perAxis` points per axis (first input varies slowest), [perAxis^d, d]. */
export function tensorGrid(domain: ReadonlyArray<readonly [number, number]>, perAxis: number): { points: Float64Array; count: number } {
  const d = domain.length;
  const axes = domain.map(([lo, hi]) => linspace(lo, hi, perAxis));
  const count = perAxis ** d;
  const points = new Float64Array(count * d);
  for (let i = 0; i < count; i++) {
    let rem = i;
    for (let j = d - 1; j >= 0; j--) {
      points[i * d + j] = axes[j]![rem % perAxis]!;
      rem = Math.floor(rem / perAxis);
    }
  }
  return { points, count };
}

/**
 * Dirichlet boundary of the 1-D + time domain [x0,x1]×[t0,t1]: `perEdge` evenly spaced times
 * (linspace, ends included) on x = x0, then the same times on x = x1; 2·perEdge points, targets 0.
 * With `kind` = 'periodic' the same points form the pairs (x0, t_j) ↔ (x1, t_j) of a periodic set.
 */
export function xtBoundary(domain: ReadonlyArray<readonly [number, number]>, perEdge: number, kind: ConditionKind = 'value'): ConditionSet {
  const [[x0, x1], [t0, t1]] = domain as [[number, number], [number, number]];
  const ts = linspace(t0, t1, perEdge);
  const m = 2 * perEdge;
  const points = new Float64Array(m * 2);
  for (let j = 0; j < perEdge; j++) {
    points[2 * j] = x0;
    points[2 * j + 1] = ts[j]!;
    points[2 * (perEdge + j)] = x1;
    points[2 * (perEdge + j) + 1] = ts[j]!;
  }
  return kind === 'periodic' ? { points, values: new Float64Array(m), count: m, kind, axis: 0 } : { points, values: new Float64Array(m), count: m };
}
