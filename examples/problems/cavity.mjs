// The lid-driven cavity (science.md §3 "+cavity"), written only against the public problem API
// (docs/problems.md, "The lid-driven cavity"): steady incompressible Navier–Stokes in primitive
// variables on the unit square [0, 1]², outputs u, v (velocity) and p (pressure),
//   momentum_x:  u u_x + v u_y + p_x − (u_xx + u_yy) / re = 0
//   momentum_y:  u v_x + v v_y + p_y − (v_xx + v_yy) / re = 0
//   continuity:  u_x + v_y = 0
// with the Reynolds number `re` a declared parameter. Walls: u = 1, v = 0 on the lid y = 1; u = v = 0
// on the other three walls. The lid corners (0, 1) and (1, 1), where the two conditions meet, belong
// to the side walls: the lid's points are the n_boundary midpoints x = (j + ½) / n_boundary, never a
// corner; the side walls' and the bottom's points include the corners (u = v = 0 there).
// Pressure is defined up to a constant: nothing pins it (the residuals read only p_x and p_y, and the
// reference compares u and v only), so p's level is whatever the network drifts to.
// Reference: the centre-line velocities of Ghia, Ghia & Shin (1982) for re = 100 and 1000
// (./cavity/ghia1982.mjs, its cross-check there): u at the 17 points of the vertical centre line
// x = 0.5 and v at the 17 points of the horizontal centre line y = 0.5; rel_l2 is over those 34 values.
import { GHIA_U, GHIA_V, GHIA_X, GHIA_Y } from './cavity/ghia1982.mjs';

export default {
  name: 'cavity',
  inputs: ['x', 'y'],
  domain: [
    [0, 1],
    [0, 1],
  ],
  outputs: ['u', 'v', 'p'],
  params: { re: { default: 100, minimum: 1, maximum: 10000, description: 'Reynolds number Re = U L / ν (lid speed U = 1, side L = 1)' } },
  fields: ['u', 'v', 'u_x', 'u_y', 'u_xx', 'u_yy', 'v_x', 'v_y', 'v_xx', 'v_yy', 'p_x', 'p_y'],
  residuals: {
    momentum_x: (f, { p, ops }) =>
      ops.sub(ops.add(ops.add(ops.mul(f.u, f.u_x), ops.mul(f.v, f.u_y)), f.p_x), ops.div(ops.add(f.u_xx, f.u_yy), p.re)),
    momentum_y: (f, { p, ops }) =>
      ops.sub(ops.add(ops.add(ops.mul(f.u, f.v_x), ops.mul(f.v, f.v_y)), f.p_y), ops.div(ops.add(f.v_xx, f.v_yy), p.re)),
    continuity: (f, { ops }) => ops.add(f.u_x, f.v_y),
  },
  conditions: {
    // n_boundary points per wall; each point carries two targets: u, then v.
    bc: ({ n_boundary: n, helpers }) => {
      const pts = [];
      const us = [];
      const ends = helpers.linspace(0, 1, n); // walls: corners included
      for (let j = 0; j < n; j++) {
        pts.push([(j + 0.5) / n, 1]); // lid, corners excluded
        us.push(1);
      }
      for (const s of ends) {
        pts.push([s, 0]); // bottom
        pts.push([0, s]); // left
        pts.push([1, s]); // right
        us.push(0, 0, 0);
      }
      return {
        points: [...pts, ...pts],
        values: [...us, ...us.map(() => 0)],
        output: [...pts.map(() => 'u'), ...pts.map(() => 'v')],
      };
    },
  },
  // The Ghia centre lines: u at (0.5, y_k), then v at (x_k, 0.5).
  evaluation: ({ p }) => {
    const u = GHIA_U[p.re];
    const v = GHIA_V[p.re];
    if (!u || !v) throw new Error(`params.re: got ${p.re}, expected 100 or 1000 (the Reynolds numbers of the shipped Ghia, Ghia & Shin 1982 tables)`);
    return {
      points: [...GHIA_Y.map((y) => [0.5, y]), ...GHIA_X.map((x) => [x, 0.5])],
      values: [...u, ...v],
      output: [...GHIA_Y.map(() => 'u'), ...GHIA_X.map(() => 'v')],
    };
  },
};
