/**
 * Workflow runs on the server: `workflows/submit` plans the workflow and stores a workflow run
 * (its jobs, each `waiting`); a driver fiber then runs the DAG — a job is submitted as a task
 * run once every job it depends on is done or cached (with their artifacts handed to it), a job
 * whose dependency failed is failed with a reason naming it, a stop stops every job. The client
 * may go away: the workflow goes on. The record is a JSON document in the blob store
 * (`workflows/<project>/<name>.json`), written only by its driver; a stop request is a second
 * document the driver reads. Cache hits are found through `workflow-cache/<project>/<key>`,
 * written when a job ends done (WorkflowCache.ts). A server that starts goes on with the
 * workflow runs that were running (`resumeWorkflowRuns`).
 */
import { Duration, Effect, Either, Option, Schema, Stream } from "effect"
import { JobSpec } from "../domain/Job.ts"
import { RunSpec } from "../domain/Run.ts"
import { isRunStatusFinished } from "../domain/Status.ts"
import * as Api from "../api/workflows.ts"
import { Engine } from "../engine/Engine.ts"
import { loadRunByName, modifyRun } from "../engine/RunRecord.ts"
import { BlobStore, type BlobStoreError } from "../ports/BlobStore.ts"
import { StateStore } from "../ports/StateStore.ts"
import { submit as submitRun } from "../server/routes/runs.ts"
import { artifactKeys } from "./Artifacts.ts"
import { readCacheEntry, writeCacheEntry } from "./WorkflowCache.ts"
import type { WorkflowPlan } from "./WorkflowPlan.ts"
import { programOutputJobs, tail } from "./ProviderPrograms.ts"
import { repoIdForUrl } from "../repos/RemoteRepo.ts"

/** The environment variables that mark a run as a workflow job. */
export const WORKFLOW_ENV = {
  workflow: "DSTACK_WORKFLOW",
  job: "DSTACK_WORKFLOW_JOB",
  cacheKey: "DSTACK_WORKFLOW_CACHE_KEY",
  run: "DSTACK_WORKFLOW_RUN",
  master: "DSTACK_MASTER_HOST"
} as const

type WorkflowRun = Api.WorkflowRunWire
type WorkflowJob = Api.WorkflowJobWire

const recordKey = (project: string, name: string) => `workflows/${project}/${name}.json`
const stopKey = (project: string, name: string) => `workflows/${project}/${name}.stop`

const RunJson = Schema.parseJson(Api.WorkflowRunWire)

/** A run name from the workflow run's name and a job id, inside the 41 characters a run name may have. */
export const jobRunName = (prefix: string, id: string, workflow: string): string => {
  const name = id === workflow ? prefix : `${prefix}-${id.replace(/[^a-z0-9-]/g, "-")}`
  return name.slice(0, 41).replace(/-+$/, "")
}

const FINAL_JOB: ReadonlySet<string> = new Set(["done", "failed", "terminated", "cached"])
const ACTIVE_JOB: ReadonlySet<string> = new Set(["submitted", "running"])

const readJson = <A>(blobs: BlobStore, key: string, schema: Schema.Schema<A, string>): Effect.Effect<Option.Option<A>, BlobStoreError | Error> =>
  blobs.getBytes(key).pipe(
    Effect.flatMap((bytes) => Schema.decodeUnknown(schema)(new TextDecoder().decode(bytes)).pipe(Effect.mapError((e) => new Error(`${key} is unreadable: ${e.message}`)))),
    Effect.map(Option.some),
    Effect.catchIf((e): e is BlobStoreError => "_tag" in e && e._tag === "BlobStoreError" && (e as BlobStoreError).reason === "NotFound", () => Effect.succeedNone)
  )

/** A workflow run by name; `None` when there is none. */
export const getWorkflowRun = (project: string, name: string) =>
  Effect.flatMap(BlobStore, (blobs) => readJson(blobs, recordKey(project, name), RunJson))

const save = (blobs: BlobStore, project: string, record: WorkflowRun) =>
  blobs.put(recordKey(project, record.name), Schema.encodeSync(RunJson)(record), { contentType: "application/json" })

/** The workflow runs of a project, newest first. */
export const listWorkflowRuns = (project: string) =>
  Effect.gen(function* () {
    const blobs = yield* BlobStore
    const keys = yield* Stream.runCollect(blobs.list(`workflows/${project}/`))
    const out: Array<WorkflowRun> = []
    for (const key of keys) {
      if (!key.endsWith(".json")) continue
      const found = yield* readJson(blobs, key, RunJson)
      if (Option.isSome(found)) out.push(found.value)
    }
    return out.sort((a, b) => b.submittedAt.localeCompare(a.submittedAt))
  })

/** Asks the driver of a workflow run to stop every job. */
export const requestStop = (project: string, name: string, abort: boolean) =>
  Effect.flatMap(BlobStore, (blobs) => blobs.put(stopKey(project, name), JSON.stringify({ abort }), { contentType: "application/json" }))

const randomSuffix = () => Math.random().toString(36).slice(2, 6).padEnd(4, "0")

/**
 * Stores a new workflow run for a plan and starts its driver (a daemon fiber with the server's
 * services). Fails when a workflow run of that name is still running.
 */
export const startWorkflowRun = (
  project: string,
  user: string,
  plan: WorkflowPlan,
  request: Api.SubmitWorkflowRequest
) =>
  Effect.gen(function* () {
    const blobs = yield* BlobStore
    const name = request.runName ?? `${plan.workflow.slice(0, 30)}-${randomSuffix()}`
    const existing = yield* getWorkflowRun(project, name)
    if (Option.isSome(existing) && existing.value.status === "running") {
      return yield* Effect.fail(new Error(`Workflow run ${name} is still running; stop it first (dstack stop ${name}) or pick another name`))
    }
    yield* blobs.delete(stopKey(project, name))
    // Cache hits are decided now, so that the answer (and the plan the CLI prints) says which
    // jobs an earlier run already did. The workflow asked for always runs.
    const target = plan.jobs[plan.jobs.length - 1]?.id
    const hits = new Map<string, { runName: string; runId: string; jobName: string }>()
    if (!request.noCache) {
      for (const job of plan.jobs) {
        if (job.id === target || job.program !== undefined) continue
        const hit = yield* cacheHit(blobs, project, job)
        if (Option.isSome(hit)) hits.set(job.id, hit.value)
      }
    }
    const record: WorkflowRun = {
      name,
      workflow: plan.workflow,
      user,
      status: "running",
      submittedAt: new Date().toISOString(),
      variables: plan.variables,
      noCache: request.noCache,
      stopRequested: false,
      ...(request.repo === undefined ? {} : { repo: request.repo }),
      jobs: plan.jobs.map((j) => ({
        id: j.id,
        workflow: j.workflow,
        provider: j.provider,
        configuration: j.configuration,
        dependsOn: j.dependsOn,
        ...(j.master === undefined ? {} : { master: j.master }),
        artifacts: j.artifacts,
        inputs: j.inputs,
        cacheKey: j.cacheKey,
        ...(j.program === undefined ? {} : { program: j.program }),
        ...(j.code === undefined ? {} : { code: j.code }),
        ...(hits.has(j.id) ? { status: "cached" as const, ...hits.get(j.id)! } : { status: "waiting" as const })
      }))
    }
    yield* save(blobs, project, record)
    yield* startDriver(project, name)
    return record
  })

/** The workflow runs this process drives, `project/name`: one driver each. */
const driving = new Set<string>()

/** Starts the driver of a stored workflow run (a daemon fiber with the server's services) unless this process already drives it. */
const startDriver = (project: string, name: string) =>
  Effect.gen(function* () {
    const id = `${project}/${name}`
    if (driving.has(id)) return
    driving.add(id)
    const context = yield* Effect.context<BlobStore | StateStore | Engine>()
    yield* drive(project, name).pipe(
      Effect.catchAllCause((cause) => Effect.logError(`workflow run ${name} of project ${project}: its driver failed`, cause)),
      Effect.ensuring(Effect.sync(() => driving.delete(id))),
      Effect.provide(context),
      Effect.forkDaemon
    )
  })

/**
 * Goes on with every workflow run that was running when the server stopped: a driver for each
 * (called when the server starts). Jobs already submitted are followed, not submitted again;
 * a job whose run was submitted but not yet recorded is found by its run's name.
 */
export const resumeWorkflowRuns = Effect.gen(function* () {
  const blobs = yield* BlobStore
  const keys = yield* Stream.runCollect(blobs.list("workflows/"))
  for (const key of keys) {
    const match = /^workflows\/([^/]+)\/(.+)\.json$/.exec(key)
    if (match === null) continue
    const found = yield* readJson(blobs, key, RunJson).pipe(
      Effect.tapError((e) => Effect.logWarning(`workflow run ${key} cannot be resumed: ${e.message}`)),
      Effect.orElseSucceed(() => Option.none())
    )
    if (Option.isSome(found) && found.value.status === "running") {
      yield* Effect.logInfo(`resuming workflow run ${found.value.name} of project ${match[1]}`)
      yield* startDriver(match[1], found.value.name)
    }
  }
}).pipe(Effect.catchAll((e) => Effect.logError(`cannot list the workflow runs to resume: ${e.message}`)))

/**
 * The run of a waiting job that was submitted before the driver could record it (the server
 * stopped in between): a run of the job's name submitted since the workflow run was.
 */
const submittedUnrecorded = (project: string, record: WorkflowRun, job: WorkflowJob) =>
  loadRunByName(project, jobRunName(record.name, job.id, record.workflow)).pipe(
    Effect.map(({ row, record: stored }) =>
      stored.run.submittedAt.getTime() >= new Date(record.submittedAt).getTime()
        ? Option.some({ runName: row.name, runId: row.id, jobName: stored.run.jobs[0]?.jobSpec.jobName ?? "" })
        : Option.none()
    ),
    Effect.orElseSucceed(() => Option.none())
  )

/**
 * Why a finished run did not end done, from its latest job submission: of a multi-node run, the
 * first node that failed on its own (named), else the master's.
 */
const whyNotDone = (run: { readonly terminationReason?: string | undefined; readonly jobs: ReadonlyArray<{ readonly jobSubmissions: ReadonlyArray<{ readonly terminationReason?: string | undefined; readonly exitStatus?: number | null | undefined; readonly terminationReasonMessage?: string | undefined }> }> }) => {
  const latest = run.jobs.map((j) => j.jobSubmissions.at(-1))
  const rank = run.jobs.length > 1 ? latest.findIndex((s) => s !== undefined && s.exitStatus !== undefined && s.exitStatus !== null && s.exitStatus !== 0) : -1
  const sub = latest[Math.max(rank, 0)]
  return [rank > 0 ? `node ${rank}` : undefined, run.terminationReason, sub?.terminationReason, sub?.exitStatus !== undefined && sub?.exitStatus !== null ? `exit status ${sub.exitStatus}` : undefined, sub?.terminationReasonMessage]
    .filter((x) => x !== undefined && x !== null && x !== "")
    .join(", ")
}

const POLL = Duration.millis(250)

/** Runs the DAG of a stored workflow run until every job has ended. */
const drive = (project: string, name: string) =>
  Effect.gen(function* () {
    const blobs = yield* BlobStore
    const engine = yield* Engine
    let record = (yield* getWorkflowRun(project, name)).pipe(Option.getOrThrow)
    const byId = () => new Map(record.jobs.map((j) => [j.id, j]))
    const update = (id: string, patch: Partial<WorkflowJob>) => {
      record = { ...record, jobs: record.jobs.map((j) => (j.id === id ? { ...j, ...patch } : j)) }
    }
    let stopHandled = false
    while (record.status === "running") {
      const before = JSON.stringify(record)
      const stop = yield* readJson(blobs, stopKey(project, name), Schema.parseJson(Schema.Struct({ abort: Schema.Boolean })))
      if (Option.isSome(stop) && !stopHandled) {
        stopHandled = true
        record = { ...record, stopRequested: true }
        for (const job of record.jobs) {
          if (ACTIVE_JOB.has(job.status) && job.runName !== undefined) {
            const loaded = yield* loadRunByName(project, job.runName).pipe(Effect.option)
            if (Option.isSome(loaded) && !isRunStatusFinished(loaded.value.record.run.status)) {
              yield* modifyRun(loaded.value.row.id, (r) => ({ ...r, stopRequest: { abort: stop.value.abort || (r.stopRequest?.abort ?? false) } }))
              yield* engine.wake(loaded.value.row.id)
            }
          } else if (job.status === "waiting") {
            update(job.id, { status: "terminated", reason: "the workflow run was stopped before the job started" })
          }
        }
      }
      for (const { id } of record.jobs) {
        const jobs = byId()
        // Read afresh: a provider program's jobs, added below, change the jobs that wait for it.
        const job = jobs.get(id)!
        if (job.status === "waiting") {
          const deps = job.dependsOn.map((d) => jobs.get(d)!)
          const failed = deps.find((d) => d.status === "failed" || d.status === "terminated")
          if (failed !== undefined) {
            update(job.id, { status: "failed", reason: `dependency ${failed.id} ${failed.status === "terminated" ? "was terminated" : "failed"}${failed.reason ? ` (${failed.reason})` : ""}` })
            continue
          }
          if (!deps.every((d) => d.status === "done" || d.status === "cached")) continue
          const env: Record<string, string> = {}
          if (job.master !== undefined) {
            const master = jobs.get(job.master)!
            if (master.status === "failed" || master.status === "terminated") {
              update(job.id, { status: "failed", reason: `its master ${master.id} did not run` })
              continue
            }
            const host = master.runName === undefined ? undefined : yield* hostOf(project, master.runName)
            if (host === undefined) continue
            env[WORKFLOW_ENV.master] = host
          }
          const adopted = yield* submittedUnrecorded(project, record, job)
          if (Option.isSome(adopted)) {
            update(job.id, { status: "submitted", ...adopted.value })
            continue
          }
          const submitted = yield* submitJob(project, record, job, env).pipe(Effect.either)
          if (submitted._tag === "Left") {
            update(job.id, { status: "failed", reason: `cannot submit its run: ${submitted.left.message}` })
          } else {
            update(job.id, { status: "submitted", ...submitted.right })
          }
        } else if (ACTIVE_JOB.has(job.status) && job.runName !== undefined) {
          const loaded = yield* loadRunByName(project, job.runName).pipe(Effect.option)
          if (Option.isNone(loaded)) {
            update(job.id, { status: "failed", reason: `its run ${job.runName} is gone` })
            continue
          }
          const run = loaded.value.record.run
          if (job.program !== undefined && isRunStatusFinished(run.status)) {
            const expanded = yield* expandProgram(project, record, job, run)
            record = expanded
            continue
          }
          if (run.status === "done") {
            update(job.id, { status: "done" })
            yield* writeCacheEntry(blobs, project, job.cacheKey, { runName: job.runName, runId: run.id, jobName: job.jobName ?? "" })
          } else if (run.status === "terminated") {
            update(job.id, { status: "terminated", reason: whyNotDone(run) })
          } else if (run.status === "failed") {
            update(job.id, { status: "failed", reason: whyNotDone(run) })
          } else if (run.status === "running" && job.status === "submitted") {
            update(job.id, { status: "running" })
          }
        }
      }
      if (record.jobs.every((j) => FINAL_JOB.has(j.status))) {
        const status = record.jobs.every((j) => j.status === "done" || j.status === "cached")
          ? "done"
          : record.stopRequested && !record.jobs.some((j) => j.status === "failed") ? "terminated" : "failed"
        record = { ...record, status }
      }
      if (JSON.stringify(record) !== before) yield* save(blobs, project, record)
      if (record.status === "running") yield* Effect.sleep(POLL)
    }
  })

/**
 * A provider program's job has ended: when done, the jobs it printed join the workflow run after
 * it (those found in the cache cached), and the jobs that waited for it now also wait for them;
 * otherwise it failed, with a reason naming the provider, why, and the end of its output.
 */
const expandProgram = (project: string, record: WorkflowRun, job: WorkflowJob, run: { readonly id: string; readonly status: string; readonly terminationReason?: string | undefined; readonly jobs: ReadonlyArray<{ readonly jobSubmissions: ReadonlyArray<{ readonly id: string; readonly terminationReason?: string | undefined; readonly exitStatus?: number | null | undefined; readonly terminationReasonMessage?: string | undefined }> }> }) =>
  Effect.gen(function* () {
    const blobs = yield* BlobStore
    const provider = job.program!.provider
    const patchJob = (patch: Partial<WorkflowJob>): WorkflowRun => ({ ...record, jobs: record.jobs.map((j) => (j.id === job.id ? { ...j, ...patch } : j)) })
    const submission = run.jobs[0]?.jobSubmissions.at(-1)
    const output = submission === undefined ? { stdout: "", all: "" } : yield* readOutput(project, submission.id)
    if (run.status !== "done") {
      const shown = output.all.trim() === "" ? "it printed nothing" : `its output ends:\n${tail(output.all)}`
      return patchJob({
        status: run.status === "terminated" ? "terminated" : "failed",
        reason: `provider ${provider} ${run.status === "terminated" ? "was stopped" : "failed"} (${whyNotDone(run) || run.status}); ${shown}`
      })
    }
    const made = programOutputJobs(job, output.stdout)
    if (Either.isLeft(made)) return patchJob({ status: "failed", reason: made.left })
    const added: Array<WorkflowJob> = []
    for (const planned of made.right) {
      const hit = record.noCache || planned.workflow === record.workflow
        ? Option.none()
        : yield* cacheHit(blobs, project, planned).pipe(Effect.orElseSucceed(() => Option.none()))
      added.push({
        id: planned.id,
        workflow: planned.workflow,
        provider: planned.provider,
        configuration: planned.configuration,
        dependsOn: planned.dependsOn,
        ...(planned.master === undefined ? {} : { master: planned.master }),
        artifacts: planned.artifacts,
        inputs: planned.inputs,
        cacheKey: planned.cacheKey,
        ...(Option.isSome(hit) ? { status: "cached" as const, ...hit.value } : { status: "waiting" as const })
      })
    }
    const newIds = added.map((j) => j.id)
    const jobs: Array<WorkflowJob> = []
    for (const j of record.jobs) {
      if (j.id === job.id) {
        jobs.push({ ...j, status: "done" }, ...added)
      } else {
        jobs.push(j.dependsOn.includes(job.id)
          ? { ...j, dependsOn: [...j.dependsOn, ...newIds], inputs: [...new Set([...j.inputs, ...added.flatMap((a) => [a.id, ...a.inputs])])] }
          : j)
      }
    }
    return { ...record, jobs }
  })

/** A job submission's output: its standard output alone, and everything it printed. */
const readOutput = (project: string, jobSubmissionId: string) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const decoder = new TextDecoder()
    let stdout = ""
    let all = ""
    let nextToken: string | undefined
    do {
      const page = yield* store.logs.poll({ project, jobSubmissionId, ...(nextToken === undefined ? {} : { nextToken }) })
      for (const event of page.events) {
        const text = decoder.decode(event.message)
        if (event.source === "stdout") stdout += text
        if (event.source !== "runner") all += text
      }
      nextToken = page.events.length === 0 ? undefined : page.nextToken
    } while (nextToken !== undefined)
    return { stdout, all }
  })

/** The hostname of a run's job once it has an instance (a master's address), else undefined. */
const hostOf = (project: string, runName: string) =>
  loadRunByName(project, runName).pipe(
    Effect.map(({ record }) => {
      const sub = record.run.jobs[0]?.jobSubmissions.at(-1)
      return record.run.status === "running" || record.run.status === "done" ? sub?.jobProvisioningData?.hostname ?? undefined : undefined
    }),
    Effect.orElseSucceed(() => undefined)
  )

/** A successful earlier run of the same cache key whose run (and artifacts) still exist. */
const cacheHit = (blobs: BlobStore, project: string, job: { readonly cacheKey: string; readonly artifacts: ReadonlyArray<string> }) =>
  Effect.gen(function* () {
    const entry = yield* readCacheEntry(blobs, project, job.cacheKey).pipe(Effect.orElseSucceed(() => Option.none()))
    if (Option.isNone(entry)) return Option.none()
    const { runName, runId, jobName } = entry.value
    const loaded = yield* loadRunByName(project, runName).pipe(Effect.option)
    if (Option.isNone(loaded) || loaded.value.row.id !== runId || loaded.value.record.run.status !== "done") return Option.none()
    if (job.artifacts.length > 0) {
      const kept = yield* blobs.has(artifactKeys(project, runId, jobName).manifest).pipe(Effect.orElseSucceed(() => false))
      if (!kept) return Option.none()
    }
    return Option.some({ runName, runId, jobName })
  })

/** The sha256 of no bytes: the diff of a clean checkout. */
const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/**
 * Another repository's provider program as a run's code: that repository at the commit it was
 * fetched at, with an empty diff (stored as a code blob, which is what makes the runner clone it).
 */
const programRepo = (project: string, code: { readonly repoUrl: string; readonly commit: string }) =>
  Effect.gen(function* () {
    const blobs = yield* BlobStore
    const store = yield* StateStore
    const repoId = repoIdForUrl(code.repoUrl)
    // The repo is registered (as `repos/init` would) unless it is already, credentials and all.
    const known = yield* store.repos.get(project, repoId).pipe(
      Effect.as(true),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(false))
    )
    if (!known) yield* store.repos.upsert({ project, repoId, type: "remote", info: { repo_type: "remote" }, creds: null })
    const blobKey = `codes/${project}/${repoId}/${EMPTY_SHA256}/provider-program`
    yield* blobs.put(blobKey, new Uint8Array(0), { contentType: "application/octet-stream", metadata: { repo_id: repoId } })
    yield* store.codes.put({ project, repoId, hash: EMPTY_SHA256, blobKey, size: 0 })
    return {
      repoId,
      repoData: { repoType: "remote" as const, repoUrl: code.repoUrl, repoHash: code.commit },
      repoCodeHash: EMPTY_SHA256
    }
  })

/** Submits one job as a task run: its configuration marked as a workflow job, its artifacts and its inputs' archives on the job spec. */
const submitJob = (project: string, record: WorkflowRun, job: WorkflowJob, extraEnv: Record<string, string>) =>
  Effect.gen(function* () {
    const jobs = new Map(record.jobs.map((j) => [j.id, j]))
    const inputs = job.inputs
      .map((id) => jobs.get(id)!)
      .filter((j) => j.artifacts.length > 0 && j.runId !== undefined && j.jobName !== undefined)
      .map((j) => artifactKeys(project, j.runId!, j.jobName!).archive)
    const runName = jobRunName(record.name, job.id, record.workflow)
    const repo = job.code === undefined ? record.repo : yield* programRepo(project, job.code)
    const configuration = {
      ...job.configuration,
      env: {
        ...(job.configuration.env ?? {}),
        [WORKFLOW_ENV.workflow]: job.workflow,
        [WORKFLOW_ENV.job]: job.id,
        [WORKFLOW_ENV.cacheKey]: job.cacheKey,
        [WORKFLOW_ENV.run]: record.name,
        ...extraEnv
      }
    }
    const spec = new RunSpec({
      runName,
      repoId: repo?.repoId ?? "virtual",
      repoData: repo?.repoData ?? { repoType: "virtual" as const },
      ...(repo?.repoCodeHash === undefined ? {} : { repoCodeHash: repo.repoCodeHash }),
      configuration
    })
    // Of a multi-node job, the master (node rank 0) keeps the artifacts; every node gets the inputs.
    const patch = (s: JobSpec): JobSpec => new JobSpec({
      ...s,
      ...(job.artifacts.length === 0 || s.jobNum !== 0 ? {} : { artifacts: job.artifacts }),
      ...(inputs.length === 0 ? {} : { artifactInputs: inputs })
    })
    const run = yield* submitRun(project, record.user, spec, false, patch).pipe(
      Effect.mapError((e) => new Error(e.detail.map((d) => d.msg).join("; ") || `status ${e.status}`))
    )
    return { runName: run.runSpec.runName ?? runName, runId: run.id, jobName: run.jobs[0]?.jobSpec.jobName ?? "" }
  })
