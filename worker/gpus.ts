/**
 * GPUs of a worker (`phasemap worker --gpus all|none|0,2,…`): parsing the flag and discovering the
 * host's GPUs with nvidia-smi. Each listed GPU gets its own slot processes (worker/pool.ts
 * `makeSlotPool`), started with CUDA_VISIBLE_DEVICES set to that one GPU id.
 */
import { execFile } from 'node:child_process';
import type { BackendName } from '../schemas/trial.js';

/** A parsed `--gpus` value: every GPU nvidia-smi lists, none, or these GPU ids (distinct, in the order given). */
export type GpuSelection = 'all' | 'none' | readonly number[];

/** Environment variable naming the nvidia-smi binary to run (default: `nvidia-smi` on PATH). */
export const NVIDIA_SMI_ENV = 'PHASEMAP_NVIDIA_SMI';

const EXPECTED = 'expected "all", "none" or a comma-separated list of distinct GPU ids (non-negative integers, e.g. 0,2)';

/** A `--gpus all` that this host cannot satisfy (nvidia-smi missing, failing, or listing no GPU). */
export class GpuDiscoveryError extends Error {
  override name = 'GpuDiscoveryError';
}

/**
 * Parses a `--gpus` value: `all`, `none`, or GPU ids such as `0` or `0,2` (spaces around ids allowed).
 * Ids are not checked against the host: a listed id is used as given (CUDA_VISIBLE_DEVICES=<id>).
 * @throws Error naming `--gpus`, the value and what was expected, e.g.
 *   `--gpus: got "0,0", expected … (GPU 0 is listed twice)`.
 */
export function parseGpus(value: string): GpuSelection {
  const v = value.trim();
  if (v === 'all' || v === 'none') return v;
  const bad = (why: string) => new Error(`--gpus: got ${JSON.stringify(value)}, ${EXPECTED}${why ? ` (${why})` : ''}`);
  if (v === '') throw bad('empty');
  const ids: number[] = [];
  for (const part of v.split(',')) {
    const p = part.trim();
    if (!/^\d+$/.test(p)) throw bad(p === '' ? 'an empty id' : `${JSON.stringify(p)} is not a GPU id`);
    const id = Number(p);
    if (!Number.isSafeInteger(id)) throw bad(`${p} is too large`);
    if (ids.includes(id)) throw bad(`GPU ${id} is listed twice`);
    ids.push(id);
  }
  return ids;
}

/** The nvidia-smi binary to run: $PHASEMAP_NVIDIA_SMI when set (non-empty), else `nvidia-smi` on PATH. */
export function nvidiaSmiPath(): string {
  return process.env[NVIDIA_SMI_ENV] || 'nvidia-smi';
}

/**
 * The GPU ids of this host as nvidia-smi lists them
 * (`nvidia-smi --query-gpu=index --format=csv,noheader`, one index a line), in its order.
 * Returns [] when nvidia-smi runs and lists no GPU.
 * @throws GpuDiscoveryError (message starting `--gpus all: `) when nvidia-smi is not found
 *   ("--gpus all: nvidia-smi not found …"), cannot be run, exits non-zero or times out (30 s), or prints a
 *   line that is not a GPU index.
 */
export function listGpus(): Promise<number[]> {
  const bin = nvidiaSmiPath();
  return new Promise((resolve, reject) => {
    execFile(bin, ['--query-gpu=index', '--format=csv,noheader'], { timeout: 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const e = err as NodeJS.ErrnoException & { code?: string | number; killed?: boolean };
        if (e.code === 'ENOENT')
          return reject(new GpuDiscoveryError(
            `--gpus all: nvidia-smi not found (ran ${JSON.stringify(bin)}; put nvidia-smi on PATH or set ${NVIDIA_SMI_ENV} to its path), ` +
              'or name the GPUs (--gpus 0,1) or run without them (--gpus none)',
          ));
        const detail = typeof e.code === 'string' ? e.code : e.killed ? 'timed out after 30 s' : `exit code ${String(e.code)}`;
        const text = String(stderr || stdout || '').trim().split('\n')[0] ?? '';
        return reject(new GpuDiscoveryError(`--gpus all: ${JSON.stringify(bin)} failed (${detail}${text ? `: ${text}` : ''})`));
      }
      const ids: number[] = [];
      for (const line of stdout.split(/\r?\n/)) {
        const l = line.trim();
        if (l === '') continue;
        if (!/^\d+$/.test(l)) return reject(new GpuDiscoveryError(`--gpus all: nvidia-smi printed ${JSON.stringify(l)}, expected one GPU index a line`));
        ids.push(Number(l));
      }
      resolve(ids);
    });
  });
}

/**
 * The GPU ids a worker pins slot processes to.
 * - `value` given: `none` → []; ids → those ids; `all` → `listGpus()`, which must list at least one.
 * - `value` absent: [] unless `backend` is `tensorflow`, then whatever nvidia-smi lists ([] when it is
 *   missing, fails or lists none).
 * @throws Error from `parseGpus` on a bad value; GpuDiscoveryError for `all` when nvidia-smi is missing or
 *   fails, or lists no GPU ("--gpus all: nvidia-smi lists no GPU").
 */
export async function resolveGpus(value: string | undefined, backend: BackendName): Promise<number[]> {
  if (value === undefined) return backend === 'tensorflow' ? listGpus().catch(() => []) : [];
  const sel = parseGpus(value);
  if (sel === 'none') return [];
  if (sel !== 'all') return [...sel];
  const ids = await listGpus();
  if (ids.length === 0) throw new GpuDiscoveryError(`--gpus all: nvidia-smi lists no GPU (ran ${JSON.stringify(nvidiaSmiPath())}); use --gpus none`);
  return ids;
}
