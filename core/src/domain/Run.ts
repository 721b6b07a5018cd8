/**
 * Runs: what the user submitted (`RunSpec`: a configuration, its repo and profile) and the run
 * the server keeps for it (`Run`: status, termination reason, jobs, cost). Wire keys follow
 * the upstream API.
 */
import { Schema } from "effect"
import { AnyRunConfiguration } from "./Configuration.ts"
import { wire, wireDefault, wireOptional } from "./internal/wire.ts"
import { Job, JobSubmission, latestSubmission, RunRepoData } from "./Job.ts"
import { RunStatus, RunTerminationReason } from "./Status.ts"

/** What the user asks to run. */
export class RunSpec extends Schema.Class<RunSpec>("@dstack-ts/core/RunSpec")({
  runName: wireOptional(Schema.String, "run_name"),
  /** Without a repo (`null` or absent), upstream's empty virtual repo `none`. */
  repoId: wireDefault(Schema.String, "repo_id", () => "none"),
  repoData: wireDefault(RunRepoData, "repo_data", () => ({ repoType: "virtual" as const })),
  /** The hash of the uploaded code (a tarball or a diff); absent when there is none. */
  repoCodeHash: wireOptional(Schema.String, "repo_code_hash"),
  workingDir: wireOptional(Schema.String, "working_dir"),
  /** The configuration file, relative to the repo root. */
  configurationPath: wireOptional(Schema.String, "configuration_path"),
  configuration: AnyRunConfiguration,
  /** Profile defaults applied on the client (kept as given; the configuration wins). */
  profile: wireOptional(Schema.Record({ key: Schema.String, value: Schema.Unknown }), "profile"),
  sshKeyPub: wireOptional(Schema.String, "ssh_key_pub")
}) {}

/** Where the OpenAI-compatible model of a service is served (upstream `ServiceModelSpec`). */
export class ServiceModelSpec extends Schema.Class<ServiceModelSpec>("@dstack-ts/core/ServiceModelSpec")({
  name: Schema.String,
  baseUrl: wire(Schema.String, "base_url"),
  type: wireDefault(Schema.String, "type", () => "chat")
}) {}

/** Where a service run is reachable. */
export class ServiceSpec extends Schema.Class<ServiceSpec>("@dstack-ts/core/ServiceSpec")({
  url: Schema.String,
  model: wireOptional(ServiceModelSpec, "model")
}) {}

/** A run as the server keeps it. */
export class Run extends Schema.Class<Run>("@dstack-ts/core/Run")({
  id: Schema.String,
  projectName: wire(Schema.String, "project_name"),
  /** The name of the user who submitted it. */
  user: Schema.String,
  submittedAt: wire(Schema.Date, "submitted_at"),
  lastProcessedAt: wire(Schema.Date, "last_processed_at"),
  status: RunStatus,
  terminationReason: wireOptional(RunTerminationReason, "termination_reason"),
  runSpec: wire(RunSpec, "run_spec"),
  jobs: wireDefault(Schema.Array(Job), "jobs", () => []),
  latestJobSubmission: wireOptional(JobSubmission, "latest_job_submission"),
  /** Dollars spent so far, over all job submissions. */
  cost: wireDefault(Schema.Number, "cost", () => 0),
  service: wireOptional(ServiceSpec, "service"),
  /** How many times the run was updated in place (a re-applied service); 0 as submitted. */
  deploymentNum: wireDefault(Schema.Int, "deployment_num", () => 0),
  deleted: wireDefault(Schema.Boolean, "deleted", () => false)
}) {}

/** The newest submission over all the run's jobs: what `latest_job_submission` reports. */
export const newestJobSubmission = (run: Pick<Run, "jobs">): JobSubmission | undefined => {
  let newest: JobSubmission | undefined
  for (const job of run.jobs) {
    const sub = latestSubmission(job)
    if (sub !== undefined && (newest === undefined || sub.submittedAt.getTime() >= newest.submittedAt.getTime())) {
      newest = sub
    }
  }
  return newest
}

/**
 * Dollars spent by a run up to `now` (epoch ms): each submission that reached an instance costs
 * its hourly price for the time from its submission to its end (or `now` while it runs).
 */
export const runCost = (run: Pick<Run, "jobs">, now: number): number => {
  let total = 0
  for (const job of run.jobs) {
    for (const sub of job.jobSubmissions) {
      const price = sub.jobProvisioningData?.price
      if (price === undefined) continue
      const end = sub.finishedAt?.getTime() ?? now
      const hours = Math.max(0, end - sub.submittedAt.getTime()) / 3_600_000
      total += price * hours
    }
  }
  return total
}
