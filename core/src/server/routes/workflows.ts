// /api/project/{p}/workflows/*: planning a workflow from the workflow files the client sends,
// with the providers of this server's plugins (get_plan), and running it on the server
// (submit, get, list, stop: the DAG runs here, the client may go away). A bad file, or a
// multi-node job the project could never place, is a 400 listing every problem at its
// file:line:column. /api/project/{p}/artifacts/*: the artifacts a run's jobs kept, listed (each
// file with size and SHA-256) and downloaded as a tar.gz stream.
import { Effect, Option, Schema, Stream } from "effect"
import * as Api from "../../api/workflows.ts"
import { formatConfigurationIssue } from "../../config/ConfigurationError.ts"
import { loadRunByName } from "../../engine/RunRecord.ts"
import { PluginHost } from "../../plugin/PluginHost.ts"
import { BlobStore } from "../../ports/BlobStore.ts"
import { artifactKeys, listRunArtifacts } from "../../workflows/Artifacts.ts"
import { catalogOf, planWorkflow } from "../../workflows/WorkflowPlan.ts"
import { failWith, parseWorkflowFiles } from "../../workflows/WorkflowFiles.ts"
import { placementIssues } from "../../workflows/WorkflowPlacement.ts"
import { resolvePrograms } from "../../workflows/ProviderPrograms.ts"
import { getWorkflowRun, listWorkflowRuns, requestStop, startWorkflowRun } from "../../workflows/WorkflowRuns.ts"
import { ApiError, badRequest, excerpt, fromStateStore, notFound, serverError } from "../ApiError.ts"
import { jsonRoute, rawRoute } from "../Route.ts"

const plan = (project: string, input: Api.WorkflowPlanRequest) =>
  Effect.gen(function* () {
    const host = yield* PluginHost
    const files = yield* parseWorkflowFiles(input.files)
    const programs = yield* resolvePrograms(files, input.files)
    const planned = yield* planWorkflow(files, input.workflow, catalogOf(host.contributions("providers")), {
      programs,
      overrides: input.variables,
      ...(input.codeHash === undefined ? {} : { codeHash: input.codeHash }),
      ...(input.runName === undefined ? {} : { runName: input.runName })
    })
    // Multi-node jobs the project could never place are refused now, at their line.
    const unplaceable = yield* placementIssues(project, files, planned).pipe(
      Effect.mapError((e) => e._tag === "StateStoreError" ? fromStateStore(e) : serverError(`Cannot check where the workflow's multi-node jobs could run: ${e.message ?? e.reason}`, e))
    )
    if (unplaceable.length > 0) return yield* Effect.fail(failWith([...unplaceable]))
    return planned
  }).pipe(
    Effect.mapError((error) =>
      error instanceof ApiError
        ? error
        : new ApiError({
          status: 400,
          detail: error.issues.map((issue) => ({ msg: formatConfigurationIssue(issue), code: "invalid_request" as const }))
        })
    )
  )

const failed = (what: string) => (e: unknown): ApiError =>
  e instanceof ApiError ? e : serverError(`${what}: ${e instanceof Error ? e.message : String(e)}`, e)

const workflowNotFound = (project: string, name: string) => notFound(`Workflow run ${excerpt(name)} does not exist in project ${excerpt(project)}`)

const getRun = (project: string, name: string) =>
  getWorkflowRun(project, name).pipe(
    Effect.mapError(failed("Cannot read the workflow run")),
    Effect.flatMap(Option.match({ onNone: () => Effect.fail(workflowNotFound(project, name)), onSome: Effect.succeed }))
  )

/** The run's id and its jobs' artifacts; a run that does not exist is a 400 naming it. */
const runArtifacts = (project: string, runName: string) =>
  Effect.gen(function* () {
    const { row } = yield* loadRunByName(project, runName).pipe(
      Effect.mapError((e) => e.reason === "NotFound" ? notFound(`Run ${excerpt(runName)} does not exist in project ${excerpt(project)}`) : fromStateStore(e))
    )
    const blobs = yield* BlobStore
    const jobs = yield* listRunArtifacts(blobs, project, row.id).pipe(Effect.mapError(failed("Cannot read the run's artifacts")))
    return { runId: row.id, jobs }
  })

export const workflowRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/workflows/get_plan", summary: "Plan a workflow and its dependencies from the workflow files", tag: "workflows", access: { project: "user" },
    request: Api.WorkflowPlanRequest, response: Api.WorkflowPlanResponse,
    handler: (input, ctx) => plan(ctx.projectName!, input)
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/workflows/submit", summary: "Plan a workflow and run it on the server: dependencies first, cached ones reused", tag: "workflows", access: { project: "user" },
    request: Api.SubmitWorkflowRequest, response: Api.WorkflowRunWire,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const planned = yield* plan(ctx.projectName!, {
          workflow: input.workflow,
          files: input.files,
          variables: input.variables,
          ...(input.repo?.repoCodeHash === undefined ? {} : { codeHash: input.repo.repoCodeHash }),
          ...(input.runName === undefined ? {} : { runName: input.runName })
        })
        if (input.runName !== undefined && !/^[a-z][a-z0-9-]{1,40}$/.test(input.runName)) {
          return yield* Effect.fail(badRequest("run_name: expected 2–41 lowercase letters, digits and -, starting with a letter", ["body", "run_name"]))
        }
        return yield* startWorkflowRun(ctx.projectName!, ctx.principal!.username, planned, input).pipe(
          Effect.mapError((e) => "_tag" in e && e._tag === "BlobStoreError" ? failed("Cannot store the workflow run")(e) : badRequest(e.message, ["body", "run_name"]))
        )
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/workflows/get", summary: "A workflow run by name, with each job's status and run", tag: "workflows", access: { project: "user" },
    request: Api.GetWorkflowRequest, response: Api.WorkflowRunWire,
    handler: (input, ctx) => getRun(ctx.projectName!, input.name)
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/workflows/list", summary: "The project's workflow runs, newest first", tag: "workflows", access: { project: "user" },
    response: Api.WorkflowRunList,
    handler: (_input, ctx) => listWorkflowRuns(ctx.projectName!).pipe(Effect.mapError(failed("Cannot list the workflow runs")))
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/workflows/stop", summary: "Stop a workflow run: its running jobs are stopped, the waiting ones never start", tag: "workflows", access: { project: "user" },
    request: Api.StopWorkflowRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const run = yield* getRun(ctx.projectName!, input.name)
        if (run.status !== "running") return {}
        yield* requestStop(ctx.projectName!, input.name, input.abort).pipe(Effect.mapError(failed("Cannot store the stop request")))
        return {}
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/artifacts/list", summary: "The artifacts a run's jobs kept: each file with its size and SHA-256", tag: "artifacts", access: { project: "user" },
    request: Api.ListArtifactsRequest, response: Api.ArtifactList,
    handler: (input, ctx) =>
      Effect.map(runArtifacts(ctx.projectName!, input.runName), ({ jobs }) => ({
        runName: input.runName,
        jobs: jobs.map((j) => ({ jobName: j.jobName, paths: j.paths, files: j.files }))
      }))
  }),
  rawRoute({
    method: "GET", path: "/api/project/:project_name/artifacts/download", summary: "One job's artifacts as a tar.gz stream", tag: "artifacts", access: { project: "user" },
    requestDescription: "Query parameters `run_name` and, when the run has several jobs with artifacts, `job_name`.",
    responseDescription: "application/gzip: a tar.gz of the files, streamed from the blob store; `x-dstack-job-name` names the job.",
    handler: (ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const runName = ctx.hono.req.query("run_name")
        if (runName === undefined || runName === "") return yield* Effect.fail(badRequest("run_name is required", ["query", "run_name"]))
        const { runId, jobs } = yield* runArtifacts(project, runName)
        const wanted = ctx.hono.req.query("job_name")
        const job = wanted === undefined ? (jobs.length === 1 ? jobs[0] : undefined) : jobs.find((j) => j.jobName === wanted)
        if (job === undefined) {
          return yield* Effect.fail(
            jobs.length === 0
              ? notFound(`Run ${excerpt(runName)} kept no artifacts`)
              : wanted === undefined
              ? badRequest(`Run ${excerpt(runName)} has artifacts of several jobs: give job_name (one of ${jobs.map((j) => j.jobName).join(", ")})`, ["query", "job_name"])
              : notFound(`Run ${excerpt(runName)} has no artifacts of job ${excerpt(wanted)} (it has: ${jobs.map((j) => j.jobName).join(", ")})`)
          )
        }
        const blobs = yield* BlobStore
        const blob = yield* blobs.get(artifactKeys(project, runId, job.jobName).archive).pipe(Effect.mapError(failed("Cannot read the artifact archive")))
        return new Response(Stream.toReadableStream(Stream.orDie(blob.body)) as ReadableStream<Uint8Array>, {
          headers: { "content-type": "application/gzip", "content-length": String(blob.stat.size), "x-dstack-job-name": job.jobName }
        })
      })
  })
]
