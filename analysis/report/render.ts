/**
 * Figures to files: a Vega-Lite spec is compiled by `vega-lite`, run headless by `vega`
 * (`View.toSVG()`, no DOM, no canvas) and rasterised to PNG by `@resvg/resvg-js` with the DejaVu Sans
 * font shipped by the `dejavu-fonts-ttf` package, so a PNG looks the same on every machine (no system
 * font is read).
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { renderAsync } from '@resvg/resvg-js';
import opentype, { type Font, type Glyph } from 'opentype.js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

const require = createRequire(import.meta.url);
const FONT_DIR = join(dirname(require.resolve('dejavu-fonts-ttf/package.json')), 'ttf');
const FONTS = ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf'].map((f) => join(FONT_DIR, f));

/** A face PNGs are drawn with, its pair kerning in font units (GPOS for Latin script, as resvg shapes it) and the widths measured so far. */
interface Face {
  font: Font;
  kern: (left: Glyph, right: Glyph) => number;
  /** Width in ems by text. */
  ems: Map<string, number>;
}
let faces: { regular: Face; bold: Face } | null = null;
/** The two faces PNGs are drawn with, parsed once (opentype.js). */
function dejaVu(): { regular: Face; bold: Face } {
  if (!faces) {
    const load = (file: string): Face => {
      const b = readFileSync(file);
      const font = opentype.parse(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
      const tables = font.position.getKerningTables('latn');
      return { font, kern: tables ? (l, r) => font.position.getKerningValue(tables, l.index, r.index) : (l, r) => font.getKerningValue(l, r), ems: new Map() };
    };
    faces = { regular: load(FONTS[0]!), bold: load(FONTS[1]!) };
  }
  return faces;
}

/**
 * Width of `text` in ems of `face`: the sum of its glyphs' advances and the kerning of each pair
 * (opentype.js's shaping is not used: it stops at a substitution table of DejaVu's it does not read).
 */
function ems(face: Face, text: string): number {
  let w = face.ems.get(text);
  if (w === undefined) {
    let units = 0;
    let prev: Glyph | null = null;
    for (const ch of text) {
      const g = face.font.charToGlyph(ch);
      if (prev) units += face.kern(prev, g);
      units += g.advanceWidth ?? 0;
      prev = g;
    }
    w = units / face.font.unitsPerEm;
    if (face.ems.size > 20_000) face.ems.clear();
    face.ems.set(text, w);
  }
  return w;
}

/** The part of a Vega text item its width depends on. */
interface TextItem {
  fontSize?: number | string;
  fontWeight?: number | string;
  limit?: number;
  ellipsis?: string;
}

/**
 * Width in px of one line of a Vega text item, as resvg draws it with DejaVu Sans (advance widths and
 * kerning from the font files): without a canvas Vega estimates 0.8 × font size per character, ~1.5×
 * DejaVu's, and lays out headers, legends and the figure's size for text that wide. A line longer
 * than the item's `limit` is measured truncated with its ellipsis, as Vega draws it.
 */
export function textWidth(item: TextItem, line: unknown): number {
  const size = item.fontSize != null ? Number(item.fontSize) || 0 : 11;
  const text = line == null ? '' : String(line).trim();
  if (size <= 0 || !text) return 0;
  const bold = item.fontWeight === 'bold' || Number(item.fontWeight) >= 600;
  const face = bold ? dejaVu().bold : dejaVu().regular;
  const width = (s: string) => size * ems(face, s);
  const full = width(text);
  const limit = Number(item.limit) || 0;
  if (!(limit > 0) || full < limit) return full;
  // Vega's own truncation (vega-scenegraph `truncate`): the longest prefix that fits with the ellipsis.
  const ellipsis = item.ellipsis ?? '\u2026';
  const room = limit - width(ellipsis);
  let lo = 0;
  let hi = text.length;
  while (lo < hi) {
    const mid = 1 + ((lo + hi) >>> 1);
    if (width(text.slice(0, mid)) < room) lo = mid;
    else hi = mid - 1;
  }
  return lo < text.length ? width(text.slice(0, lo)) + width(ellipsis) : full;
}
((vega as unknown as { textMetrics: { width: (item: TextItem, text: unknown) => number } }).textMetrics).width = textWidth;

/**
 * Renders a Vega-Lite spec to an SVG document.
 * @param spec a Vega-Lite spec whose data are named datasets
 * @param datasets rows of each named dataset
 * @throws Error from vega-lite or vega when the spec is invalid.
 */
export async function renderSvg(spec: Record<string, unknown>, datasets: Record<string, unknown[]>, config: Record<string, unknown>): Promise<string> {
  const vl = compile({ ...spec, datasets, config } as unknown as TopLevelSpec).spec;
  const view = new vega.View(vega.parse(vl), { renderer: 'none', logLevel: vega.Error });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Most pixels of a PNG: a figure of many panels is rasterised below 2× so that it stays under this. */
export const PNG_MAX_PIXELS = 8e6;

/** The zoom of a figure's PNG: 2 (for slides and papers), less for a figure whose 2× PNG would pass PNG_MAX_PIXELS. */
export function pngScale(width: number, height: number): number {
  return Math.min(2, Math.sqrt(PNG_MAX_PIXELS / Math.max(1, width * height)));
}

/**
 * Rasterises an SVG document to PNG at `pngScale` × its size, on libuv's thread pool (several
 * figures rasterise in parallel while the next SVG is rendered).
 * @returns the PNG bytes and their size in pixels.
 */
export async function svgToPng(svg: string): Promise<{ png: Buffer; width: number; height: number }> {
  const m = /<svg[^>]*\swidth="([\d.]+)"[^>]*\sheight="([\d.]+)"/.exec(svg.slice(0, 2000));
  const scale = m ? pngScale(Number(m[1]), Number(m[2])) : 2;
  const r = await renderAsync(svg, {
    fitTo: { mode: 'zoom', value: scale },
    background: 'white',
    font: { loadSystemFonts: false, fontFiles: FONTS, defaultFontFamily: 'DejaVu Sans', sansSerifFamily: 'DejaVu Sans' },
  });
  return { png: r.asPng(), width: r.width, height: r.height };
}
