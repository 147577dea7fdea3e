/**
 * docs/results/: the four problems' shipped figures, tables and claim numbers load, and agree with
 * each other (every cell of a table has its pair in claims.json; the README's claims table names
 * every problem).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import test from 'ava';
import { repoRoot } from './helpers.js';

const PROBLEMS = ['poisson2d', 'helmholtz2d', 'burgers1d', 'allen_cahn1d'];
const root = join(repoRoot, 'docs/results');

/** Width and height of a PNG from its IHDR chunk. @throws when the bytes are not a PNG. */
function pngSize(bytes: Buffer): [number, number] {
  if (bytes.subarray(0, 8).toString('hex') !== '89504e470d0a1a0a' || bytes.subarray(12, 16).toString('ascii') !== 'IHDR') throw new Error('not a PNG');
  return [bytes.readUInt32BE(16), bytes.readUInt32BE(20)];
}

for (const p of PROBLEMS) {
  test(`docs/results/${p}: phase diagram and SNR figures (SVG + PNG), table and claims load`, (t) => {
    for (const f of ['phase-diagram', 'snr']) {
      const svg = readFileSync(join(root, p, `${f}.svg`), 'utf8');
      const m = /^<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg);
      t.truthy(m, `${f}.svg is an SVG document with a size`);
      t.true(svg.trimEnd().endsWith('</svg>'), `${f}.svg is complete`);
      const [w, h] = pngSize(readFileSync(join(root, p, `${f}.png`)));
      t.true(w > 200 && h > 100, `${f}.png ${w}×${h}`);
    }
    const table = readFileSync(join(root, p, 'table.md'), 'utf8').split('\n').filter((l) => /^\| (vanilla|rba) \|/.test(l));
    const claims = JSON.parse(readFileSync(join(root, p, 'claims.json'), 'utf8')) as { problem: string; cells: Array<{ lr: number; batch: string }> };
    t.is(claims.problem, p);
    t.true(table.length >= 8, `${table.length} cells`);
    t.is(table.length, 2 * claims.cells.length, 'one vanilla and one rba row per (lr, batch) pair');
    for (const c of claims.cells) t.true(table.some((l) => l.startsWith(`| rba | ${c.lr} | ${c.batch} |`)), `rba ${c.lr} ${c.batch}`);
  });
}

test('docs/results/README.md: the claims table has one row per problem and links its figures', (t) => {
  const md = readFileSync(join(root, 'README.md'), 'utf8');
  for (const p of PROBLEMS) {
    t.regex(md, new RegExp(`\\n\\| \\[?\`?${p}`), `${p} row`);
    t.true(md.includes(`${p}/phase-diagram.png`), `${p} figure linked`);
  }
});
