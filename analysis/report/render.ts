/**
 * Figures to files: a Vega-Lite spec is compiled by `vega-lite`, run headless by `vega`
 * (`View.toSVG()`, no DOM, no canvas) and rasterised to PNG by `@resvg/resvg-js` with the DejaVu Sans
 * font shipped by the `dejavu-fonts-ttf` package, so a PNG looks the same on every machine (no system
 * font is read).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { renderAsync } from '@resvg/resvg-js';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

const require = createRequire(import.meta.url);
const FONT_DIR = join(dirname(require.resolve('dejavu-fonts-ttf/package.json')), 'ttf');
const FONTS = ['DejaVuSans.ttf', 'DejaVuSans-Bold.ttf'].map((f) => join(FONT_DIR, f));

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
