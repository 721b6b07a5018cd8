/**
 * Provisioning policies of runs and fleets: whether to use spot instances, whether a run may
 * create instances or only reuse idle ones, and what happens to an instance once it is idle.
 */
import { Schema } from "effect"
import { oneOf } from "./Grammar.ts"

/** `spot` → spot instances only, `on-demand` → on-demand only, `auto` → either (spot first). */
export const SpotPolicy = oneOf("spot", "on-demand", "auto").annotations({
  identifier: "SpotPolicy",
  description: "`spot` (spot only), `on-demand` (on-demand only) or `auto` (spot when available, else on-demand)."
})
export type SpotPolicy = typeof SpotPolicy.Type
export const DEFAULT_SPOT_POLICY: SpotPolicy = "on-demand"

/** `reuse` → only idle instances that fit; `reuse-or-create` → idle ones first, else new ones. */
export const CreationPolicy = oneOf("reuse", "reuse-or-create").annotations({
  identifier: "CreationPolicy",
  description: "`reuse` (only reuse idle instances) or `reuse-or-create` (reuse, else provision new ones)."
})
export type CreationPolicy = typeof CreationPolicy.Type
export const DEFAULT_CREATION_POLICY: CreationPolicy = "reuse-or-create"

/** `dont-destroy` keeps idle instances; `destroy-after-idle` ends them after `idle_duration`. */
export const TerminationPolicy = oneOf("dont-destroy", "destroy-after-idle").annotations({
  identifier: "TerminationPolicy",
  description: "`dont-destroy` (keep idle instances) or `destroy-after-idle` (terminate after `idle_duration`)."
})
export type TerminationPolicy = typeof TerminationPolicy.Type
export const DEFAULT_TERMINATION_POLICY: TerminationPolicy = "destroy-after-idle"

/** Idle time before an instance is terminated: 5 minutes for run instances, 3 days for fleets. */
export const DEFAULT_RUN_IDLE_DURATION_SECONDS = 5 * 60
export const DEFAULT_FLEET_IDLE_DURATION_SECONDS = 3 * 24 * 3600
