/**
 * The wire contract of `/api/project/{p}/workflows/get_plan`: the client sends the texts of its
 * workflow files, the workflow to run and the variables given on the command line; the server
 * plans it with its providers and answers the jobs, each a task configuration, in an order where
 * every job follows what it depends on.
 */
import { Schema } from "effect"
import { TaskConfiguration } from "../domain/Configuration.ts"
import { RunRepoData } from "../domain/Job.ts"

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
  cacheKey: key(Schema.String, "cache_key"),
  /** Set on the job that runs a provider program: the jobs it prints take its workflow's place. */
  program: Schema.optional(Schema.Struct({ provider: Schema.String })),
  /** The job's code when it is not the run's: another repository's provider program, at a commit. */
  code: Schema.optional(Schema.Struct({ repoUrl: key(Schema.String, "repo_url"), commit: Schema.String }))
})
export type PlannedJobWire = typeof PlannedJobWire.Type

export const WorkflowPlanResponse = Schema.Struct({
  workflow: Schema.String,
  variables: StringMap,
  jobs: Schema.Array(PlannedJobWire)
})
export type WorkflowPlanResponse = typeof WorkflowPlanResponse.Type

// ---------------------------------------------------------------------------------------------
// Workflow runs: the server runs the DAG (workflows/submit, get, list, stop)

/** The code the jobs get, as a run spec carries it (the client uploaded it before). */
export const WorkflowRepo = Schema.Struct({
  repoId: key(Schema.String, "repo_id"),
  repoData: key(RunRepoData, "repo_data"),
  repoCodeHash: optionalKey(Schema.String, "repo_code_hash")
})

export const SubmitWorkflowRequest = Schema.Struct({
  workflow: Schema.String,
  files: StringMap,
  variables: Schema.optionalWith(StringMap, { default: () => ({}) }),
  /** The workflow run's name; its jobs' runs are named after it. Default: the workflow and 4 random characters. */
  runName: optionalKey(Schema.String, "run_name"),
  noCache: Schema.optionalWith(Schema.Boolean, { default: () => false }).pipe(Schema.fromKey("no_cache")),
  repo: Schema.optional(WorkflowRepo)
})
export type SubmitWorkflowRequest = typeof SubmitWorkflowRequest.Type

export const WorkflowJobStatus = Schema.Literal("waiting", "submitted", "running", "done", "failed", "terminated", "cached")
export type WorkflowJobStatus = typeof WorkflowJobStatus.Type

export const WorkflowRunStatus = Schema.Literal("running", "done", "failed", "terminated")
export type WorkflowRunStatus = typeof WorkflowRunStatus.Type

export const WorkflowJobWire = Schema.Struct({
  ...PlannedJobWire.fields,
  status: WorkflowJobStatus,
  /** The run that carries the job out (an earlier one when cached). */
  runName: optionalKey(Schema.String, "run_name"),
  runId: optionalKey(Schema.String, "run_id"),
  /** The job name of the run's job (artifacts are kept under it). */
  jobName: optionalKey(Schema.String, "job_name"),
  /** Why the job did not end done, or why it was not run. */
  reason: Schema.optional(Schema.String)
})
export type WorkflowJobWire = typeof WorkflowJobWire.Type

export const WorkflowRunWire = Schema.Struct({
  name: Schema.String,
  workflow: Schema.String,
  user: Schema.String,
  status: WorkflowRunStatus,
  submittedAt: key(Schema.String, "submitted_at"),
  variables: StringMap,
  noCache: key(Schema.Boolean, "no_cache"),
  stopRequested: key(Schema.Boolean, "stop_requested"),
  repo: Schema.optional(WorkflowRepo),
  jobs: Schema.Array(WorkflowJobWire)
})
export type WorkflowRunWire = typeof WorkflowRunWire.Type

export const GetWorkflowRequest = Schema.Struct({ name: Schema.String })
export const WorkflowRunList = Schema.Array(WorkflowRunWire)
export const StopWorkflowRequest = Schema.Struct({
  name: Schema.String,
  abort: Schema.optionalWith(Schema.Boolean, { default: () => false })
})

// ---------------------------------------------------------------------------------------------
// Artifacts of a run's jobs

export const ListArtifactsRequest = Schema.Struct({ runName: key(Schema.String, "run_name") })
export const ArtifactFile = Schema.Struct({ path: Schema.String, size: Schema.Number, sha256: Schema.String })
export const JobArtifacts = Schema.Struct({
  jobName: key(Schema.String, "job_name"),
  paths: Schema.Array(Schema.String),
  files: Schema.Array(ArtifactFile)
})
export const ArtifactList = Schema.Struct({
  runName: key(Schema.String, "run_name"),
  jobs: Schema.Array(JobArtifacts)
})
export type ArtifactList = typeof ArtifactList.Type
