/**
 * Reference solvers of the time-dependent problems (docs/science.md §3): Burgers by Cole–Hopf +
 * Gauss–Hermite, Allen–Cahn by Fourier pseudo-spectral + ETDRK4, and a compute-once cache.
 */
export { gaussHermite, type GaussHermiteRule } from './gauss-hermite.js';
export { burgersReference, burgersOnPoints, BURGERS_NU, BURGERS_NODES } from './burgers.js';
export {
  allenCahnReference,
  allenCahnOnPoints,
  ALLEN_CAHN_D,
  ALLEN_CAHN_MODES,
  ALLEN_CAHN_DT,
  type AllenCahnOptions,
} from './allen-cahn.js';
export { cachedReference, clearReferenceMemo, referenceKeyHash, defaultReferenceCacheDir } from './cache.js';
