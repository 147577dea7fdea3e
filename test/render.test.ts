/**
 * Figures drawn in Node: Vega lays text out with the widths resvg draws it at (DejaVu Sans), so
 * headers, legends and the figure's size fit the text instead of Vega's estimate (0.8 em a character).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import test from 'ava';
import { Resvg } from '@resvg/resvg-js';
import { renderSvg, textWidth } from '../analysis/report/render.js';

const require = createRequire(import.meta.url);
const FONT_DIR = join(dirname(require.resolve('dejavu-fonts-ttf/package.json')), 'ttf');

/** The ink width resvg gives a line of text (its bounding box), drawn with the same DejaVu files. */
function resvgWidth(text: string, size: number, bold: boolean): number {
  const esc = text.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="2000" height="100"><text x="10" y="50" font-family="DejaVu Sans" font-size="${size}" font-weight="${bold ? 'bold' : 'normal'}">${esc}</text></svg>`;
  const r = new Resvg(svg, { font: { loadSystemFonts: false, fontFiles: ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf'].map((f) => join(FONT_DIR, f)), defaultFontFamily: 'DejaVu Sans' } });
  return r.getBBox()!.width;
}

test('textWidth: within 2 px of the width resvg draws (regular and bold, kerned pairs), where Vega estimates 0.8 em a character', (t) => {
  for (const [text, size, bold] of [
    ["text: that phase with its count of the cell's seeds, median DE step (the seeds' range), median final rel. L2", 11, false],
    ['strategy vanilla', 12, true],
    ['AVATAR Wave To', 14, false],
    ['learning rate lr₀ (log)', 11, true],
    ['iiiiiiiiii', 10, false],
  ] as const) {
    const ours = textWidth({ fontSize: size, fontWeight: bold ? 'bold' : undefined }, text);
    const drawn = resvgWidth(text, size, bold);
    // The ink box lacks the first glyph's left and the last glyph's right side bearing: at most ~1 px each here.
    t.true(Math.abs(ours - drawn) < 2, `${text} @${size}${bold ? ' bold' : ''}: ${ours.toFixed(1)} vs resvg ${drawn.toFixed(1)}`);
    t.log(`${JSON.stringify(text).slice(0, 40)} @${size}: ${ours.toFixed(1)} px (resvg ${drawn.toFixed(1)}; Vega's estimate ${Math.floor(0.8 * [...text].length * size)})`);
  }
  t.is(textWidth({ fontSize: 0 }, 'x'), 0);
  t.is(textWidth({}, ''), 0);
});

test('textWidth: a line over its limit is measured as Vega draws it, truncated with its ellipsis', (t) => {
  const text = 'strategy vanilla · batch_size full';
  const whole = textWidth({ fontSize: 11 }, text);
  const cut = textWidth({ fontSize: 11, limit: 100 }, text);
  t.true(cut <= 100 && cut > 80, `${cut}`);
  t.is(textWidth({ fontSize: 11, limit: whole + 1 }, text), whole);
  // The longest prefix that fits, plus '…'.
  let n = 0;
  while (textWidth({ fontSize: 11 }, text.slice(0, n + 1)) < 100 - textWidth({ fontSize: 11 }, '…')) n++;
  t.is(cut, textWidth({ fontSize: 11 }, text.slice(0, n)) + textWidth({ fontSize: 11 }, '…'));
});

test('a figure is as wide as its text: the SVG of a long subtitle over a small chart fits the subtitle', async (t) => {
  const subtitle = "text: that phase with its count of the cell's seeds, median DE step (the seeds' range), median final rel. L2";
  const svg = await renderSvg({ title: { text: 'T', subtitle }, data: { name: 'd' }, mark: 'point', encoding: { x: { field: 'x', type: 'quantitative' } }, width: 50, height: 50 }, { d: [{ x: 1 }] }, { font: 'DejaVu Sans', title: { anchor: 'start', subtitleFontSize: 11 } });
  const width = Number(/<svg[^>]*\swidth="([\d.]+)"/.exec(svg)![1]);
  const text = textWidth({ fontSize: 11 }, subtitle);
  t.true(width >= text && width < text + 60, `svg ${width} px, subtitle ${text.toFixed(0)} px (Vega's estimate: ${Math.floor(0.8 * subtitle.length * 11)})`);
});
