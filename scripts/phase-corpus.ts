/**
 * The phase detector's labelled corpus, for whoever labels or tunes (docs/phases.md):
 *
 *   node dist/scripts/phase-corpus.js extract OUT.json.gz DIR...        trials of results DIRs → corpus
 *   node dist/scripts/phase-corpus.js sheets CORPUS OUTDIR [--per 12] [--width 300] [--detect] [--labels LABELS] [--only ID,ID]
 *        contact sheets (PNG) to label from: per trial, log10 SNR (points; black line = running median
 *        of 5 points), Adam SNR (orange), and below it loss (blue) and rel. L2 (red), on a log step axis
 *        with a grey rule at each learning-rate decay. --detect draws the detector's transitions
 *        (dashed) and --labels the labelled ones (solid); leave both off while labelling.
 *   node dist/scripts/phase-corpus.js agree CORPUS LABELS               agreement table + disagreements
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { renderAsync } from '@resvg/resvg-js';
import { agreement, agreementTable, corpusFromDir, encodeCorpus, readCorpus, readLabels, type CorpusTrial, type LabelRecord } from '../analysis/corpus.js';
import { detectPhases, smoothLog } from '../analysis/phases.js';
import { renderSvg } from '../analysis/report/render.js';

const X0 = 10;
const xs = (step: number) => Math.max(X0, step);

function trialPanels(t: CorpusTrial, n: number, marks: Array<{ step: number; kind: string }>, width = 300): Record<string, unknown> {
  const s = t.series;
  const snrIdx = s.snr.map((v, i) => (v !== null && v > 0 ? i : -1)).filter((i) => i >= 0);
  const logs = snrIdx.map((i) => Math.log10(s.snr[i]!));
  const med = smoothLog(logs, 5); // plain 5-point running median (no step span), what the guide calls the black line
  const snrRows = snrIdx.map((i, k) => ({ x: xs(s.step[i]!), raw: logs[k], med: med[k], adam: s.snr_adam[i] ? Math.log10(s.snr_adam[i]!) : null }));
  const lossRows: Array<Record<string, unknown>> = [];
  s.step.forEach((st, i) => {
    if (Number.isFinite(s.loss[i]) && s.loss[i]! > 0) lossRows.push({ x: xs(st), v: s.loss[i], k: '#0072B2' });
    if (s.rel_l2[i] !== null && s.rel_l2[i]! > 0) lossRows.push({ x: xs(st), v: s.rel_l2[i], k: '#D55E00' });
  });
  const decays: Array<{ x: number }> = [];
  for (let i = 1; i < s.lr.length; i++) if (s.lr[i] !== s.lr[i - 1]) decays.push({ x: xs(s.step[i]!) });
  const x = { field: 'x', type: 'quantitative', scale: { type: 'log', domain: [X0, Math.max(X0 * 2, t.steps)] }, axis: { grid: true, tickCount: 8, labelFontSize: 9, title: null } };
  const rules = { data: { values: decays }, mark: { type: 'rule', color: '#bbb' }, encoding: { x } };
  const markLayer = {
    data: { values: marks.map((m) => ({ x: xs(m.step), c: m.kind === 'label' ? '#009E73' : '#CC79A7', d: m.kind === 'label' ? [1, 0] : [4, 3] })) },
    mark: { type: 'rule', strokeWidth: 2 },
    encoding: { x, color: { field: 'c', type: 'nominal', scale: null }, strokeDash: { field: 'd', type: 'nominal', scale: null } },
  };
  const title = `#${n} ${t.problem} ${t.strategy} lr ${t.lr} ${t.batch_full ? 'full' : `b${t.batch_size}`} s${t.seed}${t.diverged ? ' DIVERGED' : ''}`;
  return {
    title: { text: title, fontSize: 11 },
    vconcat: [
      {
        width,
        height: 110,
        layer: [
          rules,
          { data: { values: [{ y: 0 }] }, mark: { type: 'rule', color: '#888', strokeDash: [2, 2] }, encoding: { y: { field: 'y', type: 'quantitative' } } },
          { data: { values: snrRows }, mark: { type: 'point', size: 6, color: '#777', opacity: 0.6 }, encoding: { x, y: { field: 'raw', type: 'quantitative', title: 'log10 SNR', axis: { labelFontSize: 9, titleFontSize: 9 } } } },
          { data: { values: snrRows }, mark: { type: 'line', color: '#E69F00', strokeWidth: 1 }, encoding: { x, y: { field: 'adam', type: 'quantitative' } } },
          { data: { values: snrRows }, mark: { type: 'line', color: 'black', strokeWidth: 1.5 }, encoding: { x, y: { field: 'med', type: 'quantitative' } } },
          markLayer,
        ],
      },
      {
        width,
        height: 70,
        layer: [
          rules,
          {
            data: { values: lossRows },
            mark: { type: 'line', strokeWidth: 1 },
            encoding: {
              x,
              y: { field: 'v', type: 'quantitative', scale: { type: 'log' }, title: 'loss, L2', axis: { labelFontSize: 9, titleFontSize: 9, tickCount: 4 } },
              color: { field: 'k', type: 'nominal', scale: null },
            },
          },
          markLayer,
        ],
      },
    ],
    spacing: 2,
  };
}

async function sheets(corpusPath: string, out: string, per: number, detect: boolean, labelsPath: string | null, only: Set<string> | null, width: number) {
  const trials = readCorpus(corpusPath).filter((t) => !only || only.has(t.id));
  const labels = labelsPath ? readLabels(labelsPath) : new Map<string, LabelRecord>();
  await mkdir(out, { recursive: true });
  const index: string[] = [];
  for (let p = 0; p * per < trials.length; p++) {
    const panels = trials.slice(p * per, (p + 1) * per).map((t, k) => {
      const n = p * per + k + 1;
      index.push(`#${n}\t${t.id}\t${t.problem}\t${t.strategy}\tlr ${t.lr}\t${t.batch_full ? 'full' : t.batch_size}\tseed ${t.seed}`);
      const marks: Array<{ step: number; kind: string }> = [];
      const l = labels.get(t.id);
      if (l) for (const v of [l.t_diffusion, l.t_equilibrium]) if (v !== null) marks.push({ step: v, kind: 'label' });
      if (detect) {
        const d = detectPhases(t.series);
        for (const v of [d.t_diffusion, d.t_equilibrium]) if (v !== null) marks.push({ step: v, kind: 'detected' });
      }
      return trialPanels(t, n, marks, width);
    });
    const spec = { concat: panels, columns: Math.max(1, Math.round(1200 / width)), spacing: 12 };
    const svg = await renderSvg(spec, {}, { view: { stroke: '#ddd' }, font: 'DejaVu Sans' });
    const png = (await renderAsync(svg, { fitTo: { mode: 'zoom', value: 1 }, background: 'white' })).asPng();
    const name = join(out, `sheet-${String(p + 1).padStart(2, '0')}.png`);
    await writeFile(name, png);
    console.log(name);
  }
  await writeFile(join(out, 'index.tsv'), index.join('\n') + '\n');
}

async function main() {
  const [cmd, ...args] = process.argv.slice(2);
  if (cmd === 'extract') {
    const [outPath, ...dirs] = args;
    if (!outPath || dirs.length === 0) throw new Error('usage: extract OUT.json.gz DIR...');
    const all: CorpusTrial[] = [];
    for (const d of dirs) all.push(...(await corpusFromDir(d)));
    const text = encodeCorpus(all);
    await writeFile(outPath, outPath.endsWith('.gz') ? gzipSync(text, { level: 9 }) : text);
    console.log(`${all.length} trials → ${outPath}`);
  } else if (cmd === 'sheets') {
    const opt = (name: string) => {
      const i = args.indexOf(name);
      return i >= 0 ? args[i + 1]! : null;
    };
    const pos = args.filter((a, i) => !a.startsWith('--') && !['--per', '--labels', '--only', '--width'].includes(args[i - 1] ?? ''));
    const only = opt('--only');
    await sheets(pos[0]!, pos[1]!, Number(opt('--per') ?? 12), args.includes('--detect'), opt('--labels'), only ? new Set(only.split(',')) : null, Number(opt('--width') ?? 300));
  } else if (cmd === 'agree') {
    const rows = agreement(readCorpus(args[0]!), readLabels(args[1]!));
    console.log('| problem | strategy | trials | agree | agreement |\n|---|---|---|---|---|');
    for (const r of agreementTable(rows)) console.log(`| ${r.problem} | ${r.strategy} | ${r.trials} | ${r.agree} | ${r.percent.toFixed(0)} % |`);
    for (const r of rows.filter((r) => !r.ok))
      console.log(`✗ ${r.trial.id} ${r.trial.problem} ${r.trial.strategy} lr ${r.trial.lr} ${r.trial.batch_full ? 'full' : r.trial.batch_size} s${r.trial.seed}: label ${r.label.phase} ${r.label.t_diffusion} ${r.label.t_equilibrium}; detected ${r.detected.final_phase} ${r.detected.t_diffusion} ${r.detected.t_equilibrium}`);
  } else {
    console.error('usage: phase-corpus extract|sheets|agree … (see the header of scripts/phase-corpus.ts)');
    process.exit(2);
  }
}

main().catch((e) => {
  console.error((e as Error).message);
  process.exit(1);
});
