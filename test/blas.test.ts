/**
 * Native BLAS matmuls on the wasm backend (worker/trainer/native/blas.c, backend.ts patchWasmMatMul):
 * the addon is built and OpenBLAS loaded (scripts/setup.sh installs it); BatchMatMul through it equals
 * a float64 brute-force product for plain, transposed, batched and broadcast operands; with
 * PHASEMAP_BLAS=off the wasm backend's own kernels give the same products and the same training to
 * float32 rounding.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { blasStatus, nativeMatMulActive } from '../worker/trainer/index.js';
import { testBackend } from './trainer-helpers.js';
import { trainGroup } from './fixtures/blas-threads.js';

const here = path.dirname(fileURLToPath(import.meta.url));

test.before(async () => {
  await testBackend();
});

test('the native BLAS addon is built and OpenBLAS (its pthreads build, no lock) is loaded on wasm', (t) => {
  const st = blasStatus();
  t.true(st.available, `blas: ${st.error}`);
  t.regex(st.library, /openblas/i);
  t.is(st.error, '');
  t.is(st.serialised, false, 'scripts/setup.sh installs libopenblas0-pthread, which takes concurrent calls');
  t.true(nativeMatMulActive());
});

test('two slots training at once get the bits they get one after the other (concurrent calls into the BLAS)', async (t) => {
  // Debian's sequential OpenBLAS shares its work buffers between threads: two thread slots training
  // different groups at once got different losses run to run. Each thread here trains one group while
  // the other trains the other; the same groups then train in this thread alone.
  const file = path.join(here, 'fixtures', 'blas-threads.js');
  const inThreads = await Promise.all(
    ([0, 1] as const).map(
      (which) =>
        new Promise<number[][]>((resolve, reject) => {
          const w = new Worker(file, { workerData: { which } });
          w.once('message', (m: number[][]) => resolve(m));
          w.once('error', reject);
          w.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`worker exited ${code}`))));
        }),
    ),
  );
  const alone = [await trainGroup(0), await trainGroup(1)];
  for (const which of [0, 1]) {
    t.is(inThreads[which]!.length, 2);
    t.true(inThreads[which]![0]!.length >= 60);
    t.deepEqual(inThreads[which], alone[which], `group ${which}`);
  }
});

/** Deterministic values in [-1, 1) with a few exact zeros. */
function values(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s % 17 === 0 ? 0 : s / 2 ** 31 - 1);
  });
}

/** float64 op(a) @ op(b) for row-major batched operands (batch of 1 broadcasts). */
function bruteForce(a: Float32Array, b: Float32Array, ba: number, bb: number, m: number, n: number, k: number, ta: boolean, tb: boolean): Float64Array {
  const batch = Math.max(ba, bb);
  const out = new Float64Array(batch * m * n);
  for (let i = 0; i < batch; i++) {
    const oa = ba === 1 ? 0 : i * m * k;
    const ob = bb === 1 ? 0 : i * k * n;
    for (let r = 0; r < m; r++)
      for (let c = 0; c < n; c++) {
        let s = 0;
        for (let q = 0; q < k; q++) s += a[oa + (ta ? q * m + r : r * k + q)]! * b[ob + (tb ? c * k + q : q * n + c)]!;
        out[i * m * n + r * n + c] = s;
      }
  }
  return out;
}

const cases: Array<{ name: string; outerA: number[]; outerB: number[]; m: number; n: number; k: number; ta: boolean; tb: boolean }> = [
  { name: '2-D', outerA: [], outerB: [], m: 37, n: 50, k: 23, ta: false, tb: false },
  { name: 'transposed a (weight gradient)', outerA: [], outerB: [], m: 20, n: 9, k: 301, ta: true, tb: false },
  { name: 'transposed b (input gradient)', outerA: [], outerB: [], m: 64, n: 12, k: 20, ta: false, tb: true },
  { name: 'both transposed', outerA: [], outerB: [], m: 5, n: 7, k: 11, ta: true, tb: true },
  { name: 'batched (per-trial weights)', outerA: [3], outerB: [3], m: 40, n: 8, k: 8, ta: false, tb: false },
  { name: 'batched, transposed a', outerA: [4], outerB: [4], m: 6, n: 5, k: 33, ta: true, tb: false },
  { name: 'broadcast b', outerA: [2, 3], outerB: [], m: 4, n: 6, k: 5, ta: false, tb: false },
  { name: 'broadcast a', outerA: [1], outerB: [5], m: 3, n: 4, k: 7, ta: false, tb: true },
  { name: 'one output column', outerA: [], outerB: [], m: 100, n: 1, k: 50, ta: false, tb: false },
  { name: 'inner size 0', outerA: [], outerB: [], m: 3, n: 4, k: 0, ta: false, tb: false },
];

function shapeOf(outer: number[], rows: number, cols: number, transposed: boolean): number[] {
  return [...outer, ...(transposed ? [cols, rows] : [rows, cols])];
}

for (const c of cases) {
  test(`BatchMatMul on the native BLAS = float64 brute force: ${c.name}`, (t) => {
    const ba = c.outerA.reduce((x, y) => x * y, 1);
    const bb = c.outerB.reduce((x, y) => x * y, 1);
    const av = values(ba * c.m * c.k, 1 + c.m);
    const bv = values(bb * c.k * c.n, 2 + c.n);
    const want = bruteForce(av, bv, ba, bb, c.m, c.n, c.k, c.ta, c.tb);
    const got = tf.tidy(() => tf.matMul(tf.tensor(av, shapeOf(c.outerA, c.m, c.k, c.ta)), tf.tensor(bv, shapeOf(c.outerB, c.k, c.n, c.tb)), c.ta, c.tb));
    const outer = c.outerA.length === c.outerB.length ? c.outerA.map((d, i) => Math.max(d, c.outerB[i]!)) : c.outerA.length > c.outerB.length ? c.outerA : c.outerB;
    t.deepEqual(got.shape, [...outer, c.m, c.n]);
    const g = got.dataSync();
    let worst = 0;
    for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(g[i]! - want[i]!) / (1 + Math.abs(want[i]!)));
    t.true(worst < 1e-5 * Math.max(1, Math.sqrt(c.k)), `largest difference ${worst}`);
    got.dispose();
  });
}

/** Runs test/fixtures/blas-child.js in a fresh process with `env` and returns its JSON output. */
function child(env: Record<string, string>): { native: boolean; product: number[]; losses: number[] } {
  const r = spawnSync(process.execPath, [path.join(here, 'fixtures', 'blas-child.js')], { env: { ...process.env, ...env }, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`blas-child exited ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as { native: boolean; product: number[]; losses: number[] };
}

test('PHASEMAP_BLAS=off keeps the wasm kernels: same product and same training to float32 rounding', (t) => {
  const on = child({});
  const off = child({ PHASEMAP_BLAS: 'off' });
  t.true(on.native);
  t.false(off.native);
  t.is(on.product.length, off.product.length);
  on.product.forEach((v, i) => t.true(Math.abs(v - off.product[i]!) <= 1e-5 * (1 + Math.abs(v)), `product ${i}: ${v} vs ${off.product[i]}`));
  t.is(on.losses.length, 20);
  on.losses.forEach((v, i) => t.true(Math.abs(v - off.losses[i]!) <= 1e-4 * Math.abs(v), `step ${i} loss ${v} vs ${off.losses[i]}`));
  t.not(on.losses[0], on.losses[19]); // it trained
});
