/**
 * The ways README names to start the CLI work right after set-up: the built bin is executable, and
 * `npx phasemap` inside the repository runs it — here and in a fresh clone of it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, statSync, symlinkSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import test from 'ava';
import { cliPath, repoRoot } from './helpers.js';

test('the built bin is executable and `npx phasemap --help` runs it', (t) => {
  t.is(statSync(cliPath).mode & 0o111, 0o111, `${cliPath} has execute bits`);
  const r = spawnSync('npx', ['--no-install', 'phasemap', '--help'], { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^Usage: phasemap \[options\] \[command\]/);
  t.regex(r.stdout, /report \[options\] <dir>/);
});

test('in a fresh clone, scripts/setup.sh runs twice (installs nothing the second time) and leaves a bin that `npx phasemap --help` runs', (t) => {
  t.true(existsSync(join(repoRoot, '.git')), 'the repository is a git checkout');
  const installed = join(repoRoot, 'node_modules/.package-lock.json');
  t.true(existsSync(installed), 'npm ci has run here');
  const work = mkdtempSync(join(tmpdir(), 'phasemap-clone-'));
  t.teardown(() => rmSync(work, { recursive: true, force: true }));
  const clone = join(work, 'phasemap');
  const run = (cmd: string, args: string[], cwd: string, timeout = 300_000) => {
    const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout });
    t.is(r.status, 0, `${cmd} ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  run('git', ['clone', '--quiet', repoRoot, clone], work);
  // The dependencies are this checkout's (npm ci would download them again): link them, and date the
  // clone's package-lock.json before them so that setup.sh builds instead of running npm ci.
  symlinkSync(join(repoRoot, 'node_modules'), join(clone, 'node_modules'), 'dir');
  const old = new Date(statSync(installed).mtimeMs - 86_400_000);
  utimesSync(join(clone, 'package-lock.json'), old, old);
  t.false(existsSync(join(clone, 'dist')), 'a fresh clone has no build');
  for (const pass of [1, 2]) {
    const r = run('bash', ['scripts/setup.sh'], clone);
    t.notRegex(r.stderr, /installing|cannot install|npm ci/, `pass ${pass} installs nothing here: ${r.stderr}`);
    t.regex(r.stderr, /nats-server: v2\./, `pass ${pass} finds nats-server`);
    t.is(statSync(join(clone, 'dist/orchestrator/cli.js')).mode & 0o111, 0o111, `pass ${pass}: the clone's built bin has execute bits`);
  }
  const r = run('npx', ['--no-install', 'phasemap', '--help'], clone, 60_000);
  t.regex(r.stdout, /^Usage: phasemap \[options\] \[command\]/);
});
