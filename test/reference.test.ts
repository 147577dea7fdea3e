import test from 'ava';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import { gaussHermite } from '../worker/trainer/reference/gauss-hermite.js';
import { burgersReference, burgersOnPoints } from '../worker/trainer/reference/burgers.js';
import { allenCahnReference, allenCahnOnPoints } from '../worker/trainer/reference/allen-cahn.js';
import { cachedReference, clearReferenceMemo, referenceKeyHash, defaultReferenceCacheDir } from '../worker/trainer/reference/cache.js';

// dist/test/reference.test.js → repository root; the public benchmark solutions are test fixtures in
// the repository (test/fixtures/reference, gzip; source and licence in its README).
const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
const dataDir = path.join(repoRoot, 'test', 'fixtures', 'reference');

interface Bench {
  x: number[];
  t: number[];
  u: number[][];
}
function loadBench(name: string): Bench {
  return JSON.parse(zlib.gunzipSync(fs.readFileSync(path.join(dataDir, `${name}.gz`))).toString('utf8')) as Bench;
}
/** max_{i,j} |got[i·nt + j] − want[i][j]|. */
function maxAbsDiff(got: Float64Array, want: number[][], nt: number): number {
  let m = 0;
  for (let i = 0; i < want.length; i++) for (let j = 0; j < nt; j++) m = Math.max(m, Math.abs(got[i * nt + j]! - want[i]![j]!));
  return m;
}

// ---------------------------------------------------------------- Gauss–Hermite

test('gaussHermite: small rules in closed form', (t) => {
  const r1 = gaussHermite(1);
  t.deepEqual(Array.from(r1.nodes), [0]);
  t.true(Math.abs(r1.weights[0]! - Math.sqrt(Math.PI)) < 1e-15);
  const r2 = gaussHermite(2);
  t.true(Math.abs(r2.nodes[1]! - Math.SQRT1_2) < 1e-15);
  t.true(Math.abs(r2.weights[0]! - Math.sqrt(Math.PI) / 2) < 1e-15);
  const r3 = gaussHermite(3); // nodes 0, ±√(3/2); weights 2√π/3, √π/6
  t.is(r3.nodes[1], 0);
  t.true(Math.abs(r3.nodes[2]! - Math.sqrt(1.5)) < 1e-15);
  t.true(Math.abs(r3.weights[1]! - (2 * Math.sqrt(Math.PI)) / 3) < 1e-15);
  t.true(Math.abs(r3.weights[0]! - Math.sqrt(Math.PI) / 6) < 1e-15);
  t.throws(() => gaussHermite(0), { instanceOf: RangeError });
  t.throws(() => gaussHermite(2.5), { instanceOf: RangeError });
});

test('gaussHermite(200): moments, symmetry and exactness to degree 2n−1', (t) => {
  const n = 200;
  const { nodes: x, weights: w, logWeights: lw } = gaussHermite(n);
  const sqrtPi = Math.sqrt(Math.PI);
  let s0 = 0;
  let s2 = 0;
  for (let i = 0; i < n; i++) {
    s0 += w[i]!;
    s2 += w[i]! * x[i]! * x[i]!;
  }
  t.true(Math.abs(s0 / sqrtPi - 1) < 1e-13, `Σw = ${s0}`);
  t.true(Math.abs(s2 / (sqrtPi / 2) - 1) < 1e-13, `Σw x² = ${s2}`);
  for (let i = 0; i < n; i++) {
    t.is(x[i], -x[n - 1 - i]!);
    t.is(lw[i], lw[n - 1 - i]!);
    if (i > 0) t.true(x[i]! > x[i - 1]!);
  }
  // x^{2n−2} (degree 2n−2; with x^{2n−1} odd and integrated to 0 by the exact symmetry, the rule
  // is exact to degree 2n−1): ∫ x^{2k} e^{−x²} = Γ(k + ½). Summed in log space (Γ(199.5) ~ e^{854}).
  const k = n - 1;
  let lnGamma = 0.5 * Math.log(Math.PI);
  for (let j = 1; j <= k; j++) lnGamma += Math.log(j - 0.5);
  let terms = 0;
  for (let i = 0; i < n; i++) terms += Math.exp(lw[i]! + 2 * k * Math.log(Math.abs(x[i]!)) - lnGamma);
  t.true(Math.abs(terms - 1) < 1e-12, `Σ w x^${2 * k} / Γ(${k}.5) − 1 = ${terms - 1}`);
  // Orthonormality of the orthonormal Hermite polynomials p_a, p_b for a + b ≤ 2n − 1.
  const p: Float64Array[] = [];
  for (let a = 0; a <= n; a++) p.push(new Float64Array(n));
  for (let i = 0; i < n; i++) {
    let p1 = Math.pow(Math.PI, -0.25);
    let p2 = 0;
    p[0]![i] = p1;
    for (let j = 1; j <= n; j++) {
      const p3 = p2;
      p2 = p1;
      p1 = x[i]! * Math.sqrt(2 / j) * p2 - Math.sqrt((j - 1) / j) * p3;
      p[j]![i] = p1;
    }
  }
  let worst = 0;
  for (const [a, b] of [[0, 0], [1, 1], [50, 50], [199, 199], [198, 199], [100, 150], [3, 196], [199, 200], [0, 199]] as const) {
    let s = 0;
    for (let i = 0; i < n; i++) s += w[i]! * p[a]![i]! * p[b]![i]!;
    worst = Math.max(worst, Math.abs(s - (a === b ? 1 : 0)));
  }
  t.true(worst < 1e-12, `orthonormality error ${worst}`);
  t.log(`gaussHermite(200): |Σw/√π − 1| = ${Math.abs(s0 / sqrtPi - 1).toExponential(1)}, x^398 rel err ${Math.abs(terms - 1).toExponential(1)}, orthonormality err ${worst.toExponential(1)}`);
});

// ---------------------------------------------------------------- Burgers

test('burgers: matches the public benchmark (burgers_shock.mat) to 1e-6', (t) => {
  const B = loadBench('burgers.json');
  const x = Float64Array.from(B.x);
  const tt = Float64Array.from(B.t);
  const t0 = performance.now();
  const u = burgersReference(x, tt);
  const ms = performance.now() - t0;
  const err = maxAbsDiff(u, B.u, tt.length);
  t.log(`burgers (256 × 100 grid, 200 Gauss–Hermite nodes): max abs diff vs benchmark ${err.toExponential(2)} in ${ms.toFixed(0)} ms`);
  t.true(err <= 1e-6, `max abs diff ${err}`);
  // t = 0 is the initial condition exactly; the boundary stays at 0.
  for (let i = 0; i < x.length; i++) t.is(u[i * tt.length], -Math.sin(Math.PI * x[i]!));
  for (let j = 0; j < tt.length; j++) t.true(Math.abs(u[j]!) < 1e-12 && Math.abs(u[(x.length - 1) * tt.length + j]!) < 1e-12);
});

test('burgersOnPoints: pointwise = grid; errors', (t) => {
  const pts = Float64Array.from([0.1, 0.5, -0.3, 0.25, 0.0, 0.9, 0.004, 0.7, 0.5, 0]);
  const u = burgersOnPoints(pts, 5);
  for (let k = 0; k < 5; k++) {
    const g = burgersReference(Float64Array.of(pts[2 * k]!), Float64Array.of(pts[2 * k + 1]!));
    t.is(u[k], g[0]);
  }
  t.true(Math.abs(u[2]!) < 1e-12); // x = 0 stays 0 by symmetry
  t.throws(() => burgersReference(Float64Array.of(0), Float64Array.of(-0.1)), { instanceOf: RangeError });
  t.throws(() => burgersOnPoints(pts, 6), { instanceOf: RangeError });
  t.throws(() => burgersReference(Float64Array.of(0), Float64Array.of(0.1), 0), { instanceOf: RangeError });
});

// ---------------------------------------------------------------- Allen–Cahn

test('allenCahn: matches the public benchmark (AC.mat) to 1e-6; lands on the output times', (t) => {
  const A = loadBench('allen_cahn.json');
  const x = Float64Array.from(A.x);
  const tt = Float64Array.from(A.t);
  const t0 = performance.now();
  const u = allenCahnReference(x, tt);
  const ms = performance.now() - t0;
  const err = maxAbsDiff(u, A.u, tt.length);
  t.log(`allen–cahn (512 × 201 grid, 512 modes, ETDRK4 dt ≤ 2.5e-3): max abs diff vs benchmark ${err.toExponential(2)} in ${ms.toFixed(0)} ms`);
  t.true(err <= 1e-6, `max abs diff ${err}`);
  for (let i = 0; i < x.length; i++) t.is(u[i * tt.length], x[i]! * x[i]! * Math.cos(Math.PI * x[i]!));

  // Off the step grid: t = 0.3337 alone or together with other times (different step sizes) agree,
  // and unsorted / repeated times are answered column by column.
  const a = allenCahnReference(x, Float64Array.of(0.3337));
  const b = allenCahnReference(x, Float64Array.of(0.5, 0.3337, 0.1, 0.3337));
  let d = 0;
  for (let i = 0; i < x.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i * 4 + 1]!), Math.abs(b[i * 4 + 1]! - b[i * 4 + 3]!));
  t.true(d < 1e-8, `t = 0.3337 via different step sequences differs by ${d}`);
  const j05 = A.t.findIndex((s) => Math.abs(s - 0.5) < 1e-12);
  let e05 = 0;
  for (let i = 0; i < x.length; i++) e05 = Math.max(e05, Math.abs(b[i * 4]! - A.u[i]![j05]!));
  t.true(e05 <= 1e-6, `t = 0.5 column differs by ${e05}`);
});

test('allenCahnOnPoints: grid points reproduce the grid solve; interpolant between them', (t) => {
  const A = loadBench('allen_cahn.json');
  const x = Float64Array.from(A.x);
  const times = [0, 0.25, 0.63, 1];
  const grid = allenCahnReference(x, Float64Array.from(times));
  const idx = [0, 1, 100, 255, 256, 300, 511];
  const pts: number[] = [];
  for (const i of idx) for (const tm of times) pts.push(x[i]!, tm);
  pts.push(0.123456, 0.63, -0.5 + 2, 1); // off-grid x; x = 1.5 ≡ −0.5 (periodic)
  const n = pts.length / 2;
  const u = allenCahnOnPoints(Float64Array.from(pts), n);
  let d = 0;
  let k = 0;
  for (const i of idx) for (let j = 0; j < times.length; j++) d = Math.max(d, Math.abs(u[k++]! - grid[i * times.length + j]!));
  t.true(d < 1e-12, `onPoints vs grid ${d}`);
  // off-grid x: a smooth late-time profile, bracketed by its neighbours' spread
  const ref = allenCahnReference(Float64Array.of(0.123456, -0.5), Float64Array.of(0.63, 1));
  t.true(Math.abs(u[n - 2]! - ref[0]!) < 1e-12);
  t.true(Math.abs(u[n - 1]! - ref[3]!) < 1e-12);
  const i0 = 256 + Math.floor(0.123456 * 256); // x grid neighbours of 0.123456
  const lo = Math.min(grid[i0 * 4 + 2]!, grid[(i0 + 1) * 4 + 2]!);
  const hi = Math.max(grid[i0 * 4 + 2]!, grid[(i0 + 1) * 4 + 2]!);
  t.true(u[n - 2]! >= lo - 1e-3 && u[n - 2]! <= hi + 1e-3);
  const iHalf = 128; // x = −0.5 is a grid point
  t.true(Math.abs(u[n - 1]! - grid[iHalf * 4 + 3]!) < 1e-12);
  t.throws(() => allenCahnOnPoints(Float64Array.of(0, -1), 1), { instanceOf: RangeError });
  t.throws(() => allenCahnReference(x, Float64Array.of(0.1), 1e-4, { modes: 500 }), { instanceOf: RangeError });
});

// ---------------------------------------------------------------- cache

test('cachedReference: computes once per key (memory and disk)', (t) => {
  clearReferenceMemo();
  let calls = 0;
  const grid = Float64Array.of(0, 0.5, 1);
  const compute = (): Float64Array => {
    calls++;
    return Float64Array.of(1, 2, 3);
  };
  const key = { problem: 'test-only', params: { nu: 0.1, nodes: 200 }, x: grid };
  const a = cachedReference(key, compute);
  const b = cachedReference({ x: Float64Array.of(0, 0.5, 1), params: { nodes: 200, nu: 0.1 }, problem: 'test-only' }, compute);
  t.is(calls, 1, 'second call with an equal key must not recompute');
  t.deepEqual(Array.from(b), [1, 2, 3]);
  a[0] = 99; // callers get copies
  t.is(cachedReference(key, compute)[0], 1);
  cachedReference({ ...key, x: Float64Array.of(0, 0.5, 0.9) }, compute);
  t.is(calls, 2, 'a different grid is a different key');
  t.not(referenceKeyHash({ x: Float64Array.of(1) }), referenceKeyHash({ x: Float32Array.of(1) }));

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'phasemap-ref-'));
  try {
    const dkey = { problem: 'test-only-disk', n: 3 };
    cachedReference(dkey, compute, { dir });
    t.is(calls, 3);
    t.true(fs.existsSync(path.join(dir, `${referenceKeyHash(dkey)}.f64`)));
    clearReferenceMemo();
    const c = cachedReference(dkey, compute, { dir });
    t.is(calls, 3, 'a fresh process (memo cleared) reads the disk cache');
    t.deepEqual(Array.from(c), [1, 2, 3]);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  t.is(defaultReferenceCacheDir({ PHASEMAP_CACHE: '/tmp/pm' }), path.join('/tmp/pm', 'reference'));
});
