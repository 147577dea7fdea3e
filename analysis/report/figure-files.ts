/**
 * Writing a report's figure files: each figure's datasets are expanded from the payload, rendered to
 * `NAME.svg` and rasterised to `NAME.png`, each file written atomically (temporary name, then
 * rename). `writeFigureFiles` runs in the main thread and, for a share of the figures, in worker
 * threads (this file is also the worker's entry point): vega renders on one core, so a 2-core machine
 * draws two figures at once.
 */
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isMainThread, parentPort, Worker } from 'node:worker_threads';
import { cellRows, datasetRows, VEGA_CONFIG, type FigureDef, type Payload } from './figures.js';
import { renderSvg, svgToPng } from './render.js';

export interface FigureFiles {
  /** Paths written (SVG, and PNG unless `png` is false: PNGs written before then stay). */
  files: string[];
  /** Figure name → PNG size in pixels. */
  pngSizes: Record<string, { width: number; height: number }>;
  /** Figure name → ms spent rendering its SVG. */
  svgMs: Record<string, number>;
}

/** Writes a file under a temporary name (`PATH.tmp-<pid>-<random>`), then renames it into place. */
export async function writeAtomic(path: string, body: string | Buffer): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  await writeFile(tmp, body);
  await rename(tmp, path);
}

/** Below this many rows in all figures, one thread draws them. */
export const THREADS_ABOVE_ROWS = 100_000;

/** Rows a figure draws (a cost estimate for sharing figures between threads). */
export function figureCost(p: Payload, f: FigureDef): number {
  return 1 + f.datasets.reduce((s, d) => s + (p.tables[d.table]?.t.length ?? 0) * d.cols.length, 0);
}

/** Renders and writes the files of `figures` (module header); PNGs rasterise on libuv's pool meanwhile. */
export async function writeFigureFiles(p: Payload, figures: FigureDef[], out: string, png: boolean): Promise<FigureFiles> {
  const r: FigureFiles = { files: [], pngSizes: {}, svgMs: {} };
  const pngs: Promise<void>[] = [];
  for (const f of figures) {
    const datasets: Record<string, unknown[]> = {};
    for (const d of f.datasets) datasets[d.name] = datasetRows(p, d);
    if (f.name === 'phase-diagram') datasets.cells = cellRows(p);
    const t = performance.now();
    const svg = await renderSvg(f.spec, datasets, VEGA_CONFIG);
    r.svgMs[f.name] = performance.now() - t;
    await writeAtomic(join(out, `${f.name}.svg`), svg);
    r.files.push(join(out, `${f.name}.svg`));
    if (png)
      pngs.push(
        svgToPng(svg).then(async ({ png: bytes, width, height }) => {
          await writeAtomic(join(out, `${f.name}.png`), bytes);
          r.files.push(join(out, `${f.name}.png`));
          r.pngSizes[f.name] = { width, height };
        }),
      );
  }
  await Promise.all(pngs);
  return r;
}

interface Job {
  payload: Payload;
  figures: FigureDef[];
  out: string;
  png: boolean;
}

/**
 * Writes every figure's files with `threads` threads (this one and threads − 1 workers), the figures
 * shared greedily by their row counts.
 * @throws Error from a figure that fails to render, in whichever thread.
 */
export async function writeFigureFilesThreaded(p: Payload, figures: FigureDef[], out: string, png: boolean, threads: number): Promise<FigureFiles> {
  // A worker costs ~0.5 s to start (it loads vega and resvg): small reports draw in this thread alone.
  const rows = figures.reduce((s, f) => s + figureCost(p, f), 0);
  const n = rows < THREADS_ABOVE_ROWS ? 1 : Math.max(1, Math.min(threads, figures.length));
  const shares: FigureDef[][] = Array.from({ length: n }, () => []);
  const load = new Array<number>(n).fill(0);
  for (const f of [...figures].sort((a, b) => figureCost(p, b) - figureCost(p, a))) {
    const i = load.indexOf(Math.min(...load));
    shares[i]!.push(f);
    load[i]! += figureCost(p, f);
  }
  const inWorker = (job: Job) =>
    new Promise<FigureFiles>((resolve, reject) => {
      const w = new Worker(new URL(import.meta.url), { workerData: null });
      w.once('message', (m: { ok: true; r: FigureFiles } | { ok: false; error: string }) => {
        void w.terminate();
        if (m.ok) resolve(m.r);
        else reject(new Error(m.error));
      });
      w.once('error', reject);
      w.postMessage(job);
    });
  const results = await Promise.all(shares.map((s, i) => (i === 0 ? writeFigureFiles(p, s, out, png) : inWorker({ payload: p, figures: s, out, png }))));
  return {
    files: results.flatMap((x) => x.files),
    pngSizes: Object.assign({}, ...results.map((x) => x.pngSizes)),
    svgMs: Object.assign({}, ...results.map((x) => x.svgMs)),
  };
}

if (!isMainThread && parentPort) {
  parentPort.once('message', (job: Job) => {
    writeFigureFiles(job.payload, job.figures, job.out, job.png).then(
      (r) => parentPort!.postMessage({ ok: true, r }),
      (e: Error) => parentPort!.postMessage({ ok: false, error: e.stack ?? e.message }),
    );
  });
}
