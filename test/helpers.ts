/** Test helpers: DuckDB queries over what phasemap wrote, a real nats-server, the CLI as a process. */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DuckDBInstance } from '@duckdb/node-api';
import { jetstream } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { connect } from '@nats-io/transport-node';
import { startEmbeddedNats } from '../orchestrator/nats-server.js';
import type { TrialState } from '../schemas/trial.js';
import { transportNames } from '../schemas/transport.js';

/** Runs SQL in an in-memory DuckDB and returns rows as objects (BIGINT as bigint). */
export async function duck(sql: string): Promise<Record<string, unknown>[]> {
  const db = await DuckDBInstance.create(':memory:');
  const conn = await db.connect();
  try {
    const reader = await conn.runAndReadAll(sql);
    return reader.getRowObjects() as Record<string, unknown>[];
  } finally {
    conn.closeSync();
  }
}

export const repoRoot = fileURLToPath(new URL('../../', import.meta.url));
export const cliPath = join(repoRoot, 'dist/orchestrator/cli.js');

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(join(tmpdir(), `phasemap-${prefix}-`));
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `phasemap ARGS` as a child process (not a TTY). */
export function runCli(args: string[], opts: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> & { child: ChildProcess } {
  const child = spawn(process.execPath, [cliPath, ...args], { cwd: opts.cwd ?? repoRoot, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 240_000);
  const p = new Promise<CliResult>((resolve) =>
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    }),
  ) as Promise<CliResult> & { child: ChildProcess };
  p.child = child;
  return p;
}

/** A real nats-server with JetStream for a test. */
export const startNats = startEmbeddedNats;

/** Trial states of a sweep in the default namespace's bucket. */
export async function trialStates(url: string, sweep: string): Promise<Map<string, TrialState>> {
  const nc = await connect({ servers: url, reconnect: false });
  try {
    const kv = await new Kvm(jetstream(nc)).open(transportNames().stateBucket);
    const out = new Map<string, TrialState>();
    for await (const k of await kv.keys(`${sweep}.>`)) {
      const id = k.slice(sweep.length + 1);
      if (!/^t[0-9a-f]{16}$/.test(id)) continue;
      const e = await kv.get(k);
      if (e?.operation === 'PUT') out.set(id, e.json<TrialState>());
    }
    return out;
  } catch {
    return new Map();
  } finally {
    await nc.close();
  }
}

/** A CLI process started by `runCli`. */
export type Cli = Promise<CliResult> & { child: ChildProcess };

/**
 * `runCli` that remembers every process it starts, and `killStarted`, which SIGKILLs those still running
 * (register it as `test.afterEach.always(killStarted)`: a failed assertion must not leave one running).
 */
export function trackedCli(): { cli: (args: string[], opts?: Parameters<typeof runCli>[1]) => Cli; killStarted: () => void } {
  const started: Cli[] = [];
  return {
    cli(args, opts = {}) {
      const p = runCli(args, opts);
      started.push(p);
      return p;
    },
    killStarted() {
      for (const p of started.splice(0)) if (p.child.exitCode === null) p.child.kill('SIGKILL');
    },
  };
}

/** Everything `p` writes to stderr from now on, read when called. */
export function stderrOf(p: Cli): () => string {
  let text = '';
  p.child.stderr!.on('data', (d: Buffer) => (text += d.toString()));
  return () => text;
}

/** Polls `cond` every `pollMs` until true. @throws Error "timed out waiting for <what>" after `ms`. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string, pollMs = 200): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, pollMs));
  }
}

/** A free TCP port on 127.0.0.1 (the OS picks it; it is free again when this resolves). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
