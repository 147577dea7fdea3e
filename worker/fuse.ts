/**
 * The `--fuse` value (and PHASEMAP_FUSE): a module of its own, so that the CLI checks the flag
 * without loading the worker (tfjs, the slot pools).
 */
import { MAX_GROUP } from './slot-stop.js';

/**
 * Parses a `--fuse` value: `auto`, or an integer 1…MAX_GROUP (trials per slot; 1 = never fuse).
 * @param what names the value in the error (`--fuse`, `PHASEMAP_FUSE`).
 * @throws Error "<what>: got "<v>", expected "auto" or an integer from 1 to <MAX_GROUP> (…)".
 */
export function parseFuse(v: string, what = '--fuse'): number | 'auto' {
  const s = v.trim();
  if (s === 'auto') return 'auto';
  const n = Number(s);
  if (s === '' || !Number.isInteger(n) || n < 1 || n > MAX_GROUP) {
    throw new Error(`${what}: got ${JSON.stringify(v)}, expected "auto" or an integer from 1 to ${MAX_GROUP} (most trials one slot trains fused; 1 = never fuse)`);
  }
  return n;
}
