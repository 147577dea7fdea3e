/**
 * DIR/run.json: written by `phasemap run` while it lives (after it owns the sweep) and removed when it
 * ends, so that `phasemap status DIR` finds the run — its pid, and the URL of its embedded nats-server —
 * without being told. A run killed with SIGKILL leaves it behind: readers check the pid and the server.
 */
import { readFileSync, rmSync } from 'node:fs';
import { readFile, rename, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { pidAlive } from '../analysis/pid.js';

/** The run file's name inside DIR. */
export const RUN_FILE = 'run.json';

/** What DIR/run.json holds. */
export interface RunFile {
  /** The orchestrator's process id and host. */
  pid: number;
  host: string;
  sweep: string;
  namespace: string;
  /** ISO 8601 UTC. */
  started_at: string;
  /** URL of the run's embedded nats-server (loopback, no credentials); null when the run uses --nats. */
  url: string | null;
  /** The --nats URL of a run on a cluster, password redacted; null for the embedded server. */
  nats: string | null;
}

/** Writes DIR/run.json (atomically). */
export async function writeRunFile(dir: string, run: Omit<RunFile, 'pid' | 'host' | 'started_at'>): Promise<RunFile> {
  const file: RunFile = { pid: process.pid, host: hostname(), started_at: new Date().toISOString(), ...run };
  const path = join(dir, RUN_FILE);
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`);
  await rename(tmp, path);
  return file;
}

/** Removes DIR/run.json when this process wrote it (synchronous: also from an `exit` handler). */
export function removeRunFile(dir: string): void {
  try {
    const cur = JSON.parse(readFileSync(join(dir, RUN_FILE), 'utf8')) as Partial<RunFile>;
    if (cur.pid !== process.pid || cur.host !== hostname()) return;
    rmSync(join(dir, RUN_FILE), { force: true });
  } catch {
    /* gone already, or not readable: nothing of ours to remove */
  }
}

/** DIR/run.json, or null when there is none (or it is not a run file). */
export async function readRunFile(dir: string): Promise<RunFile | null> {
  try {
    const f = JSON.parse(await readFile(join(dir, RUN_FILE), 'utf8')) as RunFile;
    return typeof f.pid === 'number' && typeof f.sweep === 'string' ? f : null;
  } catch {
    return null;
  }
}

/**
 * Whether the process of a run file is alive: signal 0 to its pid on this host (EPERM: alive, another
 * user's); on another host it cannot be told, and null is returned.
 */
export function runProcessAlive(run: RunFile): boolean | null {
  return run.host === hostname() ? pidAlive(run.pid) : null;
}
