/** Public API of the PINN trainer (science.md §2–§5). */
export { initBackend, detectBackend, currentBackend, wasmDir, blasStatus, nativeMatMulActive, nativeStreams, type BackendName, type BlasStatus } from './backend.js';
export { Rng, BatchSampler, latinHypercube, hashString } from './rng.js';
export {
  makeProblem, registerProblem, problemNames, Helmholtz2d, Poisson2d, Burgers1d, AllenCahn1d, problemConditions, linspace, boxBoundary2d,
  xtBoundary, tensorGrid,
  HELMHOLTZ2D, POISSON2D, BURGERS1D, ALLEN_CAHN1D, registerProblemModule, isModuleConfig, moduleParams,
  type Problem, type ProblemFactory, type DerivSpec, type Fields, type ConditionSet, type ConditionKind, type ConditionSpec, type ModuleProblemConfig,
} from './problems.js';
export {
  defineProblem, definedProblem, DefinedProblem, checkProblem, checkDeclarations, ProblemError, RESIDUAL_OPS, allowedFields, allowedFieldsOf, derivSpecOf, paramDefaults, hasInitial,
  type ProblemDefinition, type EvaluationOutput, type ParamDeclaration, type ResidualOps, type ResidualContext, type ResidualTerm, type ConditionContext, type ConditionOutput,
  type ProblemHelpers, type CheckMessage, type DefinedProblemOptions,
} from './problem-api.js';
export { readProblemModule, loadProblemModule, conformanceCheck, moduleHash, importSpecifiers, MODULE_MAX_BYTES, MODULE_MAX_FILES } from './problem-module.js';
export { Mlp, mlpForward, mlpValue, mlpShapes, xavierInit, type MlpParams } from './network.js';
export { Adam, staircaseLr, type AdamOptions } from './adam.js';
export {
  vanilla, rba, rbaUpdate, rbaNormalize, sa, stopGradient, makeStrategy,
  type Strategy, type StrategyState, type RbaOptions, type RbaNormalization, type RbaInit, type SaOptions, type SaState, type StrategyResume,
} from './strategies.js';
export { systemForward, systemValue, selectOutputs, outputSelector } from './system-forward.js';
export { isSystemProblem, systemResiduals, systemResidualLoss, systemStrategy, systemGradientSnr, type SystemProblem, type SystemStrategyState } from './system.js';
export { residualOf, residualLoss, boundaryLoss, conditionTermLoss, conditionsLoss, sqError, type ConditionTerm } from './loss.js';
export {
  makeSnrSplit, perBatchGradientParts, snrFromBatchGradients, gradientSnr, gradientSnrWithResidual,
  conditionTermsOf, adamSnr, gridCells, residualHomogeneity, binActivations, binnedSaturation, binnedEntropy, activationStats, forEachHiddenActivation,
  hiddenLayerStats, lambdaStats, RES_GRID_CELLS, ACTIVATION_MEAN_BINS,
  type SnrSplit, type SnrResult, type BoundaryData, type ActivationBins,
} from './diagnostics.js';
export {
  setupTrial, lossAndGrads, evalRelL2, evalSnr, evalDiagnostics, nullDiagnostics,
  type TrainSummary, type TrainHooks, type TrainOptions, type TrialSetup, type StepLoss,
} from './train.js';
export { ensureGradients } from './gradients.js';
export { captureCheckpoint, type CheckpointData } from './checkpoint.js';
export { restoreTrial, configDifference, ResumeError, type ResumeOptions, type RestoredState } from './resume.js';
export { fusionKey, fusionLimit, FUSION_RULE } from './fused.js';
export { syntheticField, syntheticBoundary, syntheticAbove, type SyntheticField } from './synthetic.js';

import type { TrialConfig } from '../../schemas/sweep.js';
import { trainTrials as trainFused } from './fused.js';
import { syntheticField, trainSynthetic } from './synthetic.js';
import { trainTrial as trainOne, type TrainHooks, type TrainOptions, type TrainSummary } from './train.js';

/**
 * Trains one trial (worker/trainer/train.ts `trainTrial`), or, in a process with
 * `PHASEMAP_SYNTHETIC_FIELD` set, runs it on the synthetic phase field (synthetic.ts).
 */
export function trainTrial(config: TrialConfig, hooks: TrainHooks, opts: TrainOptions = {}): Promise<TrainSummary> {
  const field = syntheticField();
  return field ? trainSynthetic(config, hooks, field, opts.backend ?? 'wasm') : trainOne(config, hooks, opts);
}

/**
 * Trains a group of trials fused into one batched computation (worker/trainer/fused.ts
 * `trainTrials`), or, with `PHASEMAP_SYNTHETIC_FIELD` set, each on the synthetic phase field.
 */
export async function trainTrials(configs: TrialConfig[], hooks: TrainHooks[], opts: TrainOptions[]): Promise<Array<TrainSummary | Error>> {
  const field = syntheticField();
  if (!field) return trainFused(configs, hooks, opts);
  return Promise.all(configs.map((c, i) => trainSynthetic(c, hooks[i]!, field, opts[i]?.backend ?? 'wasm').catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))))));
}
