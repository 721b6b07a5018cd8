/**
 * Running workflows from the client: the server plans the workflow with its providers
 * (`workflows/get_plan`), then each planned job runs as a task run on the same engine — a job
 * after the jobs it depends on (independent ones at the same time), a job whose dependency
 * failed not at all (failed, naming it), a job with a `master` once its master runs (with the
 * master's address in `DSTACK_MASTER_HOST`). A dependency that already ran successfully with the
 * same cache key (workflow, parameters, variables, provider and version, code, dependencies) is
 * not run again unless `noCache`.
 */
import { Cause, Effect, Exit, Option } from "effect"
import type { RepoCode, TaskConfiguration, WorkflowsApi } from "@dstack-ts/core/wire"
import type { Run } from "./Run.ts"

export type WorkflowPlan = typeof WorkflowsApi.WorkflowPlanResponse.Type
export type PlannedJob = WorkflowsApi.PlannedJobWire

/** The environment variables that mark a run as a workflow job (the cache reads them back). */
export const WORKFLOW_ENV = {
  workflow: "DSTACK_WORKFLOW",
  job: "DSTACK_WORKFLOW_JOB",
  cacheKey: "DSTACK_WORKFLOW_CACHE_KEY",
  master: "DSTACK_MASTER_HOST"
} as const

export interface WorkflowPlanOptions {
  /** The workflow files by path (`.dstack/workflows.yaml` …), as `readWorkflowTexts` gives them. */
  readonly files: Readonly<Record<string, string>>
  /** Variable values overriding the defaults of `.dstack/variables.yaml`. */
  readonly variables?: Readonly<Record<string, string>> | undefined
  /** The code the jobs get; its hash is part of the cache keys. */
  readonly repo?: RepoCode | undefined
  /** The name of the run (the workflow's job); its dependencies' runs are named after it. */
  readonly runName?: string | undefined
}

/** What happens to each job while a workflow runs. */
export type WorkflowEvent =
  | { readonly type: "cached"; readonly job: PlannedJob; readonly runName: string }
  | { readonly type: "submitted"; readonly job: PlannedJob; readonly run: Run }
  | { readonly type: "finished"; readonly job: PlannedJob; readonly run: Run }
  | { readonly type: "skipped"; readonly job: PlannedJob; readonly reason: string }

export interface WorkflowRunOptions extends WorkflowPlanOptions {
  /** Run every job, even one a successful earlier run already did. */
  readonly noCache?: boolean | undefined
  readonly onEvent?: ((event: WorkflowEvent) => void) | undefined
  /** Each job's log bytes as they come; without it jobs are polled until they end. */
  readonly onLog?: ((job: PlannedJob, chunk: Uint8Array) => void) | undefined
}

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
  /** done when every job is done or cached. */
  readonly status: "done" | "failed"
  readonly jobs: ReadonlyArray<WorkflowJobResult>
  /** The run of the workflow itself (the last job). */
  readonly runName?: string
}

/** What the workflow runner needs from the client. */
export interface WorkflowOps {
  readonly getPlan: (request: typeof WorkflowsApi.WorkflowPlanRequest.Type) => Effect.Effect<WorkflowPlan, unknown>
  readonly submit: (configuration: TaskConfiguration, runName: string, repo: RepoCode | undefined) => Promise<Run>
  readonly listRuns: () => Promise<ReadonlyArray<Run>>
}

/** A planned job's task configuration with the variables that mark it as a workflow job. */
export const jobConfiguration = (job: PlannedJob, extra: Readonly<Record<string, string>> = {}): TaskConfiguration => ({
  ...job.configuration,
  env: {
    ...(job.configuration.env ?? {}),
    [WORKFLOW_ENV.workflow]: job.workflow,
    [WORKFLOW_ENV.job]: job.id,
    [WORKFLOW_ENV.cacheKey]: job.cacheKey,
    ...extra
  }
})

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** A run name from a prefix and a job id, inside the 41 characters a run name may have. */
export const jobRunName = (prefix: string, id: string, workflow: string): string => {
  const name = id === workflow ? prefix : `${prefix}-${id}`
  return name.slice(0, 41).replace(/-+$/, "")
}

const randomSuffix = () => Math.random().toString(36).slice(2, 6).padEnd(4, "0")

/** The reason a run did not end done, from its entity. */
const whyNotDone = (run: Run): string => {
  const entity = run.entity
  const job = entity.jobs[0]
  const sub = job?.jobSubmissions[job.jobSubmissions.length - 1]
  return [entity.terminationReason, sub?.terminationReason, sub?.exitStatus !== undefined && sub?.exitStatus !== null ? `exit status ${sub.exitStatus}` : undefined, sub?.terminationReasonMessage]
    .filter((x) => x !== undefined && x !== null && x !== "")
    .join(", ")
}

/** Plans a workflow on the server; rejects with the server's error (every problem of the files). */
export const plan = async (ops: WorkflowOps, workflow: string, options: WorkflowPlanOptions): Promise<WorkflowPlan> => {
  const exit = await Effect.runPromiseExit(ops.getPlan({
    workflow,
    files: options.files,
    variables: options.variables ?? {},
    ...(options.repo === undefined ? {} : { codeHash: options.repo.codeHash }),
    ...(options.runName === undefined ? {} : { runName: options.runName })
  }))
  if (Exit.isSuccess(exit)) return exit.value
  const failure = Cause.failureOption(exit.cause)
  throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
}

/**
 * The jobs of a plan a successful earlier run already did, by job id → that run's name. The
 * workflow's own job (the last) always runs; so does every job after one that is not cached.
 */
export const cachedJobs = async (ops: WorkflowOps, workflowPlan: WorkflowPlan): Promise<ReadonlyMap<string, string>> => {
  const byKey = new Map<string, string>()
  if (workflowPlan.jobs.length > 1) {
    // Newest first: the latest successful run of a key is the one reused.
    for (const run of await ops.listRuns()) {
      const key = (run.entity.runSpec.configuration.env ?? {})[WORKFLOW_ENV.cacheKey]
      if (run.status === "done" && typeof key === "string" && !byKey.has(key)) byKey.set(key, run.name)
    }
  }
  const target = workflowPlan.jobs[workflowPlan.jobs.length - 1]?.id
  const hits = new Map<string, string>()
  for (const job of workflowPlan.jobs) {
    const hit = byKey.get(job.cacheKey)
    if (job.id !== target && hit !== undefined) hits.set(job.id, hit)
  }
  return hits
}

/** Runs a planned workflow: see the module comment. */
export const runPlan = async (
  ops: WorkflowOps,
  workflowPlan: WorkflowPlan,
  options: WorkflowRunOptions & { readonly cached?: ReadonlyMap<string, string> }
): Promise<WorkflowRunResult> => {
  const prefix = options.runName ?? `${workflowPlan.workflow.slice(0, 30)}-${randomSuffix()}`
  const cached = options.noCache === true ? new Map<string, string>() : options.cached ?? (await cachedJobs(ops, workflowPlan))
  const started = new Map<string, Promise<Run | undefined>>()
  const results = new Map<string, Promise<WorkflowJobResult>>()
  const byId = new Map(workflowPlan.jobs.map((j) => [j.id, j]))

  const follow = async (job: PlannedJob, run: Run): Promise<Run> => {
    if (options.onLog !== undefined) {
      for await (const chunk of run.logs()) options.onLog(job, chunk)
    }
    await run.refresh()
    while (!run.finished) {
      await sleep(250)
      await run.refresh()
    }
    return run
  }

  const start = (job: PlannedJob): Promise<WorkflowJobResult> => {
    const existing = results.get(job.id)
    if (existing !== undefined) return existing
    let markStarted: (run: Run | undefined) => void = () => {}
    started.set(job.id, new Promise((resolve) => (markStarted = resolve)))
    let submitted: Run | undefined
    const result = (async (): Promise<WorkflowJobResult> => {
      const runName = jobRunName(prefix, job.id, workflowPlan.workflow)
      try {
        const deps = await Promise.all(job.dependsOn.map((d) => start(byId.get(d)!)))
        const failed = deps.find((d) => d.status !== "done" && d.status !== "cached")
        if (failed !== undefined) {
          const reason = `dependency ${failed.id} ${failed.status === "terminated" ? "was terminated" : "failed"}${failed.reason ? ` (${failed.reason})` : ""}`
          options.onEvent?.({ type: "skipped", job, reason })
          return { id: job.id, workflow: job.workflow, status: "failed", reason }
        }
        const hit = cached.get(job.id)
        if (hit !== undefined) {
          options.onEvent?.({ type: "cached", job, runName: hit })
          return { id: job.id, workflow: job.workflow, runName: hit, status: "cached" }
        }
        const env: Record<string, string> = {}
        if (job.master !== undefined) {
          start(byId.get(job.master)!)
          const master = await started.get(job.master)!
          if (master === undefined) {
            const reason = `its master ${job.master} did not start`
            options.onEvent?.({ type: "skipped", job, reason })
            return { id: job.id, workflow: job.workflow, status: "failed", reason }
          }
          const sub = master.entity.jobs[0]?.jobSubmissions.at(-1)
          env[WORKFLOW_ENV.master] = sub?.jobProvisioningData?.hostname ?? ""
        }
        const run = await ops.submit(jobConfiguration(job, env), runName, options.repo)
        submitted = run
        options.onEvent?.({ type: "submitted", job, run })
        // Jobs that name this one their master wait until it runs (or ends).
        void (async () => {
          while (run.status !== "running" && !run.finished) {
            await sleep(200)
            await run.refresh().catch(() => undefined)
          }
          markStarted(run.status === "running" || run.status === "done" ? run : undefined)
        })()
        await follow(job, run)
        options.onEvent?.({ type: "finished", job, run })
        const status = run.status === "done" ? "done" : run.status === "terminated" ? "terminated" : "failed"
        const reason = status === "done" ? undefined : whyNotDone(run)
        return { id: job.id, workflow: job.workflow, runName: run.name, status, ...(reason ? { reason } : {}) }
      } finally {
        // A master that ended before its watcher saw it running still gives its address.
        const ran = submitted !== undefined && submitted.entity.jobs[0]?.jobSubmissions.at(-1)?.jobProvisioningData != null
        markStarted(ran ? submitted : undefined)
      }
    })()
    results.set(job.id, result)
    return result
  }

  const all = await Promise.all(workflowPlan.jobs.map(start))
  const last = all[all.length - 1]
  return {
    workflow: workflowPlan.workflow,
    status: all.every((r) => r.status === "done" || r.status === "cached") ? "done" : "failed",
    jobs: all,
    ...(last?.runName === undefined ? {} : { runName: last.runName })
  }
}
