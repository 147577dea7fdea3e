/**
 * What adaptive refinement buys, measured against a dense grid: for every trial of a dense lr ×
 * batch-size sweep, the phase of the nearest sample of a refined sweep (the phase map the report
 * draws: analysis/refine.ts `mapAgreement`) against the dense trial's own final phase; the same for
 * the refined sweep's starting grid alone; and the trials each spent. Reads two results DIRs.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Phase } from './diagram.js';
import { openResults } from './query.js';
import { consensusPhase, mapAgreement, type MapAgreement, type MapPoint } from './refine.js';

interface Trial extends MapPoint {
  trial_id: string;
  seed: number;
}

/** The done trials of a DIR as map points (group = strategy, x = lr, y = effective batch size). */
async function trialsOf(dir: string): Promise<Trial[]> {
  const { conn, close } = await openResults(dir);
  try {
    const r = await conn.runAndReadAll(`SELECT trial_id, strategy, lr, batch_size, seed, final_phase FROM trials WHERE status = 'done' ORDER BY trial_id`);
    return r.getRowObjectsJson().map((o) => ({
      trial_id: String(o.trial_id), group: String(o.strategy), x: Number(o.lr), y: Number(o.batch_size), seed: Number(o.seed), phase: String(o.final_phase) as Phase,
    }));
  } finally {
    close();
  }
}

/** The consensus phase of each (group, x, y) cell over its seeds. */
function cells(trials: readonly Trial[]): MapPoint[] {
  const by = new Map<string, Trial[]>();
  for (const t of trials) {
    const k = JSON.stringify([t.group, t.x, t.y]);
    by.set(k, [...(by.get(k) ?? []), t]);
  }
  return [...by.values()].map((ts) => ({ group: ts[0]!.group, x: ts[0]!.x, y: ts[0]!.y, phase: consensusPhase(ts.map((t) => t.phase)) }));
}

/** The done trials of a results DIR as map points: group = strategy, x = lr, y = effective batch size, the consensus phase of each cell's seeds. */
export async function mapPointsOf(dir: string): Promise<MapPoint[]> {
  return cells(await trialsOf(dir));
}

const pct = (a: MapAgreement) => (100 * a.agree) / a.points;


/** The comparison (module header) of a dense DIR and a refined DIR, both finished. */
export interface RefineBenefit {
  dense: { dir: string; trials: number };
  refined: { dir: string; trials: number; grid_trials: number; refinement_trials: number; rounds: number; share_of_dense: number };
  /** Dense points whose nearest refined sample has their phase. */
  agreement: { points: number; agree: number; percent: number };
  /** The same with the starting grid's samples only. */
  coarse_start_agreement: { points: number; agree: number; percent: number };
  per_strategy: Array<{ strategy: string; points: number; agree: number; percent: number; trials: number }>;
  misses: Array<{ strategy: string; lr: number; batch_size: number; dense: Phase; map: Phase }>;
}

/**
 * Compares a refined sweep with a dense one (module header).
 * @param denseDir a results DIR of the dense grid; @param refinedDir one of the refined sweep (its
 *   sweep.json gives each trial's refine_round; round 0 / none = the starting grid).
 * @throws Error when a DIR cannot be read.
 */
export async function refineBenefit(denseDir: string, refinedDir: string): Promise<RefineBenefit> {
  const dense = await trialsOf(denseDir);
  const refined = await trialsOf(refinedDir);
  const sweep = JSON.parse(await readFile(join(refinedDir, 'sweep.json'), 'utf8')) as { trials: Array<{ trial_id: string; refine_round?: number }> };
  const round = new Map(sweep.trials.map((t) => [t.trial_id, t.refine_round ?? 0]));
  const coarse = refined.filter((t) => (round.get(t.trial_id) ?? 0) === 0);
  const all = mapAgreement(dense, cells(refined));
  const start = mapAgreement(dense, cells(coarse));
  const groups = [...new Set(dense.map((t) => t.group))].sort();
  const per = groups.map((g) => {
    const a = mapAgreement(dense.filter((t) => t.group === g), cells(refined.filter((t) => t.group === g)));
    return { strategy: g, points: a.points, agree: a.agree, percent: Number(pct(a).toFixed(1)), trials: refined.filter((t) => t.group === g).length };
  });
  const rounds = Math.max(0, ...[...round.values()]);
  const summary: RefineBenefit = {
    dense: { dir: denseDir, trials: dense.length },
    refined: { dir: refinedDir, trials: refined.length, grid_trials: coarse.length, refinement_trials: refined.length - coarse.length, rounds, share_of_dense: Number((refined.length / dense.length).toFixed(3)) },
    agreement: { points: all.points, agree: all.agree, percent: Number(pct(all).toFixed(1)) },
    coarse_start_agreement: { points: start.points, agree: start.agree, percent: Number(pct(start).toFixed(1)) },
    per_strategy: per,
    misses: all.misses.map((m) => ({ strategy: m.group, lr: m.x, batch_size: m.y, dense: m.phase, map: m.nearest })),
  };
  return summary;
}
