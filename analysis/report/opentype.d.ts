/** The part of opentype.js (which ships no types) that render.ts uses: glyph advances and kerning. */
declare module 'opentype.js' {
  export interface Glyph {
    index: number;
    /** In font units. */
    advanceWidth?: number;
  }
  /** The font's GPOS table, read. */
  export interface Position {
    /** The pair-adjustment lookups of a script ('latn'), or undefined when it has none. */
    getKerningTables(script: string, language?: string): unknown[] | undefined;
    /** The kerning of two glyphs (by index) in font units, from those lookups. */
    getKerningValue(tables: unknown[], left: number, right: number): number;
  }
  export interface Font {
    unitsPerEm: number;
    position: Position;
    charToGlyph(c: string): Glyph;
    /** The kerning of two glyphs from the font's `kern` table, in font units (0 when the pair has none). */
    getKerningValue(left: Glyph, right: Glyph): number;
  }
  function parse(buffer: ArrayBuffer): Font;
  const opentype: { parse: typeof parse };
  export default opentype;
}
