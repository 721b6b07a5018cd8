/**
 * Re-applying a service that is running (`dstack apply` of the same run name): the new spec
 * replaces the stored one in place, as upstream's in-place update does, and the autoscaler then
 * rolls the replicas whose job spec the change touches (see Rollout.ts). Which fields may change
 * is upstream's rule: the configuration's `replicas` and `scaling` apply without new replicas;
 * the fields that shape a replica (`image`, `commands`, `env`, `port`, `probes`, `resources`, …)
 * roll the replicas one at a time; any other change is refused, naming the fields.
 */
import { Effect, Option, Schema } from "effect"
import { JobSpec, type Job } from "../domain/Job.ts"
import { Run, RunSpec } from "../domain/Run.ts"
import { jobSpecsFromRunSpec } from "../domain/RunJobSpecs.ts"
import { Engine } from "../engine/Engine.ts"
import { modifyRun } from "../engine/RunRecord.ts"
import type { StateStore, StateStoreError } from "../ports/StateStore.ts"
import { ServiceRegistry } from "./ServiceRegistry.ts"

/** Run spec fields (wire names) an update may change (upstream's list for services). */
const UPDATABLE_SPEC_FIELDS = ["configuration_path", "configuration", "repo_data", "repo_code_hash", "working_dir"]
/** Service configuration keys an update may change: `replicas` and `scaling` in place, the rest by a rolling deployment. */
const UPDATABLE_CONFIGURATION_FIELDS = [
  "priority", "replicas", "scaling",
  "port", "probes", "resources", "volumes", "docker", "files", "image", "user", "privileged", "entrypoint",
  "working_dir", "python", "nvcc", "single_branch", "env", "shell", "commands"
]

const encodeRunSpec = Schema.encodeSync(RunSpec)
const encodeJobSpec = Schema.encodeSync(JobSpec)

/** Deep equality of encoded values; the order of an object's keys does not count (a store may not keep it). */
const same = (a: unknown, b: unknown): boolean => {
  if (a === b) return true
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  if (Array.isArray(a)) return a.length === (b as Array<unknown>).length && a.every((x, i) => same(x, (b as Array<unknown>)[i]))
  const ka = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined)
  const kb = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined)
  return ka.length === kb.length && ka.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

const changedKeys = (a: Record<string, unknown>, b: Record<string, unknown>): Array<string> =>
  [...new Set([...Object.keys(a), ...Object.keys(b)])].filter((k) => !same(a[k], b[k])).sort()

/** The fields an update of `current` to `next` changes, or why it cannot be made in place. */
export const checkServiceUpdate = (current: RunSpec, next: RunSpec): { readonly changed: ReadonlyArray<string> } | { readonly refused: string } => {
  if (current.configuration.type !== "service" || next.configuration.type !== "service") {
    return { refused: `Configuration type changed from ${current.configuration.type} to ${next.configuration.type}, cannot update` }
  }
  const a = encodeRunSpec(current) as unknown as Record<string, unknown>
  const b = encodeRunSpec(next) as unknown as Record<string, unknown>
  const specChanged = changedKeys(a, b)
  const badSpec = specChanged.filter((k) => !UPDATABLE_SPEC_FIELDS.includes(k))
  if (badSpec.length > 0) return { refused: `Failed to update fields [${badSpec.join(", ")}]. Can only update [${UPDATABLE_SPEC_FIELDS.join(", ")}]` }
  const confChanged = changedKeys(a.configuration as Record<string, unknown>, b.configuration as Record<string, unknown>)
  const badConf = confChanged.filter((k) => !UPDATABLE_CONFIGURATION_FIELDS.includes(k))
  if (badConf.length > 0) {
    return { refused: `Failed to update configuration fields [${badConf.join(", ")}] of an active service. Can only update [${UPDATABLE_CONFIGURATION_FIELDS.join(", ")}]; stop the run first to change the others` }
  }
  return { changed: [...specChanged.filter((k) => k !== "configuration"), ...confChanged.map((k) => `configuration.${k}`)] }
}

/**
 * Whether a replica job runs what the run's spec asks for now: its job spec is the one the spec
 * gives for its replica number. A change of `replicas` or `scaling` alone leaves every job up to date.
 */
export const isUpToDate = (runSpec: RunSpec, job: Job): boolean => {
  const wanted = jobSpecsFromRunSpec(runSpec, { replicas: job.jobSpec.replicaNum + 1 })
    .find((spec) => spec.replicaNum === job.jobSpec.replicaNum && spec.jobNum === job.jobSpec.jobNum)
  return wanted !== undefined && same(encodeJobSpec(wanted), encodeJobSpec(job.jobSpec))
}

/**
 * Replaces the active service run's spec with `next` (checked by `checkServiceUpdate` first) and
 * wakes the engine and the autoscaler: replicas then follow the new spec.
 */
export const updateService = (runId: string, next: RunSpec): Effect.Effect<Run, StateStoreError, StateStore | Engine> =>
  Effect.gen(function* () {
    const record = yield* modifyRun(runId, (r) => ({ ...r, run: new Run({ ...r.run, runSpec: next, lastProcessedAt: new Date() }, { disableValidation: true }) }))
    yield* Effect.flatMap(Engine, (engine) => engine.wake(runId))
    // The autoscaler follows the services the registry knows: make sure it knows this one.
    const registry = yield* Effect.serviceOption(ServiceRegistry)
    if (Option.isSome(registry)) {
      yield* registry.value.lookup(record.run.projectName, next.runName ?? "").pipe(
        Effect.flatMap((entry) => (entry === undefined ? Effect.void : registry.value.refresh(entry))),
        Effect.catchAllCause((cause) => Effect.logWarning(`services: cannot follow the updated service ${next.runName}`, cause))
      )
    }
    return record.run
  })
