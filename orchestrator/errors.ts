/**
 * Errors a user sees, in words: bad input phasemap can name (exit 2), a sweep another orchestrator
 * runs (exit 3), and filesystem errors — the path and the cause (exists and is a file, not a
 * directory, read-only file system, permission denied, no space left) instead of a stack trace.
 */
import { constants, statSync } from 'node:fs';
import { access, mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * An error phasemap words itself: the CLI prints the message alone (no stack trace) and exits with
 * `exit`: 2 for bad input (a path, a flag's value), 3 for the machine's state (no space left).
 */
export class WordedError extends Error {
  constructor(
    message: string,
    readonly exit: 2 | 3 = 2,
  ) {
    super(message);
    this.name = 'WordedError';
  }
}

/** The sweep is being run by another orchestrator (its DIR's run.json, or the owner key in NATS): exit 3. */
export class SweepBusyError extends WordedError {
  constructor(message: string) {
    super(message, 3);
    this.name = 'SweepBusyError';
  }
}

/** Causes of filesystem errors in words, by errno code. */
const CAUSES: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EEXIST: 'already exists',
  ENOTDIR: 'not a directory',
  EISDIR: 'is a directory, not a file',
  EROFS: 'read-only file system',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted (permission denied)',
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EFBIG: 'file too large',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many levels of symbolic links (a symlink loop?)',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  EIO: 'input/output error',
  EBUSY: 'device or resource busy',
  ETXTBSY: 'text file busy',
  EXDEV: 'cross-device link',
};

/** Codes that are the machine's state, not the input's: exit 3 (the rest: exit 2, a path the user can fix). */
const RUNTIME_CODES = new Set(['ENOSPC', 'EDQUOT', 'EFBIG', 'EMFILE', 'ENFILE', 'EIO', 'EBUSY', 'ETXTBSY']);

/** Whether `e` is a Node.js filesystem error (an errno code and a path). */
export function isFsError(e: unknown): e is NodeJS.ErrnoException & { code: string; path: string } {
  const x = e as NodeJS.ErrnoException | null;
  return x instanceof Error && typeof x.code === 'string' && typeof x.path === 'string' && (x.code in CAUSES || /^E[A-Z]+$/.test(x.code));
}

/** The nearest path at or above `path` that exists and is not a directory (the file a path runs through), if any. */
function fileOnTheWay(path: string): string | undefined {
  for (let p = path; ; p = dirname(p)) {
    try {
      if (!statSync(p).isDirectory()) return p;
      return undefined;
    } catch {
      /* missing: look further up */
    }
    if (dirname(p) === p) return undefined;
  }
}

/**
 * A filesystem error in words: `PATH: CAUSE` (`results/x: read-only file system`), with, for ENOTDIR,
 * the file the path runs through (`a/b/c: a/b is a file, not a directory`), and for EEXIST what is there.
 * `exit`: 3 for the machine's state (no space, I/O error, too many open files), else 2.
 */
export function describeFsError(e: { code: string; path: string; message?: string }): { message: string; exit: 2 | 3 } {
  let cause = CAUSES[e.code] ?? `${e.code}${e.message ? ` (${e.message})` : ''}`;
  if (e.code === 'ENOTDIR') {
    const file = fileOnTheWay(e.path);
    if (file !== undefined) cause = file === e.path ? 'is a file, not a directory' : `${file} is a file, not a directory`;
  } else if (e.code === 'EEXIST') {
    try {
      if (!statSync(e.path).isDirectory()) cause = 'exists and is a file, not a directory';
    } catch {
      /* gone meanwhile: the generic cause */
    }
  }
  return { message: `${e.path}: ${cause}`, exit: RUNTIME_CODES.has(e.code) ? 3 : 2 };
}

/** A filesystem error about `path` as a WordedError under `label` (`--out results/x: read-only file system`); other errors as they are. */
function wordedFsError(e: unknown, label: string, dir: string, path: string): Error {
  if (!isFsError(e)) return e as Error;
  const d = describeFsError({ code: e.code, path, message: e.message });
  return new WordedError(`${label}: ${d.message.startsWith(`${dir}: `) ? d.message.slice(dir.length + 2) : d.message}`, d.exit);
}

/**
 * Checks, writing nothing, that the output directory `dir` can be used: it is a directory that can
 * be written to, or the nearest folder above it that exists is one (so it can be made). `label`
 * names it in errors (`--out results/x`).
 * @returns the missing folders from the top down (empty when `dir` exists).
 * @throws WordedError naming `label` and the cause: a file where a directory should be, a read-only
 * file system, no permission (exit 2); no space left (exit 3).
 */
export async function checkOutDir(dir: string, label: string): Promise<string[]> {
  const missing: string[] = [];
  let p = dir;
  for (; ; p = dirname(p)) {
    try {
      const st = await stat(p);
      if (!st.isDirectory()) throw new WordedError(`${label}: ${p === dir ? 'exists and is a file, not a directory' : `${p} is a file, not a directory`}`);
      break;
    } catch (e) {
      if (e instanceof WordedError) throw e;
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') throw wordedFsError(e, label, dir, p);
      missing.unshift(p);
      if (dirname(p) === p) return missing;
    }
  }
  try {
    await access(p, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw wordedFsError(e, label, dir, p);
  }
  return missing;
}

/**
 * Makes sure the output directory `dir` exists and can be written to (checkOutDir), creating it and
 * the folders above it that are missing one at a time (Node's recursive mkdir never returns on some
 * virtual file systems, e.g. under /proc).
 * @throws WordedError as checkOutDir, or for a folder that cannot be made.
 */
export async function ensureOutDir(dir: string, label: string): Promise<void> {
  for (const m of await checkOutDir(dir, label)) {
    try {
      await mkdir(m);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' && (await stat(m).then((s) => s.isDirectory(), () => false))) continue;
      // ENOENT although the folder above exists: the file system makes no folders there (/proc).
      if (code === 'ENOENT') throw new WordedError(`${label}: cannot create the directory ${m}: the file system there allows none`);
      throw wordedFsError(e, label, dir, m);
    }
  }
}
