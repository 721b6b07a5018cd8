// Public exports of core/src/engine: the pure run and job lifecycles. Append one line per module.
export * from "./Transition.ts"
export * from "./JobLifecycle.ts"
export * from "./RunLifecycle.ts"
// The effectful driver and where it gets compute (custom builds pass options to createServer).
export { Engine, ACTIVE_RUN_STATUSES } from "./Engine.ts"
export type { EngineOptions, EngineService } from "./Engine.ts"
export { Compute } from "./Compute.ts"
export type { ComputeOptions, ComputeService, DefaultBackend, FailedBackend, ProjectBackends } from "./Compute.ts"
export { offersForJob, explainNoOffers, offerOfInstance } from "./Planner.ts"
export type { JobOffers, PlanFilter } from "./Planner.ts"
