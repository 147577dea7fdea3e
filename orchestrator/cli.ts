#!/usr/bin/env node
/**
 * phasemap command line.
 *   phasemap run SPEC [--out DIR] [--nats URL] [--slots N] [--backend auto|wasm|cpu|tensorflow]
 *   phasemap validate SPEC
 *   phasemap diagram DIR [--x lr] [--y batch_size] [--facet strategy | --no-facet]
 *   phasemap worker --nats URL [--slots N] [--backend …] [--name NAME]
 * Exit codes: 0 every trial done; 1 some trial failed; 2 bad input (spec, flags); 3 runtime error; 130 interrupted.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { WorkerAgent } from '../worker/agent.js';
import { buildDiagram, DIAGRAM_FILE, renderDiagram, type DiagramAxes } from './diagram.js';
import { connectNats } from './jetstream.js';
import { NatsServerMissing } from './nats-server.js';
import { plainLogger } from './progress.js';
import { runSweep } from './run.js';
import { loadSweep, SpecErrors } from './spec.js';

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

function fail(e: unknown): number {
  if (e instanceof SpecErrors) {
    log.error(`invalid sweep spec (nothing was run):\n  ${e.errors.map((x) => x.message).join('\n  ')}`);
    return 2;
  }
  if (e instanceof NatsServerMissing) {
    log.error(e.message);
    return 3;
  }
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'ENOENT' && err.path) {
    log.error(`file not found: ${err.path}`);
    return 2;
  }
  // Runtime errors that phasemap words itself need no stack trace.
  log.error(err instanceof Error && /^--nats /.test(err.message) ? err.message : (err?.stack ?? String(e)));
  return 3;
}

const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };

const program = new Command()
  .name('phasemap')
  .description('Map the phases of PINN training: sweeps over NATS JetStream, metrics as Parquet.')
  .version(pkg.version)
  .showHelpAfterError()
  // Usage errors exit 2 (1 means "some trial failed"); help and --version exit 0.
  .exitOverride((e: CommanderError) => {
    process.exit(e.exitCode === 0 ? 0 : 2);
  });

program
  .command('run')
  .description('run a sweep spec to completion (re-running the same spec on the same DIR runs only what is not done)')
  .argument('<spec>', 'sweep spec, YAML or JSON')
  .option('--out <dir>', 'output directory (default: results/<sweep name>)')
  .option('--nats <url>', 'NATS server URL(s), comma-separated (default: start a private nats-server)')
  .option('--slots <n>', `local worker slots, 0 = none (default: CPU cores, ${availableParallelism()} here)`, intArg('--slots', 0))
  .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'wasm', 'cpu', 'tensorflow']).default('auto'))
  .action(async (spec: string, o: { out?: string; nats?: string; slots?: number; backend: 'auto' | 'wasm' | 'cpu' | 'tensorflow' }) => {
    const ac = new AbortController();
    let interrupts = 0;
    const onSignal = (sig: string) => {
      if (++interrupts > 1) process.exit(130);
      log.warn(`${sig}: stopping; running trials are handed back to the queue (again to force)`);
      ac.abort();
    };
    process.on('SIGINT', () => onSignal('SIGINT'));
    process.on('SIGTERM', () => onSignal('SIGTERM'));
    try {
      const s = await runSweep({ spec, out: o.out, nats: o.nats, slots: o.slots, backend: o.backend, signal: ac.signal });
      if (s.interrupted) {
        log.warn(`interrupted: ${s.done}/${s.queued} trial(s) of this run done; run the same command again to go on (${s.dir})`);
        process.exitCode = 130;
      } else if (s.failed.length) {
        log.error(`${s.failed.length} of ${s.queued} trial(s) failed (${s.dir}):\n${s.failed.map((f) => `  ${f.trial_id}: ${f.error ?? 'unknown error'}`).join('\n')}`);
        process.exitCode = 1;
      } else {
        log.info(`done: ${s.total} trial(s) of the sweep done (${s.queued} run now) → ${s.dir}`);
        process.exitCode = 0;
      }
      if (!s.interrupted) {
        const axes: DiagramAxes = { x: 'lr', y: 'batch_size', facet: 'strategy' };
        await buildDiagram(s.dir, axes).then(
          (cells) => process.stdout.write(renderDiagram(cells, axes)),
          (e: Error) => log.warn(`phase diagram not written: ${e.message}`),
        );
      }
    } catch (e) {
      process.exitCode = fail(e);
    }
  });

program
  .command('validate')
  .description('check a sweep spec and list its trials without running anything')
  .argument('<spec>', 'sweep spec, YAML or JSON')
  .action(async (spec: string) => {
    try {
      const s = await loadSweep(spec);
      process.stdout.write(`${s.name}: ${s.trials.length} trial(s)${s.duplicates ? ` (${s.duplicates} duplicate grid combination(s) merged)` : ''}\n`);
      for (const t of s.trials) process.stdout.write(`  ${t.trial_id}  ${JSON.stringify(t.grid_values)}\n`);
    } catch (e) {
      process.exitCode = fail(e);
    }
  });

program
  .command('diagram')
  .description(`aggregate a sweep's trials into DIR/${DIAGRAM_FILE} (per cell: trials, share of each final phase, median t_equilibrium, median and best final_rel_l2) and print it`)
  .argument('<dir>', 'a sweep output directory')
  .option('--x <column>', 'trials.parquet column on the horizontal axis', 'lr')
  .option('--y <column>', 'trials.parquet column on the vertical axis', 'batch_size')
  .option('--facet <column>', 'one table per value of this column', 'strategy')
  .option('--no-facet', 'a single table')
  .action(async (dir: string, o: { x: string; y: string; facet: string | false }) => {
    try {
      const axes: DiagramAxes = { x: o.x, y: o.y, facet: o.facet || null };
      process.stdout.write(renderDiagram(await buildDiagram(dir, axes), axes));
    } catch (e) {
      const msg = (e as Error).message;
      if (/^(--x|--y|--facet|.*: no trials\.parquet)/.test(msg)) {
        log.error(msg);
        process.exitCode = 2;
      } else process.exitCode = fail(e);
    }
  });

program
  .command('worker')
  .description("join a NATS cluster and work on any sweep's trials until stopped (SIGTERM/SIGINT hand running trials back)")
  .requiredOption('--nats <url>', 'NATS server URL(s), comma-separated')
  .option('--slots <n>', `trial slots (default: CPU cores, ${availableParallelism()} here)`, intArg('--slots', 1))
  .addOption(new Option('--backend <name>', 'tfjs backend').choices(['auto', 'wasm', 'cpu', 'tensorflow']).default('auto'))
  .option('--name <name>', 'worker name in trial state (default: HOST:PID)')
  .action(async (o: { nats: string; slots?: number; backend: 'auto' | 'wasm' | 'cpu' | 'tensorflow'; name?: string }) => {
    try {
      const nc = await connectNats(o.nats, `phasemap-worker-${o.name ?? process.pid}`).catch((e: Error) => {
        throw new Error(`--nats ${o.nats}: cannot connect (${e.message}); is nats-server running there with JetStream (-js)?`);
      });
      const agent = new WorkerAgent({ nc, slots: o.slots ?? availableParallelism(), backend: o.backend, name: o.name, log });
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
      log.info(`worker ${agent.name}: pulling trials from ${o.nats}`);
    } catch (e) {
      process.exitCode = fail(e);
    }
  });

program.parseAsync().catch((e) => {
  process.exitCode = e instanceof CommanderError ? 2 : fail(e);
});
