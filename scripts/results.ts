/**
 * One problem's folder of docs/results/ from a finished sweep DIR (run `phasemap report DIR` first):
 *
 *   node dist/scripts/results.js DIR OUTDIR
 *
 * - copies the report's phase-diagram and SNR figures (SVG + PNG) and its rel. L2,
 *   residual-homogeneity, saturation and entropy figures (PNG) into OUTDIR;
 * - writes OUTDIR/table.md: per (strategy, lr, batch size) cell, the seeds' final phases,
 *   t_diffusion, t_equilibrium and final rel. L2 (median, with the seeds' range);
 * - writes OUTDIR/claims.json: the numbers behind docs/results/README.md — per (lr, batch) cell,
 *   vanilla against RBA (DE counts and steps, final rel. L2); and, over the trials that reached DE,
 *   the median res_homogeneity, hidden-layer saturation (mean over layers) and entropy of the first
 *   and last hidden layers over the `WINDOW` steps before t_equilibrium and after it; and the median
 *   res_homogeneity and saturation over the last 10 % of the steps, per strategy and batch kind.
 */
import { copyFile, mkdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { median as medianOf } from '../analysis/phases.js';
import { openResults } from '../analysis/query.js';

/** Figures copied, with their formats: the two the results page shows as SVG and PNG, the rest as PNG only (size). */
const FIGURES: Array<[string, string[]]> = [
  ['phase-diagram', ['svg', 'png']], ['snr', ['svg', 'png']],
  ['rel-l2', ['png']], ['res-homogeneity', ['png']], ['saturation', ['png']], ['entropy', ['png']],
];
/** Steps on each side of t_equilibrium over which the before/after medians are taken. */
const WINDOW = 500;

type Row = Record<string, unknown>;
const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));
const g = (v: number | null) => (v === null ? '–' : v < 0.01 ? v.toExponential(1) : v.toPrecision(2));

const median = (xs: number[]): number | null => (xs.length ? medianOf(xs) : null);

function range(xs: Array<number | null>, f: (v: number | null) => string): string {
  const v = xs.filter((x): x is number => x !== null);
  if (!v.length) return '–';
  const lo = Math.min(...v);
  const hi = Math.max(...v);
  return lo === hi ? f(median(v)) : `${f(median(v))} (${f(lo)}–${f(hi)})`;
}

async function main() {
  const [dir, out] = process.argv.slice(2);
  if (!dir || !out) throw new Error('usage: results.js DIR OUTDIR');
  await mkdir(out, { recursive: true });
  for (const [f, exts] of FIGURES)
    for (const ext of exts) {
      const src = join(dir, 'report', `${f}.${ext}`);
      if (existsSync(src)) await copyFile(src, join(out, `${f}.${ext}`));
    }
  const { conn, close } = await openResults(dir);
  try {
    const trials = (
      await conn.runAndReadAll(
        `SELECT trial_id, problem, strategy, lr, batch_size, batch_full, seed, final_phase, t_diffusion, t_equilibrium, final_rel_l2, wall_seconds, steps
         FROM trials WHERE status = 'done' ORDER BY strategy, batch_full DESC, batch_size DESC, lr, seed`,
      )
    ).getRowObjectsJson() as Row[];
    const cellKey = (t: Row) => `${t.strategy}|${t.lr}|${t.batch_full ? 'full' : t.batch_size}`;
    const cells = new Map<string, Row[]>();
    for (const t of trials) cells.set(cellKey(t), [...(cells.get(cellKey(t)) ?? []), t]);

    const lines = [
      `# ${trials[0]?.problem ?? ''}: phase record per cell`,
      '',
      `${trials.length} trials, ${trials[0]?.steps ?? '?'} steps each. Steps: median over the seeds (their range). Phases: count of seeds in each final phase.`,
      '',
      '| strategy | lr | batch | final phases | t_diffusion | t_equilibrium | final rel. L2 |',
      '|---|---|---|---|---|---|---|',
    ];
    for (const [key, ts] of cells) {
      const [strategy, lr, batch] = key.split('|');
      const counts = new Map<string, number>();
      for (const t of ts) counts.set(String(t.final_phase), (counts.get(String(t.final_phase)) ?? 0) + 1);
      const phases = [...counts.entries()].map(([p, n]) => `${p} ${n}/${ts.length}`).join(', ');
      lines.push(
        `| ${strategy} | ${lr} | ${batch} | ${phases} | ${range(ts.map((t) => num(t.t_diffusion)), (v) => String(v))} | ${range(ts.map((t) => num(t.t_equilibrium)), (v) => String(v))} | ${range(ts.map((t) => num(t.final_rel_l2)), g)} |`,
      );
    }
    await writeFile(join(out, 'table.md'), lines.join('\n') + '\n');

    // Vanilla against RBA, cell by cell.
    const pairs: Row[] = [];
    for (const [key, ts] of cells) {
      if (!key.startsWith('vanilla|')) continue;
      const rba = cells.get(key.replace(/^vanilla\|/, 'rba|')) ?? [];
      const de = (xs: Row[]) => xs.map((t) => num(t.t_equilibrium)).filter((v): v is number => v !== null);
      const l2 = (xs: Row[]) => median(xs.map((t) => num(t.final_rel_l2)).filter((v): v is number => v !== null));
      const [, lr, batch] = key.split('|');
      pairs.push({
        lr: Number(lr), batch, seeds: ts.length,
        vanilla_de: de(ts).length, rba_de: de(rba).length,
        vanilla_t_de: median(de(ts)), rba_t_de: median(de(rba)),
        vanilla_rel_l2: l2(ts), rba_rel_l2: l2(rba),
      });
    }

    // Signals around DE.
    const deTrials = trials.filter((t) => t.t_equilibrium !== null && t.final_phase === 'equilibrium');
    const around: Row[] = [];
    for (const t of deTrials) {
      const te = Number(t.t_equilibrium);
      const q = await conn.runAndReadAll(
        `SELECT step >= ${te} AS after,
                median(res_homogeneity) AS res_homogeneity,
                median(list_avg(saturation_layers)) AS saturation,
                median(saturation_layers[1]) AS saturation_first,
                median(entropy_layers[1]) AS entropy_first,
                median(entropy_layers[len(entropy_layers)]) AS entropy_last
         FROM metrics WHERE trial_id = '${String(t.trial_id)}' AND snr IS NOT NULL AND step >= ${te - WINDOW} AND step < ${te + WINDOW}
         GROUP BY ALL ORDER BY after`,
      );
      const rows = q.getRowObjectsJson() as Row[];
      const before = rows.find((r) => r.after === false);
      const after = rows.find((r) => r.after === true);
      if (!before || !after) continue;
      around.push({
        trial_id: t.trial_id, strategy: t.strategy, lr: num(t.lr), batch: t.batch_full ? 'full' : t.batch_size, t_equilibrium: te,
        ...Object.fromEntries(['res_homogeneity', 'saturation', 'saturation_first', 'entropy_first', 'entropy_last'].flatMap((k) => [[`${k}_before`, num(before[k])], [`${k}_after`, num(after[k])]])),
      });
    }
    const med = (k: string) => median(around.map((r) => num(r[k])).filter((v): v is number => v !== null));
    const summary = Object.fromEntries(
      ['res_homogeneity', 'saturation', 'saturation_first', 'entropy_first', 'entropy_last'].map((k) => [k, { before: med(`${k}_before`), after: med(`${k}_after`), rose_in: around.filter((r) => num(r[`${k}_after`])! > num(r[`${k}_before`])!).length, of: around.length }]),
    );
    // Residual homogeneity and saturation at the end of the run (last 10 % of steps), per strategy and batch.
    const endRows = (
      await conn.runAndReadAll(
        `SELECT t.strategy, t.batch_full, median(m.res_homogeneity) AS res_homogeneity, median(list_avg(m.saturation_layers)) AS saturation
         FROM metrics m JOIN trials t USING (trial_id)
         WHERE m.snr IS NOT NULL AND m.step >= 0.9 * t.steps GROUP BY ALL ORDER BY ALL`,
      )
    ).getRowObjectsJson() as Row[];
    const atEnd = endRows.map((r) => ({ strategy: r.strategy, batch: r.batch_full ? 'full' : 'mini', res_homogeneity: num(r.res_homogeneity), saturation: num(r.saturation) }));
    await writeFile(join(out, 'claims.json'), JSON.stringify({ problem: trials[0]?.problem, window_steps: WINDOW, cells: pairs, around_de: summary, at_end: atEnd, de_trials: around }, null, 2) + '\n');
    console.log(`${out}: ${FIGURES.length} figures, table.md (${cells.size} cells), claims.json (${around.length} DE trials)`);
  } finally {
    close();
  }
}

main().catch((e) => {
  console.error((e as Error).message);
  process.exit(1);
});
