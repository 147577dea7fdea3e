/**
 * Trial names for people: a trial's grid values as short text (`lr=1e-3 batch=full rba seed=0`),
 * shown beside its id in log lines, in `phasemap status` and in the progress line. Only the grid
 * axes that vary across the sweep's trials are named; numbers are written short.
 */
import type { Logger } from './progress.js';

/** A trial's grid values by dotted path, as sweep.json and orchestrator/spec.ts hold them. */
export type GridValues = Record<string, unknown>;

/**
 * A number written short: integers as they are (below 10⁶), 0.1 ≤ |x| < 1000 with 3 significant
 * digits (`0.25`, `3.14`), anything else in exponent form with 3 significant digits (`1e-3`,
 * `1.5e-4`, `2.5e6`).
 */
export function shortNumber(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (Number.isInteger(x) && a < 1e6) return String(x);
  if (a >= 0.1 && a < 1000) return String(Number(x.toPrecision(3)));
  return Number(x.toPrecision(3)).toExponential().replace('e+', 'e');
}

/** Shorter names of some grid keys (the last segment of the dotted path is the default name). */
const KEY_NAMES: Record<string, string> = { batch_size: 'batch' };

/** A value as label text: numbers short, objects with a `name` by it, others compact. */
function valueText(v: unknown): string {
  if (typeof v === 'number') return shortNumber(v);
  if (typeof v === 'string') return v;
  if (v === null || v === undefined || typeof v !== 'object') return String(v);
  if (Array.isArray(v)) return `[${v.map(valueText).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.entries(o).map(([k, x]) => `${k}=${valueText(x)}`).join(',')}}`;
}

/** A grid axis that varies: its dotted key, its name in labels, and how one of its values is written. */
export interface GridAxis {
  key: string;
  name: string;
  text: (v: unknown) => string;
}

/**
 * The axes of a sweep's grid that vary across `trials` (more than one distinct value), in the order
 * the keys first appear. An axis of objects with a `name` (strategy, problem) is written by the name
 * alone, plus `(k=v,…)` for the fields that tell apart values of the same name; other axes as
 * `name=value`, where the name is the key's last segment (`batch_size` → `batch`; the whole path where
 * two axes would share a name).
 */
export function gridAxes(trials: Iterable<{ grid_values?: GridValues | null }>): GridAxis[] {
  const values = new Map<string, Map<string, unknown>>();
  let n = 0;
  for (const t of trials) {
    n++;
    for (const [k, v] of Object.entries(t.grid_values ?? {})) {
      let m = values.get(k);
      if (!m) values.set(k, (m = new Map()));
      m.set(JSON.stringify(v), v);
    }
  }
  // A key some trials lack (the grid changed between runs) varies too.
  const varying = [...values].filter(([k, m]) => m.size > 1 || presentIn(trials, k) < n);
  const last = (k: string) => {
    const s = k.slice(k.lastIndexOf('.') + 1);
    return KEY_NAMES[s] ?? s;
  };
  const names = varying.map(([k]) => last(k));
  return varying.map(([key, m], i) => {
    const name = names.filter((x) => x === names[i]).length > 1 ? key : names[i]!;
    const objs = [...m.values()].filter((v): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v));
    const named = objs.length === m.size && objs.every((o) => typeof o.name === 'string');
    if (!named) return { key, name, text: (v: unknown) => `${name}=${valueText(v)}` };
    // Per name, the fields whose values differ among the axis's values of that name.
    const differing = new Map<string, string[]>();
    for (const nm of new Set(objs.map((o) => o.name as string))) {
      const same = objs.filter((o) => o.name === nm);
      const fields = [...new Set(same.flatMap((o) => Object.keys(o)))].filter((f) => f !== 'name' && new Set(same.map((o) => JSON.stringify(o[f]))).size > 1);
      differing.set(nm, fields);
    }
    return {
      key,
      name,
      text: (v: unknown) => {
        if (v === null || typeof v !== 'object' || typeof (v as { name?: unknown }).name !== 'string') return `${name}=${valueText(v)}`;
        const o = v as Record<string, unknown>;
        const fields = differing.get(o.name as string) ?? [];
        return fields.length ? `${o.name as string}(${fields.map((f) => `${f}=${valueText(o[f])}`).join(',')})` : (o.name as string);
      },
    };
  });
}

function presentIn(trials: Iterable<{ grid_values?: GridValues | null }>, key: string): number {
  let c = 0;
  for (const t of trials) if (t.grid_values && key in t.grid_values) c++;
  return c;
}

/** One trial's label over `axes` (gridAxes): e.g. `lr=1e-3 batch=full rba seed=0`; '' when no axis varies. */
export function trialLabel(values: GridValues | null | undefined, axes: GridAxis[]): string {
  return axes
    .filter((a) => values && a.key in values)
    .map((a) => a.text(values![a.key]))
    .join(' ');
}

/** The label of every trial of a sweep (sweep.json's or the resolved spec's trials), by trial id. */
export function trialLabels(trials: Array<{ trial_id: string; grid_values?: GridValues | null }>): Map<string, string> {
  const axes = gridAxes(trials);
  return new Map(trials.map((t) => [t.trial_id, trialLabel(t.grid_values, axes)]));
}

/** A trial id shortened for tight lines: `t648c1a…`. */
export const shortId = (id: string): string => `${id.slice(0, 7)}…`;

/** `id` with its label beside it (`t0123… (lr=1e-3 rba seed=0)`), or the id alone when it has none. */
export function namedTrial(id: string, labels: ReadonlyMap<string, string>): string {
  const l = labels.get(id);
  return l ? `${id} (${l})` : id;
}

// A full trial id that is not part of a path or a key (`trial_id=t…`, `…/t…`), optionally followed by `#attempt`.
const ID_IN_TEXT = /(?<![\w=/.])(t[0-9a-f]{16})(#\d+)?(?!\w)/g;

/** `text` with the label of every trial id in it (that has one) put beside the id: `t0123…#2 (lr=1e-3 rba)`. */
export function labelIds(text: string, labels: ReadonlyMap<string, string>): string {
  if (!labels.size) return text;
  return text.replace(ID_IN_TEXT, (all: string, id: string, attempt: string | undefined, at: number) => {
    const l = labels.get(id);
    // Named already (a line built with namedTrial): left as it is.
    if (!l || text.startsWith(` (${l})`, at + all.length)) return all;
    return `${id}${attempt ?? ''} (${l})`;
  });
}

/**
 * A logger that writes every trial id in a message with its label beside it (labelIds). `labels` is
 * read at each line, so trials added to it later are named too (a worker learns them from the trial
 * messages it pulls).
 */
export function withTrialLabels(log: Logger, labels: ReadonlyMap<string, string>): Logger {
  return {
    info: (m) => log.info(labelIds(m, labels)),
    warn: (m) => log.warn(labelIds(m, labels)),
    error: (m) => log.error(labelIds(m, labels)),
  };
}
