/**
 * What adaptive refinement buys, measured against a dense grid (docs/results/refinement/):
 *
 *   node dist/scripts/refine-benefit.js DENSE_DIR REFINED_DIR OUTDIR
 *
 * DENSE_DIR: a finished dense lr × batch-size sweep (sweeps/refine-benefit-dense.yaml); REFINED_DIR:
 * the same problem from a coarse start with `refine:` (sweeps/refine-benefit.yaml), both with their
 * reports written. Writes OUTDIR/summary.json (analysis/refine-benefit.ts) and copies the dense
 * phase diagram and the refined phase map (PNG) beside it.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { refineBenefit } from '../analysis/refine-benefit.js';

async function main(): Promise<void> {
  const [denseDir, refinedDir, outDir] = process.argv.slice(2);
  if (!denseDir || !refinedDir || !outDir) {
    process.stderr.write('usage: node dist/scripts/refine-benefit.js DENSE_DIR REFINED_DIR OUTDIR\n');
    process.exit(2);
  }
  const summary = await refineBenefit(denseDir, refinedDir);
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'summary.json'), JSON.stringify(summary, null, 2) + '\n');
  // PNG only: the phase map's SVG is ~1.6 MB (its raster); both DIRs' reports hold the SVGs.
  await copyFile(join(denseDir, 'report', 'phase-diagram.png'), join(outDir, 'dense-phase-diagram.png'));
  await copyFile(join(refinedDir, 'report', 'phase-map.png'), join(outDir, 'refined-phase-map.png'));
  process.stdout.write(JSON.stringify({ agreement: summary.agreement, coarse: summary.coarse_start_agreement, refined: summary.refined }) + '\n');
}

main().catch((e: Error) => {
  process.stderr.write(`refine-benefit: ${e.message}\n`);
  process.exit(1);
});
