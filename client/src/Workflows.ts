/**
 * Workflows from the client. The server plans a workflow with its providers
 * (`workflows/get_plan`) and runs it (`workflows/submit`): its DAG runs on the server — a job
 * after the jobs it depends on, with their artifacts, a job whose dependency failed not at all
 * (failed, naming it), a dependency an earlier successful run already did reused (cached) unless
 * `noCache`. The client only follows: `follow` reads the workflow run until it ends and streams
 * each job's log as it runs; a client that goes away leaves the workflow running.
 */
import { Cause, Effect, Exit, Option } from "effect"
import type { RepoCode, WorkflowsApi } from "@dstack-ts/core/wire"
import type { Run } from "./Run.ts"

export type WorkflowPlan = typeof WorkflowsApi.WorkflowPlanResponse.Type
export type PlannedJob = WorkflowsApi.PlannedJobWire
/** A workflow run as the server keeps it: each job with its status and run. */
export type WorkflowRun = WorkflowsApi.WorkflowRunWire
export type WorkflowJob = WorkflowsApi.WorkflowJobWire

export interface WorkflowPlanOptions {
  /** The workflow files by path (`.dstack/workflows.yaml` …), as `readWorkflowTexts` gives them. */
  readonly files: Readonly<Record<string, string>>
  /** Variable values overriding the defaults of `.dstack/variables.yaml`. */
  readonly variables?: Readonly<Record<string, string>> | undefined
  /** The code the jobs get (already uploaded); its hash is part of the cache keys. */
  readonly repo?: RepoCode | undefined
  /** The name of the workflow run; its jobs' runs are named after it. */
  readonly runName?: string | undefined
}

export interface WorkflowSubmitOptions extends WorkflowPlanOptions {
  /** Run every job, even one a successful earlier run already did. */
  readonly noCache?: boolean | undefined
}

/** What happens to each job while a workflow runs, as the client sees it. */
export type WorkflowEvent =
  | { readonly type: "cached"; readonly job: WorkflowJob; readonly runName: string }
  | { readonly type: "submitted"; readonly job: WorkflowJob; readonly runName: string }
  | { readonly type: "finished"; readonly job: WorkflowJob; readonly runName: string }
  | { readonly type: "skipped"; readonly job: WorkflowJob; readonly reason: string }

export interface WorkflowFollowOptions {
  readonly onEvent?: ((event: WorkflowEvent) => void) | undefined
  /**
   * Each job's log bytes as they come; of a multi-node job (torchrun's), each node's, with its
   * rank in `node` (absent for a job of one node).
   */
  readonly onLog?: ((job: WorkflowJob, chunk: Uint8Array, node?: number) => void) | undefined
}

export interface WorkflowRunOptions extends WorkflowSubmitOptions, WorkflowFollowOptions {}

/** How one job of a workflow run ended. */
export interface WorkflowJobResult {
  readonly id: string
  readonly workflow: string
  /** The run that carried it out (an earlier one when cached); absent when it never ran. */
  readonly runName?: string
  readonly status: "done" | "failed" | "terminated" | "cached"
  /** Why it did not end done: the run's reason, or the dependency that failed. */
  readonly reason?: string
}

export interface WorkflowRunResult {
  readonly workflow: string
  /** The workflow run's name (`dstack stop NAME` stops it). */
  readonly name: string
  /** done when every job is done or cached. */
  readonly status: "done" | "failed" | "terminated"
  readonly jobs: ReadonlyArray<WorkflowJobResult>
  /** The run of the workflow itself (the last job). */
  readonly runName?: string
}

/** What the workflow client needs from the client. */
export interface WorkflowOps {
  readonly getPlan: (request: typeof WorkflowsApi.WorkflowPlanRequest.Type) => Effect.Effect<WorkflowPlan, unknown>
  readonly submit: (request: typeof WorkflowsApi.SubmitWorkflowRequest.Type) => Effect.Effect<WorkflowRun, unknown>
  readonly get: (name: string) => Effect.Effect<WorkflowRun, unknown>
  readonly run: (runName: string) => Promise<Run | undefined>
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

const runPromise = async <A>(effect: Effect.Effect<A, unknown>): Promise<A> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) return exit.value
  const failure = Cause.failureOption(exit.cause)
  throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
}

/** Plans a workflow on the server; rejects with the server's error (every problem of the files). */
export const plan = (ops: WorkflowOps, workflow: string, options: WorkflowPlanOptions): Promise<WorkflowPlan> =>
  runPromise(ops.getPlan({
    workflow,
    files: options.files,
    variables: options.variables ?? {},
    ...(options.repo === undefined ? {} : { codeHash: options.repo.codeHash }),
    ...(options.runName === undefined ? {} : { runName: options.runName })
  }))

/** Submits a workflow: the server plans it and runs its DAG. Resolves with the stored workflow run. */
export const submit = (ops: WorkflowOps, workflow: string, options: WorkflowSubmitOptions): Promise<WorkflowRun> =>
  runPromise(ops.submit({
    workflow,
    files: options.files,
    variables: options.variables ?? {},
    noCache: options.noCache === true,
    ...(options.runName === undefined ? {} : { runName: options.runName }),
    ...(options.repo === undefined
      ? {}
      : { repo: { repoId: options.repo.repoId, repoData: options.repo.repoData, repoCodeHash: options.repo.codeHash } })
  }))

const FINAL: ReadonlySet<string> = new Set(["done", "failed", "terminated", "cached"])

/**
 * Follows a workflow run until it ends: each job's log while it runs, an event per change.
 * Resolves with how every job ended.
 */
export const follow = async (ops: WorkflowOps, submitted: WorkflowRun, options: WorkflowFollowOptions = {}): Promise<WorkflowRunResult> => {
  let record = submitted
  const seen = new Map<string, string>()
  const following = new Map<string, Promise<void>>()
  const followLogs = async (job: WorkflowJob, runName: string) => {
    if (options.onLog === undefined) return
    const onLog = options.onLog
    const run = await ops.run(runName)
    if (run === undefined) return
    const nodes = job.configuration.nodes
    if (nodes <= 1) {
      for await (const chunk of run.logs()) onLog(job, chunk)
      return
    }
    await Promise.all(Array.from({ length: nodes }, async (_, node) => {
      for await (const chunk of run.logs({ jobNum: node })) onLog(job, chunk, node)
    }))
  }
  for (;;) {
    for (const job of record.jobs) {
      const before = seen.get(job.id)
      if (before === job.status) continue
      seen.set(job.id, job.status)
      if (job.status === "cached") options.onEvent?.({ type: "cached", job, runName: job.runName ?? "" })
      else if ((job.status === "submitted" || job.status === "running") && job.runName !== undefined && !following.has(job.id)) {
        options.onEvent?.({ type: "submitted", job, runName: job.runName })
        following.set(job.id, followLogs(job, job.runName))
      } else if (FINAL.has(job.status)) {
        if (job.runName !== undefined && !following.has(job.id)) {
          // Started and ended between two reads: its log is read whole.
          options.onEvent?.({ type: "submitted", job, runName: job.runName })
          following.set(job.id, followLogs(job, job.runName))
        }
        const logs = following.get(job.id)
        if (logs !== undefined) {
          await logs
          options.onEvent?.({ type: "finished", job, runName: job.runName! })
        } else {
          options.onEvent?.({ type: "skipped", job, reason: job.reason ?? job.status })
        }
      }
    }
    if (record.status !== "running") break
    await sleep(250)
    record = await runPromise(ops.get(record.name))
  }
  await Promise.all(following.values())
  const jobs: Array<WorkflowJobResult> = record.jobs.map((j) => ({
    id: j.id,
    workflow: j.workflow,
    ...(j.runName === undefined ? {} : { runName: j.runName }),
    status: j.status === "done" || j.status === "cached" || j.status === "terminated" ? j.status : "failed",
    ...(j.reason === undefined || j.reason === "" ? {} : { reason: j.reason })
  }))
  const last = jobs[jobs.length - 1]
  return {
    workflow: record.workflow,
    name: record.name,
    status: record.status === "done" || record.status === "terminated" ? record.status : "failed",
    jobs,
    ...(last?.runName === undefined ? {} : { runName: last.runName })
  }
}
