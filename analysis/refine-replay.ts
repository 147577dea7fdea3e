/**
 * Replaying refinement against recorded trials, to choose `refine:` settings without training: the
 * planner (analysis/refine.ts `planRefinement`) runs its rounds as `phasemap refine` would, but a
 * planned point's phase is read off the recorded trials — the phase of the nearest one of its group
 * in (log10 x, log10 y) — instead of being trained. The recorded trials are typically a dense grid
 * and any refined sweeps of the same problem (more points near the boundaries). It is an
 * approximation: a real trial between two recorded ones may end in either phase, so replayed
 * agreement differs from a real refined sweep's by a few points either way
 * (docs/results/refinement/ compares the two).
 */
import { mapAgreement, planRefinement, type MapAgreement, type MapPoint, type RefinePlanOptions, type RefineSample } from './refine.js';

/** How a replay went: its samples (start first, then each round's), its rounds and its agreement. */
export interface Replay {
  samples: MapPoint[];
  /** Rounds that added trials. */
  rounds: number;
  /** Trials the rounds added. */
  added: number;
  /** The samples' map read at every reference point (`mapAgreement`). */
  agreement: MapAgreement;
}

/**
 * The phase of the nearest recorded point of `group` to (x, y), Euclidean in (log10 x, log10 y);
 * the first on a tie.
 * @throws Error when the group has no recorded point.
 */
export function nearestPhase(recorded: readonly MapPoint[], group: string, x: number, y: number): MapPoint['phase'] {
  let best: MapPoint | undefined;
  let bestD = Infinity;
  for (const r of recorded) {
    if (r.group !== group) continue;
    const d = (Math.log10(r.x) - Math.log10(x)) ** 2 + (Math.log10(r.y) - Math.log10(y)) ** 2;
    if (d < bestD - 1e-12) [best, bestD] = [r, d];
  }
  if (!best) throw new Error(`replay: no recorded trial of group '${group}'`);
  return best.phase;
}

/**
 * Replays refinement (module header): from the `start` points (one seed), rounds of
 * `planRefinement` with `opts` (its `budget` is the total over all rounds) until it proposes nothing,
 * the budget is spent or `rounds` are done; every point's phase is `nearestPhase` of `recorded`.
 * @param reference the points the map is measured against (a dense grid's own trials).
 * @throws Error as `planRefinement`, or when a group has no recorded point.
 */
export function replayRefinement(recorded: readonly MapPoint[], reference: readonly MapPoint[], start: ReadonlyArray<Pick<MapPoint, 'group' | 'x' | 'y'>>, opts: RefinePlanOptions & { rounds: number }): Replay {
  const samples: RefineSample[] = start.map((p) => ({ ...p, seed: 0, phase: nearestPhase(recorded, p.group, p.x, p.y) }));
  let added = 0;
  let rounds = 0;
  while (rounds < opts.rounds && added < opts.budget) {
    const plan = planRefinement(samples, { ...opts, budget: opts.budget - added });
    if (!plan.length) break;
    for (const p of plan) samples.push({ group: p.group, x: p.x, y: p.y, seed: p.seed, phase: nearestPhase(recorded, p.group, p.x, p.y) });
    added += plan.length;
    rounds++;
  }
  const points = samples.map(({ group, x, y, phase }) => ({ group, x, y, phase }));
  return { samples: points, rounds, added, agreement: mapAgreement(reference, points) };
}
