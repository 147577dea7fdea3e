#!/usr/bin/env node
// Builds the optional native addon (worker/trainer/native/*.c → build/Release/phasemap_native.node: OpenBLAS
// matmuls and the MLP's stream loops in C)
// with node-gyp. Run by `npm ci` (install) and `npm run build`; skipped when the addon is newer than its
// sources. A failed build is a warning, not an error: the trainer then keeps the wasm backend's own
// matmuls (slower, same results to float rounding) and its JS stream loops (same results). PHASEMAP_NATIVE=off skips the build.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'build', 'Release', 'phasemap_native.node');
const nativeDir = path.join(root, 'worker', 'trainer', 'native');
const sources = [path.join(root, 'binding.gyp'), ...['blas.c', 'streams.c', 'streams.h', 'streams_napi.c'].map((f) => path.join(nativeDir, f))];

if (process.env.PHASEMAP_NATIVE === 'off') {
  console.error('build-native: skipped (PHASEMAP_NATIVE=off)');
  process.exit(0);
}
if (existsSync(out) && sources.every((s) => statSync(s).mtimeMs <= statSync(out).mtimeMs)) process.exit(0);

/** node-gyp: the one npm runs scripts with, else the one bundled with npm, else on PATH. */
function nodeGyp() {
  const candidates = [process.env.npm_config_node_gyp];
  if (process.env.npm_execpath) candidates.push(path.resolve(path.dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  candidates.push(path.resolve(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  const found = candidates.find((c) => c && existsSync(c));
  return found ? [process.execPath, found] : ['node-gyp'];
}

const args = ['rebuild'];
// Without a nodedir node-gyp downloads Node's headers; use the installed ones when they are there.
const localHeaders = path.resolve(path.dirname(process.execPath), '..');
if (!process.env.npm_config_nodedir && existsSync(path.join(localHeaders, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${localHeaders}`);
const [cmd, ...pre] = nodeGyp();
const r = spawnSync(cmd, [...pre, ...args], { cwd: root, encoding: 'utf8' });
if (r.status === 0 && existsSync(out)) {
  console.error('build-native: built build/Release/phasemap_native.node');
} else {
  const why = (r.error?.message ?? `${r.stdout ?? ''}${r.stderr ?? ''}`).trim().split('\n').slice(-8).join('\n');
  console.error(`build-native: WARNING: the native addon did not build; training uses the wasm matmuls and JS loops (slower).\n${why}`);
}
