// poisson2d as a user problem module, written only against the public problem API (docs/problems.md):
//   u_xx + u_yy = q on [-1, 1]², u = 0 on the boundary, u* = sin(πx) sin(πy), q = −2π² u*.
// It computes exactly what the built-in poisson2d computes, so its trials' rows and checkpoints are
// bit-identical to the built-in's for the same config (test/problem-modules.test.ts); only the trial
// ids differ (the config names this module and its content hash).

/** u*(x, y) */
const exact = (x, y) => Math.sin(Math.PI * x) * Math.sin(Math.PI * y);

export default {
  name: 'poisson2d_module',
  inputs: ['x', 'y'],
  domain: [
    [-1, 1],
    [-1, 1],
  ],
  outputs: ['u'],
  params: {},
  // The fields the residual reads: diagonal second derivatives of u and the source term q.
  fields: ['u_xx', 'u_yy', 'q'],
  residuals: {
    pde: (f, { ops }) => ops.sub(ops.add(f.u_xx, f.u_yy), f.q),
  },
  // q at one point, in float64 (evaluated once per collocation point at setup).
  source: ([x, y]) => -2 * Math.PI * Math.PI * exact(x, y),
  solution: ([x, y]) => exact(x, y),
  conditions: {
    // n_boundary evenly spaced points on each of the 4 edges, u = 0.
    bc: ({ n_boundary, helpers }) => helpers.boxBoundary(n_boundary),
  },
};
