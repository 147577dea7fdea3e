#!/usr/bin/env node
/**
 * phasemap command line.
 *   phasemap run SPEC [--out DIR] [--nats URL] [--slots N] [--backend auto|wasm|cpu|tensorflow] [--gpus all|none|0,2,…] [--slots-per-gpu K] [--fuse auto|N] [--min-free SIZE|P%]
 *   phasemap refine DIR [--rounds N] [--budget N] [the run flags but --out]
 *   phasemap validate SPEC
 *   phasemap diagram DIR [--x lr] [--y batch_size] [--facet strategy | --no-facet]
 *   phasemap report DIR [--out PATH] [--x lr] [--y batch_size] [--facet strategy | --no-facet] [--watch]
 *   phasemap query DIR [SQL] [--format table|csv|json]
 *   phasemap worker --nats URL [--slots N] [--gpus all|none|0,2,…] [--slots-per-gpu K] [--fuse auto|N] [--backend …] [--name NAME]
 *   phasemap status [DIR] [--json]            (DIR: default the current directory when it is a results DIR)
 *   phasemap status [SWEEP | DIR] --nats URL [--json]
 *   phasemap cancel SWEEP --nats URL [--wait S]
 * Every command that talks to NATS takes --namespace and the credential/TLS flags of nats-connect.ts.
 * Exit codes: 0 every trial done; 1 some trial failed or the sweep was cancelled; 2 bad input (spec, flags); 3 runtime error; 130 interrupted.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
// What only some commands need (the worker and its tfjs, DuckDB, the run) is imported in their
// actions, so that `phasemap validate` and a usage error answer at once.
import { parseFuse } from '../worker/fuse.js';
import { GpuDiscoveryError, parseGpus } from '../worker/gpus.js';
import type { DiagramAxes } from '../analysis/diagram.js';
import { connectNats } from './jetstream.js';
import { addNatsOptions, NatsConfigError, natsAuthForUrl, natsAuthFromOptions, redactUrl, type NatsCliOptions } from './nats-connect.js';
import { NatsServerMissing } from './nats-server.js';
import { DEFAULT_MIN_FREE, parseMinFree, type MinFree } from './disk-space.js';
import { plainLogger } from './progress.js';
import { cancelSweep, renderStatus, sweepStatus, UnknownSweep, workerAckWaitMs } from './control.js';
import { describeFsError, isFsError, WordedError } from './errors.js';
import { gridAxes, trialLabel, withTrialLabels } from './trial-names.js';
import type { NatsConnection } from '@nats-io/transport-node';
import { checkNamespace, DEFAULT_NAMESPACE, transportNames, trialAckWaitMs, type TransportNames } from '../schemas/transport.js';
import { loadSweep, SpecErrors, type ResolvedSweep } from './spec.js';

const log = plainLogger();
// `phasemap validate SPEC | head` closes stdout early: that is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

function intArg(name: string, min: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name}: got ${JSON.stringify(v)}, expected an integer >= ${min}`);
    return n;
  };
}

/** `--gpus`: validated here (exit 2 on a bad value), passed on as written. */
function gpusArg(v: string): string {
  try {
    parseGpus(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
  return v;
}
const GPUS_HELP = 'GPUs to pin slot processes to (CUDA_VISIBLE_DEVICES), K per GPU; they replace --slots: all (nvidia-smi), none, or ids like 0,2 (default: all with --backend tensorflow when nvidia-smi lists GPUs, else none)';

/** `--fuse`: `auto` or an integer 1…256 (worker/agent.ts parseFuse); exit 2 naming the flag on a bad value. */
function fuseArg(v: string): number | 'auto' {
  try {
    return parseFuse(v, '--fuse');
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}
/**
 * --fuse, else $PHASEMAP_FUSE, else auto; a bad PHASEMAP_FUSE is a usage error before anything starts:
 * it is logged naming the variable, the value and what is expected, and the process exits 2.
 */
function fuseOption(flag: number | 'auto' | undefined): number | 'auto' {
  if (flag !== undefined) return flag;
  const env = process.env.PHASEMAP_FUSE;
  if (env === undefined || env === '') return 'auto';
  try {
    return parseFuse(env, 'PHASEMAP_FUSE');
  } catch (e) {
    log.error((e as Error).message);
    process.exit(2);
  }
}
const FUSE_HELP = "most same-shaped trials one slot trains at once as one batched computation: auto (the trainer's measured rule for each trial's shape and backend) or N (1 = never fuse) (default: $PHASEMAP_FUSE or auto)";
const ALLOW_MODULES_HELP = "run trials of user problem modules (problem: {module: ...}): their code comes from whoever can publish trials to this NATS; without it such trials are left for workers that allow them (docs/problems.md)";

/** `--min-free`: a size or a share (disk-space.ts parseMinFree); exit 2 naming the flag on a bad value. */
function minFreeArg(v: string): MinFree {
  try {
    return parseMinFree(v, '--min-free');
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}
/** --min-free, else $PHASEMAP_MIN_FREE, else 256 MiB; a bad PHASEMAP_MIN_FREE is logged naming the variable and exits 2. */
function minFreeOption(flag: MinFree | undefined): MinFree {
  if (flag !== undefined) return flag;
  const env = process.env.PHASEMAP_MIN_FREE;
  if (env === undefined || env === '') return DEFAULT_MIN_FREE;
  try {
    return parseMinFree(env, 'PHASEMAP_MIN_FREE');
  } catch (e) {
    log.error((e as Error).message);
    process.exit(2);
  }
}

const NAMESPACE_HELP = 'namespace of subjects, streams and the state bucket: sweeps and workers of one namespace see each other, of others never (default: $PHASEMAP_NAMESPACE or phasemap)';
function namespaceArg(v: string): string {
  try {
    return checkNamespace(v);
  } catch (e) {
    throw new InvalidArgumentError((e as Error).message);
  }
}

/** Whether to print stack traces: `--debug`, or PHASEMAP_DEBUG set to anything but empty, 0 or false. */
function debugOn(): boolean {
  const env = process.env.PHASEMAP_DEBUG;
  return Boolean(program.opts().debug) || (env !== undefined && !['', '0', 'false'].includes(env.trim().toLowerCase()));
}

/** `e`'s stack trace, indented, when --debug or PHASEMAP_DEBUG asks for it; else ''. */
function stackIfDebug(e: unknown): string {
  return debugOn() && e instanceof Error && e.stack ? `\n${e.stack}` : '';
}

/**
 * Logs an error of a command in words and returns the exit code: 2 for bad input (spec, flags,
 * paths), 3 for a runtime error. No stack trace unless --debug or PHASEMAP_DEBUG=1: errors phasemap
 * words itself print their message; filesystem errors the path and the cause; anything else its
 * message and where the stack is.
 */
function fail(e: unknown): number {
  if (e instanceof SpecErrors) {
    log.error(`invalid sweep spec (nothing was run):\n  ${e.errors.map((x) => x.message).join('\n  ')}${stackIfDebug(e)}`);
    return 2;
  }
  if (e instanceof GpuDiscoveryError || e instanceof UnknownSweep || e instanceof NatsConfigError) {
    log.error(e.message + stackIfDebug(e));
    return 2;
  }
  if (e instanceof WordedError) {
    log.error(e.message + stackIfDebug(e));
    return e.exit;
  }
  if (e instanceof NatsServerMissing) {
    log.error(e.message + stackIfDebug(e));
    return 3;
  }
  if (isFsError(e)) {
    const d = describeFsError(e);
    log.error(`${e.code === 'ENOENT' ? `file not found: ${e.path}` : d.message}${stackIfDebug(e)}`);
    return d.exit;
  }
  const err = e as Error | undefined;
  // Runtime errors that phasemap words itself need no stack trace.
  if (err instanceof Error && /^--nats /.test(err.message)) log.error(err.message + stackIfDebug(err));
  else if (err instanceof Error) log.error(`${err.message || err.name}${debugOn() ? stackIfDebug(err) : ' (--debug or PHASEMAP_DEBUG=1 prints the stack trace)'}`);
  else log.error(String(e));
  return 3;
}

/**
 * The exit code of a command that reads a results DIR: 2, with the message alone, for bad input — an
 * axis flag that names no trials.parquet column, a DIR that is not a results DIR, or a message that
 * `input` matches (e.g. DuckDB's error for a user's SQL); else what `fail` says.
 */
function failDir(e: unknown, input?: RegExp): number {
  const msg = (e as Error).message ?? '';
  if (/^(--x|--y|--facet)|: no (trials\.parquet|sweep\.json)/.test(msg) || input?.test(msg)) {
    log.error(msg);
    return 2;
  }
  return fail(e);
}

/** The diagram's axis flags (--x, --y, --facet / --no-facet), as `diagram` and `report` take them. */
function axisOptions(c: Command, what: string): Command {
  return c
    .option('--x <column>', 'trials.parquet column on the horizontal axis', 'lr')
    .option('--y <column>', 'trials.parquet column on the vertical axis', 'batch_size')
    .option('--facet <column>', `one ${what} per value of this column`, 'strategy')
    .option('--no-facet', `a single ${what}`);
}
const axesOf = (o: { x: string; y: string; facet: string | false }): DiagramAxes => ({ x: o.x, y: o.y, facet: o.facet || null });

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('phasemap')
  .description('Map the phases of PINN training: sweeps over NATS JetStream, metrics as Parquet.')
  .version(pkg.version)
  // The error, then where the usage is: the whole help after it would bury the error.
  .showHelpAfterError('(phasemap help <command> shows its usage)')
  .option('--debug', 'print the stack trace of an error (also PHASEMAP_DEBUG=1)')
  // Usage errors exit 2 (1 means "some trial failed"); help and --version exit 0.
  .exitOverride((e: CommanderError) => {
    process.exit(e.exitCode === 0 ? 0 : 2);
  });

/** The options `run` and `refine` share: where the sweep runs (NATS, local worker slots) and the free-space threshold. */
function withRunOptions(cmd: Command): Command {
  return cmd
    .option('--nats <url>', 'NATS server URL(s), comma-separated (default: start a private nats-server)')
    .option('--slots <n>', `local worker slots, 0 = none (default: CPU cores, ${availableParallelism()} here)`, intArg('--slots', 0))
    .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'wasm', 'cpu', 'tensorflow']).default('auto'))
    .option('--gpus <list>', `local worker: ${GPUS_HELP}`, gpusArg)
    .option('--slots-per-gpu <k>', 'local worker: slot processes per GPU (default 1)', intArg('--slots-per-gpu', 1))
    .option('--fuse <auto|N>', `local worker: ${FUSE_HELP}`, fuseArg)
    .option('--allow-modules', `local worker: ${ALLOW_MODULES_HELP}`)
    .option('--namespace <ns>', NAMESPACE_HELP, namespaceArg)
    .option('--replicas <n>', 'JetStream replicas of the streams and the state bucket when this run creates them (3 on a 3-node cluster; default 1)', intArg('--replicas', 1))
    .option('--min-free <size>', "pause writing results while DIR's filesystem has less free: a size (256MiB, 2G, 0 = off) or a share of it (5%) (default: $PHASEMAP_MIN_FREE or 256MiB)", minFreeArg);
}

const runCommand = program
  .command('run')
  .description('run a sweep spec to completion (re-running the same spec on the same DIR runs only what is not done)')
  .argument('<spec>', 'sweep spec, YAML or JSON')
  .option('--out <dir>', 'output directory (default: results/<sweep name>)');
withRunOptions(runCommand)
  .action(async (spec: string, o: NatsCliOptions & { out?: string; nats?: string; slots?: number; backend: 'auto' | 'wasm' | 'cpu' | 'tensorflow'; gpus?: string; slotsPerGpu?: number; fuse?: number | 'auto'; namespace?: string; replicas?: number; minFree?: MinFree; allowModules?: boolean }) => {
    const fuse = fuseOption(o.fuse);
    const minFree = minFreeOption(o.minFree);
    const ac = stopOnSignals();
    try {
      const { runSweep } = await import('./run.js');
      const runOpts = { out: o.out, nats: o.nats, natsAuth: natsAuthForUrl(o.nats, o), slots: o.slots, backend: o.backend, gpus: o.gpus, slotsPerGpu: o.slotsPerGpu, fuse, namespace: o.namespace ?? process.env.PHASEMAP_NAMESPACE, replicas: o.replicas, signal: ac.signal, liveReport: true, minFree, allowModules: o.allowModules === true };
      // Resolved once (a large grid takes a while to expand): the run and the refine check share it.
      const sweep = await loadSweep(spec);
      // With refine: rounds to follow, the grid's run does not wait for a live report being written.
      let s: Outcome = await runSweep({ spec, resolved: sweep, ...runOpts, ...(sweep.refine ? { liveReportWaitS: 0 } : {}) });
      let refined: DiagramAxes | undefined;
      // The spec's refine: rounds follow the grid (not after an interrupt, an error or a cancel).
      if (!s.interrupted && s.error === null && s.cancelled === 0 && sweep.refine) {
        const { refineSweep } = await import('./refine.js');
        const r = await refineSweep({ ...runOpts, out: s.dir });
        s = { ...r, queued: s.queued + r.queued, done: s.done + r.done, failed: [...s.failed, ...r.failed], total: r.total };
        refined = { x: r.refine.x, y: r.refine.y, facet: r.refine.facet };
      }
      await finishRun(s, refined);
    } catch (e) {
      process.exitCode = fail(e);
    }
  });

const refineCommand = program
  .command('refine')
  .description("rounds of adaptive refinement of a results DIR's phase boundaries: each runs new trials at the log midpoints between neighbouring cells whose phases differ (the spec's refine: block, defaults without one); running it again adds nothing already there, and resumes a killed refine")
  .argument('<dir>', 'a sweep output directory')
  .option('--rounds <n>', "the round to reach (rounds sweep.json records count) (default: the spec's refine.rounds, or 3)", intArg('--rounds', 0))
  .option('--budget <n>', "most refinement trials in the sweep, over all rounds (default: the spec's refine.budget, or 100)", intArg('--budget', 0));
withRunOptions(refineCommand)
  .action(async (dir: string, o: NatsCliOptions & { rounds?: number; budget?: number; nats?: string; slots?: number; backend: 'auto' | 'wasm' | 'cpu' | 'tensorflow'; gpus?: string; slotsPerGpu?: number; fuse?: number | 'auto'; namespace?: string; replicas?: number; minFree?: MinFree; allowModules?: boolean }) => {
    const fuse = fuseOption(o.fuse);
    const minFree = minFreeOption(o.minFree);
    const ac = stopOnSignals();
    try {
      const { refineSweep } = await import('./refine.js');
      const r = await refineSweep({ out: dir, rounds: o.rounds, budget: o.budget, nats: o.nats, natsAuth: natsAuthForUrl(o.nats, o), slots: o.slots, backend: o.backend, gpus: o.gpus, slotsPerGpu: o.slotsPerGpu, fuse, namespace: o.namespace ?? process.env.PHASEMAP_NAMESPACE, replicas: o.replicas, signal: ac.signal, liveReport: true, minFree, allowModules: o.allowModules === true });
      log.info(`refine: ${r.added.length ? r.added.map((a) => `round ${a.round}: ${a.trials} trial(s)`).join(', ') : 'no new trials'} (rounds ${r.refine.rounds}, resolution ${r.refine.resolution}, budget ${r.refine.budget})`);
      await finishRun(r, { x: r.refine.x, y: r.refine.y, facet: r.refine.facet });
    } catch (e) {
      process.exitCode = failDir(e);
    }
  });

/**
 * The signal a run (or refine) stops on: the first SIGINT / SIGTERM aborts it (running trials are
 * handed back), a second exits at once (130).
 */
function stopOnSignals(): AbortController {
  const ac = new AbortController();
  let interrupts = 0;
  const onSignal = (sig: string) => {
    if (++interrupts > 1) process.exit(130);
    log.warn(`${sig}: stopping; running trials are handed back to the queue (again to force)`);
    ac.abort();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  return ac;
}

/** What a run (or refine) did, for its last lines and exit code. */
interface Outcome {
  dir: string;
  total: number;
  queued: number;
  done: number;
  failed: Array<{ trial_id: string; error: string | null; label: string }>;
  cancelled: number;
  interrupted: boolean;
  error: string | null;
}

/**
 * The end of `run` and `refine`: the outcome in words, the exit code (0 every trial done, 1 some failed or
 * cancelled, 3 an error, 130 interrupted), the phase diagram printed (on the refined axes, with its
 * phase boundaries, after refinement), and the final report written.
 */
async function finishRun(s: Outcome, refined?: DiagramAxes): Promise<void> {
  if (s.error) {
    log.error(s.error);
    process.exitCode = 3;
  } else if (s.interrupted) {
    log.warn(`interrupted: ${s.done}/${s.queued} trial(s) of this run done; run the same command again to go on (${s.dir})`);
    process.exitCode = 130;
  } else if (s.failed.length) {
    log.error(`${s.failed.length} of ${s.queued} trial(s) failed (${s.dir}):\n${s.failed.map((f) => `  ${f.trial_id}${f.label ? ` (${f.label})` : ''}: ${f.error ?? 'unknown error'}`).join('\n')}`);
    process.exitCode = 1;
  } else if (s.cancelled) {
    log.warn(`sweep cancelled (phasemap cancel): ${s.cancelled} of ${s.queued} trial(s) cancelled, ${s.done} done; run the same command again to run the rest (${s.dir})`);
    process.exitCode = 1;
  } else {
    log.info(`done: ${s.total} trial(s) of the sweep done (${s.queued} run now) → ${s.dir}`);
    process.exitCode = 0;
  }
  if (!s.interrupted) {
    const { buildDiagram, renderBoundaries, renderDiagram } = await import('../analysis/diagram.js');
    const axes: DiagramAxes = refined ?? { x: 'lr', y: 'batch_size', facet: 'strategy' };
    await buildDiagram(s.dir, axes).then(
      (cells) => process.stdout.write(renderDiagram(cells, axes) + (refined ? renderBoundaries(cells, axes) : '')),
      (e: Error) => log.warn(`phase diagram not written: ${e.message}`),
    );
  }
  // The final report (no reload): also after an interrupt, so that the page stops saying "running".
  // Loaded here: vega and DuckDB's report code are not needed by the other commands.
  const { writeReport } = await import('../analysis/report/index.js');
  await writeReport(s.dir, {}).then(
    (r) => log.info(`report: ${r.index} (open it in a browser; figures as SVG and PNG beside it)`),
    (e: Error) => log.warn(`report not written: ${e.message}`),
  );
}

/** `phasemap validate` lists every trial of a sweep up to this many; above, a summary (unless --all). */
const VALIDATE_LIST_MAX = 50;

/**
 * What `phasemap validate` prints: the sweep's name and trial count, then every trial (id, label,
 * grid values) — or, above VALIDATE_LIST_MAX trials and without `all`, the grid keys with their
 * number of values, and the first and last trial.
 */
function validateText(s: ResolvedSweep, all: boolean): string {
  const n = s.trials.length;
  const lines = [`${s.name}: ${n} trial(s)${s.duplicates ? ` (${s.duplicates} duplicate grid combination(s) merged)` : ''}`];
  for (const [path, warnings] of Object.entries(s.module_warnings ?? {})) {
    const b = Object.values(s.problem_modules ?? {}).find((m) => m.path === path);
    lines.push(`  problem module ${path}${b ? ` (${Object.keys(b.files).length} file(s), ${b.hash.slice(0, 19)}…)` : ''}: conformance check passed${warnings.length ? `, ${warnings.length} warning(s):` : ''}`);
    for (const w of warnings) lines.push(`    warning: ${w}`);
  }
  const axes = gridAxes(s.trials);
  const line = (t: ResolvedSweep['trials'][number]) => {
    const label = trialLabel(t.grid_values, axes);
    return `${t.trial_id}  ${label ? `${label}  ` : ''}${JSON.stringify(t.grid_values)}`;
  };
  if (all || n <= VALIDATE_LIST_MAX) {
    for (const t of s.trials) lines.push(`  ${line(t)}`);
  } else {
    const grid = Object.entries(s.grid);
    const points = s.sample?.length;
    const combos = grid.reduce((m, [, vs]) => m * vs.length, points ?? 1);
    const factors = [...grid.map(([k, vs]) => `${k} ${vs.length} value(s)`), ...(points === undefined ? [] : [`sample ${points} point(s)`])];
    lines.push(`  grid: ${factors.join(' × ')} = ${combos.toLocaleString('en-US')} combination(s)`);
    lines.push(`  first: ${line(s.trials[0]!)}`, `  last:  ${line(s.trials[n - 1]!)}`);
    lines.push(`  (${n.toLocaleString('en-US')} trials: more than ${VALIDATE_LIST_MAX}, so only the first and last are listed; --all lists every one)`);
  }
  return `${lines.join('\n')}\n`;
}

program
  .command('validate')
  .description(`check a sweep spec and list its trials without running anything (above ${VALIDATE_LIST_MAX} trials: the grid keys with their sizes, the count, the first and last trial)`)
  .argument('<spec>', 'sweep spec, YAML or JSON')
  .option('--all', `list every trial, also above ${VALIDATE_LIST_MAX}`)
  .action(async (spec: string, o: { all?: boolean }) => {
    try {
      process.stdout.write(validateText(await loadSweep(spec), o.all === true));
    } catch (e) {
      process.exitCode = fail(e);
    }
  });

axisOptions(
  program
    .command('diagram')
    .description(`aggregate a sweep's trials into DIR/phase_diagram.parquet (per cell: trials, share of each final phase, median t_equilibrium, median and best final_rel_l2) and print it`)
    .argument('<dir>', 'a sweep output directory'),
  'table',
).action(async (dir: string, o: { x: string; y: string; facet: string | false }) => {
  try {
    const { buildDiagram, renderBoundaries, renderDiagram } = await import('../analysis/diagram.js');
    const axes = axesOf(o);
    const cells = await buildDiagram(dir, axes);
    process.stdout.write(renderDiagram(cells, axes) + renderBoundaries(cells, axes));
  } catch (e) {
    process.exitCode = failDir(e);
  }
});

axisOptions(
  program
    .command('report')
    .description('write DIR/report/index.html (one self-contained page, works offline) and every figure beside it as SVG and PNG: the phase diagram, SNR, test error, loss and the other diagnostics per diagram cell, and the trials table')
    .argument('<dir>', 'a sweep output directory')
    .option('--out <path>', 'folder of the report (default: DIR/report)'),
  'diagram panel',
)
  .option('--watch', 'for a DIR another process fills (a remote orchestrator): rewrite the report as trials finish, at most every 15 s, until every trial has finished')
  .addOption(new Option('--live', 'the sweep is running: the page says so and reloads itself (used by phasemap run)').hideHelp())
  .action(async (dir: string, o: { out?: string; x: string; y: string; facet: string | false; watch?: boolean; live?: boolean }) => {
    const axes = axesOf(o);
    try {
      const { watchReport, writeReport } = await import('../analysis/report/index.js');
      if (o.watch) {
        const ac = new AbortController();
        process.on('SIGINT', () => ac.abort());
        process.on('SIGTERM', () => ac.abort());
        await watchReport(dir, { out: o.out, axes, signal: ac.signal, onWrite: (r) => log.info(`report: ${r.index} (${r.data.counts.done}/${r.data.counts.total} done, ${(r.ms.total / 1000).toFixed(1)} s)`) });
        return;
      }
      // A live report (run refreshes it while the sweep runs) skips the PNGs: the page does not use them, the final report writes them.
      const r = await writeReport(dir, { out: o.out, axes, live: o.live, png: !o.live });
      log.info(`report: ${r.index} (${r.files.length} figure files, ${(r.ms.total / 1000).toFixed(1)} s); open it in a browser`);
    } catch (e) {
      process.exitCode = failDir(e);
    }
  });

program
  .command('query')
  .description('SQL (DuckDB) over a results DIR: views trials, metrics (each trial\'s completed attempt only: one row per trial and logged step) and metrics_all (every attempt); without SQL, the views and their columns')
  .argument('<dir>', 'a sweep output directory')
  .argument('[sql]', 'a query, e.g. "SELECT strategy, lr, median(final_rel_l2) FROM trials GROUP BY ALL"')
  .addOption(new Option('--format <f>', 'output format').choices(['table', 'csv', 'json']).default('table'))
  .action(async (dir: string, query: string | undefined, o: { format: 'table' | 'csv' | 'json' }) => {
    try {
      const { runQuery } = await import('../analysis/query.js');
      process.stdout.write(await runQuery(dir, query, o.format));
    } catch (e) {
      // DuckDB's errors for the user's SQL (Parser Error, Binder Error, …) are bad input.
      process.exitCode = failDir(e, /Error: /);
    }
  });

program
  .command('worker')
  .description("join a NATS cluster and work on any sweep's trials until stopped (SIGTERM/SIGINT hand running trials back)")
  .requiredOption('--nats <url>', 'NATS server URL(s), comma-separated')
  .option('--slots <n>', `trial slots (default: CPU cores, ${availableParallelism()} here)`, intArg('--slots', 1))
  .option('--gpus <list>', GPUS_HELP, gpusArg)
  .option('--slots-per-gpu <k>', 'slot processes per GPU (default 1)', intArg('--slots-per-gpu', 1))
  .option('--fuse <auto|N>', FUSE_HELP, fuseArg)
  .option('--namespace <ns>', NAMESPACE_HELP, namespaceArg)
  .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'wasm', 'cpu', 'tensorflow']).default('auto'))
  .option('--name <name>', 'worker name in trial state (default: HOST:PID)')
  .option('--allow-modules', ALLOW_MODULES_HELP)
  .action(async (o: NatsCliOptions & { nats: string; slots?: number; gpus?: string; slotsPerGpu?: number; backend: 'auto' | 'wasm' | 'cpu' | 'tensorflow'; name?: string; namespace?: string; fuse?: number | 'auto'; allowModules?: boolean }) => {
    const fuse = fuseOption(o.fuse);
    try {
      const { WorkerAgent } = await import('../worker/agent.js');
      // Errors come worded, the URL's password redacted (nats-connect.ts).
      const nc = await connectNats(o.nats, `phasemap-worker-${o.name ?? process.pid}`, natsAuthFromOptions(o));
      // Trials are named by their grid values in the log, as the trial messages label them.
      const labels = new Map<string, string>();
      const agent = new WorkerAgent({ nc, slots: o.slots ?? availableParallelism(), backend: o.backend, gpus: o.gpus, slotsPerGpu: o.slotsPerGpu, fuse, name: o.name, namespace: o.namespace ?? process.env.PHASEMAP_NAMESPACE, log: withTrialLabels(log, labels), labels, allowModules: o.allowModules === true });
      let stopping = false;
      const stop = (sig: string) => {
        if (stopping) process.exit(130);
        stopping = true;
        log.warn(`${sig}: handing ${agent.inFlight} running trial(s) back to the queue and stopping`);
        void agent.stop(true).then(() => nc.drain()).then(() => process.exit(0), () => process.exit(0));
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      await agent.start();
      log.info(`worker ${agent.name}: pulling trials from ${redactUrl(o.nats)}`);
    } catch (e) {
      process.exitCode = fail(e);
    }
  });


/** Connects (flags/env credentials), resolves the namespace (--namespace, PHASEMAP_NAMESPACE, default), runs `f`, closes; errors set the exit code. */
async function withNamespace(o: NatsCliOptions & { nats: string; namespace?: string }, client: string, f: (nc: NatsConnection, names: TransportNames) => Promise<void>): Promise<void> {
  try {
    const nc = await connectNats(o.nats, client, natsAuthFromOptions(o));
    try {
      await f(nc, transportNames(o.namespace ?? process.env.PHASEMAP_NAMESPACE ?? DEFAULT_NAMESPACE));
    } finally {
      await nc.close();
    }
  } catch (e) {
    process.exitCode = fail(e);
  }
}

program
  .command('status')
  .description("show a sweep: from its results DIR (while its run lives, from the run's server), or with --nats every sweep of a namespace on a cluster: per trial its grid values, state, phase so far, step and rel. L2, and the ETA")
  .argument('[target]', 'a results DIR (default: the current directory when it is one); with --nats a sweep name (default: every sweep of the namespace) or a results DIR')
  .option('--nats <url>', 'NATS server URL(s), comma-separated: read trial states from that server or cluster')
  .option('--namespace <ns>', NAMESPACE_HELP, namespaceArg)
  .option('--json', 'one JSON object on stdout, for scripts')
  .action(async (target: string | undefined, o: NatsCliOptions & { nats?: string; namespace?: string; json?: boolean }) => {
    const { dirStatus, isResultsDir, labelSweepStatus, renderDirStatus } = await import('./dir-status.js');
    const showDir = async (dir: string, nc?: NatsConnection, names?: TransportNames) => {
      const s = await dirStatus(dir, { nc, names });
      process.stdout.write(o.json ? `${JSON.stringify(s, null, 2)}\n` : renderDirStatus(s));
    };
    if (!o.nats) {
      const dir = target ?? process.cwd();
      if (!isResultsDir(dir)) {
        log.error(
          target
            ? `status: ${target} is not a results DIR (no sweep.json or trials.parquet); for a sweep on a NATS server or cluster, add --nats URL`
            : `status: the current directory is not a results DIR (no sweep.json or trials.parquet): give one (phasemap status DIR), or --nats URL for the sweeps of a cluster`,
        );
        process.exitCode = 2;
        return;
      }
      try {
        await showDir(dir);
      } catch (e) {
        process.exitCode = failDir(e);
      }
      return;
    }
    const nats = o.nats;
    await withNamespace({ ...o, nats }, 'phasemap-status', async (nc, names) => {
      // A results DIR with --nats: that sweep, its trial states from the cluster and its metrics from DIR.
      if (target && isResultsDir(target)) return showDir(target, nc, names);
      const sweep = target;
      // The running trials' steps from their live progress (up to 1.5 s), not from heartbeats.
      const list = await sweepStatus(nc, names, sweep, await workerAckWaitMs(nc, names, trialAckWaitMs()), 1500);
      await labelSweepStatus(list);
      if (sweep && !list.length) {
        log.error(`sweep '${sweep}': no trials in namespace ${names.ns} on ${redactUrl(nats)}`);
        process.exitCode = 2;
      } else process.stdout.write(o.json ? `${JSON.stringify({ namespace: names.ns, sweeps: list }, null, 2)}\n` : renderStatus(list, names.ns));
    });
  });

program
  .command('cancel')
  .description('stop a sweep cleanly: queued trials are removed, running ones stop at their next step; all are recorded cancelled (a later run of the spec runs them again)')
  .argument('<sweep>', 'sweep name')
  .requiredOption('--nats <url>', 'NATS server URL(s), comma-separated')
  .option('--namespace <ns>', NAMESPACE_HELP, namespaceArg)
  .option('--wait <s>', 'seconds to wait for running trials to stop (default: the trial ack wait + 10)', intArg('--wait', 0))
  .action(async (sweep: string, o: NatsCliOptions & { nats: string; namespace?: string; wait?: number }) => {
    await withNamespace(o, 'phasemap-cancel', async (nc, names) => {
      const s = await cancelSweep(nc, names, sweep, { waitMs: o.wait === undefined ? undefined : o.wait * 1000, ackWaitMs: await workerAckWaitMs(nc, names, trialAckWaitMs()) });
      log.info(`sweep ${sweep}: cancelled ${s.queued} queued and ${s.running} running trial(s)${s.forced ? ` (${s.forced} of them on workers that were gone)` : ''}${s.left ? `; ${s.left} still stopping` : ''}`);
    });
  });

// Credentials and TLS flags (--nats-user, --nats-creds, --tls-ca, …; nats-connect.ts) on every command that talks to NATS.
for (const c of program.commands) if (['run', 'refine', 'worker', 'status', 'cancel'].includes(c.name())) addNatsOptions(c);

// An error nothing caught (a callback's, a timer's) ends the process as fail() words it: no stack trace unless asked for.
process.on('uncaughtException', (e) => {
  process.exit(e instanceof CommanderError ? 2 : fail(e));
});

program.parseAsync().catch((e) => {
  process.exitCode = e instanceof CommanderError ? 2 : fail(e);
});
