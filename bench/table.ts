/** The benchmark table: for the terminal (cli-table3) and as Markdown (docs/performance.md). */
import Table from 'cli-table3';
import type { Figure } from './lib.js';

const fmt = (x: number | null): string => {
  if (x === null) return '-';
  const a = Math.abs(x);
  if (a >= 1000) return Math.round(x).toLocaleString('en-US');
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  return x.toFixed(2);
};

/** The table as printed (cli-table3), and as Markdown for the README. */
export function renderTable(figs: Figure[], markdown = false): string {
  const head = ['figure', 'unit', 'median', 'min', 'max', 'runs', 'target', 'pass'];
  const rows = figs.map((f) => [
    f.figure, f.unit, f.error && f.median === null ? 'failed' : fmt(f.median), fmt(f.min), fmt(f.max), String(f.runs),
    f.target?.text ?? '', f.pass === null ? '' : f.pass ? 'pass' : 'FAIL',
  ]);
  if (markdown) {
    const esc = (s: string) => s.replace(/\|/g, '\\|');
    return [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n');
  }
  const t = new Table({ head, style: { head: [], border: [] } });
  for (const r of rows) t.push(r);
  return t.toString();
}

