/**
 * Replays adaptive refinement against recorded trials (analysis/refine-replay.ts), to choose
 * `refine:` settings without training:
 *
 *   node dist/scripts/refine-replay.js DENSE_DIR [--also DIR,…] [--lr 1e-4,1e-3,1e-2,1e-1]
 *     [--batch 32,256,1024] [--budget 52] [--rounds 8] [--resolution 1.6] [--explore 0,4,8]
 *
 * DENSE_DIR: a finished dense lr × batch-size sweep, the reference; --also: more results DIRs of the
 * same problem whose trials are read as well (a planned point takes the phase of the nearest recorded
 * trial of its strategy). The start is the --lr × --batch points (a full batch as its size N) of
 * every strategy of DENSE_DIR. Prints, per --explore value, the agreement with the dense grid, the
 * trials added and the rounds.
 */
import { parseArgs } from 'node:util';
import { mapPointsOf } from '../analysis/refine-benefit.js';
import { replayRefinement } from '../analysis/refine-replay.js';

const list = (s: string, what: string) =>
  s.split(',').map((v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${what}: got '${v}', expected comma-separated numbers ≥ 0`);
    return n;
  });

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      also: { type: 'string', default: '' }, lr: { type: 'string', default: '1e-4,1e-3,1e-2,1e-1' }, batch: { type: 'string', default: '32,256,1024' },
      budget: { type: 'string', default: '52' }, rounds: { type: 'string', default: '8' }, resolution: { type: 'string', default: '1.6' }, explore: { type: 'string', default: '0,4,8' },
    },
  });
  const dense = positionals[0];
  if (!dense || positionals.length > 1) throw new Error('usage: node dist/scripts/refine-replay.js DENSE_DIR [--also DIR,…] [--lr …] [--batch …] [--budget N] [--rounds N] [--resolution R] [--explore E,…]');
  const reference = await mapPointsOf(dense);
  const recorded = [...reference];
  for (const dir of values.also.split(',').filter(Boolean)) recorded.unshift(...(await mapPointsOf(dir)));
  const groups = [...new Set(reference.map((p) => p.group))].sort();
  const start = groups.flatMap((group) => list(values.lr, 'lr').flatMap((x) => list(values.batch, 'batch').map((y) => ({ group, x, y }))));
  const [budget, rounds, resolution] = [list(values.budget, 'budget')[0]!, list(values.rounds, 'rounds')[0]!, list(values.resolution, 'resolution')[0]!];
  process.stdout.write(`start ${start.length} points; budget ${budget}; resolution ${resolution}; ${recorded.length} recorded cells\n`);
  for (const explore of list(values.explore, 'explore')) {
    const r = replayRefinement(recorded, reference, start, { resolution, budget, rounds, explore, yInteger: true, yPowersOfTwo: true });
    const pct = ((100 * r.agreement.agree) / r.agreement.points).toFixed(1);
    process.stdout.write(`explore ${explore}: ${r.agreement.agree}/${r.agreement.points} = ${pct} % of dense points agree; ${start.length + r.added} trials (${r.added} added in ${r.rounds} round(s))\n`);
  }
}

main().catch((e: Error) => {
  process.stderr.write(`refine-replay: ${e.message}\n`);
  process.exit(2);
});
