/**
 * `npm run bench --quick` runs and writes a well-formed results.json (issue 5). No timing assertions:
 * only the shape of the file. A subset (snr-cost: a trainer child process; ingest: nats-server,
 * producer threads, the collector process, Parquet) keeps the test well under a minute.
 */
import { spawn } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import test from 'ava';
import { repoRoot, tempDir } from './helpers.js';

test('bench --quick writes a well-formed results.json', async (t) => {
  const dir = await tempDir('bench');
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const out = join(dir, 'results.json');
  const res = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    const child = spawn(process.execPath, [join(repoRoot, 'dist/bench/run.js'), '--quick', '--runs', '1', '--only', 'snr-cost,ingest', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 110_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  t.is(res.code, 0, res.stderr);
  t.regex(res.stdout, /figure.*unit.*median.*min.*max.*runs.*target.*pass/);
  const j = JSON.parse(await readFile(out, 'utf8')) as {
    date: string; command: string; machine: Record<string, unknown>; options: { quick: boolean; runs: number };
    figures: Array<Record<string, unknown>>;
  };
  t.false(Number.isNaN(Date.parse(j.date)));
  t.true(j.options.quick);
  for (const k of ['cpu', 'cores', 'node', 'backend']) t.truthy(j.machine[k], k);
  t.is(j.machine.backend, 'wasm');
  const benches = new Set(j.figures.map((f) => f.bench));
  t.deepEqual([...benches].sort(), ['ingest', 'snr-cost']);
  t.true(j.figures.length >= 5, JSON.stringify(j.figures.map((f) => f.figure)));
  for (const f of j.figures) {
    for (const k of ['figure', 'unit', 'method']) t.is(typeof f[k], 'string', `${f.figure}: ${k}`);
    for (const k of ['median', 'min', 'max']) t.true(f[k] === null || typeof f[k] === 'number', `${f.figure}: ${k}`);
    t.is(typeof f.runs, 'number');
    t.true(Array.isArray(f.samples));
    t.is(typeof f.config, 'object');
    t.true(f.pass === null || typeof f.pass === 'boolean');
    t.is(f.error, undefined, `${f.figure}: ${String(f.error)}`);
    t.is(f.runs, 1, String(f.figure));
  }
  const ingest = j.figures.filter((f) => f.bench === 'ingest' && f.unit === 'rows/s');
  t.deepEqual(ingest.map((f) => (f.config as { streams: number }).streams), [1, 4, 16]);
  t.true(ingest.every((f) => (f.target as { value: number }).value === 1_000_000));
  // CPU per row of every process of the path (Linux /proc), and the ceiling it implies on this machine's cores.
  const cpu = j.figures.filter((f) => f.bench === 'ingest' && f.unit === 'µs/row');
  t.deepEqual(cpu.map((f) => (f.config as { streams: number }).streams), [1, 4, 16]);
  for (const f of cpu) {
    const c = f.config as { cores: number; ceiling_rows_per_s_on_all_cores: number };
    t.true((f.median as number) > 0, String(f.figure));
    t.is(c.cores, j.machine.cores as number);
    t.is(c.ceiling_rows_per_s_on_all_cores, Math.round((c.cores * 1e6) / (f.median as number)));
  }
});
