/**
 * scaling: trials/hour of `phasemap run SPEC --slots K` (embedded nats-server, wasm) on a fixed spec of
 * 12 trials of 400 steps (the quickstart's network and problem), K = 1 and 2, unfused (`--fuse 1`), runs interleaved; the
 * ratio of the two per run pair. Trials of ~2 s: with the 150-step trials (~0.6 s) used before, what
 * was measured was mostly each slot thread's JIT warm-up (V8 compiles the trainer per thread, ~1 s of
 * CPU over its first trials, on the same 2 cores), not the steady state a sweep runs in.
 */
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { figure, tempDir, type Figure } from './lib.js';
import { startCli } from './procs.js';
import type { BenchOptions } from './train.js';

export async function benchScaling(o: BenchOptions): Promise<Figure[]> {
  const work = await tempDir('scaling');
  const trials = o.quick ? 4 : 12;
  const steps = o.quick ? 20 : 400;
  const runs = o.quick ? o.runs : Math.min(o.runs, 3);
  const spec = join(work, 'scaling.yaml');
  await writeFile(spec, `name: scaling
problem: {name: helmholtz2d, a1: 1, a2: 4, n_collocation: 512, n_boundary: 64}
model: {width: 20, depth: 3}
train: {steps: ${steps}, log_every: 10, eval_every: 50}
diagnostics: {every: 50, snr_batches: 8}
grid:
  seed: [${Array.from({ length: trials }, (_x, i) => i).join(', ')}]
`);
  const perHour: Record<1 | 2, number[]> = { 1: [], 2: [] };
  try {
    for (let r = 0; r <= runs; r++) {
      for (const k of [1, 2] as const) {
        o.log(`scaling: --slots ${k}, ${r === 0 ? 'warm-up' : `run ${r}/${runs}`} (${trials} trials × ${steps} steps)`);
        // --fuse 1: slot scaling alone (fusion has its own rows; fused groups would make the 2-slot
        // figure depend on how the 12 trials split into groups).
        const p = startCli(['run', spec, '--slots', String(k), '--backend', 'wasm', '--fuse', '1', '--out', join(work, `r${r}-s${k}`)]);
        const code = await p.exited;
        if (code !== 0) throw new Error(`phasemap run --slots ${k} exited ${code}: ${p.lines.slice(-5).map((l) => l.line).join(' | ')}`);
        const queued = p.lines.find((l) => /queued \d+ trial/.test(l.line));
        const ends = p.lines.filter((l) => /trial t[0-9a-f]{16} done/.test(l.line));
        if (!queued || ends.length !== trials) throw new Error(`phasemap run --slots ${k}: ${ends.length} of ${trials} trials done`);
        const seconds = (ends[ends.length - 1]!.t - queued.t) / 1000;
        if (r > 0) perHour[k].push((trials / seconds) * 3600);
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const config = { trials, steps, problem: 'helmholtz2d a1=1 a2=4', network: '3x20', n_collocation: 512, diagnostics: 'every 50, B = 8', backend: 'wasm', fuse: 1, nats: 'embedded' };
  const method = 'trials × 3600 ÷ s from the "queued N trial(s)" log line to the last "trial … done" line of `phasemap run SPEC --slots K`';
  return [
    figure({ bench: 'scaling', figure: 'scaling 1 slot', unit: 'trials/h', samples: perHour[1], target: null, config: { ...config, slots: 1 }, method }),
    figure({ bench: 'scaling', figure: 'scaling 2 slots', unit: 'trials/h', samples: perHour[2], target: null, config: { ...config, slots: 2 }, method }),
    figure({
      bench: 'scaling', figure: 'scaling 2 slots ÷ 1 slot', unit: '×', samples: perHour[2].map((x, i) => x / perHour[1][i]!),
      target: { op: '>=', value: 1.8, text: '≥ 1.8' }, config, method: 'per interleaved run pair: trials/h with 2 slots ÷ trials/h with 1 slot',
    }),
  ];
}
