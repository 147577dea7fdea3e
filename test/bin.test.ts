/**
 * The ways README names to start the CLI work right after set-up: the built bin is executable, and
 * `npx phasemap` inside the repository runs it.
 */
import { spawnSync } from 'node:child_process';
import { statSync } from 'node:fs';
import test from 'ava';
import { cliPath, repoRoot } from './helpers.js';

test('the built bin is executable and `npx phasemap --help` runs it', (t) => {
  t.is(statSync(cliPath).mode & 0o111, 0o111, `${cliPath} has execute bits`);
  const r = spawnSync('npx', ['--no-install', 'phasemap', '--help'], { cwd: repoRoot, encoding: 'utf8', timeout: 60_000 });
  t.is(r.status, 0, r.stderr);
  t.regex(r.stdout, /^Usage: phasemap \[options\] \[command\]/);
  t.regex(r.stdout, /report \[options\] <dir>/);
});
