/**
 * Sweep spec and trial config: the contract between the user, the orchestrator and the worker.
 *
 * The JSON Schema is built with TypeBox so that the TypeScript types and the schema emitted as
 * `schemas/sweep.schema.json` come from one source. Field names follow science.md (§2–§5).
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';

const Int = (opts: { minimum?: number; maximum?: number; default?: number; description?: string }) =>
  Type.Integer(opts);

/** Fields every problem shares (science.md §2–§3). */
const problemCommon = {
  n_collocation: Int({ minimum: 4, maximum: 10_000_000, default: 1000, description: 'N, the number of collocation points (Latin hypercube, seeded).' }),
  n_boundary: Int({ minimum: 1, maximum: 1_000_000, default: 100, description: 'Boundary points per edge of the domain.' }),
  w_bc: Type.Number({ exclusiveMinimum: 0, maximum: 1e6, default: 1, description: 'Weight w_bc of the boundary term in the loss.' }),
  eval_grid: Int({ minimum: 2, maximum: 4096, default: 101, description: 'Points per axis of the evaluation grid for rel_l2.' }),
};

export const Helmholtz2dSchema = Type.Object(
  {
    name: Type.Literal('helmholtz2d'),
    a1: Type.Number({ minimum: -1000, maximum: 1000, default: 1, description: 'u* = sin(a1 π x) sin(a2 π y)' }),
    a2: Type.Number({ minimum: -1000, maximum: 1000, default: 4 }),
    k: Type.Number({ minimum: 0, maximum: 1000, default: 1, description: 'Wave number k in u_xx + u_yy + k² u = q.' }),
    ...problemCommon,
  },
  { additionalProperties: false, description: 'Helmholtz on [-1,1]², u = 0 on the boundary (science.md §3).' },
);

export const Poisson2dSchema = Type.Object(
  { name: Type.Literal('poisson2d'), ...problemCommon },
  { additionalProperties: false, description: 'Poisson on [-1,1]², u* = sin(π x) sin(π y) (science.md §3).' },
);

/**
 * Fields of the time-dependent problems on x ∈ [−1, 1], t ∈ [0, 1] (science.md §2–§3): the common
 * fields with n_boundary read per boundary edge in t, plus the initial-condition set and weight.
 */
const problemTimeCommon = {
  ...problemCommon,
  n_collocation: Int({ minimum: 4, maximum: 10_000_000, default: 1000, description: 'N, the number of collocation points in (x, t) (Latin hypercube, seeded).' }),
  n_boundary: Int({ minimum: 1, maximum: 1_000_000, default: 100, description: 'Boundary points per boundary edge (x = −1 and x = +1), evenly spaced in t ∈ [0, 1].' }),
  n_initial: Int({ minimum: 1, maximum: 1_000_000, default: 100, description: 'Initial-condition points on t = 0, evenly spaced in x ∈ [−1, 1].' }),
  w_ic: Type.Number({ exclusiveMinimum: 0, maximum: 1e6, default: 1, description: 'Weight w_ic of the initial-condition term w_ic · mean_k (u(x_k, 0) − u0(x_k))² in the loss.' }),
  eval_grid: Int({ minimum: 2, maximum: 4096, default: 101, description: 'Points per axis (x and t, both ends included) of the evaluation grid for rel_l2.' }),
};

export const Burgers1dSchema = Type.Object(
  {
    name: Type.Literal('burgers1d'),
    nu: Type.Number({ minimum: 1e-4, maximum: 10, default: 0.01 / Math.PI, description: 'Viscosity ν in u_t + u u_x − ν u_xx = 0 (default 0.01/π).' }),
    ...problemTimeCommon,
  },
  {
    additionalProperties: false,
    description: 'Viscous Burgers on x ∈ [−1,1], t ∈ [0,1], u(x,0) = −sin(πx), u(±1,t) = 0; reference by Cole–Hopf (science.md §3).',
  },
);

export const AllenCahn1dSchema = Type.Object(
  {
    name: Type.Literal('allen_cahn1d'),
    d: Type.Number({ minimum: 0, maximum: 10, default: 1e-4, description: 'Diffusion d in u_t − d u_xx + 5u³ − 5u = 0 (default 1e-4).' }),
    ...problemTimeCommon,
  },
  {
    additionalProperties: false,
    description:
      'Allen–Cahn on x ∈ [−1,1] periodic, t ∈ [0,1], u(x,0) = x² cos(πx); boundary term w_bc · mean_j [(u(−1,t_j) − u(1,t_j))² + (u_x(−1,t_j) − u_x(1,t_j))²]; reference by Fourier pseudo-spectral ETDRK4 (science.md §3).',
  },
);

export const ModelSchema = Type.Object(
  {
    width: Int({ minimum: 1, maximum: 4096, default: 32, description: 'Units per hidden layer.' }),
    depth: Int({ minimum: 1, maximum: 64, default: 4, description: 'Number of hidden tanh layers.' }),
  },
  { additionalProperties: false, default: {} },
);

export const LrDecaySchema = Type.Object(
  {
    rate: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 0.9, description: 'lr_k = lr_0 · rate^floor(k / every)' }),
    every: Int({ minimum: 1, maximum: 1_000_000_000, default: 5000 }),
  },
  { additionalProperties: false, default: {} },
);

export const TrainSchema = Type.Object(
  {
    steps: Int({ minimum: 1, maximum: 100_000_000, default: 1000, description: 'Adam steps.' }),
    lr: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 1e-3, description: 'Initial learning rate lr_0.' }),
    batch_size: Type.Union([Type.Literal('full'), Int({ minimum: 1, maximum: 10_000_000 })], {
      default: 'full',
      description: "'full' = all N collocation points every step; a number n_b < N = mini-batches drawn without replacement within an epoch.",
    }),
    lr_decay: LrDecaySchema,
    log_every: Int({ minimum: 1, maximum: 1_000_000, default: 10, description: 'A metrics row every this many steps.' }),
    eval_every: Int({ minimum: 1, maximum: 1_000_000, default: 100, description: 'rel_l2 every this many steps (a multiple of log_every).' }),
    checkpoint_every: Int({
      minimum: 0,
      maximum: 100_000_000,
      default: 0,
      description:
        'A checkpoint (DIR/checkpoints/<trial_id>/step-<n>.safetensors, science.md §7) every this many steps (a multiple of log_every: the state a logged row was computed from); 0 = only the final one. A final checkpoint of the state after the last update (step = steps done, not a logged row) is always written.',
    }),
  },
  { additionalProperties: false, default: {} },
);

export const VanillaSchema = Type.Object({ name: Type.Literal('vanilla') }, { additionalProperties: false, description: 'λ_i ≡ 1.' });

export const RbaSchema = Type.Object(
  {
    name: Type.Literal('rba'),
    eta: Type.Number({ exclusiveMinimum: 0, maximum: 1, default: 1e-3, description: 'η* in λ_i ← γ λ_i + η* |r_i| / max_j |r_j| (science.md §4).' }),
    gamma: Type.Number({ minimum: 0, exclusiveMaximum: 1, default: 0.999, description: 'Decay γ.' }),
    normalization: Type.Union([Type.Literal('max'), Type.Literal('minmax')], {
      default: 'max',
      description:
        "Normalised residual in the update, over the step's batch: 'max' = |r_i| / max_j |r_j| (0 if all r are 0); 'minmax' = (|r_i| − min_j |r_j|) / (max_j |r_j| − min_j |r_j|), falling back to the 'max' form when max = min.",
    }),
    init: Type.Union([Type.Literal('zero'), Type.Literal('residual')], {
      default: 'zero',
      description:
        "'zero' = λ⁰ = 0; 'residual' = the first step (step 0) sets λ of its batch to the normalised residual (λ¹ = |r|/max|r|, or the minmax form) instead of γ·0 + η*·that; points outside step 0's batch keep λ⁰ = 0 and follow the usual update.",
    }),
  },
  { additionalProperties: false, description: 'Residual-based attention (science.md §4).' },
);

export const SaSchema = Type.Object(
  {
    name: Type.Literal('sa'),
    lr: Type.Number({ exclusiveMinimum: 0, maximum: 10, default: 5e-3, description: 'Learning rate of the λ Adam (gradient ascent on the loss; β1, β2, ε as the network Adam; no decay).' }),
    freeze_step: Type.Union([Int({ minimum: 0, maximum: 100_000_000 }), Type.Null()], {
      default: null,
      description: 'λ is updated after steps k < freeze_step only (0 = never: λ stays at its U(0,1) init); null = never frozen.',
    }),
  },
  {
    additionalProperties: false,
    description:
      'Self-adaptive weights (science.md §4): λ_i ~ U(0,1) (seeded), trained by gradient ascent on the same loss with their own Adam; with mini-batches only the batch points (and their own Adam moments and step counts) change.',
  },
);

export const DiagnosticsSchema = Type.Object(
  {
    every: Int({ minimum: 0, maximum: 100_000_000, default: 100, description: 'snr, snr_layers, grad_order, snr_adam, res_homogeneity, saturation_layers, entropy_layers, lambda_mean, lambda_max every this many steps (a multiple of log_every) and at the last step; 0 = off.' }),
    snr_batches: Int({ minimum: 2, maximum: 100_000, default: 10, description: 'B, the fixed batches of the SNR split; must divide n_collocation (science.md §5).' }),
  },
  { additionalProperties: false, default: {} },
);

/**
 * Thresholds of the phase record (science.md §6; analysis/phases.ts applies them; docs/phases.md). Not part of
 * the trial config: changing them changes no trial id, only how finished trials are read.
 */
export const AnalysisSchema = Type.Object(
  {
    smooth_window: Int({ minimum: 1, maximum: 1001, default: 7, description: 'Width, in logged SNR points (odd), of the centered running median of log10 SNR; truncated at the ends of the series.' }),
    smooth_span: Type.Number({ minimum: 1, maximum: 1e6, default: 1.25, description: 'The running median takes, on each side of a point, only points whose step is within this factor of its own (and as many on both sides): early phases, a few logged points long, are not smoothed away.' }),
    outlier_decades: Type.Number({ exclusiveMinimum: 0, maximum: 100, default: 3, description: 'Leading logged SNR points this many decades or more above the median log10 SNR of all later points are dropped before smoothing (RBA with λ⁰ = 0: every batch loss is the same boundary term at step 0).' }),
    diffusion_threshold: Type.Number({ minimum: -20, maximum: 20, default: 0, description: 'log10 SNR below which the smoothed SNR is below 1 (0 = SNR 1): where diffusion starts.' }),
    diffusion_drop: Type.Number({ minimum: 0, maximum: 20, default: 0.5, description: 'Decades the smoothed SNR must also have fallen below its maximum so far (the fitting peak) to enter diffusion.' }),
    diffusion_depth: Type.Number({ minimum: -20, maximum: 20, default: -0.5, description: 'Highest level of a diffusion stretch (from where SNR fell below 1 to the DE rise or the end): the mean of the smoothed log10 SNR over it, so that a two-level flicker counts at its centre. Diffusion is SNR well below 1 (≤ 10^-0.5); a shallower dip is not diffusion.' }),
    diffusion_points: Int({ minimum: 1, maximum: 1_000_000, default: 16, description: 'Logged SNR points the diffusion stretch lasts at least (to the DE rise, or to the end of the run); a shorter cluster of dips is not diffusion.' }),
    diffusion_span: Type.Number({ minimum: 1, maximum: 1e6, default: 2, description: 'Factor of steps the diffusion stretch spans at least, from its first to its last point (the log step axis): diffusion is a plateau, not a dip of a few hundred steps late in a run that sat above 1 before and after.' }),
    sustain_points: Int({ minimum: 1, maximum: 1_000_000, default: 8, description: 'Logged SNR points that SNR must stay below 1 for diffusion to start there, and that must be left after the DE rise.' }),
    rise_decades: Type.Number({ exclusiveMinimum: 0, maximum: 20, default: 0.9, description: 'Rise of the smoothed log10 SNR above the diffusion floor, in decades, that marks the diffusion-equilibrium transition.' }),
    rise_window: Int({ minimum: 1, maximum: 1_000_000, default: 25, description: 'Logged SNR points within which that rise must happen, counted from the last point within level_margin of the floor (a slower drift is not DE).' }),
    level_margin: Type.Number({ minimum: 0, maximum: 20, default: 0.5, description: 'Decades above the diffusion floor that DE must hold (no sustain_points points in a row at or below it, to the end); t_equilibrium is where the rise first passes it.' }),
    equilibrium_span: Type.Number({ minimum: 1, maximum: 1e6, default: 1.25, description: 'Factor of steps DE spans at least, from the start of its rise to the end of the run: a rise in the last factor 1.25 of the steps (the span the smoothing works on) cannot be told from a spike and is not DE.' }),
    equilibrium_level: Type.Number({ minimum: -20, maximum: 20, default: -1, description: 'Lowest level of DE, from the start of its rise to the end: the mean of the smoothed log10 SNR (−1: SNR 0.1). A deep diffusion that flickers up but stays below it has not reached DE: the gradients do not align.' }),
    settle_slope: Type.Number({ minimum: 0, maximum: 100, default: 1, description: 'A trial without diffusion whose smoothed SNR still falls at least this many decades per decade of steps over its last decade of steps (T/10…T, T its last step; least squares on the log step axis), and whose SNR is still above 1 over T/2…T, is still fitting; otherwise it is steady.' }),
    divergence_factor: Type.Number({ exclusiveMinimum: 1, maximum: 1e300, default: 1e4, description: 'A trial diverged when its loss became NaN/Inf, or rose to this factor times its running minimum and stayed there to the end of the run; workers stop a trial early once its loss stays at or above it for 3 logged rows.' }),
  },
  { additionalProperties: false, default: {}, description: 'How phases are read from the SNR series (science.md §6); not part of any trial config.' },
);

/**
 * A user problem module (docs/problems.md): `module` is the path of an ES module relative to the spec
 * file; the other keys are the common fields and the module's declared parameters (numbers). The
 * orchestrator adds `module_hash` (the content hash of the module's files) and `name` (the module's).
 * The full check of the keys is against the module's own declarations, when the spec is loaded.
 */
export const ModuleProblemSchema = Type.Object(
  {
    module: Type.String({ pattern: '\\.(mjs|js)$', description: 'Path of the problem module (an ES module, .mjs or .js) relative to the spec file (docs/problems.md).' }),
    module_hash: Type.Optional(Type.String({ description: 'Set by the orchestrator: sha256 of the module files (part of the trial id).' })),
    name: Type.Optional(Type.String({ description: "Set by the orchestrator: the module's problem name." })),
    ...problemCommon,
    n_initial: Type.Optional(Int({ minimum: 1, maximum: 1_000_000, default: 100, description: 'Initial-condition points (problems with an initial condition `ic`).' })),
    w_ic: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: 1e6, default: 1, description: 'Weight w_ic of the initial-condition term (problems with an `ic`).' })),
  },
  { additionalProperties: Type.Number(), description: "A problem module of the user's (docs/problems.md); other keys: the module's declared parameters." },
);

/**
 * The schema of one problem module's config section: `name` (the module's), `module`, `module_hash`, the
 * common fields (with n_initial, w_ic for a problem with an initial condition) and the module's
 * declared parameters with their defaults and ranges. Unknown keys are errors.
 */
export function moduleConfigSchema(name: string, params: Record<string, number | { default: number; minimum?: number; maximum?: number; description?: string }>, hasInitial: boolean): TSchema {
  const props: Record<string, TSchema> = {
    name: Type.Literal(name, { default: name }),
    module: ModuleProblemSchema.properties.module,
    module_hash: Type.String(),
    ...(hasInitial ? problemTimeCommon : problemCommon),
  };
  for (const [k, v] of Object.entries(params)) {
    const d = typeof v === 'number' ? { default: v } : v;
    props[k] = Type.Number({
      default: d.default,
      ...(d.minimum !== undefined ? { minimum: d.minimum } : {}),
      ...(d.maximum !== undefined ? { maximum: d.maximum } : {}),
      ...(d.description !== undefined ? { description: d.description } : {}),
    });
  }
  return Type.Object(props, { additionalProperties: false });
}

export const problemSchemas = { helmholtz2d: Helmholtz2dSchema, poisson2d: Poisson2dSchema, burgers1d: Burgers1dSchema, allen_cahn1d: AllenCahn1dSchema } as const;
export const strategySchemas = { vanilla: VanillaSchema, rba: RbaSchema, sa: SaSchema } as const;

export const ProblemSchema = Type.Union([Helmholtz2dSchema, Poisson2dSchema, Burgers1dSchema, AllenCahn1dSchema]);
export const StrategySchema = Type.Union([VanillaSchema, RbaSchema, SaSchema], { default: { name: 'vanilla' } });

const trialFields = {
  problem: ProblemSchema,
  model: ModelSchema,
  train: TrainSchema,
  strategy: StrategySchema,
  diagnostics: DiagnosticsSchema,
  seed: Int({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: 'Seeds weights, collocation points, batches.' }),
};

/** One fully resolved trial (defaults applied). */
export const TrialConfigSchema = Type.Object(trialFields, { additionalProperties: false });

/** The dotted path of a grid key or a sampled parameter into the trial config. */
const PathKey = Type.String({ pattern: '^[a-z_][a-z0-9_]*(\\.[a-z_][a-z0-9_]*)*$' });

/** `[start, stop, n]` of a range. */
const RangeArgs = (what: string) =>
  Type.Tuple([Type.Number({ description: `start (${what})` }), Type.Number({ description: `stop (${what}), >= start` }), Type.Integer({ minimum: 1, description: 'n, the number of values (both ends included)' })]);

/**
 * A grid list written as a range (numpy semantics, both ends included): linspace takes the values,
 * logspace the exponents of 10, geomspace the values (> 0) spaced evenly on a log scale.
 */
export const RangeSchema = Type.Union(
  [
    Type.Object({ linspace: RangeArgs('a value') }, { additionalProperties: false, description: 'n evenly spaced values from start to stop.' }),
    Type.Object({ logspace: RangeArgs('an exponent: the value is 10^start') }, { additionalProperties: false, description: '10^x for n evenly spaced x from start to stop: {logspace: [-4, -1, 7]} = {geomspace: [1e-4, 1e-1, 7]}.' }),
    Type.Object({ geomspace: RangeArgs('a value > 0') }, { additionalProperties: false, description: 'n values from start to stop (both > 0) evenly spaced on a log scale.' }),
  ],
  { description: 'Values computed are rounded to 12 significant digits (to integers, equal ones merged, at an integer key such as batch_size, seed, width).' },
);

/** `grid` with every value a list (how spec.ts checks it, once ranges are read). */
export const GridListsSchema = Type.Record(PathKey, Type.Array(Type.Unknown(), { minItems: 1 }));

/** A value of `grid`: a non-empty list of values for one dotted path, or a range. */
const GridSchema = Type.Record(PathKey, Type.Union([Type.Array(Type.Unknown(), { minItems: 1 }), RangeSchema]), {
  default: {},
  description: 'Dotted paths into the trial config → lists of values (or ranges: linspace, logspace, geomspace), expanded as a cartesian product. A value may be a whole object (e.g. a strategy with its options).',
});

const Bounds = (what: string) => Type.Tuple([Type.Number({ description: `low (${what})` }), Type.Number({ description: `high (${what}), > low` })]);

/** One sampled parameter: a distribution and its arguments. */
export const DistributionSchema = Type.Union([
  Type.Object({ uniform: Bounds('a number') }, { additionalProperties: false, description: 'Uniform from low to high.' }),
  Type.Object({ loguniform: Bounds('> 0') }, { additionalProperties: false, description: 'Uniform in log(x) from low to high, low > 0.' }),
  Type.Object({ int_uniform: Bounds('an integer, included') }, { additionalProperties: false, description: 'Each integer from low to high (both included) alike.' }),
  Type.Object({ int_loguniform: Bounds('an integer >= 1, included') }, { additionalProperties: false, description: 'Integers from low to high (both included), uniform in log(x).' }),
  Type.Object({ choice: Type.Array(Type.Unknown(), { minItems: 1 }) }, { additionalProperties: false, description: 'One of the values, each alike.' }),
]);

/** `sample:`: `count` seeded random points, each setting every param, crossed with the grid. */
export const SampleSchema = Type.Object(
  {
    count: Int({ minimum: 1, maximum: 1_000_000_000, description: 'K, the number of points drawn; the sweep has (grid combinations) × K trials.' }),
    seed: Type.Optional(Int({ minimum: 0, maximum: 2 ** 31 - 1, default: 0, description: 'Seeds the draws (mulberry32): the same seed draws the same points on every run and machine.' })),
    params: Type.Record(PathKey, DistributionSchema, {
      minProperties: 1,
      description: 'Dotted paths into the trial config (not also grid keys) → distributions; drawn values are written into the trial configs, so they are part of the trial ids.',
    }),
  },
  { additionalProperties: false, description: 'Random search crossed with the grid: every grid combination × every drawn point.' },
);

/** The sweep spec as written (YAML or JSON). Base fields may be partial where `grid` supplies them. */
export const SweepSpecSchema = Type.Object(
  {
    $schema: Type.Optional(Type.String()),
    name: Type.String({ pattern: '^[A-Za-z0-9_-]{1,64}$', description: 'Sweep name: letters, digits, _ and -; namespaces subjects, KV keys and the default output DIR.' }),
    description: Type.Optional(Type.String()),
    problem: Type.Optional(Type.Unknown()),
    model: Type.Optional(Type.Unknown()),
    train: Type.Optional(Type.Unknown()),
    strategy: Type.Optional(Type.Unknown()),
    diagnostics: Type.Optional(Type.Unknown()),
    seed: Type.Optional(Type.Unknown()),
    grid: Type.Optional(GridSchema),
    sample: Type.Optional(Type.Unknown()),
    analysis: Type.Optional(Type.Unknown()),
    max_attempts: Type.Optional(Type.Unknown()),
    max_trials: Type.Optional(Type.Unknown()),
    refine: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false, title: 'phasemap sweep spec' },
);

/** `max_attempts`: how often a trial whose training throws is tried in one run before it is recorded failed. Not part of trial ids. */
export const MaxAttemptsSchema = Int({ minimum: 1, maximum: 10, default: 3, description: 'Attempts of a trial whose training throws (an error, not a divergence) before it is recorded failed, per run. Not part of trial ids.' });

/**
 * `refine:`: adaptive refinement of phase boundaries after the grid (analysis/refine.ts, orchestrator/refine.ts).
 * Not part of trial ids: the trials it adds are ordinary trials.
 */
export const RefineSchema = Type.Object(
  {
    rounds: Int({ minimum: 0, maximum: 100, default: 3, description: 'Rounds of refinement: each reads the done trials, plans, and runs the new trials.' }),
    resolution: Type.Number({ exclusiveMinimum: 1, maximum: 1000, default: 1.25, description: 'Neighbouring cells within this factor of each other on the refined axis are not split further.' }),
    budget: Int({ minimum: 0, maximum: 1_000_000, default: 100, description: 'Most trials refinement adds to the sweep, over all rounds.' }),
    explore: Type.Union([Type.Literal(0), Type.Number({ exclusiveMinimum: 1, maximum: 1_000_000 })], {
      default: 4,
      description: 'Once no boundary is left to split, neighbours of one phase next to a boundary are split while further apart than this factor (a boundary bends, a pocket hides, between coarse samples); 0: never.',
    }),
    x: Type.Union([Type.Literal('lr'), Type.Literal('batch_size'), Type.Literal('steps'), Type.Literal('width'), Type.Literal('depth')], { default: 'lr', description: 'Horizontal axis refined (log scale).' }),
    y: Type.Union([Type.Literal('lr'), Type.Literal('batch_size'), Type.Literal('steps'), Type.Literal('width'), Type.Literal('depth')], { default: 'batch_size', description: "Vertical axis refined (log scale; a 'full' batch counts as its size N; between two powers of two, batch sizes stay powers of two)." }),
    facet: Type.String({ default: 'strategy', description: 'Column the boundaries are printed per value of (a trials.parquet column other than x and y); cells are neighbours only when all of their config but x, y and seed is the same.' }),
  },
  { additionalProperties: false, default: {}, description: 'Adaptive refinement: new trials at the log midpoints between neighbouring cells whose phases differ.' },
);

/** Default of `max_trials`: the most grid combinations a spec may expand to unless it says more. */
export const MAX_TRIALS_DEFAULT = 1_000_000;
/** The highest `max_trials` a spec may set. */
export const MAX_TRIALS_LIMIT = 1_000_000_000;

/** `max_trials`: the most grid combinations the spec may expand to; a larger grid is refused before it is expanded. Not part of trial ids. */
export const MaxTrialsSchema = Int({
  minimum: 1,
  maximum: MAX_TRIALS_LIMIT,
  default: MAX_TRIALS_DEFAULT,
  description:
    'Most trials the spec may expand to: grid combinations (the product of the grid lists\' lengths, duplicates included; a range counts its n) times sample.count; a larger grid is refused before anything is expanded. Raise it for a sweep that large on purpose (expanding and checking 1,000,000 trials takes about 2 minutes and 1 GB of memory on 2 cores). Not part of trial ids.',
});

export type Helmholtz2dConfig = Static<typeof Helmholtz2dSchema>;
export type Poisson2dConfig = Static<typeof Poisson2dSchema>;
export type Burgers1dConfig = Static<typeof Burgers1dSchema>;
export type AllenCahn1dConfig = Static<typeof AllenCahn1dSchema>;
export type ProblemConfig = Static<typeof ProblemSchema>;
export type ModelConfig = Static<typeof ModelSchema>;
export type TrainConfig = Static<typeof TrainSchema>;
export type StrategyConfig = Static<typeof StrategySchema>;
export type RbaConfig = Static<typeof RbaSchema>;
export type SaConfig = Static<typeof SaSchema>;
export type DiagnosticsConfig = Static<typeof DiagnosticsSchema>;
export type TrialConfig = Static<typeof TrialConfigSchema>;
export type AnalysisConfig = Static<typeof AnalysisSchema>;
export type SweepSpec = Static<typeof SweepSpecSchema>;
export type SampleConfig = Static<typeof SampleSchema>;
export type RefineConfig = Static<typeof RefineSchema>;

/**
 * The schema emitted for editors: the sweep spec with the base trial fields typed as they are
 * after expansion (each optional, since `grid` may supply them).
 */
export function editorSchema(): TSchema {
  const props: Record<string, TSchema> = {
    $schema: Type.String(),
    name: SweepSpecSchema.properties.name,
    description: Type.String(),
    grid: GridSchema,
  };
  for (const [k, v] of Object.entries(trialFields)) props[k] = Type.Optional(v as TSchema);
  props.problem = Type.Optional(Type.Union([...ProblemSchema.anyOf, ModuleProblemSchema]));
  return Type.Object(
    {
      ...props,
      $schema: Type.Optional(Type.String()),
      description: Type.Optional(Type.String()),
      grid: Type.Optional(GridSchema),
      sample: Type.Optional(SampleSchema),
      analysis: Type.Optional(AnalysisSchema),
      max_attempts: Type.Optional(MaxAttemptsSchema),
      max_trials: Type.Optional(MaxTrialsSchema),
      refine: Type.Optional(RefineSchema),
    },
    { additionalProperties: false, title: 'phasemap sweep spec' },
  );
}
