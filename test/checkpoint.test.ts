/**
 * Checkpoints (science.md §7): the safetensors writer, the chunk reassembly of the collector, the spec
 * key train.checkpoint_every, and the promise end to end — tiny sweeps through the CLI (helmholtz2d,
 * burgers1d, allen_cahn1d), then independent Python/NumPy code (test/recompute_checkpoint.py) recomputes
 * each checkpointed step's loss, snr, grad_order and res_homogeneity and must match the logged row to
 * 1e-4 relative.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect } from '@nats-io/transport-node';
import test, { type ExecutionContext } from 'ava';
import { CheckpointAssembler, parseChunkHeaders, type ChunkInfo } from '../orchestrator/checkpoints.js';
import { parseSpecText, resolveSweep, SpecErrors, trialId } from '../orchestrator/spec.js';
import { checkpointPath } from '../schemas/parquet.js';
import { decodeSafetensors, encodeSafetensors } from '../schemas/safetensors.js';
import { chunkBytes, CKPT_HEADERS } from '../schemas/transport.js';
import { duck, repoRoot, runCli, startNats, tempDir } from './helpers.js';
import { TINY_SPEC } from './spec-helpers.js';

const run = promisify(execFile);
const script = join(repoRoot, 'test/recompute_checkpoint.py');

async function numpyAvailable(): Promise<boolean> {
  try {
    await run('python3', ['-c', 'import numpy']);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// safetensors

test('safetensors: header length, 8-byte alignment with spaces, offsets, metadata; read back by TS and by the Python parser', async (t) => {
  const w = new Float32Array([1.5, -2, 3.25, 4, 5, 6]);
  const bytes = encodeSafetensors(
    [
      { name: 'w', dtype: 'F32', shape: [2, 3], data: w },
      { name: 'step', dtype: 'I32', shape: [1], data: new Int32Array([7]) },
      { name: 'empty', dtype: 'F32', shape: [0, 2], data: new Float32Array(0) },
    ],
    { trial_id: 't0123456789abcdef', note: 'é' },
  );
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(0, true));
  t.is((8 + n) % 8, 0);
  t.is(bytes.length, 8 + n + 6 * 4 + 4);
  const headerText = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  t.regex(headerText, /^\{.*\} *$/);
  const header = JSON.parse(headerText) as Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>;
  t.deepEqual(header.w, { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] });
  t.deepEqual(header.step, { dtype: 'I32', shape: [1], data_offsets: [24, 28] });
  t.deepEqual(header.empty!.data_offsets, [28, 28]);
  const back = decodeSafetensors(bytes);
  t.deepEqual([...back.tensors.get('w')!.data], [...w]);
  t.is(back.tensors.get('step')!.data[0], 7);
  t.deepEqual(back.metadata, { trial_id: 't0123456789abcdef', note: 'é' });
  t.throws(() => encodeSafetensors([{ name: 'x', dtype: 'F32', shape: [4], data: new Float32Array(3) }]), { message: /shape/ });
  t.throws(() => encodeSafetensors([{ name: 'x', dtype: 'I32', shape: [1], data: new Float32Array(1) }]), { message: /not I32/ });

  if (!(await numpyAvailable())) return t.fail('python3 with numpy is needed (scripts/setup.sh installs it)');
  const dir = await tempDir('st');
  await writeFile(join(dir, 'a.safetensors'), bytes);
  const py = `
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location('rc', ${JSON.stringify(script)})
rc = importlib.util.module_from_spec(spec); spec.loader.exec_module(rc)
T, meta = rc.load_safetensors(sys.argv[1])
print(json.dumps({'w': T['w'].tolist(), 'step': T['step'].tolist(), 'empty': list(T['empty'].shape), 'meta': meta}))`;
  const { stdout } = await run('python3', ['-c', py, join(dir, 'a.safetensors')]);
  t.deepEqual(JSON.parse(stdout), { w: [[1.5, -2, 3.25], [4, 5, 6]], step: [7], empty: [0, 2], meta: { trial_id: 't0123456789abcdef', note: 'é' } });
});

// ---------------------------------------------------------------------------------------------
// chunk reassembly

const TID = 't00000000000000aa';

function chunksOf(bytes: Uint8Array, max: number, over: Partial<ChunkInfo> = {}): Array<[ChunkInfo, Uint8Array]> {
  const parts = chunkBytes(bytes, max);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  return parts.map((p, i) => [{ trialId: TID, attempt: 1, step: 10, chunk: i, chunks: parts.length, totalBytes: bytes.length, sha256, ...over }, p]);
}

test('chunk headers are validated: a trial id that is not a trial id never becomes a path', (t) => {
  const h: Record<string, string> = {
    [CKPT_HEADERS.trialId]: TID, [CKPT_HEADERS.attempt]: '1', [CKPT_HEADERS.step]: '10', [CKPT_HEADERS.chunk]: '2',
    [CKPT_HEADERS.chunks]: '3', [CKPT_HEADERS.totalBytes]: '100', [CKPT_HEADERS.sha256]: 'a'.repeat(64),
  };
  t.deepEqual(parseChunkHeaders((k) => h[k]), { trialId: TID, attempt: 1, step: 10, chunk: 2, chunks: 3, totalBytes: 100, sha256: 'a'.repeat(64) });
  t.throws(() => parseChunkHeaders((k) => ({ ...h, [CKPT_HEADERS.trialId]: '../../etc' })[k]), { message: /bad trial id/ });
  t.throws(() => parseChunkHeaders((k) => ({ ...h, [CKPT_HEADERS.chunk]: '3' })[k]), { message: /Phasemap-Chunk/ });
  t.throws(() => parseChunkHeaders((k) => ({ ...h, [CKPT_HEADERS.step]: '-1' })[k]), { message: /Phasemap-Step/ });
  t.throws(() => parseChunkHeaders((k) => ({ ...h, [CKPT_HEADERS.sha256]: undefined })[k] as string | undefined), { message: /missing/ });
  t.throws(() => checkpointPath('t0/../x', 1));
});

test('reassembly: out of order, duplicated and redelivered chunks give the exact file; acks only once it is on disk', async (t) => {
  const dir = await tempDir('ckpt-asm');
  const bytes = new Uint8Array(1000).map((_, i) => (i * 7) % 251);
  const chunks = chunksOf(bytes, 300); // 4 chunks
  t.is(chunks.length, 4);
  const asm = new CheckpointAssembler<string>(dir);
  const order = [2, 0, 2, 3, 0]; // with duplicates
  for (const i of order) {
    const r = await asm.add(chunks[i]![0], chunks[i]![1], `m${i}`);
    t.deepEqual(r, { ack: [], term: [], nak: [] });
  }
  t.false(existsSync(join(dir, checkpointPath(TID, 10))));
  const done = await asm.add(chunks[1]![0], chunks[1]![1], 'm1');
  t.deepEqual(done.ack.sort(), ['m0', 'm0', 'm1', 'm2', 'm2', 'm3']);
  t.deepEqual([...(await readFile(join(dir, checkpointPath(TID, 10))))], [...bytes]);
  t.deepEqual(await readdir(join(dir, 'checkpoints', TID)), ['step-10.safetensors']);
  // A late redelivery of a chunk of a written file is acked at once, also by a new assembler (after a restart).
  t.deepEqual((await asm.add(chunks[3]![0], chunks[3]![1], 'late')).ack, ['late']);
  t.deepEqual((await new CheckpointAssembler<string>(dir).add(chunks[0]![0], chunks[0]![1], 'late2')).ack, ['late2']);
  t.is(asm.filesWritten, 1);
});

test('reassembly: bytes that do not hash to the header are never written; superseded partial files are released', async (t) => {
  const dir = await tempDir('ckpt-bad');
  const warnings: string[] = [];
  const asm = new CheckpointAssembler<string>(dir, (w) => warnings.push(w));
  const bytes = new Uint8Array(100).fill(3);
  const chunks = chunksOf(bytes, 60);
  await asm.add(chunks[0]![0], chunks[0]![1], 'a');
  const corrupt = Uint8Array.from(chunks[1]![1]);
  corrupt[0] = 99;
  const r = await asm.add(chunks[1]![0], corrupt, 'b');
  t.deepEqual(r.term.sort(), ['a', 'b']);
  t.false(existsSync(join(dir, checkpointPath(TID, 10))));
  t.regex(warnings.join('\n'), /do not match the header/);
  // An incomplete file of attempt 1 is dropped when attempt 2's result arrives.
  const c2 = chunksOf(bytes, 60, { step: 20 });
  await asm.add(c2[0]![0], c2[0]![1], 'p');
  t.deepEqual(asm.supersede(TID, 1), []);
  t.deepEqual(asm.supersede(TID, 2), ['p']);
  t.is(asm.pendingChunks, 0);
});

// ---------------------------------------------------------------------------------------------
// spec

const specBase = TINY_SPEC;

test('train.checkpoint_every: default 0 (no trial id changes), a multiple of log_every', (t) => {
  const plain = resolveSweep(parseSpecText(specBase, 's.yaml'), 's.yaml').trials[0]!;
  t.is(plain.config.train.checkpoint_every, 0);
  const { checkpoint_every: _c, ...train } = plain.config.train;
  t.is(plain.trial_id, trialId({ ...plain.config, train: train as typeof plain.config.train }));
  const zero = resolveSweep(parseSpecText(specBase.replace('eval_every: 5}', 'eval_every: 5, checkpoint_every: 0}'), 's.yaml'), 's.yaml').trials[0]!;
  t.is(zero.trial_id, plain.trial_id);
  const ten = resolveSweep(parseSpecText(specBase.replace('eval_every: 5}', 'eval_every: 5, checkpoint_every: 10}'), 's.yaml'), 's.yaml').trials[0]!;
  t.not(ten.trial_id, plain.trial_id);
  const err = t.throws(() => resolveSweep(parseSpecText(specBase.replace('eval_every: 5}', 'eval_every: 5, checkpoint_every: 7}'), 's.yaml'), 's.yaml'), { instanceOf: SpecErrors });
  t.regex(err!.message, /train\.checkpoint_every: got 7, expected 0 or a multiple of train\.log_every \(5\)/);
});

// ---------------------------------------------------------------------------------------------
// end to end

const sweep = `
name: ckpt
problem: {name: helmholtz2d, a1: 1, a2: 2, n_collocation: 64, n_boundary: 8, eval_grid: 11}
model: {width: 8, depth: 2}
train: {steps: 40, lr: 0.01, log_every: 5, eval_every: 10, checkpoint_every: 10}
diagnostics: {every: 10, snr_batches: 4}
grid:
  strategy: [{name: vanilla}, {name: rba, eta: 0.01, gamma: 0.99}]
  train.batch_size: [full, 32]
`;

interface Recomputed {
  step: number;
  loss: number;
  snr: number;
  grad_order: number;
  res_homogeneity: number;
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-30);

/** Runs `spec` through `phasemap run` (2 wasm slots) into a temp DIR; returns DIR and its trials. */
async function runSpec(t: ExecutionContext, label: string, text: string): Promise<{ out: string; trials: Record<string, unknown>[] }> {
  const work = await tempDir(label);
  const spec = join(work, 'ckpt.yaml');
  const out = join(work, 'out');
  await writeFile(spec, text);
  const r = await runCli(['run', spec, '--out', out, '--slots', '2', '--backend', 'wasm']);
  t.is(r.code, 0, r.stderr);
  const trials = await duck(`SELECT trial_id, strategy, batch_size FROM '${out}/trials.parquet' ORDER BY trial_id`);
  t.is(trials.length, 4);
  return { out, trials };
}

test.serial('phasemap run with checkpoint_every: layout of science.md §7, and NumPy recomputes every checkpointed row to 1e-4', async (t) => {
  if (!(await numpyAvailable())) return t.fail('python3 with numpy is needed (scripts/setup.sh installs it)');
  const { out, trials } = await runSpec(t, 'ckpt-e2e', sweep);
  let compared = 0;
  for (const tr of trials) {
    const id = tr.trial_id as string;
    const files = (await readdir(join(out, 'checkpoints', id))).sort();
    t.deepEqual(files, ['step-0.safetensors', 'step-10.safetensors', 'step-20.safetensors', 'step-30.safetensors', 'step-40.safetensors'], id);
    const rows = await duck(`
      SELECT step, loss, snr, grad_order, res_homogeneity FROM read_parquet('${out}/metrics/trial_id=${id}/**/*.parquet') ORDER BY step`);
    const byStep = new Map(rows.map((x) => [Number(x.step), x]));
    t.false(byStep.has(40), 'the final checkpoint has no logged row');

    // The layout, read with phasemap's own decoder (the Python parser reads it below).
    const final = decodeSafetensors(await readFile(join(out, 'checkpoints', id, 'step-40.safetensors')));
    t.is(final.metadata.final, 'true');
    t.is(final.metadata.step, '40');
    t.is(final.tensors.get('adam.step')!.data[0], 40);
    const ck = decodeSafetensors(await readFile(join(out, 'checkpoints', id, 'step-20.safetensors')));
    const shapes = Object.fromEntries([...ck.tensors.values()].map((x) => [x.name, `${x.dtype}[${x.shape.join(',')}]`]));
    const full = tr.batch_size === 64;
    t.deepEqual(shapes, {
      'net.0.weight': 'F32[2,8]', 'net.1.weight': 'F32[8,8]', 'net.2.weight': 'F32[8,1]',
      'net.0.bias': 'F32[8]', 'net.1.bias': 'F32[8]', 'net.2.bias': 'F32[1]',
      'adam.m.net.0.weight': 'F32[2,8]', 'adam.m.net.1.weight': 'F32[8,8]', 'adam.m.net.2.weight': 'F32[8,1]',
      'adam.m.net.0.bias': 'F32[8]', 'adam.m.net.1.bias': 'F32[8]', 'adam.m.net.2.bias': 'F32[1]',
      'adam.v.net.0.weight': 'F32[2,8]', 'adam.v.net.1.weight': 'F32[8,8]', 'adam.v.net.2.weight': 'F32[8,1]',
      'adam.v.net.0.bias': 'F32[8]', 'adam.v.net.1.bias': 'F32[8]', 'adam.v.net.2.bias': 'F32[1]',
      'adam.step': 'I32[1]', collocation: 'F32[64,2]', lambda: 'F32[64]', snr_batch: 'I32[64]',
      'boundary.points': 'F32[32,2]', 'boundary.values': 'F32[32]',
      ...(full ? {} : { batch: 'I32[32]' }),
    });
    t.is(ck.tensors.get('adam.step')!.data[0], 20);
    t.like(ck.metadata, {
      trial_id: id, step: '20', problem: 'helmholtz2d', problem_params: '{"a1":1,"a2":2,"k":1}', loss_weights: '{"bc":1}',
      input_order: '["x","y"]', final: 'false', attempt: '1',
    });
    t.is(JSON.parse(ck.metadata.strategy!).name, tr.strategy);

    for (const step of [0, 10, 20, 30]) {
      const file = join(out, 'checkpoints', id, `step-${step}.safetensors`);
      const { stdout } = await run('python3', [script, file]);
      const got = JSON.parse(stdout) as Recomputed;
      const row = byStep.get(step)!;
      t.truthy(row, `row of step ${step}`);
      t.is(got.step, step);
      for (const k of ['loss', 'snr', 'grad_order', 'res_homogeneity'] as const) {
        const want = row[k] as number;
        t.true(Number.isFinite(want), `${id} step ${step} ${k} logged`);
        t.true(rel(got[k], want) <= 1e-4, `${id} (${tr.strategy}, batch ${tr.batch_size}) step ${step} ${k}: recomputed ${got[k]}, logged ${want}`);
        compared++;
      }
    }
  }
  t.is(compared, 4 * 4 * 4);
  // Nothing but the checkpoints landed under checkpoints/ (no temp files left).
  for (const tr of trials) t.false((await readdir(join(out, 'checkpoints', tr.trial_id as string))).some((f) => f.includes('.tmp')));
});

// The time-dependent problems (inputs x, t): burgers1d (Dirichlet boundary + initial condition, both
// `value` terms) and allen_cahn1d (periodic boundary pairs matching u and u_x, + initial condition).
// Burgers' RBA uses η* = 0.01 with λ⁰ = 0: at step 0 the batch gradients differ by ~1e-5 of their
// mean (SNR ~ 1e5), which a float32 spread over g_res + g_bc could not resolve (3.6e-4 off before the
// diagnostics took σ from the residual gradients alone). Allen–Cahn's RBA uses init: residual.
// w_bc = 10 for Allen–Cahn so that the u_x part of the periodic term moves the loss well above 1e-4.
const sweeps1d = {
  burgers1d: `
name: ckptb
problem: {name: burgers1d, n_collocation: 64, n_boundary: 6, n_initial: 10, w_ic: 2, eval_grid: 9}
model: {width: 8, depth: 2}
train: {steps: 30, lr: 0.01, log_every: 5, eval_every: 10, checkpoint_every: 10}
diagnostics: {every: 10, snr_batches: 4}
grid:
  strategy: [{name: vanilla}, {name: rba, eta: 0.01, gamma: 0.999}]
  train.batch_size: [full, 32]
`,
  allen_cahn1d: `
name: ckpta
problem: {name: allen_cahn1d, n_collocation: 64, n_boundary: 6, n_initial: 10, w_bc: 10, w_ic: 0.5, eval_grid: 9}
model: {width: 8, depth: 2}
train: {steps: 30, lr: 0.01, log_every: 5, eval_every: 10, checkpoint_every: 10}
diagnostics: {every: 10, snr_batches: 4}
grid:
  strategy: [{name: vanilla}, {name: rba, eta: 0.1, gamma: 0.9, init: residual}]
  train.batch_size: [full, 32]
`,
} as const;

for (const [problem, text] of Object.entries(sweeps1d)) {
  test.serial(`${problem}: NumPy recomputes every checkpointed row (x × t inputs, initial set, ${problem === 'allen_cahn1d' ? 'periodic' : 'Dirichlet'} boundary) to 1e-4`, async (t) => {
    if (!(await numpyAvailable())) return t.fail('python3 with numpy is needed (scripts/setup.sh installs it)');
    const { out, trials } = await runSpec(t, `ckpt-${problem}`, text);
    let compared = 0;
    const worst: Record<string, number> = {};
    for (const tr of trials) {
      const id = tr.trial_id as string;
      t.deepEqual((await readdir(join(out, 'checkpoints', id))).sort(), ['step-0.safetensors', 'step-10.safetensors', 'step-20.safetensors', 'step-30.safetensors'], id);
      const ck = decodeSafetensors(await readFile(join(out, 'checkpoints', id, 'step-10.safetensors')));
      t.deepEqual(ck.tensors.get('boundary.points')!.shape, [12, 2]);
      t.deepEqual(ck.tensors.get('initial.points')!.shape, [10, 2]);
      t.is(ck.tensors.has('batch'), tr.batch_size !== 64);
      t.is(ck.metadata.input_order, '["x","t"]');
      t.is(ck.metadata.problem, problem);
      const kinds = (JSON.parse(ck.metadata.conditions!) as Array<{ name: string; kind: string }>).map((c) => `${c.name}:${c.kind}`);
      t.deepEqual(kinds, [problem === 'allen_cahn1d' ? 'bc:periodic' : 'bc:value', 'ic:value']);
      const rows = await duck(`
        SELECT step, loss, snr, grad_order, res_homogeneity FROM read_parquet('${out}/metrics/trial_id=${id}/**/*.parquet') ORDER BY step`);
      const byStep = new Map(rows.map((x) => [Number(x.step), x]));
      for (const step of [0, 10, 20]) {
        const { stdout } = await run('python3', [script, join(out, 'checkpoints', id, `step-${step}.safetensors`)]);
        const got = JSON.parse(stdout) as Recomputed;
        const row = byStep.get(step)!;
        t.truthy(row, `row of step ${step}`);
        t.is(got.step, step);
        for (const k of ['loss', 'snr', 'grad_order', 'res_homogeneity'] as const) {
          const want = row[k] as number;
          t.true(Number.isFinite(want), `${id} step ${step} ${k} logged`);
          const e = rel(got[k], want);
          worst[k] = Math.max(worst[k] ?? 0, e);
          t.true(e <= 1e-4, `${problem} ${id} (${tr.strategy}, batch ${tr.batch_size}) step ${step} ${k}: recomputed ${got[k]}, logged ${want}`);
          compared++;
        }
      }
    }
    t.is(compared, 4 * 3 * 4);
    t.log(`${problem}: max relative difference ${JSON.stringify(worst)}`);
    // The hand-derived backprop through u_t, u_x, u_xx (and the periodic u_x jump) against central differences.
    const some = trials[trials.length - 1]!.trial_id as string;
    const chk = JSON.parse((await run('python3', [script, join(out, 'checkpoints', some, 'step-10.safetensors'), '--check-gradients'])).stdout) as { gradient_check_max_rel_err: number };
    t.true(chk.gradient_check_max_rel_err < 1e-4, `gradient check: ${chk.gradient_check_max_rel_err}`);
  });
}

test.serial('a checkpoint larger than the server max_payload travels in several chunks and is reassembled exactly', async (t) => {
  if (!(await numpyAvailable())) return t.fail('python3 with numpy is needed (scripts/setup.sh installs it)');
  const work = await tempDir('ckpt-big');
  const spec = join(work, 'big.yaml');
  const out = join(work, 'out');
  // A nats-server with max_payload 70,000 bytes (the agent cuts chunks of max_payload − 4 KiB, at least
  // 64 KiB): a ~150 KB checkpoint takes 3 messages.
  const conf = join(work, 'nats.conf');
  await writeFile(conf, 'max_payload: 70000\n');
  const wrapper = join(work, 'nats-server-small');
  await writeFile(wrapper, `#!/bin/sh\nexec ${process.env.PHASEMAP_NATS_SERVER ?? 'nats-server'} -c ${conf} "$@"\n`, { mode: 0o755 });
  const nats = await startNats(join(work, 'nats-store'), wrapper);
  t.teardown(() => nats.stop());
  const nc = await connect({ servers: nats.url });
  t.is(nc.info?.max_payload, 70000);
  await nc.close();
  await writeFile(spec, `
name: ckptbig
problem: {name: poisson2d, n_collocation: 2048, n_boundary: 16, eval_grid: 11}
model: {width: 64, depth: 3}
train: {steps: 10, lr: 0.001, log_every: 5, eval_every: 5, checkpoint_every: 5}
diagnostics: {every: 5, snr_batches: 8}
`);
  const r = await runCli(['run', spec, '--out', out, '--nats', nats.url, '--slots', '1', '--backend', 'wasm']);
  t.is(r.code, 0, r.stderr);
  const [tr] = await duck(`SELECT trial_id FROM '${out}/trials.parquet'`);
  const id = tr!.trial_id as string;
  t.deepEqual((await readdir(join(out, 'checkpoints', id))).sort(), ['step-0.safetensors', 'step-10.safetensors', 'step-5.safetensors']);
  const bytes = await readFile(join(out, 'checkpoints', id, 'step-5.safetensors'));
  t.true(bytes.length > 2 * 64 * 1024, `${bytes.length} bytes`);
  const ck = decodeSafetensors(bytes);
  t.deepEqual(ck.tensors.get('collocation')!.shape, [2048, 2]);
  t.is(ck.metadata.problem_params, '{}');
  const [row] = await duck(`SELECT loss, snr, grad_order, res_homogeneity FROM read_parquet('${out}/metrics/trial_id=${id}/**/*.parquet') WHERE step = 5`);
  const got = JSON.parse((await run('python3', [script, join(out, 'checkpoints', id, 'step-5.safetensors')])).stdout) as Recomputed;
  for (const k of ['loss', 'snr', 'grad_order', 'res_homogeneity'] as const)
    t.true(rel(got[k], row![k] as number) <= 1e-4, `${k}: recomputed ${got[k]}, logged ${row![k]}`);
});
