// A two-output toy system with a known solution, written only against the public problem API
// (docs/problems.md, "Systems of equations"): outputs u and v on [-1, 1]², two equations
//   pde:    u_xx + u_yy − q = 0,   q = −2π² sin(πx) sin(πy)
//   couple: u + v = 0
// with u = v = 0 on the boundary. Exact solution: u* = sin(πx) sin(πy), v* = −u*.

const exact = (x, y) => Math.sin(Math.PI * x) * Math.sin(Math.PI * y);

export default {
  name: 'poisson_pair',
  inputs: ['x', 'y'],
  domain: [
    [-1, 1],
    [-1, 1],
  ],
  outputs: ['u', 'v'],
  params: {},
  fields: ['u', 'v', 'u_xx', 'u_yy', 'q'],
  residuals: {
    pde: (f, { ops }) => ops.sub(ops.add(f.u_xx, f.u_yy), f.q),
    couple: (f, { ops }) => ops.add(f.u, f.v),
  },
  source: ([x, y]) => -2 * Math.PI * Math.PI * exact(x, y),
  // One value per output, in `outputs` order.
  solution: ([x, y]) => [exact(x, y), -exact(x, y)],
  conditions: {
    // The box boundary twice: first the targets of u, then those of v (all 0).
    bc: ({ n_boundary, helpers }) => {
      const box = helpers.boxBoundary(n_boundary); // points: a row-major Float64Array [m·2]
      const m = box.values.length;
      const points = new Float64Array(4 * m);
      points.set(box.points);
      points.set(box.points, 2 * m);
      return {
        points,
        values: new Array(2 * m).fill(0),
        output: [...new Array(m).fill('u'), ...new Array(m).fill('v')],
      };
    },
  },
};
