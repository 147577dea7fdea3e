/**
 * The built-in problems, re-expressed on the public problem API, keep their trial ids and their bits:
 * rows and checkpoints of a short real trial of each equal those recorded by the code before the
 * re-expression (test/fixtures/builtin-problems.json, see builtin-problems-record.ts).
 */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { blasStatus } from '../worker/trainer/backend.js';
import { recordBuiltins, type BuiltinRecord } from './builtin-problems-record.js';
import { testBackend } from './trainer-helpers.js';

const FIXTURE = fileURLToPath(new URL('../../test/fixtures/builtin-problems.json', import.meta.url));
/** OpenBLAS's kernel family the record was made with: each family rounds sgemm's sums its own way. */
const RECORD_CORE = 'Haswell';
// OpenBLAS picks its kernels by CPU when it loads (on the first matmul, after this line); the Haswell
// kernels run on any x86-64 CPU with AVX2 and FMA, with the same bits.
const cpuFlags = /^flags\s*:(.*)$/m.exec(cpuinfo())?.[1] ?? '';
if (/\bavx2\b/.test(cpuFlags) && /\bfma\b/.test(cpuFlags)) process.env.OPENBLAS_CORETYPE = RECORD_CORE;

function cpuinfo(): string {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return '';
  }
}

test('built-in problems: trial ids, rows and checkpoint bytes equal the record made before the problem API', async (t) => {
  const backend = await testBackend();
  const now = await recordBuiltins();
  if (process.env.PHASEMAP_RECORD_FIXTURE === '1') {
    await writeFile(FIXTURE, JSON.stringify({ backend, records: now }, null, 1) + '\n');
    t.pass('recorded');
    return;
  }
  const fixture = JSON.parse(await readFile(FIXTURE, 'utf8')) as { backend: string; records: BuiltinRecord[] };
  t.is(backend as string, fixture.backend, 'the record was made on this backend');
  const core = blasStatus().core;
  if (blasStatus().available) t.is(core, RECORD_CORE, `the record was made with OpenBLAS's ${RECORD_CORE} kernels (this CPU needs AVX2 and FMA for them); OpenBLAS runs ${core} here`);
  t.is(now.length, fixture.records.length);
  for (const [i, rec] of fixture.records.entries()) {
    const got = now[i]!;
    t.is(got.problem, rec.problem);
    t.is(got.trial_id, rec.trial_id, `${rec.problem}: trial id`);
    t.true(rec.rows.length >= 7, `${rec.problem}: ${rec.rows.length} rows`);
    t.deepEqual(got.rows, rec.rows, `${rec.problem}: rows`);
    t.deepEqual(got.checkpoints, rec.checkpoints, `${rec.problem}: checkpoint bytes`);
  }
});
