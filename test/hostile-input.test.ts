/**
 * Hostile input against the real CLI: grids too large to expand, YAML alias bombs, files too large,
 * paths that are files, directories or read-only, NaN and Infinity, a second orchestrator of a running
 * sweep — each an error in words (exit 2, or 3 for a busy sweep), never a stack trace — and a seeded
 * fuzz test over a few hundred broken specs (broken grid ranges and sample: blocks among them).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import test from 'ava';
import { stringify } from 'yaml';
import { startEmbeddedNats } from '../orchestrator/nats-server.js';
import { loadSweep, SpecErrors } from '../orchestrator/spec.js';
import { stderrOf, tempDir, trackedCli, until } from './helpers.js';

/** `phasemap ARGS` for one test: what it starts is killed when it ends (the tests of this file run at once). */
function clis(t: { teardown(f: () => void): void }) {
  const { cli, killStarted } = trackedCli();
  t.teardown(killStarted);
  return cli;
}

/** A stack trace line, as Node prints them. */
const STACK = /\n\s+at /;

const SMALL = `
name: hostile
problem: {name: poisson2d, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 10, log_every: 5, eval_every: 5}
diagnostics: {every: 5, snr_batches: 4}
`;

const list = (n: number, f = (i: number) => i + 1) => `[${Array.from({ length: n }, (_, i) => f(i)).join(', ')}]`;

async function specFile(dir: string, name: string, text: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

test.serial('a 50,000,000-trial grid is refused within 2 s, with the count and every key\'s size', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-grid');
  const file = await specFile(dir, 'big.yaml', `${SMALL}grid:\n  train.lr: ${list(100, (i) => (i + 1) / 1000)}\n  train.batch_size: ${list(20)}\n  model.width: ${list(50)}\n  seed: ${list(50)}\n  model.depth: ${list(10)}\n`);
  // The check itself (in this process): counted before anything is expanded.
  const t1 = performance.now();
  const e = await loadSweep(file).then(() => null, (err: unknown) => err);
  const check = performance.now() - t1;
  t.true(e instanceof SpecErrors, String(e));
  t.true(check < 2000, `refused in ${check.toFixed(0)} ms`);
  // The CLI (0.6–0.7 s on a quiet 2-core machine, process start included; expanding would take minutes
  // and GBs): the bound leaves room for the suite's load.
  const t0 = performance.now();
  const r = await cli(['validate', file]);
  const ms = performance.now() - t0;
  t.log(`50M-trial grid refused in ${check.toFixed(0)} ms in-process, ${ms.toFixed(0)} ms by the CLI (process start included)`);
  t.is(r.code, 2, r.stderr);
  t.true(ms < 10_000, `took ${ms.toFixed(0)} ms`);
  t.regex(r.stderr, /big\.yaml: grid: got 50,000,000 trials \(train\.lr 100 × train\.batch_size 20 × model\.width 50 × seed 50 × model\.depth 10\), expected at most 1,000,000 trial\(s\) \(max_trials, default 1,000,000\); .*raise max_trials/);
  t.notRegex(r.stderr, STACK);
  // run refuses it as fast, and makes no DIR.
  const out = join(dir, 'out');
  const run = await cli(['run', file, '--out', out, '--slots', '0']);
  t.is(run.code, 2, run.stderr);
  t.false(existsSync(out));
});

test('YAML alias bombs and recursive aliases exit 2 naming the file, without a stack trace', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-alias');
  const laughs = ['name: lol', 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]', ...'bcdefghi'.split('').map((c, i) => `${c}: &${c} [${Array(9).fill(`*${'abcdefghi'[i]}`).join(',')}]`)].join('\n');
  const bomb = await specFile(dir, 'bomb.yaml', `${laughs}\n`);
  const r = await cli(['validate', bomb]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, /bomb\.yaml: YAML aliases expand too much: more than 100 alias expansion\(s\)/);
  t.notRegex(r.stderr, STACK);
  // The limit is an environment variable: raised, the same file parses (and fails on its keys instead).
  const raised = await cli(['validate', bomb], { env: { PHASEMAP_MAX_YAML_ALIASES: '100000000' } });
  t.is(raised.code, 2);
  t.regex(raised.stderr, /bomb\.yaml: a: unknown key/);
  const cyc = await specFile(dir, 'cyc.yaml', `${SMALL}grid:\n  seed: &s [0, 1, *s]\n`);
  const c = await cli(['validate', cyc]);
  t.is(c.code, 2, c.stderr);
  t.regex(c.stderr, /cyc\.yaml:8:19: Recursive alias: \*s lies inside the node &s names/);
  t.notRegex(c.stderr, STACK);
});

test('a spec file above 1 MiB is refused with its size; PHASEMAP_MAX_SPEC_BYTES raises the limit', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-size');
  const file = await specFile(dir, 'padded.yaml', `${SMALL}${`# ${'x'.repeat(98)}\n`.repeat(11_000)}`);
  const size = statSync(file).size;
  const r = await cli(['validate', file]);
  t.is(r.code, 2, r.stderr);
  t.regex(r.stderr, new RegExp(`padded\\.yaml: the file is ${size.toLocaleString('en-US')} bytes \\(1\\.\\d MiB\\): a spec is at most 1,048,576 bytes \\(1 MiB; PHASEMAP_MAX_SPEC_BYTES raises it\\)`));
  const ok = await cli(['validate', file], { env: { PHASEMAP_MAX_SPEC_BYTES: String(2 * 1024 * 1024) } });
  t.is(ok.code, 0, ok.stderr);
  const bad = await cli(['validate', file], { env: { PHASEMAP_MAX_SPEC_BYTES: 'lots' } });
  t.is(bad.code, 2);
  t.regex(bad.stderr, /PHASEMAP_MAX_SPEC_BYTES: got "lots", expected a positive integer/);
});

test('filesystem errors name the path and the cause in words: a file as --out, a path under a file, a directory as the spec, a missing spec', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-fs');
  const spec = await specFile(dir, 's.yaml', SMALL);
  const file = await specFile(dir, 'a-file', 'x');
  const cases: Array<[string[], RegExp]> = [
    [['run', spec, '--out', file, '--slots', '0'], new RegExp(`--out ${file}: exists and is a file, not a directory`)],
    [['run', spec, '--out', join(file, 'sub', 'out'), '--slots', '0'], new RegExp(`--out ${file}/sub/out: ${file} is a file, not a directory`)],
    [['validate', dir], new RegExp(`${dir}: is a directory, not a file`)],
    [['validate', join(file, 's.yaml')], new RegExp(`${file}/s\\.yaml: ${file} is a file, not a directory`)],
    [['validate', join(dir, 'missing.yaml')], /file not found: .*missing\.yaml/],
    // Under /proc no directory can be made (Node's recursive mkdir would never return there).
    [['run', spec, '--out', '/proc/phasemap-hostile/out', '--slots', '0'], /--out \/proc\/phasemap-hostile\/out: /],
  ];
  for (const [args, re] of cases) {
    const r = await cli(args, { timeoutMs: 60_000 });
    t.is(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    t.regex(r.stderr, re);
    t.notRegex(r.stderr, STACK);
  }
  // With --debug (or PHASEMAP_DEBUG=1) the stack trace follows the message.
  const d = await cli(['validate', dir, '--debug']);
  t.is(d.code, 2);
  t.regex(d.stderr, STACK);
  const e = await cli(['validate', dir], { env: { PHASEMAP_DEBUG: '1' } });
  t.regex(e.stderr, STACK);
});

test('--out on a read-only file system says so', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-ro');
  const spec = await specFile(dir, 's.yaml', SMALL);
  const ro = join(dir, 'ro');
  await mkdir(ro);
  // As root, permissions do not stop a write: a read-only tmpfs does.
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=64k', 'tmpfs', ro], { encoding: 'utf8' });
  if (m.status !== 0) {
    t.log(`skipped: cannot mount a read-only tmpfs here (${(m.stderr || m.error?.message || '').trim()})`);
    t.pass();
    return;
  }
  t.teardown(() => void spawnSync('umount', [ro]));
  for (const out of [ro, join(ro, 'out')]) {
    const r = await cli(['run', spec, '--out', out, '--slots', '0']);
    t.is(r.code, 2, r.stderr);
    t.regex(r.stderr, new RegExp(`--out ${out}: (${ro}: )?read-only file system`));
    t.notRegex(r.stderr, STACK);
  }
});

test('NaN and ±Infinity are named as such, with the range the field takes', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-nan');
  const file = await specFile(dir, 'n.yaml', SMALL.replace('steps: 10', 'steps: 1e309, lr: .nan, batch_size: -.inf').replace('width: 8', 'width: .inf'));
  const r = await cli(['validate', file]);
  t.is(r.code, 2, r.stderr);
  for (const line of [
    'n.yaml: model.width: got Infinity, expected an integer >= 1 and <= 4096',
    'n.yaml: train.steps: got Infinity, expected an integer >= 1 and <= 100000000',
    'n.yaml: train.lr: got NaN, expected a number > 0 and <= 10',
    'n.yaml: train.batch_size: got -Infinity, expected "full" or an integer >= 1 and <= 10000000',
  ])
    t.true(r.stderr.includes(line), `${line}\n${r.stderr}`);
  t.notRegex(r.stderr, /got null/);
});

test('validate summarises a sweep of more than 50 trials: the grid keys, the count, the first and last trial; --all lists every one', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-summary');
  const file = await specFile(dir, 'g.yaml', `${SMALL}grid:\n  train.lr: [0.001, 0.002, 0.003]\n  seed: ${list(20, (i) => i)}\n`);
  const r = await cli(['validate', file]);
  t.is(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  t.is(lines.length, 5, r.stdout);
  t.is(lines[0], 'hostile: 60 trial(s)');
  t.is(lines[1], '  grid: train.lr 3 value(s) × seed 20 value(s) = 60 combination(s)');
  t.regex(lines[2]!, /^ {2}first: t[0-9a-f]{16} {2}lr=1e-3 seed=0 {2}\{"train\.lr":0\.001,"seed":0\}$/);
  t.regex(lines[3]!, /^ {2}last: {2}t[0-9a-f]{16} {2}lr=3e-3 seed=19 {2}\{"train\.lr":0\.003,"seed":19\}$/);
  t.regex(lines[4]!, /--all lists every one/);
  const all = await cli(['validate', file, '--all']);
  t.is(all.code, 0, all.stderr);
  t.is(all.stdout.trimEnd().split('\n').length, 61);
});

/** Every file under `dir` with its size and mtime; left out: `.nats` (the running server's store) and `report` (the running sweep's live report). */
function snapshot(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (['.nats', 'report'].includes(relative(dir, p))) continue;
      if (e.isDirectory()) walk(p);
      else {
        const st = statSync(p);
        out.push(`${relative(dir, p)} ${st.size} ${st.mtimeMs}`);
      }
    }
  };
  walk(dir);
  return out.sort();
}

test('a second orchestrator of a running DIR is refused at once, without a stack trace, and writes nothing into DIR', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-busy');
  const first = await specFile(dir, 'a.yaml', SMALL);
  // The same sweep name, other trials: a sweep.json it wrote would differ.
  const second = await specFile(dir, 'b.yaml', `${SMALL}grid:\n  seed: [1, 2]\n`);
  const out = join(dir, 'out');
  // --slots 0: no worker, the first run waits (and trains nothing) until it is stopped.
  const a = cli(['run', first, '--out', out, '--slots', '0'], { timeoutMs: 120_000 });
  const aErr = stderrOf(a);
  await until(() => /waiting for workers/.test(aErr()), 60_000, 'the first run to queue its trial');
  const before = snapshot(out);
  const sweepJson = readFileSync(join(out, 'sweep.json'), 'utf8');
  const b = await cli(['run', second, '--out', out, '--slots', '0'], { timeoutMs: 60_000 });
  t.is(b.code, 3, b.stderr);
  t.regex(b.stderr, new RegExp(`--out ${out}: sweep 'hostile' in this DIR is being run by another orchestrator: .* pid ${a.child.pid}, since `));
  t.notRegex(b.stderr, STACK);
  t.notRegex(b.stderr, /embedded nats-server/);
  t.deepEqual(snapshot(out), before);
  t.is(readFileSync(join(out, 'sweep.json'), 'utf8'), sweepJson);
  a.child.kill('SIGINT');
  const ra = await a;
  t.is(ra.code, 130, ra.stderr);
});

test('a second orchestrator of a sweep another DIR runs (on one NATS server) is refused before it makes its DIR', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-owner');
  const nats = await startEmbeddedNats(join(dir, 'store'));
  t.teardown(() => nats.stop());
  const spec = await specFile(dir, 's.yaml', SMALL);
  const out1 = join(dir, 'out1');
  const out2 = join(dir, 'out2');
  const a = cli(['run', spec, '--out', out1, '--nats', nats.url, '--slots', '0', '--namespace', 'hostile'], { timeoutMs: 120_000 });
  await until(() => existsSync(join(out1, 'run.json')), 60_000, 'the first run\'s run.json');
  const b = await cli(['run', spec, '--out', out2, '--nats', nats.url, '--slots', '0', '--namespace', 'hostile'], { timeoutMs: 60_000 });
  t.is(b.code, 3, b.stderr);
  t.regex(b.stderr, /sweep 'hostile' \(namespace hostile\) is being run by another orchestrator: .* DIR .*out1/);
  t.notRegex(b.stderr, STACK);
  t.false(existsSync(out2), 'the refused run made no DIR');
  a.child.kill('SIGINT');
  t.is((await a).code, 130);
});

// ---- fuzz: a seeded generator of broken specs ----

/** mulberry32: a small seeded PRNG. */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

type Obj = Record<string, unknown>;

const validSpec = (): Obj => ({
  name: 'fz',
  problem: { name: 'helmholtz2d', a1: 1, a2: 4, k: 1, n_collocation: 64, n_boundary: 16, w_bc: 1, eval_grid: 11 },
  model: { width: 8, depth: 2 },
  train: { steps: 10, lr: 0.001, batch_size: 16, lr_decay: { rate: 0.9, every: 100 }, log_every: 5, eval_every: 5 },
  strategy: { name: 'rba', eta: 0.001, gamma: 0.999 },
  diagnostics: { every: 5, snr_batches: 4 },
  seed: 0,
  grid: { 'train.lr': [0.001, 0.01], seed: [0, 1] },
});

/** Paths of the number leaves of a spec (grid values included: `grid.train.lr.1`). */
function numberPaths(o: unknown, prefix: string[] = []): string[][] {
  if (typeof o === 'number') return [prefix];
  if (o === null || typeof o !== 'object') return [];
  return Object.entries(o as Obj).flatMap(([k, v]) => numberPaths(v, [...prefix, k]));
}

/** Sets the value at `path` where every step of it is an object (else nothing: an earlier mutation replaced it). */
function setAt(o: Obj, path: string[], v: unknown): void {
  let x: unknown = o;
  for (const s of path.slice(0, -1)) x = x !== null && typeof x === 'object' ? (x as Obj)[s] : undefined;
  if (x !== null && typeof x === 'object') (x as Obj)[path[path.length - 1]!] = v;
}

/** One broken spec: 1–3 mutations of a valid one, each enough to make it invalid, as YAML text (sometimes broken YAML). */
function brokenSpec(r: () => number): { kind: string; text: string } {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const spec = validSpec();
  const kinds: string[] = [];
  const n = 1 + Math.floor(r() * 3);
  for (let i = 0; i < n; i++) {
    const kind = pick(['type', 'unknown', 'nonfinite', 'negative', 'hugegrid', 'strategy', 'range', 'yaml'] as const);
    kinds.push(kind);
    const leaf = pick(numberPaths(spec));
    switch (kind) {
      case 'type':
        if (r() < 0.2) setAt(spec, pick([['name'], ['problem', 'name'], ['strategy', 'name']]), pick([7, true, [1], { a: 1 }, null]));
        // null is a valid sa freeze_step: never that.
        else if (leaf) setAt(spec, leaf, pick(['abc', true, [1, 2], { a: 1 }, ...(leaf.includes('freeze_step') ? [] : [null])]));
        break;
      case 'unknown': {
        const at = pick([[], ['problem'], ['model'], ['train'], ['train', 'lr_decay'], ['strategy'], ['diagnostics']]);
        let o: unknown = spec;
        for (const s of at) o = o !== null && typeof o === 'object' ? (o as Obj)[s] : undefined;
        if (o !== null && typeof o === 'object' && !Array.isArray(o)) (o as Obj)[`zz_${Math.floor(r() * 1000)}`] = 1;
        else spec.zz_top = 1;
        break;
      }
      case 'nonfinite':
        if (leaf) setAt(spec, leaf, pick([NaN, Infinity, -Infinity]));
        break;
      case 'negative':
        if (leaf) setAt(spec, leaf, -1e9);
        break;
      case 'hugegrid': {
        if (r() < 0.3) {
          spec.max_trials = 1 + Math.floor(r() * 3);
          break;
        }
        // 4–6 keys of 33–62 values: 1.2 million combinations or more.
        const keys = ['seed', 'train.lr', 'model.width', 'train.steps', 'problem.k', 'problem.a1'];
        const g: Obj = {};
        for (const k of keys.slice(0, 4 + Math.floor(r() * 3))) g[k] = Array.from({ length: 33 + Math.floor(r() * 30) }, (_, j) => j + 1);
        spec.grid = g;
        break;
      }
      case 'strategy':
        switch (Math.floor(r() * 8)) {
          case 0: spec.strategy = { name: 'rba', eta: pick([-1, 0, 2, 'x', NaN]) }; break;
          case 1: spec.strategy = { name: 'rba', gamma: pick([1, -0.5, 'g']) }; break;
          case 2: spec.strategy = { name: 'sa', freeze_step: pick([-3, 1.5, 'never']) }; break;
          case 3: spec.strategy = { name: pick(['RBA', 'rab', 'adam', '']) }; break;
          case 4: spec.strategy = { name: 'vanilla', eta: 0.1 }; break;
          case 5: spec.strategy = pick(['rba', 3, [1]]); break;
          case 6:
            spec.strategy = { name: 'vanilla' };
            (spec.grid as Obj)['strategy.eta'] = [0.1, 0.2];
            break;
          default: (spec.grid as Obj).strategy = [{ name: 'rba' }, { name: 'sa', freeze_step: 'x' }];
        }
        break;
      case 'range': {
        // A broken range in the grid, or a broken sample: block (each stays broken whatever number a later mutation changes).
        const g = spec.grid as Obj;
        const params = (p: Obj) => ({ count: 2, seed: 1, params: p });
        switch (Math.floor(r() * 10)) {
          case 0: g['train.lr'] = { linspace: [0.1, 1, pick([0, 2.5, 'x'])] }; break;
          case 1: g['train.lr'] = { geomspace: [pick([0, -1]), 1, 3] }; break;
          case 2: g['train.lr'] = { geomspace: [1, 0.1, 3] }; break;
          case 3: g['train.lr'] = pick([{ lgospace: [-4, -1, 3] }, { linspace: [1, 2] }, {}, { linspace: [0.1, 1, 2], logspace: [-2, -1, 2] }]); break;
          case 4: g['model.width'] = { linspace: [0, 0.4, 2] }; break;
          case 5: spec.sample = { count: pick([0, 'x', 1e12]), params: { 'train.lr': { uniform: [0.1, 1] } } }; break;
          case 6: spec.sample = params({ 'train.lr': pick([{ logunifrom: [1e-4, 1e-2] }, { loguniform: [0, 1] }, { choice: [] }, 0.1]) }); break;
          case 7: spec.sample = params({ seed: { int_uniform: [3, 1] } }); break; // seed is a grid key too
          case 8: spec.sample = params({ 'train.lr': { uniform: [0.1, 1] }, zz: 1, 'model.depth': { int_loguniform: [0, 4] } }); break;
          default: spec.sample = { count: 2, params: {}, sed: 1 };
        }
        break;
      }
      default:
        break; // 'yaml': on the text below
    }
  }
  let text = stringify(spec);
  if (kinds.includes('yaml'))
    text = pick([
      (s: string) => `${s}bad: [1, 2\n`,
      (s: string) => `name: dup\n${s}`,
      (s: string) => `${s}x: *nope\n`,
      (s: string) => `${s}r: &r [1, *r]\n`,
      (s: string) => `${s}q: "unterminated\n`,
      (s: string) => `${s}---\nname: second\n`,
      (s: string) => `${s}l0: &l0 [a, a, a, a, a, a, a, a]\n${[1, 2, 3, 4, 5, 6].map((i) => `l${i}: &l${i} [${Array(8).fill(`*l${i - 1}`).join(', ')}]`).join('\n')}\n`,
      (s: string) => `${s.slice(0, Math.floor(s.length / 2))}\n{{{\n`,
    ])(text);
  return { kind: kinds.join('+'), text };
}

/** Each line of a spec error names the file, then a field path, a line or what is wrong with the file. */
const NAMED = (file: string) =>
  new RegExp(
    `^${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}(:\\d+:\\d+: .+|: (grid|name|problem|model|train|strategy|diagnostics|seed|sample|analysis|max_attempts|max_trials|zz_\\w+|bad|x|r|q|l\\d|\\(spec\\))\\b.*|: YAML aliases expand too much.*|: Source contains multiple documents.*)`,
  );

test('fuzz: 240 seeded broken specs are each refused with the file and a path named, never a stack trace', async (t) => {
  const cli = clis(t);
  const dir = await tempDir('hostile-fuzz');
  const valid = await specFile(dir, 'valid.yaml', stringify(validSpec()));
  t.is((await loadSweep(valid)).trials.length, 4, 'the spec the fuzzer mutates is valid');
  const r = rng(20_251_206);
  const cases = Array.from({ length: 240 }, (_, i) => ({ i, ...brokenSpec(r) }));
  const kinds = new Map<string, number>();
  const t0 = performance.now();
  for (const c of cases) {
    const file = await specFile(dir, `case-${c.i}.yaml`, c.text);
    for (const k of c.kind.split('+')) kinds.set(k, (kinds.get(k) ?? 0) + 1);
    let err: unknown;
    try {
      await loadSweep(file);
    } catch (e) {
      err = e;
    }
    if (!(err instanceof SpecErrors)) {
      t.fail(`case ${c.i} (${c.kind}): ${err === undefined ? 'accepted' : `threw ${String((err as Error).stack ?? err)}`}\n${c.text}`);
      continue;
    }
    for (const m of err.errors.map((x) => x.message)) {
      if (!NAMED(file).test(m)) t.fail(`case ${c.i} (${c.kind}): names no file and path: ${m}\n${c.text}`);
      if (STACK.test(m)) t.fail(`case ${c.i} (${c.kind}): a stack trace in ${m}`);
    }
  }
  t.log(`${cases.length} cases in ${(performance.now() - t0).toFixed(0)} ms in-process; mutations: ${[...kinds].map(([k, v]) => `${k} ${v}`).join(', ')}`);
  for (const k of ['type', 'unknown', 'nonfinite', 'negative', 'hugegrid', 'strategy', 'range', 'yaml']) t.true((kinds.get(k) ?? 0) >= 10, `${k}: ${kinds.get(k)}`);
  // A handful through the CLI itself: exit 2, the file named, no stack trace.
  const some = cases.filter((_, i) => i % 40 === 0);
  const runs = await Promise.all(some.map((c) => cli(['validate', join(dir, `case-${c.i}.yaml`)], { timeoutMs: 60_000 })));
  runs.forEach((res, j) => {
    const c = some[j]!;
    t.is(res.code, 2, `case ${c.i} (${c.kind}): ${res.stderr}`);
    t.true(res.stderr.includes(`case-${c.i}.yaml`), `case ${c.i}: ${res.stderr}`);
    t.notRegex(res.stderr, STACK, `case ${c.i}`);
  });
});
