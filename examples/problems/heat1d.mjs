// A worked example of a problem module (docs/problems.md): the heat equation with a source and a
// parameter, written against the public problem API only.
//
//   u_t − κ u_xx = q(x, t) on x ∈ [0, 1], t ∈ [0, 1],  u(0, t) = u(1, t) = 0,  u(x, 0) = sin(π x)
//   with the exact solution u* = e^{−t} sin(π x), hence q = (κ π² − 1) u*.
//
// κ (kappa) is a declared parameter: sweepable from the grid as `problem.kappa`.
import { sinPi } from './util/trig.mjs';

const exact = (x, t) => Math.exp(-t) * sinPi(x);

export default {
  name: 'heat1d_source',
  inputs: ['x', 't'],
  domain: [
    [0, 1],
    [0, 1],
  ],
  outputs: ['u'],
  params: { kappa: { default: 0.5, minimum: 0, maximum: 10, description: 'diffusivity κ in u_t − κ u_xx = q' } },
  fields: ['u_t', 'u_xx', 'q'],
  residuals: {
    heat: (f, { p, ops }) => ops.sub(ops.sub(f.u_t, ops.mul(f.u_xx, p.kappa)), f.q),
  },
  source: ([x, t], p) => (p.kappa * Math.PI * Math.PI - 1) * exact(x, t),
  solution: ([x, t]) => exact(x, t),
  conditions: {
    // u = 0 at x = 0 and x = 1, n_boundary times each
    bc: ({ n_boundary, helpers }) => helpers.axisEnds('x', n_boundary),
    // u(x, 0) = sin(π x) at n_initial points
    ic: ({ n_initial, helpers }) => {
      const xs = helpers.linspace(0, 1, n_initial);
      return { points: xs.map((x) => [x, 0]), values: xs.map((x) => sinPi(x)) };
    },
  },
};
