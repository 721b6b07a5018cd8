/**
 * What the jobs of a multi-node replica learn about each other: the addresses of all its nodes
 * by rank (the master first) and the GPUs per node. A node's runner gets its job only once every
 * node of the replica has its instance (upstream: the runner waits until all jobs of the replica
 * have provisioning data), so that the addresses are all known when the jobs start.
 */
import { Duration, Effect, Schedule } from "effect"
import { type JobProvisioningData, type JobSpec, latestSubmission } from "../domain/Job.ts"
import { gpuCount } from "../domain/Offer.ts"
import type { Run } from "../domain/Run.ts"
import { isJobStatusFinished } from "../domain/Status.ts"
import type { StateStoreService } from "../ports/StateStore.ts"
import { decodeRow } from "./RunRecord.ts"

/** The runner's `cluster_info`. */
export interface ClusterInfoBody {
  readonly jobIps: ReadonlyArray<string>
  readonly masterJobIp: string
  readonly gpusPerJob: number
}

/** The address the other nodes reach an instance at. */
export const nodeAddress = (pd: JobProvisioningData): string => pd.internalIp ?? pd.hostname ?? ""

/** A single node's cluster: itself. */
export const singleNode = (pd: JobProvisioningData): ClusterInfoBody => ({
  jobIps: [nodeAddress(pd)],
  masterJobIp: nodeAddress(pd),
  gpusPerJob: gpuCount(pd.instanceType.resources)
})

/** The replica's nodes, by rank, when every one of them has its instance; otherwise why not yet. */
export const clusterOf = (run: Run, spec: JobSpec): ClusterInfoBody | { readonly waiting: string } | { readonly failed: string } => {
  const ranks = run.jobs.filter((j) => j.jobSpec.replicaNum === spec.replicaNum).sort((a, b) => a.jobSpec.jobNum - b.jobSpec.jobNum)
  const pds: Array<JobProvisioningData> = []
  for (const job of ranks) {
    const sub = latestSubmission(job)
    if (sub === undefined) return { waiting: `node ${job.jobSpec.jobNum} has no submission` }
    if (isJobStatusFinished(sub.status)) return { failed: `node ${job.jobSpec.jobNum} ended (${sub.status}) before the cluster started` }
    if (sub.jobProvisioningData === undefined) return { waiting: `node ${job.jobSpec.jobNum} has no instance yet` }
    pds.push(sub.jobProvisioningData)
  }
  const jobIps = pds.map(nodeAddress)
  return { jobIps, masterJobIp: jobIps[0], gpusPerJob: gpuCount(pds[0].instanceType.resources) }
}

/**
 * Waits until every node of the job's replica has an instance (reading the run as stored) and
 * answers the cluster; fails when a node ended first or the wait outlasts `timeoutMs`.
 */
export const waitForCluster = (store: StateStoreService, run: Run, spec: JobSpec, timeoutMs: number): Effect.Effect<ClusterInfoBody, Error> =>
  Effect.gen(function* () {
    const first = clusterOf(run, spec)
    if ("jobIps" in first) return first
    return yield* store.runs.get(run.id).pipe(
      Effect.flatMap(decodeRow),
      Effect.mapError((e) => new Error(`cannot read run ${run.id}: ${e.message ?? e.reason}`)),
      Effect.flatMap(({ record }) => {
        const c = clusterOf(record.run, spec)
        return "jobIps" in c ? Effect.succeed(c) : Effect.fail("failed" in c ? new Error(c.failed) : new Error(c.waiting))
      }),
      Effect.retry({ schedule: Schedule.spaced(Duration.millis(100)), while: (e) => !e.message.includes("ended (") }),
      Effect.timeoutFail({ duration: Duration.millis(timeoutMs), onTimeout: () => new Error(`the nodes of the replica did not all get an instance within ${Math.round(timeoutMs / 1000)}s`) })
    )
  })
