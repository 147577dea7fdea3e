/**
 * `npm run bench`: runs the benchmarks, prints a table and writes bench/results.json.
 *
 *   node dist/bench/run.js [--only NAME[,NAME]] [--runs N] [--quick] [--out FILE]
 *
 * NAME: train-step, snr-cost, ingest, dispatch, scaling, fusion, memory, report, refine; and refine-poisson, refine-helmholtz
 * (~45 minutes each: only when named). Every figure is the median of N runs
 * (default 5) after a warm-up; --quick is a smoke test (small sizes, 2 runs unless --runs; written to
 * $TMPDIR/phasemap-bench-quick.json unless --out, never over bench/results.json). See
 * bench/README.md for what each figure measures.
 *
 *   node dist/bench/run.js --markdown [FILE]   prints the table of a results.json (default bench/results.json) as Markdown
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { readFile } from 'node:fs/promises';
import { benchDispatch } from './dispatch.js';
import { benchFusion } from './fusion.js';
import { benchIngest } from './ingest.js';
import { figure, machine, repoRoot, type Figure } from './lib.js';
import { benchRefine, benchRefineReal } from './refine.js';
import { benchReport } from './report.js';
import { benchScaling } from './scaling.js';
import { renderTable } from './table.js';
import { benchSlotMemory, benchTrainStep, type BenchOptions } from './train.js';

export const BENCHES = ['train-step', 'snr-cost', 'ingest', 'dispatch', 'scaling', 'fusion', 'memory', 'report', 'refine', 'refine-poisson', 'refine-helmholtz'] as const;
/** Benchmarks run only when `--only` names them (too long for the default run). */
const ON_REQUEST: readonly string[] = ['refine-poisson', 'refine-helmholtz'];
type BenchName = (typeof BENCHES)[number];

interface Args {
  only: BenchName[];
  runs: number;
  quick: boolean;
  out: string;
}

function usage(msg: string): never {
  process.stderr.write(`bench: ${msg}\nusage: node dist/bench/run.js [--only ${BENCHES.join(',')}] [--runs N] [--quick] [--out FILE] | --markdown [FILE]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Args {
  let only: BenchName[] = BENCHES.filter((n) => !ON_REQUEST.includes(n));
  let runs: number | null = null;
  let quick = false;
  let out: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const val = () => argv[++i] ?? usage(`${a} needs a value`);
    if (a === '--only') {
      only = val().split(',').map((s) => s.trim()).filter(Boolean) as BenchName[];
      const bad = only.filter((n) => !BENCHES.includes(n));
      if (bad.length || !only.length) usage(`--only: unknown benchmark ${bad.join(', ')} (expected ${BENCHES.join(', ')})`);
    } else if (a === '--runs') {
      runs = Number(val());
      if (!Number.isInteger(runs) || runs < 1 || runs > 100) usage('--runs: expected an integer 1-100');
    } else if (a === '--quick') quick = true;
    else if (a === '--out') out = resolve(val());
    else if (a === '--help' || a === '-h') usage('help');
    else usage(`unknown argument ${a}`);
  }
  // A smoke test never replaces the committed results: --quick writes to the temp dir unless --out says.
  return { only, runs: runs ?? (quick ? 2 : 5), quick, out: out ?? (quick ? join(tmpdir(), 'phasemap-bench-quick.json') : join(repoRoot, 'bench', 'results.json')) };
}

async function main(): Promise<void> {
  if (process.argv[2] === '--markdown') {
    const file = resolve(process.argv[3] ?? join(repoRoot, 'bench', 'results.json'));
    const r = JSON.parse(await readFile(file, 'utf8')) as { figures: Figure[] };
    process.stdout.write(`${renderTable(r.figures, true)}\n`);
    return;
  }
  const args = parseArgs(process.argv.slice(2));
  const started = new Date();
  const t0 = performance.now();
  const log = (m: string) => process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${m}\n`);
  const o: BenchOptions = { runs: args.runs, quick: args.quick, log };
  const want = (n: BenchName) => args.only.includes(n);
  const figs: Figure[] = [];
  const guard = async (name: string, fn: () => Promise<Figure[]>) => {
    try {
      figs.push(...(await fn()));
    } catch (e) {
      log(`${name} failed: ${(e as Error).stack ?? e}`);
      figs.push(figure({ bench: name, figure: `${name} (benchmark failed)`, unit: '-', samples: [], target: null, config: {}, method: '', error: (e as Error).message }));
    }
  };
  if (want('train-step') || want('snr-cost')) await guard('train-step', () => benchTrainStep(o, want('snr-cost'), want('train-step')));
  if (want('memory')) await guard('memory', () => benchSlotMemory(o));
  if (want('ingest') || want('memory')) {
    await guard('ingest', async () => {
      const f = await benchIngest(o);
      // The collector's RSS comes from the 16-stream ingest; ingest rows only when ingest was asked for.
      return f.filter((x) => (x.bench === 'memory' ? want('memory') : want('ingest')));
    });
  }
  if (want('dispatch')) await guard('dispatch', () => benchDispatch(o));
  if (want('scaling')) await guard('scaling', () => benchScaling(o));
  if (want('fusion')) await guard('fusion', () => benchFusion(o, true));
  if (want('report')) await guard('report', () => benchReport(o));
  if (want('refine')) await guard('refine', () => benchRefine(o));
  for (const name of ['refine-poisson', 'refine-helmholtz'] as const) if (want(name)) await guard(name, () => benchRefineReal(name, o));
  const order = (f: Figure) => BENCHES.indexOf(f.bench as BenchName);
  figs.sort((a, b) => order(a) - order(b));
  const result = {
    date: started.toISOString(),
    command: `node dist/bench/run.js ${process.argv.slice(2).join(' ')}`.trim(),
    options: { only: args.only, runs: args.runs, quick: args.quick },
    wall_seconds: +((performance.now() - t0) / 1000).toFixed(1),
    machine: machine('wasm'),
    figures: figs,
  };
  await mkdir(dirname(args.out), { recursive: true });
  await writeFile(args.out, `${JSON.stringify(result, null, 2)}\n`);
  process.stdout.write(`${renderTable(figs)}\n`);
  const errors = [...new Set(figs.filter((f) => f.error).map((f) => `${f.figure}: ${f.error}`))];
  if (errors.length) process.stdout.write(`failed measurements:\n${errors.map((e) => `  ${e}`).join('\n')}\n`);
  const m = result.machine;
  process.stdout.write(`${m.cpu}, ${m.cores} cores, Node ${m.node}, backend wasm (matmuls: ${String(m.matmul)}; stream loops: ${String(m.stream_loops)}); ${result.wall_seconds} s; wrote ${args.out}\n`);
}

await main();
process.exit(0);
