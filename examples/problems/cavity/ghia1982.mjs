// Centre-line velocities of the lid-driven cavity from
//   U. Ghia, K. N. Ghia, C. T. Shin (1982), "High-Re solutions for incompressible flow using the
//   Navier–Stokes equations and a multigrid method", J. Comput. Phys. 48(3), 387–411,
//   Table I (u along the vertical centre line x = 0.5) and Table II (v along the horizontal centre
//   line y = 0.5), 129 × 129 grid, lid u = 1 at y = 1.
// 17 points per line, as published (top to bottom for u, right to left for v).
//
// Cross-check (docs/problems.md, "The lid-driven cavity"). Seven independent public transcriptions
// found in open-source code (C++, Python, JavaScript, MATLAB and Rust programs that validate a
// cavity solver against Ghia) were compared value by value:
//  - Re = 100, u and v; Re = 1000, u: every copy agrees digit for digit with the values below.
//  - Re = 1000, v at x = 0.5: every copy found reads 0.02526 (a value 0.02426 is reported in other
//    copies; none was found here). Shipped: 0.02526.
//  - Re = 1000, v at x = 0.9063: six copies read −0.51550, one (which says it was corrected against a
//    further transcription) reads −0.51500. Shipped: −0.51550, the majority reading; the difference
//    (5e-4) is far below what a CPU-scale PINN resolves.
//  - Re = 1000, v at x = 0.8047: six copies read −0.31966, one −0.31996 (a digit transposition).
//    Shipped: −0.31966.
// Known errors of some copies in other rows (sign flips in the Re = 400 v column of one MATLAB copy)
// do not touch the Reynolds numbers shipped here.

/** y of the u values (vertical centre line x = 0.5). */
export const GHIA_Y = [1.0, 0.9766, 0.9688, 0.9609, 0.9531, 0.8516, 0.7344, 0.6172, 0.5, 0.4531, 0.2813, 0.1719, 0.1016, 0.0703, 0.0625, 0.0547, 0.0];

/** x of the v values (horizontal centre line y = 0.5). */
export const GHIA_X = [1.0, 0.9688, 0.9609, 0.9531, 0.9453, 0.9063, 0.8594, 0.8047, 0.5, 0.2344, 0.2266, 0.1563, 0.0938, 0.0781, 0.0703, 0.0625, 0.0];

/** u(0.5, y) at GHIA_Y, by Reynolds number. */
export const GHIA_U = {
  100: [1.0, 0.84123, 0.78871, 0.73722, 0.68717, 0.23151, 0.00332, -0.13641, -0.20581, -0.2109, -0.15662, -0.1015, -0.06434, -0.04775, -0.04192, -0.03717, 0.0],
  1000: [1.0, 0.65928, 0.57492, 0.51117, 0.46604, 0.33304, 0.18719, 0.05702, -0.0608, -0.10648, -0.27805, -0.38289, -0.2973, -0.2222, -0.20196, -0.18109, 0.0],
};

/** v(x, 0.5) at GHIA_X, by Reynolds number. */
export const GHIA_V = {
  100: [0.0, -0.05906, -0.07391, -0.08864, -0.10313, -0.16914, -0.22445, -0.24533, 0.05454, 0.17527, 0.17507, 0.16077, 0.12317, 0.1089, 0.10091, 0.09233, 0.0],
  1000: [0.0, -0.21388, -0.27669, -0.33714, -0.39188, -0.5155, -0.42665, -0.31966, 0.02526, 0.32235, 0.33075, 0.37095, 0.32627, 0.30353, 0.29012, 0.27485, 0.0],
};
