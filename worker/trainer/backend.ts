/**
 * Backend selection for the trainer (tfjs-core engine, one per thread).
 *
 * The engine is process/thread global in tfjs, so `initBackend` sets the backend for the whole
 * thread (main thread, a worker_threads thread or a piscina worker). Nothing here loads a backend at
 * import time: every backend module is imported dynamically on first use.
 */
import * as tf from '@tensorflow/tfjs-core';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Names accepted by `initBackend`; `tensorflow` is the tfjs-node(-gpu) native binding. */
export type BackendName = 'wasm' | 'cpu' | 'tensorflow';

const require = createRequire(import.meta.url);
let wasmPathsSet = false;

/** Directory (with trailing separator) holding the tfjs-backend-wasm `.wasm` binaries in node_modules. */
export function wasmDir(): string {
  // The package's "main" is dist/tf-backend-wasm.node.js; the .wasm files sit next to it.
  return path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm')) + path.sep;
}

async function loadWasm(): Promise<void> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  if (!wasmPathsSet && tf.findBackend('wasm') == null) {
    // In Node the emscripten loader reads the binary from this prefix with fs; setting it explicitly
    // makes the lookup independent of the caller's cwd and of the thread it runs in.
    wasm.setWasmPaths(wasmDir());
  }
  wasmPathsSet = true;
}

async function loadTensorflow(): Promise<string> {
  const errors: string[] = [];
  // Module names are held in variables so that neither tsc nor the loader needs them to exist.
  for (const spec of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      await import(spec);
      return spec;
    } catch (e) {
      errors.push(`${spec}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(
    `backend 'tensorflow' unavailable: neither @tensorflow/tfjs-node-gpu nor @tensorflow/tfjs-node could be loaded ` +
      `(install one of them, matching @tensorflow/tfjs-core ${tf.version_core}). ${errors.join('; ')}`,
  );
}

/**
 * Load and activate a tfjs backend for the current thread.
 *
 * - `wasm`: @tensorflow/tfjs-backend-wasm, with the wasm binary paths set from node_modules (works
 *   in the main thread and in worker_threads / piscina threads; single-threaded in Node).
 * - `cpu`: @tensorflow/tfjs-backend-cpu (pure JS, slow, always available).
 * - `tensorflow`: dynamic import of `@tensorflow/tfjs-node-gpu`, then `@tensorflow/tfjs-node`.
 *
 * @returns the name of the active backend (== `name`).
 * @throws Error with an explanatory message if the backend cannot be loaded or initialised
 *   (never at import time of this module).
 */
export async function initBackend(name: BackendName): Promise<BackendName> {
  if (name === 'wasm') await loadWasm();
  else if (name === 'cpu') await import('@tensorflow/tfjs-backend-cpu');
  else if (name === 'tensorflow') await loadTensorflow();
  else throw new Error(`unknown backend '${String(name)}' (expected wasm | cpu | tensorflow)`);
  let ok = false;
  try {
    ok = await tf.setBackend(name);
  } catch (e) {
    throw new Error(`backend '${name}' failed to initialise: ${(e as Error).message ?? String(e)}`);
  }
  if (!ok || tf.getBackend() !== name) throw new Error(`backend '${name}' failed to initialise (tf.setBackend returned false)`);
  await tf.ready();
  if (name === 'wasm') {
    patchWasmIdentity();
    patchWasmSlice();
    patchWasmTanh();
    patchWasmMatMul();
  }
  return name;
}

/** Kernel arguments of a tfjs kernel function. */
type KernelArgs = Parameters<tf.KernelFunc>[0];
type KernelFn = (args: KernelArgs) => tf.TensorInfo;

/** Kernel names already replaced on the wasm backend (once per thread). */
const replacedWasmKernels = new Set<string>();
/**
 * Replaces the wasm backend's `name` kernel by `make(original)`; the original kernel function is
 * passed to fall back to (other dtypes). Once per kernel name; nothing happens when the backend has
 * no such kernel.
 */
function replaceWasmKernel(name: string, make: (orig: KernelFn) => KernelFn): void {
  if (replacedWasmKernels.has(name)) return;
  replacedWasmKernels.add(name);
  const orig = tf.getKernel(name, 'wasm');
  if (!orig) return;
  const kernelFunc = make(orig.kernelFunc as KernelFn);
  tf.unregisterKernel(name, 'wasm');
  tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: kernelFunc as tf.KernelFunc });
}

/**
 * The wasm backend's Identity kernel copies its input. tfjs-core's engine runs Identity to save every
 * tensor a gradient needs (engine.clone), so with the default kernel each recorded op copies its
 * inputs. Tensors are immutable, so a zero-copy Identity that shares the data (refcounted, exactly
 * like the wasm Reshape kernel does) is equivalent and much cheaper.
 */
function patchWasmIdentity(): void {
  replaceWasmKernel('Identity', () => ({ inputs, backend }) => {
    const x = (inputs as { x: tf.TensorInfo }).x;
    if (x.dtype === 'string') throw new Error('Identity: string tensors unsupported');
    (backend as unknown as { incRef(id: unknown): void }).incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  });
}

/**
 * The wasm backend's Slice kernel reads its input with `readSync`, which copies the WHOLE input out of
 * the wasm heap into a fresh JS buffer before copying the slice: slicing one stream of a [S·n, w]
 * activation cost ~S times a plain copy plus garbage (3–7× an elementwise kernel). This kernel copies
 * the slice's contiguous runs straight from a view of the heap (same values, same output); string
 * tensors go to the original kernel.
 */
function patchWasmSlice(): void {
  replaceWasmKernel('Slice', (orig) => (args) => {
    const x = (args.inputs as { x: tf.TensorInfo }).x;
    const { begin, size } = args.attrs as unknown as { begin: number | number[]; size: number | number[] };
    if (x.dtype !== 'string') {
      const [b, sz] = tf.slice_util.parseSliceParams(x as tf.Tensor, begin, size);
      const backend = args.backend as unknown as WasmHeapBackend;
      const out = backend.makeOutput(sz, x.dtype); // may grow the heap: take the views after it
      const n = tf.util.sizeFromShape(sz);
      if (n === 0) return out;
      const src = backend.typedArrayFromHeap(x);
      const dst = backend.typedArrayFromHeap(out);
      const rank = x.shape.length;
      const strides = [...tf.util.computeStrides(x.shape), 1];
      // The slice is a set of contiguous runs: axes after k are taken whole.
      let k = rank - 1;
      while (k > 0 && b[k] === 0 && sz[k] === x.shape[k]) k--;
      const run = sz[k]! * strides[k]!;
      const base = tf.slice_util.computeFlatOffset(b, strides.slice(0, rank - 1));
      const idx = new Array<number>(k).fill(0);
      for (let o = 0; o < n; o += run) {
        let off = base;
        for (let i = 0; i < k; i++) off += idx[i]! * strides[i]!;
        dst.set(src.subarray(off, off + run), o);
        for (let i = k - 1; i >= 0; i--) {
          if (++idx[i]! < sz[i]!) break;
          idx[i] = 0;
        }
      }
      return out;
    }
    return orig(args);
  });
}

// ---------------------------------------------------------------------------------------------
// JS kernels on the wasm heap.
//
// The wasm backend keeps every tensor in its heap; a kernel written in plain JS can read its inputs
// and write its outputs through Float32Array views of that heap, with no copy. Used for elementwise
// work that tfjs would run as many separate kernels (the fused MLP's tanh-stream recursions and their
// backward, network.ts) and for a faster accurate tanh.
// ---------------------------------------------------------------------------------------------

interface WasmHeapBackend {
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
  typedArrayFromHeap(t: tf.TensorInfo): Float32Array | Int32Array | Uint8Array;
}

/** True when the active backend is wasm (heap kernels available). */
export function heapKernelsAvailable(): boolean {
  return tf.getBackend() === 'wasm';
}

/**
 * Run `body` on Float32Array views of the float32 `inputs` and of fresh outputs of `outShapes`, on the
 * wasm backend. The outputs are allocated first (allocation may grow the heap and detach older
 * views); `body` must not call tfjs. Returns the outputs as tensors of the current scope.
 * @throws Error if the active backend is not wasm.
 */
export function heapKernel(inputs: tf.Tensor[], outShapes: number[][], body: (ins: Float32Array[], outs: Float32Array[]) => void): tf.Tensor[] {
  if (tf.getBackend() !== 'wasm') throw new Error('heapKernel: the active backend is not wasm');
  const backend = tf.backend() as unknown as WasmHeapBackend;
  for (const t of inputs) if (t.dtype !== 'float32') throw new Error(`heapKernel: ${t.dtype} input`);
  const infos = outShapes.map((s) => backend.makeOutput(s, 'float32'));
  const ins = inputs.map((t) => backend.typedArrayFromHeap(t) as Float32Array);
  const outs = infos.map((i) => backend.typedArrayFromHeap(i) as Float32Array);
  body(ins, outs);
  const engine = tf.engine() as unknown as { makeTensorFromTensorInfo(i: tf.TensorInfo): tf.Tensor };
  return infos.map((i) => engine.makeTensorFromTensorInfo(i));
}

const EXP_TABLE = Float64Array.from({ length: 32 }, (_, j) => 2 ** (j / 32));
const POW2 = Float64Array.from({ length: 64 }, (_, k) => 2 ** (k - 32));

/**
 * tanh in double precision (relative error < 2e-10, so the float32 result is the correctly rounded
 * tanh but for rare near-ties; NaN propagates, ±∞ → ±1): an odd Taylor polynomial for |x| < 0.17,
 * else (e − 1)/(e + 1) with e = e^{2x} (x clamped to ±10) = 2^{k/32} · p(r), |r| ≤ ln2/64, p the
 * degree-5 Taylor polynomial of e^r. No data-dependent branch but the small-|x| one: about 3× faster
 * than the wasm backend's scalar libm Tanh kernel.
 */
export function tanhD(x: number): number {
  if (Math.abs(x) < 0.17) {
    const x2 = x * x;
    return x + x * x2 * (-1 / 3 + x2 * (2 / 15 + x2 * (-17 / 315 + x2 * (62 / 2835))));
  }
  const y = 2 * Math.max(-10, Math.min(x, 10));
  const k = ((y * 46.16624130844683 + 1024.5) | 0) - 1024; // round(y · 32/ln2), |k| ≤ 924
  const r = y - k * 0.02166084939249829; // ln2/32
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120)))));
  const e = POW2[(k >> 5) + 32]! * EXP_TABLE[k & 31]! * p;
  return (e - 1) / (e + 1);
}

/** The wasm Tanh kernel replaced by the JS `tanhD` on the heap (same values to float32 rounding). */
function patchWasmTanh(): void {
  replaceWasmKernel('Tanh', (orig) => (args) => {
    const x = (args.inputs as { x: tf.TensorInfo }).x;
    if (x.dtype !== 'float32') return orig(args);
    const backend = args.backend as unknown as WasmHeapBackend;
    const out = backend.makeOutput(x.shape.slice(), 'float32');
    const src = backend.typedArrayFromHeap(x) as Float32Array;
    const dst = backend.typedArrayFromHeap(out) as Float32Array;
    const native = nativeStreams();
    if (native) native.tanh(src, dst); // the same tanhD in C
    else for (let i = 0; i < src.length; i++) dst[i] = tanhD(src[i]!);
    return out;
  });
}

// ---------------------------------------------------------------------------------------------
// Native BLAS matmuls on the wasm heap (worker/trainer/native/blas.c).
// ---------------------------------------------------------------------------------------------

/** What `blasStatus` reports: whether the wasm backend's matmuls run on a native BLAS, and why not. */
export interface BlasStatus {
  /** True when cblas_sgemm was loaded: BatchMatMul on wasm uses it. */
  available: boolean;
  /** The shared library opened (e.g. `libopenblas.so.0`), '' when none. */
  library: string;
  /** OpenBLAS's kernel family (e.g. `SkylakeX`), '' when unknown. */
  core: string;
  /** Why it is not available ('' when it is). */
  error: string;
  /**
   * Calls hold a process-wide lock (one product at a time over all slots): the library is not
   * OpenBLAS's pthreads build, the one known to take concurrent calls (the sequential build shares
   * its work buffers between threads: concurrent slots got other results, run to run).
   */
  serialised?: boolean;
}

interface BlasAddon {
  sgemm(a: Float32Array, b: Float32Array, c: Float32Array, batch: number, m: number, n: number, k: number, transA: number, transB: number, strideA: number, strideB: number): void;
  status(): BlasStatus;
}

/**
 * The fused MLP's per-element stream loops in C (native/streams.c): each computes, operation for
 * operation in double precision, what network.ts's generated JS loop computes, so the results are
 * the same bits. `layout` is [G, n, w, d, S, nd, ns, first…, second…, secPos…]; the Float64Arrays
 * accumulate (+=). Throws RangeError when an array is shorter than the layout says.
 */
export interface NativeStreams {
  tanh(x: Float32Array, out: Float32Array): void;
  fwdHidden(layout: Int32Array, bPer: number, Z: Float32Array, B: Float32Array, Ao: Float32Array | null, ao: Float32Array): void;
  fwdLayer0(layout: Int32Array, bPer: number, wPer: number, Z: Float32Array, B: Float32Array, W: Float32Array, Ao: Float32Array, ao: Float32Array): void;
  bwdHidden(layout: Int32Array, bPer: number, D: Float32Array, a: Float32Array, Z: Float32Array | null, dZ: Float32Array, db: Float64Array): void;
  bwdLayer0(layout: Int32Array, bPer: number, gPer: number, wPer: number, D: Float32Array, a: Float32Array, W: Float32Array, X: Float32Array, dW: Float64Array, db: Float64Array): void;
}

type NativeAddon = BlasAddon & NativeStreams & { setTanhTables(exp32: Float64Array, pow2: Float64Array): void };

let nativeAddon: NativeAddon | null | undefined;
let nativeLoadError = '';

/** Path of the built addon: <package root>/build/Release/phasemap_native.node (dist/worker/trainer → root). */
function nativeAddonPath(): string {
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'build', 'Release', 'phasemap_native.node');
}

/** The native addon (once per thread), or null with `nativeLoadError` saying why. PHASEMAP_NATIVE=off: never. */
function loadNative(): NativeAddon | null {
  if (nativeAddon !== undefined) return nativeAddon;
  nativeAddon = null;
  const file = nativeAddonPath();
  if (process.env.PHASEMAP_NATIVE === 'off') nativeLoadError = 'disabled by PHASEMAP_NATIVE=off';
  else if (!existsSync(file)) nativeLoadError = `the native addon was not built (${file} missing; npm run build builds it)`;
  else {
    try {
      const addon = require(file) as NativeAddon;
      addon.setTanhTables(EXP_TABLE, POW2);
      nativeAddon = addon;
    } catch (e) {
      nativeLoadError = `the native addon did not load: ${(e as Error).message.split('\n')[0]}`;
    }
  }
  return nativeAddon;
}

let blasAddon: BlasAddon | null | undefined;
/** The addon when its BLAS loaded (OpenBLAS found, PHASEMAP_BLAS not off), else null (once per thread). */
function loadBlas(): BlasAddon | null {
  if (blasAddon === undefined) {
    const addon = loadNative();
    blasAddon = addon && addon.status().available ? addon : null;
  }
  return blasAddon;
}

let nativeStreamsOn = true;
/** Turn the C stream loops off (true: on when the addon loaded) for this thread; for tests and benchmarks. */
export function setNativeStreams(on: boolean): void {
  nativeStreamsOn = on;
}

/** The C stream loops when the addon loaded and they are on, else null (the JS loops run). */
export function nativeStreams(): NativeStreams | null {
  return nativeStreamsOn ? loadNative() : null;
}

/**
 * True when the active backend is wasm and its BatchMatMul runs on the native BLAS (this thread):
 * transposed and batched products are then as fast as plain ones, so callers pass transposes as flags
 * and batches whole instead of working around tfjs-wasm's slow paths.
 */
export function nativeMatMulActive(): boolean {
  return tf.getBackend() === 'wasm' && loadBlas() != null && replacedWasmKernels.has('BatchMatMul');
}

/**
 * Whether the wasm backend's matmuls run on the native BLAS (OpenBLAS cblas_sgemm, single-threaded),
 * and if not why. Loads the addon on first call; does not need an active backend.
 */
export function blasStatus(): BlasStatus {
  const addon = loadNative();
  return addon ? addon.status() : { available: false, library: '', core: '', error: nativeLoadError };
}

/**
 * The wasm BatchMatMul kernel replaced by cblas_sgemm on views of the wasm heap when the native BLAS
 * loaded (see native/blas.c): XNNPACK-in-wasm reaches ~15 GFLOP/s on the trainer's shapes, OpenBLAS
 * ~80 on the dev machine, and tfjs-wasm's batched or transposed-left products are a scalar loop
 * slower still. Same product to float32 rounding (another summation order); batch dimensions equal or
 * one side's of size 1 (broadcast); any other broadcast, a non-float32 dtype or no addon → the
 * original kernel. Deterministic: the same shapes and values give the same bits.
 */
function patchWasmMatMul(): void {
  const addon = loadBlas();
  if (!addon) return;
  replaceWasmKernel('BatchMatMul', (orig) => (args) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as { transposeA: boolean; transposeB: boolean };
    if (a.dtype !== 'float32' || b.dtype !== 'float32' || a.shape.length < 2 || b.shape.length < 2) return orig(args);
    const ra = a.shape.length;
    const rb = b.shape.length;
    const m = transposeA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
    const k = transposeA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
    const kb = transposeB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
    const n = transposeB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
    if (k !== kb) return orig(args); // the original kernel throws its own shape error
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    const batchA = tf.util.sizeFromShape(outerA);
    const batchB = tf.util.sizeFromShape(outerB);
    let outer: number[];
    if (tf.util.arraysEqual(outerA, outerB)) outer = outerA;
    else if (batchB === 1 && outerB.length <= outerA.length) outer = outerA;
    else if (batchA === 1 && outerA.length <= outerB.length) outer = outerB;
    else return orig(args);
    const backend = args.backend as unknown as WasmHeapBackend;
    const out = backend.makeOutput([...outer, m, n], 'float32'); // may grow the heap: views after it
    const batch = Math.max(batchA, batchB);
    if (batch * m * n === 0) return out;
    addon.sgemm(
      backend.typedArrayFromHeap(a) as Float32Array,
      backend.typedArrayFromHeap(b) as Float32Array,
      backend.typedArrayFromHeap(out) as Float32Array,
      batch, m, n, k, transposeA ? 1 : 0, transposeB ? 1 : 0,
      batchA === 1 ? 0 : m * k, batchB === 1 ? 0 : k * n,
    );
    return out;
  });
}

/**
 * Pick the best available backend for `auto`: `tensorflow` if tfjs-node-gpu or tfjs-node loads,
 * else `wasm`, else `cpu`. Activates it (as `initBackend`) and returns its name.
 * @throws only if not even the cpu backend can be initialised.
 */
export async function detectBackend(): Promise<BackendName> {
  for (const name of ['tensorflow', 'wasm'] as const) {
    try {
      return await initBackend(name);
    } catch {
      /* try the next */
    }
  }
  return initBackend('cpu');
}

/** Name of the active tfjs backend, if it is one of ours. */
export function currentBackend(): BackendName | null {
  const b = tf.getBackend();
  return b === 'wasm' || b === 'cpu' || b === 'tensorflow' ? b : null;
}
