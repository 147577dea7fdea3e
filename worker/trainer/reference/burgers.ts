/**
 * Reference solution of the viscous Burgers problem `burgers1d` (docs/science.md §3):
 *   u_t + u u_x − ν u_xx = 0,  x ∈ [−1, 1], t ≥ 0,  u(x, 0) = −sin(πx),  u(±1, t) = 0,
 * by the Cole–Hopf transform (Basdevant, Deville, Haldenwang, Lacroix, Ouazzani, Peyret, Orlandi,
 * Patera, "Spectral and finite difference solutions of the Burgers equation", Computers & Fluids
 * 14 (1986) 23–41):
 *   u(x,t) = −∫ sin(π(x−η)) f(x−η) e^{−η²/4νt} dη / ∫ f(x−η) e^{−η²/4νt} dη,
 *   f(y) = exp(−cos(πy) / (2πν)),
 * with η = √(4νt)·z and n-point Gauss–Hermite quadrature in z. f reaches e^{1/(2πν)} (e^{50} for
 * ν = 0.01/π), so the sums are formed in log space (log-sum-exp, max factored out).
 */
import { gaussHermite, type GaussHermiteRule } from './gauss-hermite.js';

/** The science.md §3 default viscosity of `burgers1d`, ν = 0.01/π. */
export const BURGERS_NU = 0.01 / Math.PI;
/** Default number of Gauss–Hermite nodes (the README of the public data: 200 nodes → 5e-10). */
export const BURGERS_NODES = 200;

const rules = new Map<number, GaussHermiteRule>();
function rule(nodes: number): GaussHermiteRule {
  let r = rules.get(nodes);
  if (r === undefined) {
    r = gaussHermite(nodes);
    rules.set(nodes, r);
  }
  return r;
}

function checkParams(nu: number, nodes: number): void {
  if (!(Number.isFinite(nu) && nu > 0)) throw new RangeError(`burgers: nu must be finite and > 0, got ${nu}`);
  if (!Number.isInteger(nodes) || nodes < 1) throw new RangeError(`burgers: nodes must be an integer >= 1, got ${nodes}`);
}

/** One point; `scratch` has length ≥ rule size. Assumes validated inputs. */
function burgersAt(x: number, t: number, nu: number, r: GaussHermiteRule, scratch: Float64Array): number {
  if (!Number.isFinite(x) || !Number.isFinite(t)) throw new RangeError(`burgers: non-finite point (x=${x}, t=${t})`);
  if (t < 0) throw new RangeError(`burgers: t must be >= 0, got ${t}`);
  if (t === 0) return -Math.sin(Math.PI * x);
  const c = Math.sqrt(4 * nu * t);
  const k = 1 / (2 * Math.PI * nu);
  const z = r.nodes;
  const lw = r.logWeights;
  const n = z.length;
  let amax = -Infinity;
  for (let i = 0; i < n; i++) {
    const a = lw[i]! - k * Math.cos(Math.PI * (x - c * z[i]!));
    scratch[i] = a;
    if (a > amax) amax = a;
  }
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp(scratch[i]! - amax);
    num += e * Math.sin(Math.PI * (x - c * z[i]!));
    den += e;
  }
  return -num / den;
}

/**
 * Burgers reference u*(x_i, t_j) on a tensor grid, by Cole–Hopf + Gauss–Hermite (docs/science.md §3,
 * `burgers1d`; formula: Basdevant et al. 1986, see the module comment).
 *
 * Accuracy: with the defaults it matches the public benchmark `burgers_shock.mat`
 * (test/fixtures/reference/burgers.json.gz) to ~1e-9 max abs, shock included.
 *
 * @param x spatial points, [nx], dimensionless, normally in [−1, 1] (any real x is accepted: the
 *   formula gives the odd 2-periodic extension).
 * @param t times, [nt], ≥ 0, dimensionless. t = 0 returns the initial condition −sin(πx) exactly.
 * @param nu viscosity ν > 0 (default 0.01/π).
 * @param nodes Gauss–Hermite nodes (default 200). Smaller ν needs more nodes (the integrand's
 *   peaks narrow like √ν).
 * @returns u, [nx·nt] row-major: u[i·nt + j] = u(x_i, t_j).
 * @throws RangeError on t < 0, non-finite x or t, ν ≤ 0, or a non-integer / < 1 node count.
 */
export function burgersReference(x: Float64Array, t: Float64Array, nu = BURGERS_NU, nodes = BURGERS_NODES): Float64Array {
  checkParams(nu, nodes);
  const r = rule(nodes);
  const scratch = new Float64Array(nodes);
  const nx = x.length;
  const nt = t.length;
  const u = new Float64Array(nx * nt);
  for (let i = 0; i < nx; i++) {
    for (let j = 0; j < nt; j++) u[i * nt + j] = burgersAt(x[i]!, t[j]!, nu, r, scratch);
  }
  return u;
}

/**
 * Burgers reference at arbitrary points (Cole–Hopf is pointwise), same formula and accuracy as
 * {@link burgersReference} (docs/science.md §3, `burgers1d`).
 *
 * @param points row-major [n, 2] pairs (x, t), columns in the `input_order` ["x", "t"] of
 *   science.md §7; t ≥ 0.
 * @param n number of points; points.length must be ≥ 2n.
 * @param nu viscosity ν > 0 (default 0.01/π).
 * @param nodes Gauss–Hermite nodes (default 200).
 * @returns u, [n]: u[k] = u(points[2k], points[2k+1]).
 * @throws RangeError as {@link burgersReference}, or when points is shorter than 2n.
 */
export function burgersOnPoints(points: Float64Array, n: number, nu = BURGERS_NU, nodes = BURGERS_NODES): Float64Array {
  checkParams(nu, nodes);
  if (!Number.isInteger(n) || n < 0 || points.length < 2 * n) {
    throw new RangeError(`burgersOnPoints: need an integer n >= 0 with points.length >= 2n (n=${n}, length=${points.length})`);
  }
  const r = rule(nodes);
  const scratch = new Float64Array(nodes);
  const u = new Float64Array(n);
  for (let k = 0; k < n; k++) u[k] = burgersAt(points[2 * k]!, points[2 * k + 1]!, nu, r, scratch);
  return u;
}
