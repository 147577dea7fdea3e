/**
 * User problem modules (`problem: {module: ./problems/my_pde.mjs, <params>}` in a sweep spec).
 *
 * The orchestrator reads the module and every file it imports from its own folder (`readProblemModule`),
 * hashes their contents (`moduleHash`: the hash goes into the resolved trial config as
 * `problem.module_hash`, so the trial id changes when the code changes) and ships the sources with every
 * trial message (`TrialMessage.problem_module`). A worker started with `--allow-modules` writes the
 * sources to a private temporary folder of its own keyed by the hash and imports them
 * (`loadProblemModule`); the module's definition then serves `makeProblem` for configs with that hash.
 *
 * A module is code from whoever can publish trials: a worker runs it only when told to.
 */
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, isAbsolute, join, posix, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { ProblemModuleBundle } from '../../schemas/trial.js';
import { currentBackend, initBackend } from './backend.js';
import { residualOf } from './loss.js';
import { Mlp } from './network.js';
import { checkDeclarations, checkProblem, ProblemError, type CheckMessage, type ProblemDefinition } from './problem-api.js';
import { Rng } from './rng.js';
import { registerProblemModule } from './problems.js';

/** Most files a module may consist of (the entry and what it imports from its folder). */
export const MODULE_MAX_FILES = 32;
/** Most bytes of all of a module's files together (they travel in every trial message). */
export const MODULE_MAX_BYTES = 256 * 1024;

/**
 * Content hash of a module's files: `sha256:` and the hex SHA-256 over the entry's name, then every
 * file's relative path and content in path order (NUL-separated).
 */
export function moduleHash(entry: string, files: Readonly<Record<string, string>>): string {
  const h = createHash('sha256').update(`phasemap-problem-module\0${entry}\0`);
  for (const p of Object.keys(files).sort()) h.update(`${p}\0${files[p]}\0`);
  return `sha256:${h.digest('hex')}`;
}

/** The import specifiers of a JavaScript source (static imports, re-exports, dynamic imports of string literals). */
export function importSpecifiers(source: string): string[] {
  const out = new Set<string>();
  const res = [/\bimport\s*(?:[\w*${}\s,]+?\s*from\s*)?['"]([^'"]+)['"]/g, /\bexport\s*[\w*${}\s,]+?\s*from\s*['"]([^'"]+)['"]/g, /\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)/g];
  for (const re of res) for (const m of source.matchAll(re)) out.add(m[1]!);
  return [...out];
}

/**
 * Reads a problem module and the files it imports from its own folder (relative imports, followed
 * recursively). Its folder is the entry's; a file outside it, a bare or `node:` import, more than
 * MODULE_MAX_FILES files or MODULE_MAX_BYTES bytes are refused.
 * @param specFile the spec file the path is relative to.
 * @param modulePath the path as the spec writes it (e.g. `./problems/my_pde.mjs`).
 * @throws Error naming the path and what was wrong.
 */
export async function readProblemModule(specFile: string, modulePath: string): Promise<ProblemModuleBundle> {
  if (!/\.(mjs|js)$/.test(modulePath)) throw new Error(`${modulePath}: expected a JavaScript ES module file (.mjs or .js)`);
  const entryAbs = isAbsolute(modulePath) ? modulePath : resolve(dirname(specFile), modulePath);
  const root = dirname(entryAbs);
  const entry = relative(root, entryAbs).split(sep).join('/');
  const files: Record<string, string> = {};
  let bytes = 0;
  const visit = async (rel: string, from: string): Promise<void> => {
    if (Object.hasOwn(files, rel)) return;
    const abs = join(root, ...rel.split('/'));
    let text: string;
    try {
      const st = await stat(abs);
      if (!st.isFile()) throw new Error('not a regular file');
      text = await readFile(abs, 'utf8');
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message;
      throw new Error(rel === entry ? `${modulePath}: cannot read the problem module (${why}; the path is relative to the spec file ${specFile})` : `${modulePath}: ${from} imports './${rel}', which cannot be read (${why})`);
    }
    files[rel] = text;
    bytes += Buffer.byteLength(text);
    if (Object.keys(files).length > MODULE_MAX_FILES) throw new Error(`${modulePath}: more than ${MODULE_MAX_FILES} files; a problem module is small`);
    if (bytes > MODULE_MAX_BYTES) throw new Error(`${modulePath}: its files hold more than ${MODULE_MAX_BYTES / 1024} KiB; a problem module travels with every trial and must be small`);
    for (const spec of importSpecifiers(text)) {
      if (!spec.startsWith('./') && !spec.startsWith('../'))
        throw new Error(`${modulePath}: ${rel} imports '${spec}': a problem module may import only files of its own folder (relative paths); the tensor operations come to the residual as 'ops'`);
      const target = posix.normalize(posix.join(posix.dirname(rel), spec));
      if (target.startsWith('../') || target === '..') throw new Error(`${modulePath}: ${rel} imports '${spec}', outside the module's folder ${root}`);
      await visit(target, rel);
    }
  };
  await visit(entry, entry);
  return { path: modulePath, entry, files, hash: moduleHash(entry, files) };
}

/** Per process: the private folder modules are written to, and each hash's loaded definition. */
let folder: Promise<string> | null = null;
const loaded = new Map<string, Promise<ProblemDefinition>>();

/**
 * Loads a module bundle in this process: checks its hash, writes its files to a private temporary
 * folder (created once per process, mode 0700, removed at exit) under the hash, imports the entry, checks the default
 * export's declarations (problem-api.ts `checkDeclarations`) and registers the definition for
 * `makeProblem`. Loaded once per hash.
 * @returns the definition.
 * @throws ProblemError naming the module path: a hash that does not match the files, an import that
 *   fails (syntax error, a throw at import), or a definition that fails its declarations check.
 */
export function loadProblemModule(bundle: ProblemModuleBundle): Promise<ProblemDefinition> {
  const where = `problem module ${bundle?.path}`;
  if (!bundle || typeof bundle.files !== 'object' || bundle.files === null || typeof bundle.entry !== 'string' || !Object.hasOwn(bundle.files, bundle.entry))
    return Promise.reject(new ProblemError(`${where}: the trial message's module sources are incomplete (entry ${JSON.stringify(bundle?.entry)} missing)`));
  // Checked on every call (cheap): the sources of a trial must be the ones its config's hash names.
  const got = moduleHash(bundle.entry, bundle.files);
  if (got !== bundle.hash) return Promise.reject(new ProblemError(`${where}: the shipped sources hash to ${got}, not to the trial's ${bundle.hash}`));
  let p = loaded.get(bundle.hash);
  if (!p) {
    p = load(bundle);
    loaded.set(bundle.hash, p);
    p.catch(() => loaded.delete(bundle.hash)); // a failed load is tried again by the next trial
  }
  return p;
}

async function load(bundle: ProblemModuleBundle): Promise<ProblemDefinition> {
  const where = `problem module ${bundle.path}`;
  for (const rel of Object.keys(bundle.files))
    if (rel.startsWith('/') || rel.split('/').some((s) => s === '..' || s === '' || s === '.')) throw new ProblemError(`${where}: bad file path ${JSON.stringify(rel)} in the module sources`);
  folder ??= mkdtemp(join(tmpdir(), 'phasemap-modules-')).then((d) => {
    // Removed when this process (or worker thread) exits: the sources come with every trial again.
    process.once('exit', () => rmSync(d, { recursive: true, force: true }));
    return d;
  });
  const dir = join(await folder, bundle.hash.replace(/[^A-Za-z0-9]/g, '_'));
  const staging = `${dir}.${process.pid}.${Math.random().toString(36).slice(2)}`;
  for (const [rel, text] of Object.entries(bundle.files)) {
    const abs = join(staging, ...rel.split('/'));
    await mkdir(dirname(abs), { recursive: true, mode: 0o700 });
    await writeFile(abs, text, { mode: 0o600 });
  }
  await rename(staging, dir).catch(async (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EEXIST' && e.code !== 'ENOTEMPTY') throw e; // written already (same hash, same files)
  });
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(join(dir, ...bundle.entry.split('/'))).href)) as Record<string, unknown>;
  } catch (e) {
    throw new ProblemError(`${where}: failed to load (import): ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
  }
  const def = (mod.default ?? mod.problem) as ProblemDefinition;
  if (def === undefined) throw new ProblemError(`${where}: exports no problem: expected \`export default {name, inputs, domain, outputs, fields, residuals, conditions, …}\``);
  const errs = checkDeclarations(def, where);
  if (errs.length) throw new ProblemError(errs.join('\n'));
  registerProblemModule(bundle.hash, def, where);
  return def;
}

/**
 * `checkProblem` (problem-api.ts) on a loaded definition with its default parameters: the residual is
 * evaluated on the fields of a small fixed network (2 hidden layers × 8, Xavier-normal from a fixed
 * seed) at 8 Latin-hypercube points. Starts the wasm backend (else cpu) when no backend is active.
 * @param where how messages name the module (`problem module ./my_pde.mjs`).
 */
export async function conformanceCheck(def: ProblemDefinition, where: string, params: Record<string, number> = {}): Promise<CheckMessage[]> {
  if (!currentBackend()) await initBackend('wasm').catch(() => initBackend('cpu'));
  return conformanceCheckSync(def, where, params);
}

/** `conformanceCheck` with parameter values `params`, on the active backend (one must be). */
export function conformanceCheckSync(def: ProblemDefinition, where: string, params: Record<string, number>): CheckMessage[] {
  const rng = Rng.stream(0, 'problem-check');
  const d = Array.isArray(def.inputs) ? def.inputs.length : 1;
  const K = Array.isArray(def.outputs) && def.outputs.length > 1 ? def.outputs.length : 1;
  const net = Mlp.xavier(d, 8, 2, Rng.stream(0, 'problem-check-net'), K);
  try {
    return checkProblem(def, params, where, (problem, x, q) => residualOf(problem, net.params(), x, q), rng);
  } finally {
    net.dispose();
  }
}
