/** Writes schemas/sweep.schema.json (for editors: `$schema: ./schemas/sweep.schema.json` or yaml-language-server). Run by `npm run build`. */
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { editorSchema } from './sweep.js';

const out = fileURLToPath(new URL('../../schemas/sweep.schema.json', import.meta.url));
writeFileSync(out, `${JSON.stringify(editorSchema(), null, 2)}\n`);
