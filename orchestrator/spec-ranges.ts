/**
 * The number arithmetic of ranges and samples in a sweep spec: `linspace`, `logspace` and `geomspace`
 * grid lists (numpy semantics, both ends included), the stable rounding that makes a computed value
 * equal to the same number written by hand, and the seeded draws of a `sample:` block. Validation and
 * error messages live in spec.ts; everything here takes values already checked.
 */

/** The range forms a grid list may be written as, in the order errors list them. */
export const RANGE_KINDS = ['linspace', 'logspace', 'geomspace'] as const;
export type RangeKind = (typeof RANGE_KINDS)[number];

/** The distributions a `sample.params` entry may name, in the order errors list them. */
export const DISTRIBUTIONS = ['uniform', 'loguniform', 'int_uniform', 'int_loguniform', 'choice'] as const;
export type Distribution = (typeof DISTRIBUTIONS)[number];

/** Significant digits computed values are rounded to (range values and drawn values). */
export const STABLE_DIGITS = 12;

/**
 * `x` rounded to STABLE_DIGITS significant digits, so that a computed 0.0010000000000000002 is the
 * 0.001 a person writes (and hashes the same in a trial id). `toPrecision` is exactly specified by
 * ECMAScript, so the result is the same on every Node version and platform. -0 becomes 0.
 */
export function stableNumber(x: number): number {
  const r = Number(x.toPrecision(STABLE_DIGITS));
  return r === 0 ? 0 : r;
}

/**
 * The values of a range, before any rounding, numpy semantics (both ends included; n = 1 gives
 * the start alone):
 * - `linspace: [a, b, n]`: n evenly spaced values from a to b;
 * - `logspace: [a, b, n]`: 10^x for x = linspace(a, b, n): a and b are exponents (`[-4, -1, 4]` →
 *   1e-4, 1e-3, 1e-2, 1e-1);
 * - `geomspace: [a, b, n]`: n values from a to b evenly spaced on a log scale: a and b are the values
 *   themselves (`[1e-4, 1e-1, 4]` → the same four values as the logspace above).
 * The ends are exact (a and b, or 10^a and 10^b). geomspace needs 0 < a (checked by the caller).
 */
export function rangeValues(kind: RangeKind, a: number, b: number, n: number): number[] {
  const lin = (lo: number, hi: number) => Array.from({ length: n }, (_, i) => (i === 0 ? lo : i === n - 1 ? hi : lo + (i * (hi - lo)) / (n - 1)));
  switch (kind) {
    case 'linspace':
      return lin(a, b);
    case 'logspace':
      return lin(a, b).map((x) => 10 ** x);
    case 'geomspace': {
      const vs = lin(Math.log10(a), Math.log10(b)).map((x) => 10 ** x);
      vs[0] = a;
      if (n > 1) vs[n - 1] = b;
      return vs;
    }
  }
}

/**
 * A range's values as they go into trial configs: each rounded to STABLE_DIGITS significant digits,
 * then, for an integer key (`integer`), to the nearest integer (Math.round: a half goes up); equal
 * values kept once, in order.
 */
export function stableRange(kind: RangeKind, a: number, b: number, n: number, integer: boolean): number[] {
  const out: number[] = [];
  const seen = new Set<number>();
  for (const x of rangeValues(kind, a, b, n)) {
    let v = stableNumber(x);
    if (integer) v = Math.round(v) || 0; // || 0: never -0
    if (!seen.has(v)) {
      seen.add(v);
      out.push(v);
    }
  }
  return out;
}

/**
 * mulberry32 (Tommy Ettinger's 32-bit generator): a seeded PRNG of uniform numbers in [0, 1), each a
 * multiple of 2^-32. Only 32-bit integer arithmetic (Math.imul, shifts), so the sequence for a seed
 * is the same on every Node version and platform.
 */
export function mulberry32(seed: number): () => number {
  let s = seed | 0;
  return () => {
    s = (s + 0x6d2b79f5) | 0;
    let x = Math.imul(s ^ (s >>> 15), 1 | s);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

/** One `sample.params` entry, checked: its distribution and its arguments. */
export type SampleParam = { dist: 'uniform' | 'loguniform' | 'int_uniform' | 'int_loguniform'; a: number; b: number } | { dist: 'choice'; values: unknown[] };

/**
 * One value of `p` from a uniform `u` in [0, 1):
 * - `uniform [a, b]`: a + u (b − a);
 * - `loguniform [a, b]`: exp(ln a + u (ln b − ln a)), 0 < a;
 * - `int_uniform [a, b]`: a + floor(u (b − a + 1)): each integer from a to b (both included) alike;
 * - `int_loguniform [a, b]`: floor(exp(ln a + u (ln(b + 1) − ln a))), at most b: integers from a to b
 *   with weights uniform in log(x) (1 ≤ a);
 * - `choice [v0, v1, …]`: v_floor(u · count), each alike.
 * Continuous values are rounded to STABLE_DIGITS significant digits; at an integer key (`integer`)
 * any number drawn is rounded to an integer.
 */
export function drawValue(p: SampleParam, u: number, integer: boolean): unknown {
  let v: number;
  switch (p.dist) {
    case 'choice':
      return structuredClone(p.values[Math.min(p.values.length - 1, Math.floor(u * p.values.length))]);
    case 'uniform':
      v = stableNumber(p.a + u * (p.b - p.a));
      break;
    case 'loguniform':
      v = stableNumber(Math.exp(Math.log(p.a) + u * (Math.log(p.b) - Math.log(p.a))));
      break;
    case 'int_uniform':
      v = Math.min(p.b, p.a + Math.floor(u * (p.b - p.a + 1)));
      break;
    case 'int_loguniform':
      v = Math.min(p.b, Math.floor(stableNumber(Math.exp(Math.log(p.a) + u * (Math.log(p.b + 1) - Math.log(p.a))))));
      break;
  }
  if (integer) v = Math.round(v);
  return v === 0 ? 0 : v;
}

/**
 * `count` points of the sample: one PRNG (mulberry32 seeded with `seed`), drawn point by point and,
 * within a point, param by param in the order given, one uniform number per param.
 */
export function drawSample(params: Array<[string, SampleParam, boolean]>, count: number, seed: number): Array<Record<string, unknown>> {
  const u = mulberry32(seed);
  return Array.from({ length: count }, () => Object.fromEntries(params.map(([path, p, integer]) => [path, drawValue(p, u(), integer)])));
}
