/**
 * Gauss–Hermite quadrature: ∫_{−∞}^{∞} g(x) e^{−x²} dx ≈ Σ_i w_i g(x_i).
 *
 * Used by the Cole–Hopf Burgers reference (docs/science.md §3, `burgers1d`).
 * Method: Golub–Welsch (Golub & Welsch, Math. Comp. 23 (1969) 221–230): the nodes are the
 * eigenvalues of the symmetric tridiagonal Jacobi matrix of the Hermite recurrence (found here by
 * Sturm-sequence bisection, which cannot miss or duplicate a root), polished by Newton's method
 * on the orthonormal Hermite recurrence; weights w_i = 2 / p_n'(x_i)² as in Numerical Recipes
 * `gauher` (Press et al., 3rd ed., §4.6.1). The recurrence is rescaled on the fly so that it never
 * overflows (the orthonormal polynomials reach ~e^{x²/2} at the largest node). NR's own initial
 * guesses for Newton fail at n = 200 (the second root lands next to an extremum of p_n).
 */

/** Nodes and weights of an n-point Gauss–Hermite rule. */
export interface GaussHermiteRule {
  /** Nodes x_i, [n], ascending, exactly symmetric (x_i = −x_{n−1−i}; the middle node of odd n is 0). */
  readonly nodes: Float64Array;
  /** Weights w_i > 0, [n], for the weight function e^{−x²}; Σ w_i = √π. May underflow to 0 for n ≳ 360. */
  readonly weights: Float64Array;
  /** ln w_i, [n]: finite for every n (use these when the weights underflow). */
  readonly logWeights: Float64Array;
}

const PIM4 = Math.pow(Math.PI, -0.25); // π^{−1/4} = ψ̃_0, the orthonormal Hermite polynomial of degree 0
const BIG = 1e150;
const LN_BIG = Math.log(BIG);

/**
 * Evaluates the orthonormal Hermite polynomials p_n(z) and p_{n−1}(z) (orthonormal for the
 * weight e^{−x²}) by p_j = z √(2/j) p_{j−1} − √((j−1)/j) p_{j−2}, p_0 = π^{−1/4}, p_{−1} = 0,
 * rescaled by BIG whenever they grow past it. Returns [p_n, p_{n−1}, lnScale] where the true
 * values are the returned ones times e^{lnScale}.
 */
function hermiteScaled(n: number, z: number): [number, number, number] {
  let p1 = PIM4;
  let p2 = 0;
  let lnScale = 0;
  for (let j = 1; j <= n; j++) {
    const p3 = p2;
    p2 = p1;
    p1 = z * Math.sqrt(2 / j) * p2 - Math.sqrt((j - 1) / j) * p3;
    if (Math.abs(p1) > BIG) {
      p1 /= BIG;
      p2 /= BIG;
      lnScale += LN_BIG;
    }
  }
  return [p1, p2, lnScale];
}

/**
 * n-point Gauss–Hermite rule for the weight e^{−x²} on (−∞, ∞): exact for polynomials of degree
 * ≤ 2n − 1. Accurate to ~1e-15 (nodes) and ~1e-13 relative (weights) for n up to several hundred
 * (tested at n = 200).
 *
 * Golub–Welsch nodes (Sturm bisection on the Jacobi matrix, then Newton on p_n, the orthonormal
 * Hermite polynomial, p_n'(z) = √(2n) p_{n−1}(z)); w_i = 2 / p_n'(x_i)² (Press et al., Numerical
 * Recipes, 3rd ed., §4.6.1). Cost O(n²·60). Docs: docs/science.md §3 (`burgers1d` reference).
 *
 * @param n number of nodes, an integer ≥ 1.
 * @throws RangeError when n is not an integer ≥ 1; Error if the nodes come out not strictly
 *   increasing (a numerical failure; not expected for any n).
 */
export function gaussHermite(n: number): GaussHermiteRule {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`gaussHermite: n must be an integer >= 1, got ${n}`);
  const nodes = new Float64Array(n);
  const logWeights = new Float64Array(n);
  // Jacobi matrix of the Hermite recurrence: zero diagonal, off-diagonal e_k = √(k/2), k = 1..n−1.
  const e2 = new Float64Array(n); // e2[i] = e_i², i = 1..n−1 (e2[0] unused)
  for (let i = 1; i < n; i++) e2[i] = i / 2;
  /** Sturm count: how many eigenvalues are < lam. */
  const countBelow = (lam: number): number => {
    let cnt = 0;
    let q = -lam;
    if (q < 0) cnt++;
    for (let i = 1; i < n; i++) {
      if (q === 0) q = 1e-300;
      q = -lam - e2[i]! / q;
      if (q < 0) cnt++;
    }
    return cnt;
  };
  const bound = 2 * Math.sqrt(n / 2) + 1; // Gershgorin
  for (let k = n >> 1; k < n; k++) {
    // k-th smallest eigenvalue (0-based) by bisection: countBelow(lo) ≤ k < countBelow(hi)
    let lo = 0;
    let hi = bound;
    for (let it = 0; it < 200 && hi - lo > 2 * Number.EPSILON * Math.max(1, Math.abs(hi)); it++) {
      const mid = 0.5 * (lo + hi);
      if (countBelow(mid) > k) hi = mid;
      else lo = mid;
    }
    let z = 0.5 * (lo + hi);
    // Newton polish on p_n (p_n' = √(2n) p_{n−1}) for full relative accuracy; the bisection already
    // brackets the root to ~1 ulp, so a step larger than 1e-8 can only be round-off noise and is refused.
    for (let it = 0; it < 3 && z !== 0; it++) {
      const [p, pm1] = hermiteScaled(n, z);
      const dz = p / (Math.sqrt(2 * n) * pm1);
      if (!Number.isFinite(dz) || Math.abs(dz) > 1e-8 * Math.max(1, Math.abs(z))) break;
      z -= dz;
    }
    if (n % 2 === 1 && k === n >> 1) z = 0; // middle root of an odd rule is exactly 0
    if (n % 2 === 0 && !(z > 0)) throw new Error(`gaussHermite(${n}): root ${k} not positive (${z})`);
    // ln w = ln 2 − 2 ln|p_n'(z)|
    const [, pm1, lnScale] = hermiteScaled(n, z);
    const lw = Math.LN2 - 2 * (Math.log(Math.sqrt(2 * n) * Math.abs(pm1)) + lnScale);
    nodes[k] = z;
    nodes[n - 1 - k] = z === 0 ? 0 : -z;
    logWeights[k] = lw;
    logWeights[n - 1 - k] = lw;
  }
  for (let i = 1; i < n; i++) {
    if (!(nodes[i]! > nodes[i - 1]!)) throw new Error(`gaussHermite(${n}): nodes not strictly increasing at ${i}`);
  }
  const weights = logWeights.map((lw) => Math.exp(lw));
  return { nodes, weights, logWeights };
}
