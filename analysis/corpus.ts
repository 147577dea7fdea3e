/**
 * The labelled corpus of the phase detector (docs/phases.md): recorded trials' series, the phase
 * record a person read off their plotted curves, and the detector's agreement with it.
 *
 * Files (test/fixtures/phases/):
 * - `corpus.json.gz`: `{ trials: CorpusTrial[] }`, the series of each trial at its diagnostics steps
 *   (plus every eval step and any row whose loss is not finite), values to 4 significant digits.
 * - `labels.yaml`: one entry per trial id, `{phase, t_diffusion, t_equilibrium, note}` (LabelRecord).
 */
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { parse as parseYaml } from 'yaml';
import { detectPhases, type PhaseParams, type PhaseSeries } from './phases.js';
import { openResults } from './query.js';
import type { PhaseRecord } from '../schemas/trial.js';

/** One recorded trial: what it was, and its series. */
export interface CorpusTrial {
  /** trial_id in its results DIR. */
  id: string;
  sweep: string;
  problem: string;
  strategy: string;
  /** Initial learning rate. */
  lr: number;
  /** Effective batch size (N for full batch). */
  batch_size: number;
  batch_full: boolean;
  seed: number;
  steps: number;
  /** The worker stopped the trial on a NaN/Inf loss. */
  diverged: boolean;
  series: CorpusSeries;
}

/** Columns, one entry per kept row; null where the row has no value. */
export interface CorpusSeries extends PhaseSeries {
  snr_adam: (number | null)[];
  rel_l2: (number | null)[];
  /** Learning rate in force at the row's step. */
  lr: number[];
}

/** A person's reading of one trial's curves (the labelling guide: docs/phases.md). */
export interface LabelRecord {
  phase: PhaseRecord['final_phase'];
  t_diffusion: number | null;
  t_equilibrium: number | null;
  note?: string;
}

const sig = (v: number | null): number | null => (v === null || !Number.isFinite(v) ? v : Number(v.toPrecision(4)));

/**
 * Reads every completed trial of a results DIR as corpus trials (rows at diagnostics steps, eval
 * steps, the last step, and any row with a non-finite loss).
 * @throws Error when DIR is not a results DIR.
 */
export async function corpusFromDir(dir: string): Promise<CorpusTrial[]> {
  const { conn, close } = await openResults(dir);
  try {
    const trials = (
      await conn.runAndReadAll(
        `SELECT trial_id, sweep, problem, strategy, lr, batch_size, batch_full, seed, steps, coalesce(diverged, false) AS diverged
         FROM trials WHERE status = 'done' ORDER BY problem, strategy, batch_full DESC, batch_size DESC, lr, seed, trial_id`,
      )
    ).getRowObjectsJson() as Array<Record<string, unknown>>;
    const rows = (
      await conn.runAndReadAll(
        `SELECT m.trial_id, m.step, m.loss, m.snr, m.snr_adam, m.rel_l2, m.lr FROM metrics m
         WHERE m.snr IS NOT NULL OR m.rel_l2 IS NOT NULL OR NOT isfinite(m.loss)
            OR m.step = (SELECT max(step) FROM metrics x WHERE x.trial_id = m.trial_id)
         ORDER BY m.trial_id, m.step`,
      )
    ).getRowObjects() as Array<Record<string, unknown>>;
    const byTrial = new Map<string, CorpusSeries>();
    for (const r of rows) {
      const id = String(r.trial_id);
      let s = byTrial.get(id);
      if (!s) byTrial.set(id, (s = { step: [], loss: [], snr: [], snr_adam: [], rel_l2: [], lr: [] }));
      s.step.push(Number(r.step));
      s.loss.push(Number(r.loss));
      s.snr.push(sig(r.snr === null ? null : Number(r.snr)));
      s.snr_adam.push(sig(r.snr_adam === null ? null : Number(r.snr_adam)));
      s.rel_l2.push(sig(r.rel_l2 === null ? null : Number(r.rel_l2)));
      s.lr.push(Number(r.lr));
    }
    return trials.map((t) => ({
      id: String(t.trial_id),
      sweep: String(t.sweep),
      problem: String(t.problem),
      strategy: String(t.strategy),
      lr: Number(t.lr),
      batch_size: Number(t.batch_size),
      batch_full: Boolean(t.batch_full),
      seed: Number(t.seed),
      steps: Number(t.steps),
      diverged: Boolean(t.diverged),
      series: byTrial.get(String(t.trial_id)) ?? { step: [], loss: [], snr: [], snr_adam: [], rel_l2: [], lr: [] },
    }));
  } finally {
    close();
  }
}

/** JSON has no NaN or Infinity: a non-finite loss travels as its name. */
export function encodeCorpus(trials: CorpusTrial[]): string {
  const enc = trials.map((t) => ({ ...t, series: { ...t.series, loss: t.series.loss.map((v) => (Number.isFinite(v) ? sig(v) : String(v))) } }));
  return JSON.stringify({ trials: enc });
}

/** Reads a corpus file (gzip or plain JSON) written by `encodeCorpus`. */
export function readCorpus(path: string): CorpusTrial[] {
  let bytes = readFileSync(path);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) bytes = gunzipSync(bytes);
  const raw = JSON.parse(bytes.toString('utf8')) as { trials: Array<CorpusTrial & { series: { loss: Array<number | string> } }> };
  return raw.trials.map((t) => ({ ...t, series: { ...t.series, loss: t.series.loss.map(Number) } }));
}

/** Reads labels.yaml: trial id → LabelRecord. @throws Error naming the entry and field that is malformed. */
export function readLabels(path: string): Map<string, LabelRecord> {
  const doc = parseYaml(readFileSync(path, 'utf8')) as Record<string, LabelRecord>;
  const out = new Map<string, LabelRecord>();
  const phases = ['diverged', 'fitting', 'diffusion', 'equilibrium', 'steady'];
  for (const [id, l] of Object.entries(doc ?? {})) {
    if (!l || !phases.includes(l.phase)) throw new Error(`${path}: ${id}.phase is ${JSON.stringify(l?.phase)}; expected one of ${phases.join(', ')}`);
    for (const k of ['t_diffusion', 't_equilibrium'] as const)
      if (l[k] !== null && !(typeof l[k] === 'number' && l[k]! >= 0)) throw new Error(`${path}: ${id}.${k} is ${JSON.stringify(l[k])}; expected a step ≥ 0 or null`);
    out.set(id, l);
  }
  return out;
}

/**
 * Whether a detected transition step agrees with a labelled one: both null, or both set and within
 * a factor `factor` of each other, or within `slack` steps (the labels cannot be finer than the
 * logging: two diagnostics intervals).
 */
export function stepAgrees(detected: number | null, labelled: number | null, factor: number, slack: number): boolean {
  if (detected === null || labelled === null) return detected === labelled;
  if (Math.abs(detected - labelled) <= slack) return true;
  const lo = Math.min(detected, labelled);
  return lo > 0 && Math.max(detected, labelled) / lo <= factor;
}

/** One trial's comparison. */
export interface Agreement {
  trial: CorpusTrial;
  label: LabelRecord;
  detected: PhaseRecord;
  phase: boolean;
  t_diffusion: boolean;
  t_equilibrium: boolean;
  /** Same final phase and both transition steps agree. */
  ok: boolean;
}

/**
 * The diagnostics interval of a trial: the most common gap between two steps with an SNR (the
 * smallest on a tie). Not the smallest gap: the last step is logged too, a few steps after the
 * last regular diagnostics step.
 */
export function diagEvery(t: CorpusTrial): number {
  const s = t.series.step.filter((_, i) => t.series.snr[i] !== null);
  const count = new Map<number, number>();
  for (let i = 1; i < s.length; i++) count.set(s[i]! - s[i - 1]!, (count.get(s[i]! - s[i - 1]!) ?? 0) + 1);
  let best = 0;
  let n = 0;
  for (const [g, c] of count) if (c > n || (c === n && g < best)) [best, n] = [g, c];
  return best;
}

/**
 * The detector against the labels on every labelled trial (docs/phases.md: same final phase, and
 * each transition step within a factor 1.5 of the label or two diagnostics intervals of it; a
 * transition the label has and the detector lacks, or the reverse, disagrees).
 */
export function agreement(trials: CorpusTrial[], labels: Map<string, LabelRecord>, params: Partial<PhaseParams> = {}, factor = 1.5): Agreement[] {
  const out: Agreement[] = [];
  for (const trial of trials) {
    const label = labels.get(trial.id);
    if (!label) continue;
    const rec = detectPhases(trial.series, params);
    const detected: PhaseRecord = trial.diverged ? { ...rec, final_phase: 'diverged' } : rec;
    const slack = 2 * diagEvery(trial);
    const phase = detected.final_phase === label.phase;
    const td = stepAgrees(detected.t_diffusion, label.t_diffusion, factor, slack);
    const te = stepAgrees(detected.t_equilibrium, label.t_equilibrium, factor, slack);
    out.push({ trial, label, detected, phase, t_diffusion: td, t_equilibrium: te, ok: phase && td && te });
  }
  return out;
}

/** Agreement per (problem, strategy), and in all: rows of the docs/phases.md table. */
export function agreementTable(rows: Agreement[]): Array<{ problem: string; strategy: string; trials: number; agree: number; percent: number }> {
  const groups = new Map<string, Agreement[]>();
  for (const r of rows) {
    const k = `${r.trial.problem}\t${r.trial.strategy}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const table = [...groups.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, rs]) => {
      const [problem, strategy] = k.split('\t') as [string, string];
      const agree = rs.filter((r) => r.ok).length;
      return { problem, strategy, trials: rs.length, agree, percent: (100 * agree) / rs.length };
    });
  const agree = rows.filter((r) => r.ok).length;
  table.push({ problem: 'all', strategy: 'all', trials: rows.length, agree, percent: rows.length ? (100 * agree) / rows.length : 0 });
  return table;
}
