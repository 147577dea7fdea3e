/** Shared by the tests that check sweep specs (not a test file itself). */
import { parseSpecText, resolveSweep, SpecErrors } from '../orchestrator/spec.js';

/** A small valid helmholtz2d spec body that tests extend or edit. */
export const TINY_SPEC = `
name: t
problem: {name: helmholtz2d, a1: 1, a2: 4, n_collocation: 64}
model: {width: 8, depth: 2}
train: {steps: 10, log_every: 5, eval_every: 5}
diagnostics: {every: 5, snr_batches: 4}
`;

/** The messages of the spec errors `yaml` raises (source named `spec.yaml`), [] when it is valid. */
export function specErrors(yaml: string): string[] {
  try {
    resolveSweep(parseSpecText(yaml, 'spec.yaml'), 'spec.yaml');
  } catch (e) {
    if (e instanceof SpecErrors) return e.errors.map((x) => x.message);
    throw e;
  }
  return [];
}
