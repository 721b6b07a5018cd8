// Builders of jobs and runs in a given state, for the lifecycle tests.
import { Schema } from "effect"
import { Job, JobProvisioningData, JobSubmission } from "../../src/domain/Job.ts"
import { Run } from "../../src/domain/Run.ts"
import type { JobStatus, JobTerminationReason, RunStatus, RunTerminationReason } from "../../src/domain/Status.ts"

export const T0 = Date.parse("2025-03-01T12:00:00.000Z")
export const SEC = 1000
export const MIN = 60 * SEC
export const HOUR = 60 * MIN

export const provisioningData = (options: { spot?: boolean; price?: number } = {}): JobProvisioningData =>
  Schema.decodeUnknownSync(JobProvisioningData)({
    backend: "local",
    instance_type: {
      name: "local",
      resources: { cpus: 4, memory_mib: 16384, gpus: [], spot: options.spot ?? false, disk: { size_mib: 102400 } }
    },
    instance_id: "host-1",
    hostname: "127.0.0.1",
    region: "local",
    price: options.price ?? 2,
    dockerized: false
  })

export interface JobOptions {
  readonly status?: JobStatus
  readonly reason?: JobTerminationReason
  readonly retry?: { readonly on_events: ReadonlyArray<string>; readonly duration?: number }
  readonly replicaNum?: number
  readonly jobNum?: number
  readonly jobsPerReplica?: number
  readonly maxDuration?: number
  readonly spot?: boolean
  /** Earlier submissions (wire form) before the current one. */
  readonly history?: ReadonlyArray<Record<string, unknown>>
  readonly submittedAt?: number
  readonly lastProcessedAt?: number
  readonly provisioned?: boolean
}

export const makeJob = (options: JobOptions = {}): Job => {
  const status = options.status ?? "submitted"
  const replicaNum = options.replicaNum ?? 0
  const jobNum = options.jobNum ?? 0
  const history = options.history ?? []
  const provisioned = options.provisioned ?? status !== "submitted"
  const pd = provisioned ? Schema.encodeSync(JobProvisioningData)(provisioningData({ spot: options.spot ?? false })) : undefined
  return Schema.decodeUnknownSync(Job)({
    job_spec: {
      job_name: `train-${replicaNum}-${jobNum}`,
      replica_num: replicaNum,
      job_num: jobNum,
      jobs_per_replica: options.jobsPerReplica ?? 1,
      commands: ["python train.py"],
      max_duration: options.maxDuration ?? null,
      requirements: { resources: {} },
      retry: options.retry ?? null
    },
    job_submissions: [
      ...history,
      {
        id: `sub-${replicaNum}-${jobNum}-${history.length}`,
        submission_num: history.length,
        submitted_at: new Date(options.submittedAt ?? T0).toISOString(),
        last_processed_at: new Date(options.lastProcessedAt ?? options.submittedAt ?? T0).toISOString(),
        status,
        termination_reason: options.reason ?? null,
        job_provisioning_data: pd ?? null,
        instance_id: provisioned ? "inst-1" : null
      }
    ]
  })
}

export const makeRun = (
  jobs: ReadonlyArray<Job>,
  options: { status?: RunStatus; reason?: RunTerminationReason; submittedAt?: number } = {}
): Run =>
  new Run({
    ...Schema.decodeUnknownSync(Run)({
      id: "run-1",
      project_name: "main",
      user: "admin",
      submitted_at: new Date(options.submittedAt ?? T0).toISOString(),
      last_processed_at: new Date(options.submittedAt ?? T0).toISOString(),
      status: options.status ?? "submitted",
      termination_reason: options.reason ?? null,
      run_spec: {
        run_name: "train",
        repo_id: "repo-1",
        repo_data: { repo_type: "virtual" },
        configuration: { type: "task", commands: ["python train.py"] }
      }
    }),
    jobs
  })
