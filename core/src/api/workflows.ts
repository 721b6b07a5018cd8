/**
 * The wire contract of `/api/project/{p}/workflows/get_plan`: the client sends the texts of its
 * workflow files, the workflow to run and the variables given on the command line; the server
 * plans it with its providers and answers the jobs, each a task configuration, in an order where
 * every job follows what it depends on.
 */
import { Schema } from "effect"
import { TaskConfiguration } from "../domain/Configuration.ts"

const key = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(wire))
const optionalKey = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.optional(schema).pipe(Schema.fromKey(wire))

const StringMap = Schema.Record({ key: Schema.String, value: Schema.String })

export const WorkflowPlanRequest = Schema.Struct({
  workflow: Schema.String,
  /** The workflow files by their path in the repo (`.dstack/workflows.yaml` …). */
  files: StringMap,
  variables: Schema.optionalWith(StringMap, { default: () => ({}) }),
  /** The hash of the run's code (revision and diff), part of the cache keys. */
  codeHash: optionalKey(Schema.String, "code_hash"),
  runName: optionalKey(Schema.String, "run_name")
})
export type WorkflowPlanRequest = typeof WorkflowPlanRequest.Type

export const PlannedJobWire = Schema.Struct({
  id: Schema.String,
  workflow: Schema.String,
  provider: Schema.String,
  configuration: TaskConfiguration,
  dependsOn: key(Schema.Array(Schema.String), "depends_on"),
  master: Schema.optional(Schema.String),
  artifacts: Schema.Array(Schema.String),
  inputs: Schema.Array(Schema.String),
  cacheKey: key(Schema.String, "cache_key")
})
export type PlannedJobWire = typeof PlannedJobWire.Type

export const WorkflowPlanResponse = Schema.Struct({
  workflow: Schema.String,
  variables: StringMap,
  jobs: Schema.Array(PlannedJobWire)
})
export type WorkflowPlanResponse = typeof WorkflowPlanResponse.Type
