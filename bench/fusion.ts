/**
 * fusion (issue 5, trial fusion; worker/trainer/fused.ts): (1) the speed-up of training K trials fused
 * over training them one after the other, per configuration (batch points × width) — the measurement
 * behind `FUSION_RULE`; (2) trials/hour of the quickstart sweep with `--fuse auto` over `--fuse 1`
 * (`phasemap run sweeps/quickstart.yaml --slots 2`, embedded nats-server), runs interleaved.
 */
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TrialConfig } from '../schemas/sweep.js';
import { blasStatus, FUSION_RULE } from '../worker/trainer/index.js';
import type { FusionChildInput, FusionChildOutput } from './fusion-child.js';
import { benchEntry, figure, repoRoot, runJsonChild, tempDir, trialConfig, type Figure } from './lib.js';
import { startCli } from './procs.js';
import type { BenchOptions } from './train.js';

/** The configurations of the speed-up rows: [points per step, width]. helmholtz2d, depth 3, full batch. */
export const FUSION_SIZES: Array<[number, number]> = [
  [64, 8], [128, 20], [256, 20], [512, 20], [1024, 20], [256, 32], [512, 32], [1024, 32], [256, 50], [1000, 50],
];

function sizeConfig(n: number, width: number, steps: number): TrialConfig {
  return trialConfig(`problem: {name: helmholtz2d, a1: 1, a2: 4, n_collocation: ${n}, n_boundary: 64}
model: {width: ${width}, depth: 3}
train: {steps: ${steps}, log_every: ${steps}, eval_every: ${steps}}
diagnostics: {every: 0, snr_batches: 2}
`);
}

export async function benchFusion(o: BenchOptions, withSweep: boolean): Promise<Figure[]> {
  const figs: Figure[] = [];
  const k = FUSION_RULE.maxTrials;
  const sizes = o.quick ? FUSION_SIZES.slice(1, 3) : FUSION_SIZES;
  const steps = o.quick ? 5 : 20;
  for (const [n, width] of sizes) {
    o.log(`fusion: ${k} trials, N = ${n}, width ${width}, ${steps} steps each, alone vs fused × ${o.runs}`);
    const r = await runJsonChild<FusionChildOutput>(benchEntry('fusion-child.js'), { config: sizeConfig(n, width, steps), k, runs: o.runs } satisfies FusionChildInput);
    const fused = n * width <= (blasStatus().available ? FUSION_RULE.maxPointsTimesWidthBlas : FUSION_RULE.maxPointsTimesWidth);
    figs.push(figure({
      bench: 'fusion', figure: `fusion speed-up N=${n} width=${width} (K=${k})${fused ? ', fused by the rule' : ''}`, unit: '×',
      samples: r.alone_ms.map((a, i) => a / r.fused_ms[i]!), target: null,
      config: { problem: 'helmholtz2d a1=1 a2=4', width, depth: 3, points: n, batch: 'full', trials: k, steps, strategies: 'vanilla/rba alternating', alone_ms_per_trial_step: r.alone_ms, fused_ms_per_trial_step: r.fused_ms, rule: FUSION_RULE },
      method: 'per run: wall ms per trial-step of the K trials trained one after the other (trainTrial) ÷ the same K trained fused (trainTrials), in one child process, interleaved after a warm-up',
    }));
  }
  if (withSweep) figs.push(...(await quickstartFusion(o)));
  return figs;
}

/** trials/hour of the quickstart sweep, `--fuse 1` vs `--fuse auto`, 2 slots, interleaved. */
async function quickstartFusion(o: BenchOptions): Promise<Figure[]> {
  const work = await tempDir('fusion');
  let spec = join(repoRoot, 'sweeps', 'quickstart.yaml');
  if (o.quick) {
    // Smoke test: the same sweep, 100 steps.
    const text = (await readFile(spec, 'utf8')).replace(/steps: 1500/, 'steps: 100');
    spec = join(work, 'quickstart-100.yaml');
    await writeFile(spec, text.replace(/\$schema:.*\n/, ''));
  }
  const runs = Math.min(o.runs, o.quick ? 1 : 3);
  const perHour: Record<'1' | 'auto', number[]> = { 1: [], auto: [] };
  try {
    for (let r = 1; r <= runs; r++) {
      for (const fuse of ['1', 'auto'] as const) {
        o.log(`fusion: quickstart sweep --slots 2 --fuse ${fuse}, run ${r}/${runs}`);
        const p = startCli(['run', spec, '--slots', '2', '--backend', 'wasm', '--fuse', fuse, '--out', join(work, `r${r}-f${fuse}`)]);
        const code = await p.exited;
        if (code !== 0) throw new Error(`phasemap run --fuse ${fuse} exited ${code}: ${p.lines.slice(-5).map((l) => l.line).join(' | ')}`);
        const queued = p.lines.find((l) => /queued \d+ trial/.test(l.line));
        const ends = p.lines.filter((l) => /trial t[0-9a-f]{16} done/.test(l.line));
        const n = Number(/queued (\d+) trial/.exec(queued?.line ?? '')?.[1] ?? NaN);
        if (!queued || ends.length !== n) throw new Error(`phasemap run --fuse ${fuse}: ${ends.length} of ${n} trials done`);
        perHour[fuse].push((n / ((ends[ends.length - 1]!.t - queued.t) / 1000)) * 3600);
      }
    }
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  const config = { spec: 'sweeps/quickstart.yaml', slots: 2, backend: 'wasm', nats: 'embedded', ...(o.quick ? { steps: 100 } : {}) };
  const method = 'trials × 3600 ÷ s from the "queued N trial(s)" log line to the last "trial … done" line of `phasemap run sweeps/quickstart.yaml --slots 2 --fuse F`';
  const name = o.quick ? 'fusion quickstart sweep (100 steps)' : 'fusion quickstart sweep';
  return [
    figure({ bench: 'fusion', figure: `${name}, --fuse 1`, unit: 'trials/h', samples: perHour[1], target: null, config: { ...config, fuse: 1 }, method }),
    figure({ bench: 'fusion', figure: `${name}, --fuse auto`, unit: 'trials/h', samples: perHour.auto, target: null, config: { ...config, fuse: 'auto' }, method }),
    figure({
      bench: 'fusion', figure: `${name}, fused ÷ unfused`, unit: '×', samples: perHour.auto.map((x, i) => x / perHour[1][i]!),
      target: { op: '>=', value: 2, text: '≥ 2' }, config, method: 'per interleaved run pair: trials/h with --fuse auto ÷ with --fuse 1',
    }),
  ];
}
