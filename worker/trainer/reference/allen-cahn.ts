/**
 * Reference solution of the Allen–Cahn problem `allen_cahn1d` (docs/science.md §3):
 *   u_t − d u_xx + 5u³ − 5u = 0,  x ∈ [−1, 1) periodic,  u(x, 0) = x² cos(πx),
 * by Fourier pseudo-spectral collocation in x and ETDRK4 in time (Cox & Matthews, J. Comput. Phys.
 * 176 (2002) 430–455), with the φ-function coefficients evaluated by the contour-integral mean of
 * Kassam & Trefethen, "Fourth-order time-stepping for stiff PDEs", SIAM J. Sci. Comput. 26 (2005)
 * 1214–1233 (their `kursiv.m`). Split: linear part L = d ∂_xx + 5 (diagonal in Fourier space,
 * L_m = −d (πm)² + 5 on the 2-periodic domain), nonlinear part N(u) = −5u³ (pseudo-spectral, no
 * dealiasing). FFTs: the `fft.js` package.
 *
 * Accuracy vs the public benchmark `AC.mat` (test/fixtures/reference/allen_cahn.json.gz, 512 × 201
 * grid; values rounded to 9 digits, i.e. a ~5e-10 floor), 512 modes, max abs difference:
 *   dt = 1e-3: 5.3e-10 (rounding floor) · 2.5e-3 (default): 1.2e-9 · 5e-3: 1.3e-8 ·
 *   1e-2: 2.0e-7 · 1.5e-2: ~9e-7 (largest step that still meets 1e-6) · 2e-2: 3.5e-6 · 5e-2: 1.8e-4.
 * (Steps > 5e-3 measured on every 20th output time; on the full grid the output spacing 5e-3
 * caps the step anyway.) ETDRK4 is 4th order: the error falls 16× per halving of dt.
 *
 * Discretisation caveat: the reference is the benchmark's discretisation, i.e. the 512-point
 * grid sampling of the initial condition, whose periodic extension has a kink at x = ±1
 * (u0' jumps from −2 to +2). Against a 2048-mode solution the 512-mode one differs by up to
 * 8e-4 (t = 0.01), 1.7e-4 (t = 0.1), 2e-5 (t = 0.25), ≤ 1.4e-6 (t ≥ 0.5), near x = ±1 up to t ≈ 0.75 (RMS
 * over x ~20× smaller), converging like modes⁻². Pass `modes` to get closer to the continuous PDE.
 */
import FFT from 'fft.js';

/** The science.md §3 default diffusion coefficient of `allen_cahn1d`, d = 1e-4. */
export const ALLEN_CAHN_D = 1e-4;
/** Default number of Fourier modes = solver grid points (that of the public benchmark data). */
export const ALLEN_CAHN_MODES = 512;
/**
 * Default largest time step, 2.5e-3: 1.2e-9 max abs vs the public benchmark (~800× below the
 * 1e-6 target; the largest step meeting 1e-6 is ≈ 1.5e-2, see the module comment), at ~0.1 ms
 * per step (400 steps per unit of time). The README's dt = 1e-5 is far smaller than needed.
 */
export const ALLEN_CAHN_DT = 2.5e-3;
/**
 * Contour points on the upper half of the unit circle: by conjugate symmetry (L is real) the real
 * part of their mean equals the mean over M = 2·16 = 32 points on the full circle, the choice of
 * Kassam & Trefethen's `kursiv.m`. (Measured: 32 upper-half points change the solution by < 4e-14.)
 */
const CONTOUR_POINTS = 16;
/** At most this many step sizes keep their ETDRK4 coefficients (6 × modes doubles each). */
const COEF_CACHE_SIZE = 4;

/** Options of the Allen–Cahn solver. */
export interface AllenCahnOptions {
  /** Fourier modes = solver grid points x_j = −1 + 2j/modes; a power of two ≥ 4 (default 512). */
  modes?: number;
  /** Largest time step (default {@link ALLEN_CAHN_DT}); each interval between output times is
   *  split into ⌈Δ/dt⌉ equal steps so that the solver lands exactly on every output time. */
  dt?: number;
}

interface EtdCoefs {
  E: Float64Array;
  E2: Float64Array;
  Q: Float64Array;
  f1: Float64Array;
  f2: Float64Array;
  f3: Float64Array;
}

/** Contour points r_j = e^{iπ(j+½)/M} on the upper half of the unit circle, with e^{r_j}, e^{r_j/2}. */
const CONTOUR = (() => {
  const M = CONTOUR_POINTS;
  const rr = new Float64Array(M);
  const ri = new Float64Array(M);
  const er = new Float64Array(M);
  const ei = new Float64Array(M);
  const hr = new Float64Array(M);
  const hi = new Float64Array(M);
  for (let j = 0; j < M; j++) {
    const th = (Math.PI * (j + 0.5)) / M;
    rr[j] = Math.cos(th);
    ri[j] = Math.sin(th);
    const ea = Math.exp(rr[j]!);
    er[j] = ea * Math.cos(ri[j]!);
    ei[j] = ea * Math.sin(ri[j]!);
    const eh = Math.exp(rr[j]! / 2);
    hr[j] = eh * Math.cos(ri[j]! / 2);
    hi[j] = eh * Math.sin(ri[j]! / 2);
  }
  return { rr, ri, er, ei, hr, hi };
})();

/**
 * ETDRK4 coefficients for one step size h, indexed by the FFT index m ∈ [0, N): E = e^{hL},
 * E2 = e^{hL/2}, and Q, f1, f2, f3 of Kassam & Trefethen (2005) eq. (2.5)/(2.6), each the real part
 * of the mean over the contour points z = hL + r_j (conjugate symmetry: L is real), times h.
 */
function etdCoefs(h: number, L: Float64Array, N: number): EtdCoefs {
  const half = N >> 1;
  const uE = new Float64Array(N);
  const uE2 = new Float64Array(N);
  const uQ = new Float64Array(N);
  const uf1 = new Float64Array(N);
  const uf2 = new Float64Array(N);
  const uf3 = new Float64Array(N);
  const M = CONTOUR_POINTS;
  const { rr, ri, er: er0, ei: ei0, hr: hr0, hi: hi0 } = CONTOUR;
  for (let a = 0; a <= half; a++) {
    const hL = h * L[a]!;
    const E = Math.exp(hL);
    const E2 = Math.exp(hL / 2);
    uE[a] = E;
    uE2[a] = E2;
    let sQ = 0;
    let s1 = 0;
    let s2 = 0;
    let s3 = 0;
    for (let j = 0; j < M; j++) {
      const zr = hL + rr[j]!;
      const zi = ri[j]!;
      // e^z = e^{hL} e^{r_j}, e^{z/2} = e^{hL/2} e^{r_j/2}
      const er = E * er0[j]!;
      const ei = E * ei0[j]!;
      const ehr = E2 * hr0[j]!;
      const ehi = E2 * hi0[j]!;
      // z², 1/z, 1/z³
      const z2r = zr * zr - zi * zi;
      const z2i = 2 * zr * zi;
      const inv = 1 / (zr * zr + zi * zi);
      const wr = zr * inv;
      const wi = -zi * inv;
      const w2r = wr * wr - wi * wi;
      const w2i = 2 * wr * wi;
      const w3r = w2r * wr - w2i * wi;
      const w3i = w2r * wi + w2i * wr;
      // Q: (e^{z/2} − 1) / z
      sQ += (ehr - 1) * wr - ehi * wi;
      // f1: (−4 − z + e^z (4 − 3z + z²)) / z³
      let pr = 4 - 3 * zr + z2r;
      let pi = -3 * zi + z2i;
      let nr = -4 - zr + (er * pr - ei * pi);
      let ni = -zi + (er * pi + ei * pr);
      s1 += nr * w3r - ni * w3i;
      // f2: (2 + z + e^z (z − 2)) / z³
      pr = zr - 2;
      pi = zi;
      nr = 2 + zr + (er * pr - ei * pi);
      ni = zi + (er * pi + ei * pr);
      s2 += nr * w3r - ni * w3i;
      // f3: (−4 − 3z − z² + e^z (4 − z)) / z³
      pr = 4 - zr;
      pi = -zi;
      nr = -4 - 3 * zr - z2r + (er * pr - ei * pi);
      ni = -3 * zi - z2i + (er * pi + ei * pr);
      s3 += nr * w3r - ni * w3i;
    }
    uQ[a] = (h * sQ) / M;
    uf1[a] = (h * s1) / M;
    uf2[a] = (h * s2) / M;
    uf3[a] = (h * s3) / M;
  }
  // FFT index m > N/2 holds wavenumber −(N − m): same |k|, same coefficients.
  for (let m = half + 1; m < N; m++) {
    uE[m] = uE[N - m]!;
    uE2[m] = uE2[N - m]!;
    uQ[m] = uQ[N - m]!;
    uf1[m] = uf1[N - m]!;
    uf2[m] = uf2[N - m]!;
    uf3[m] = uf3[N - m]!;
  }
  return { E: uE, E2: uE2, Q: uQ, f1: uf1, f2: uf2, f3: uf3 };
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n >= 4 && (n & (n - 1)) === 0;
}

function resolveOptions(d: number, opts: AllenCahnOptions | undefined): { N: number; dt: number } {
  const N = opts?.modes ?? ALLEN_CAHN_MODES;
  const dt = opts?.dt ?? ALLEN_CAHN_DT;
  if (!(Number.isFinite(d) && d >= 0)) throw new RangeError(`allenCahn: d must be finite and >= 0, got ${d}`);
  if (!isPowerOfTwo(N)) throw new RangeError(`allenCahn: modes must be a power of two >= 4, got ${N}`);
  if (!(Number.isFinite(dt) && dt > 0)) throw new RangeError(`allenCahn: dt must be finite and > 0, got ${dt}`);
  return { N, dt };
}

/**
 * Integrates from t = 0 and calls `onOutput(k, spec, u)` at each of the sorted, distinct times
 * `times[k]` (≥ 0): `spec` is the unnormalised DFT of the grid values (interleaved re/im, [2N]),
 * `u` the grid values ([N]); both are reused buffers, valid only during the call.
 */
function integrate(
  times: Float64Array,
  d: number,
  N: number,
  dt: number,
  onOutput: (k: number, spec: Float64Array, u: Float64Array) => void,
): void {
  const fft = new FFT(N);
  const half = N >> 1;
  const L = new Float64Array(half + 1);
  for (let a = 0; a <= half; a++) L[a] = -d * (Math.PI * a) ** 2 + 5;
  // Small cache: with many distinct output times almost every interval has its own step size.
  const coefCache = new Map<number, EtdCoefs>();
  const coefsFor = (h: number): EtdCoefs => {
    let c = coefCache.get(h);
    if (c === undefined) {
      c = etdCoefs(h, L, N);
      if (coefCache.size >= COEF_CACHE_SIZE) coefCache.delete(coefCache.keys().next().value!);
      coefCache.set(h, c);
    }
    return c;
  };

  const C = 2 * N;
  const v = new Float64Array(C);
  const a = new Float64Array(C);
  const b = new Float64Array(C);
  const c = new Float64Array(C);
  const Nv = new Float64Array(C);
  const Na = new Float64Array(C);
  const Nb = new Float64Array(C);
  const Nc = new Float64Array(C);
  const work = new Float64Array(C);
  const real = new Float64Array(N);
  const u = new Float64Array(N);

  /** out ← DFT(−5 (IDFT(w))³). */
  const nonlinear = (w: Float64Array, out: Float64Array): void => {
    fft.inverseTransform(work, w);
    for (let j = 0; j < N; j++) {
      const uj = work[2 * j]!;
      real[j] = -5 * uj * uj * uj;
    }
    fft.realTransform(out, real);
    fft.completeSpectrum(out);
  };
  const step = (k: EtdCoefs): void => {
    const { E, E2, Q, f1, f2, f3 } = k;
    nonlinear(v, Nv);
    for (let i = 0; i < C; i++) a[i] = E2[i >> 1]! * v[i]! + Q[i >> 1]! * Nv[i]!;
    nonlinear(a, Na);
    for (let i = 0; i < C; i++) b[i] = E2[i >> 1]! * v[i]! + Q[i >> 1]! * Na[i]!;
    nonlinear(b, Nb);
    for (let i = 0; i < C; i++) c[i] = E2[i >> 1]! * a[i]! + Q[i >> 1]! * (2 * Nb[i]! - Nv[i]!);
    nonlinear(c, Nc);
    for (let i = 0; i < C; i++) {
      const m = i >> 1;
      v[i] = E[m]! * v[i]! + f1[m]! * Nv[i]! + 2 * f2[m]! * (Na[i]! + Nb[i]!) + f3[m]! * Nc[i]!;
    }
  };

  // Initial condition on the grid x_j = −1 + 2j/N.
  for (let j = 0; j < N; j++) {
    const x = -1 + (2 * j) / N;
    u[j] = x * x * Math.cos(Math.PI * x);
  }
  fft.realTransform(v, u);
  fft.completeSpectrum(v);

  let tNow = 0;
  for (let k = 0; k < times.length; k++) {
    const tk = times[k]!;
    const span = tk - tNow;
    if (span > 0) {
      const nsub = Math.max(1, Math.ceil((span / dt) * (1 - 1e-12)));
      const coefs = coefsFor(span / nsub);
      for (let s = 0; s < nsub; s++) step(coefs);
      fft.inverseTransform(work, v);
      for (let j = 0; j < N; j++) u[j] = work[2 * j]!;
      tNow = tk;
    }
    onOutput(k, v, u);
  }
}

/** Real trigonometric interpolant of the grid data with DFT `spec` (unnormalised, [2N]) at x. */
function fourierInterpolate(spec: Float64Array, N: number, x: number): number {
  const half = N >> 1;
  const th = Math.PI * (x + 1);
  const cr = Math.cos(th);
  const ci = Math.sin(th);
  let pr = 1;
  let pi = 0;
  let s = 0.5 * spec[0]!;
  for (let m = 1; m < half; m++) {
    if ((m & 31) === 0) {
      pr = Math.cos(m * th);
      pi = Math.sin(m * th);
    } else {
      const r = pr * cr - pi * ci;
      pi = pr * ci + pi * cr;
      pr = r;
    }
    s += spec[2 * m]! * pr - spec[2 * m + 1]! * pi;
  }
  // Nyquist mode: real coefficient times cos(N/2 · θ), counted once.
  s += 0.5 * spec[2 * half]! * Math.cos(half * th);
  return (2 * s) / N;
}

/** The initial condition x² cos(πx), with x first wrapped 2-periodically into [−1, 1). */
function initialCondition(x: number): number {
  const w = x - 2 * Math.floor((x + 1) / 2);
  return w * w * Math.cos(Math.PI * w);
}

/** Sorted distinct values of ts (validated finite and ≥ 0) and, per input, its index among them. */
function uniqueTimes(ts: ArrayLike<number>, what: string): { times: Float64Array; index: Int32Array } {
  const n = ts.length;
  for (let i = 0; i < n; i++) {
    const t = ts[i]!;
    if (!(Number.isFinite(t) && t >= 0)) throw new RangeError(`${what}: times must be finite and >= 0, got ${t}`);
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((p, q) => ts[p]! - ts[q]!);
  const index = new Int32Array(n);
  const uniq: number[] = [];
  for (const i of order) {
    const t = ts[i]!;
    if (uniq.length === 0 || uniq[uniq.length - 1] !== t) uniq.push(t);
    index[i] = uniq.length - 1;
  }
  return { times: Float64Array.from(uniq), index };
}

/**
 * Allen–Cahn reference u*(x_i, t_j) (docs/science.md §3, `allen_cahn1d`; Fourier pseudo-spectral +
 * ETDRK4 of Kassam & Trefethen 2005, see the module comment).
 *
 * The solver runs on its own grid x_j = −1 + 2j/modes and lands exactly on every requested time.
 * If `x` is that grid (length = modes, x_i = −1 + 2i/modes within 1e-12), the grid values are
 * returned; otherwise the solution's Fourier interpolant is evaluated at x (spectrally accurate;
 * any real x, read 2-periodically). t = 0 returns the initial condition x² cos(πx) exactly.
 *
 * Accuracy: with the defaults (512 modes, dt = 2.5e-3) 1.2e-9 max abs vs the public benchmark
 * `AC.mat` (test/fixtures/reference/allen_cahn.json.gz); see the module comment for the dt study
 * and the distance to the continuous PDE. Cost: ~0.1 ms per step (4 complex FFT pairs of size
 * 512), ⌈Δ/dt⌉ steps per interval between distinct output times, plus ~0.1 ms of ETDRK4
 * coefficients per distinct step size: ~0.1–0.2 s for the benchmark's 201 times.
 *
 * @param x spatial points, [nx], dimensionless, normally the periodic grid on [−1, 1).
 * @param tOut output times, [nt], finite, ≥ 0, any order, repeats allowed.
 * @param d diffusion coefficient ≥ 0 (default 1e-4).
 * @param opts `modes` (power of two ≥ 4, default 512), `dt` (largest step, default 2.5e-3).
 * @returns u, [nx·nt] row-major: u[i·nt + j] = u(x_i, t_j).
 * @throws RangeError on negative / non-finite times or x, d < 0, modes not a power of two ≥ 4, dt ≤ 0.
 */
export function allenCahnReference(
  x: Float64Array,
  tOut: Float64Array,
  d = ALLEN_CAHN_D,
  opts?: AllenCahnOptions,
): Float64Array {
  const { N, dt } = resolveOptions(d, opts);
  const nx = x.length;
  const nt = tOut.length;
  for (let i = 0; i < nx; i++) {
    if (!Number.isFinite(x[i]!)) throw new RangeError(`allenCahnReference: non-finite x[${i}] = ${x[i]}`);
  }
  let onGrid = nx === N;
  for (let i = 0; onGrid && i < nx; i++) onGrid = Math.abs(x[i]! - (-1 + (2 * i) / N)) <= 1e-12;
  const { times, index } = uniqueTimes(tOut, 'allenCahnReference');
  const out = new Float64Array(nx * nt);
  // columns j of the output that belong to each distinct time
  const cols: number[][] = Array.from({ length: times.length }, () => []);
  for (let j = 0; j < nt; j++) cols[index[j]!]!.push(j);
  const col = new Float64Array(nx);
  integrate(times, d, N, dt, (k, spec, u) => {
    if (onGrid) col.set(u);
    else if (times[k] === 0) for (let i = 0; i < nx; i++) col[i] = initialCondition(x[i]!);
    else for (let i = 0; i < nx; i++) col[i] = fourierInterpolate(spec, N, x[i]!);
    for (const j of cols[k]!) for (let i = 0; i < nx; i++) out[i * nt + j] = col[i]!;
  });
  return out;
}

/**
 * Allen–Cahn reference at arbitrary points (x, t) (docs/science.md §3, `allen_cahn1d`; same
 * solver as {@link allenCahnReference}). One solve on the spectral grid that outputs at the union
 * of the distinct requested times (landing on each exactly), then the exact Fourier interpolant
 * in x. So there is no interpolation error in t, and at grid x the values equal
 * {@link allenCahnReference}'s (1.2e-9 vs the benchmark at the defaults). Between grid points the
 * Fourier interpolant of the 512-mode solution is used: it agrees with a 2048-mode solve to ~1e-3
 * max abs near x = ±1 at early times (the initial kink, see the module comment), to ~1e-6 for t ≥ 0.5.
 * Points at t = 0 get the initial condition exactly. Cost: the solve plus one extra step and one
 * coefficient set per distinct time (~0.2 ms each: 25,600 distinct times ≈ 5 s on a loaded
 * 2-core machine) plus O(modes) per point.
 *
 * @param points row-major [n, 2] pairs (x, t), columns in the `input_order` ["x", "t"] of
 *   science.md §7; x read 2-periodically, t ≥ 0.
 * @param n number of points; points.length must be ≥ 2n.
 * @param d diffusion coefficient ≥ 0 (default 1e-4).
 * @param opts `modes`, `dt` as in {@link allenCahnReference}.
 * @returns u, [n]: u[k] = u(points[2k], points[2k+1]).
 * @throws RangeError as {@link allenCahnReference}, or when points is shorter than 2n.
 */
export function allenCahnOnPoints(points: Float64Array, n: number, d = ALLEN_CAHN_D, opts?: AllenCahnOptions): Float64Array {
  const { N, dt } = resolveOptions(d, opts);
  if (!Number.isInteger(n) || n < 0 || points.length < 2 * n) {
    throw new RangeError(`allenCahnOnPoints: need an integer n >= 0 with points.length >= 2n (n=${n}, length=${points.length})`);
  }
  const ts = new Float64Array(n);
  for (let k = 0; k < n; k++) {
    const xk = points[2 * k]!;
    if (!Number.isFinite(xk)) throw new RangeError(`allenCahnOnPoints: non-finite x at point ${k}`);
    ts[k] = points[2 * k + 1]!;
  }
  const { times, index } = uniqueTimes(ts, 'allenCahnOnPoints');
  const groups: number[][] = Array.from({ length: times.length }, () => []);
  for (let k = 0; k < n; k++) groups[index[k]!]!.push(k);
  const out = new Float64Array(n);
  integrate(times, d, N, dt, (k, spec) => {
    const t0 = times[k] === 0;
    for (const p of groups[k]!) out[p] = t0 ? initialCondition(points[2 * p]!) : fourierInterpolate(spec, N, points[2 * p]!);
  });
  return out;
}
