/**
 * The Effect API of the client: a `DstackApi` service with one method per server route.
 * Requests are `POST` with snake_case JSON and a bearer token; responses are decoded with
 * the route's schema; error bodies (`{"detail": [{msg, code, loc}]}`) become a `ClientError`.
 * Reads are retried on network errors; writes never are. Uses `fetch` only, so it runs in
 * Node, Deno and browsers.
 */
import { Context, Duration, Effect, Layer, ParseResult, Schedule, Schema } from "effect"
import { ClientError, reasonOfStatus, WireErrorDetail } from "./ClientError.ts"
import type { ClientErrorReason } from "./ClientError.ts"
import { normalizeUrl } from "./ClientConfig.ts"
import { Project, ServerInfo, User } from "./Wire.ts"
import { RunsApi as Api } from "@dstack-ts/core/wire"
import { FleetsApi } from "@dstack-ts/core/wire"
import type { Fleet, FleetPlan, FleetSpec } from "@dstack-ts/core/wire"
import { Run as RunEntity } from "@dstack-ts/core/wire"
import type { RunSpec } from "@dstack-ts/core/wire"
import type { RunPlan } from "@dstack-ts/core/wire"
import { WorkflowsApi } from "@dstack-ts/core/wire"

/** Options of `runs.list`: the client's project, active runs unless `all`, newest first. */
export interface ListRunsQuery {
  readonly all?: boolean | undefined
  readonly limit?: number | undefined
  /** Keyset pagination: the last run of the previous page. */
  readonly prevSubmittedAt?: Date | undefined
  readonly prevRunId?: string | undefined
}

/** `logs/poll` input (camelCase; see `RunsApi.PollLogsRequest`). */
export type PollLogsQuery = Omit<typeof Api.PollLogsRequest.Type, "descending" | "limit" | "diagnose"> &
  Partial<Pick<typeof Api.PollLogsRequest.Type, "descending" | "limit" | "diagnose">>

/** `logs/stream` input: the live log as Server-Sent Events. */
export interface StreamLogsQuery {
  readonly runName: string
  readonly jobSubmissionId?: string | undefined
  readonly startTime?: Date | undefined
  readonly diagnose?: boolean | undefined
}

export interface DstackApiOptions {
  /** The server URL, e.g. `http://localhost:3000`. */
  readonly url: string
  /** The user token sent as `Authorization: Bearer <token>`. */
  readonly token: string
  /** The project that project routes (`/api/project/{project}/…`) act on. */
  readonly project: string
  /** The fetch to use; defaults to the global one. */
  readonly fetch?: typeof globalThis.fetch | undefined
  /** How many times an idempotent read is retried after a network error (default 3). */
  readonly retries?: number | undefined
  /** The first retry delay, doubled on each retry (default 200 ms). */
  readonly retryDelay?: Duration.DurationInput | undefined
  /** How long one request may take before it counts as unreachable (default 60 s). */
  readonly timeout?: Duration.DurationInput | undefined
}

/** How a route is called: its API method name, path, and whether it may be retried. */
export interface CallSpec<A, I> {
  /** `users.getMyUser`, `runs.get`: used in error messages. */
  readonly method: string
  /** The path under the server URL, e.g. `/api/users/get_my_user`. */
  readonly path: string
  readonly response: Schema.Schema<A, I, never>
  /** Reads are idempotent and retried on network errors; writes are not. */
  readonly idempotent: boolean
}

export interface DstackApiShape {
  readonly url: string
  readonly project: string
  /** Calls a JSON route with an already-encoded (snake_case) body. */
  readonly call: <A, I>(spec: CallSpec<A, I>, body?: unknown) => Effect.Effect<A, ClientError>
  /** Encodes `input` with `request` (camelCase → snake_case), then calls the route. */
  readonly callWith: <A, I, RA, RI>(
    spec: CallSpec<A, I>,
    request: Schema.Schema<RA, RI, never>,
    input: RA
  ) => Effect.Effect<A, ClientError>
  /** Calls a route that answers with a stream of bytes (live logs); the caller reads the body. */
  readonly callRaw: (
    method: string,
    path: string,
    body: unknown,
    init?: { readonly signal?: AbortSignal }
  ) => Effect.Effect<Response, ClientError>
  /** The path of a route of the client's project: `projectPath("runs/get")`. */
  readonly projectPath: (route: string) => string
  readonly server: {
    /** `POST /api/server/get_info`. */
    readonly getInfo: () => Effect.Effect<ServerInfo, ClientError>
  }
  readonly users: {
    /** `POST /api/users/get_my_user`: the user the token belongs to. */
    readonly getMyUser: () => Effect.Effect<User, ClientError>
  }
  readonly projects: {
    /** `POST /api/projects/list`. */
    readonly list: () => Effect.Effect<ReadonlyArray<Project>, ClientError>
    /** `POST /api/projects/{project}/get`; the client's project by default. */
    readonly get: (name?: string) => Effect.Effect<Project, ClientError>
  }
  readonly runs: {
    /** `runs/get_plan`: the offers for each job of the run. */
    readonly getPlan: (runSpec: RunSpec) => Effect.Effect<RunPlan, ClientError>
    /** `runs/apply`: submits a plan; `force` re-creates a run that did not change. */
    readonly apply: (plan: Pick<RunPlan, "runSpec" | "currentResource">, force?: boolean) => Effect.Effect<RunEntity, ClientError>
    /** `runs/get`: fails with reason NotFound when there is no such run. */
    readonly get: (runName: string) => Effect.Effect<RunEntity, ClientError>
    /** `runs/list` for the client's project. */
    readonly list: (query?: ListRunsQuery) => Effect.Effect<ReadonlyArray<RunEntity>, ClientError>
    readonly stop: (runNames: ReadonlyArray<string>, abort?: boolean) => Effect.Effect<void, ClientError>
    readonly delete: (runNames: ReadonlyArray<string>) => Effect.Effect<void, ClientError>
  }
  readonly workflows: {
    /** `workflows/get_plan`: the jobs of a workflow and its dependencies, planned by the server's providers. */
    readonly getPlan: (request: typeof WorkflowsApi.WorkflowPlanRequest.Type) => Effect.Effect<typeof WorkflowsApi.WorkflowPlanResponse.Type, ClientError>
    /** `workflows/submit`: plans the workflow and runs it on the server. */
    readonly submit: (request: typeof WorkflowsApi.SubmitWorkflowRequest.Type) => Effect.Effect<WorkflowsApi.WorkflowRunWire, ClientError>
    /** `workflows/get` by name; fails with reason NotFound when there is none. */
    readonly get: (name: string) => Effect.Effect<WorkflowsApi.WorkflowRunWire, ClientError>
    /** `workflows/list`: the project's workflow runs, newest first. */
    readonly list: () => Effect.Effect<ReadonlyArray<WorkflowsApi.WorkflowRunWire>, ClientError>
    /** `workflows/stop`: stops the running jobs; the waiting ones never start. */
    readonly stop: (name: string, abort?: boolean) => Effect.Effect<void, ClientError>
  }
  readonly artifacts: {
    /** `artifacts/list`: the files each job of a run kept, with sizes and SHA-256. */
    readonly list: (runName: string) => Effect.Effect<WorkflowsApi.ArtifactList, ClientError>
    /** `GET artifacts/download`: one job's artifacts as a tar.gz response; the caller reads the body. */
    readonly download: (runName: string, jobName?: string, signal?: AbortSignal) => Effect.Effect<Response, ClientError>
  }
  readonly fleets: {
    /** `fleets/get_plan`: the hosts the fleet would get and whether it is created or replaced. */
    readonly getPlan: (spec: FleetSpec) => Effect.Effect<FleetPlan, ClientError>
    /** `fleets/apply`: creates the fleet (the server provisions its hosts in the background). */
    readonly apply: (spec: FleetSpec, force?: boolean) => Effect.Effect<Fleet, ClientError>
    /** `fleets/get` by name; fails with reason NotFound when there is none. */
    readonly get: (name: string) => Effect.Effect<Fleet, ClientError>
    /** `fleets/list` of the client's project. */
    readonly list: () => Effect.Effect<ReadonlyArray<Fleet>, ClientError>
    /** `fleets/delete`: the hosts are cleaned up, then the fleets go. */
    readonly delete: (names: ReadonlyArray<string>) => Effect.Effect<void, ClientError>
    /** `fleets/delete_instances`: removes hosts from a fleet by instance number. */
    readonly deleteInstances: (name: string, instanceNums: ReadonlyArray<number>) => Effect.Effect<void, ClientError>
  }
  readonly repos: {
    /** `repos/init`: registers a repo (its `repo_info`, optional credentials) with the project. */
    readonly init: (repoId: string, repoInfo: unknown, repoCreds?: unknown) => Effect.Effect<void, ClientError>
    /**
     * `repos/upload_code`: streams a code blob keyed by its SHA-256; the server checks the hash
     * and skips blobs it already has (`stored: false`).
     */
    readonly uploadCode: (
      repoId: string,
      hash: string,
      body: Uint8Array | ReadableStream<Uint8Array>
    ) => Effect.Effect<{ readonly stored: boolean; readonly size: number }, ClientError>
  }
  readonly logs: {
    /** `logs/poll`: one page of a job submission's log. */
    readonly poll: (query: PollLogsQuery) => Effect.Effect<typeof Api.JobSubmissionLogs.Type, ClientError>
    /** `GET logs/stream`: the live log (text/event-stream); the caller reads and closes the body. */
    readonly stream: (query: StreamLogsQuery, signal?: AbortSignal) => Effect.Effect<Response, ClientError>
  }
}

export class DstackApi extends Context.Tag("@dstack-ts/core/client/DstackApi")<DstackApi, DstackApiShape>() {}

const MODULE = "DstackApi"

/** Describes a fetch failure in one line: the errno code where there is one. */
const describeNetworkError = (cause: unknown): string => {
  const inner = (cause as { cause?: { code?: string; message?: string } })?.cause
  if (inner?.code) return inner.message && inner.message.includes(inner.code) ? inner.message : `${inner.code}${inner.message ? ` (${inner.message})` : ""}`
  if (inner?.message) return inner.message
  return cause instanceof Error ? cause.message : String(cause)
}

const ErrorBody = Schema.Struct({ detail: Schema.Array(WireErrorDetail) })

/** Builds the API on `fetch`. */
export const make = (options: DstackApiOptions): DstackApiShape => {
  const url = normalizeUrl(options.url)
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis)
  const retries = options.retries ?? 3
  const retryDelay = options.retryDelay ?? Duration.millis(200)
  const timeout = options.timeout ?? Duration.seconds(60)
  const headers = {
    authorization: `Bearer ${options.token}`,
    "content-type": "application/json",
    accept: "application/json"
  }

  const error = (method: string, reason: ClientErrorReason, msg: string, extra: Partial<ConstructorParameters<typeof ClientError>[0]> = {}) =>
    new ClientError({ module: MODULE, method, reason, url, msg, ...extra })

  const send = (method: string, path: string, body: unknown, signal?: AbortSignal): Effect.Effect<Response, ClientError> =>
    Effect.tryPromise({
      try: (abort) =>
        fetchImpl(url + path, {
          method: "POST",
          headers,
          body: JSON.stringify(body ?? {}),
          signal: signal ? anySignal([abort, signal]) : abort
        }),
      catch: (cause) => error(method, "Unreachable", `cannot reach the dstack server at ${url}: ${describeNetworkError(cause)}`, { cause })
    }).pipe(
      Effect.timeoutFail({
        duration: timeout,
        onTimeout: () => error(method, "Unreachable", `cannot reach the dstack server at ${url}: no answer within ${Duration.format(timeout)}`)
      })
    )

  const failure = (method: string, response: Response): Effect.Effect<never, ClientError> =>
    Effect.gen(function* () {
      const text = yield* Effect.promise(() => response.text().catch(() => ""))
      let json: unknown = undefined
      try {
        json = JSON.parse(text)
      } catch {
        // not JSON: a proxy's HTML page or an empty body; reported by status below
      }
      const decoded = Schema.decodeUnknownOption(ErrorBody)(json)
      if (decoded._tag === "Some" && decoded.value.detail.length > 0) {
        const [first] = decoded.value.detail
        return yield* Effect.fail(
          error(method, reasonOfStatus(response.status, first.code), first.msg, {
            status: response.status,
            code: first.code,
            ...(first.loc ? { loc: first.loc } : {}),
            details: decoded.value.detail
          })
        )
      }
      const snippet = text.trim().slice(0, 200)
      return yield* Effect.fail(
        error(method, reasonOfStatus(response.status), `HTTP ${response.status} ${response.statusText}${snippet ? `: ${snippet}` : ""}`.trim(), { status: response.status })
      )
    })

  const retrying = <A>(idempotent: boolean, effect: Effect.Effect<A, ClientError>): Effect.Effect<A, ClientError> =>
    idempotent && retries > 0
      ? Effect.retry(effect, {
          schedule: Schedule.intersect(Schedule.exponential(retryDelay), Schedule.recurs(retries)),
          while: (e) => e.isRetryable
        })
      : effect

  const call = <A, I>(spec: CallSpec<A, I>, body?: unknown): Effect.Effect<A, ClientError> =>
    retrying(
      spec.idempotent,
      Effect.gen(function* () {
        const response = yield* send(spec.method, spec.path, body)
        if (!response.ok) return yield* failure(spec.method, response)
        const text = yield* Effect.tryPromise({
          try: () => response.text(),
          catch: (cause) => error(spec.method, "Unreachable", `cannot reach the dstack server at ${url}: the response was cut off (${describeNetworkError(cause)})`, { cause })
        })
        const json = yield* Effect.try({
          try: () => JSON.parse(text) as unknown,
          catch: (cause) => error(spec.method, "BadResponse", `The server's answer to ${spec.method} is not JSON: ${text.slice(0, 200)}`, { status: response.status, cause })
        })
        return yield* Schema.decodeUnknown(spec.response)(json).pipe(
          Effect.mapError((cause) =>
            error(spec.method, "BadResponse", `The server's answer to ${spec.method} does not have the expected shape: ${ParseResult.TreeFormatter.formatErrorSync(cause)}`, { status: response.status, cause })
          )
        )
      })
    )

  const callWith = <A, I, RA, RI>(spec: CallSpec<A, I>, request: Schema.Schema<RA, RI, never>, input: RA) =>
    Schema.encode(request)(input).pipe(
      Effect.mapError((cause) => {
        const issues = ParseResult.ArrayFormatter.formatErrorSync(cause)
        const first = issues[0]
        return error(spec.method, "Invalid", issues.map((i) => `${i.path.join(".") || "(input)"}: ${i.message}`).join("; "), {
          ...(first ? { loc: first.path.map((p) => (typeof p === "symbol" ? String(p) : p)) } : {}),
          cause
        })
      }),
      Effect.flatMap((body) => call(spec, body))
    )

  const callRaw = (method: string, path: string, body: unknown, init?: { readonly signal?: AbortSignal }) =>
    send(method, path, body, init?.signal).pipe(Effect.flatMap((response) => (response.ok ? Effect.succeed(response) : failure(method, response))))

  const streamGet = (
    method: string,
    path: string,
    signal?: AbortSignal,
    // The live log as binary frames where the server has them (api/logFrames.ts), else SSE.
    accept = "application/x-dstack-ts-logs, text/event-stream"
  ): Effect.Effect<Response, ClientError> =>
    Effect.tryPromise({
      try: (abort) =>
        fetchImpl(url + path, {
          method: "GET",
          headers: { authorization: headers.authorization, accept },
          signal: signal ? anySignal([abort, signal]) : abort
        }),
      catch: (cause) => error(method, "Unreachable", `cannot reach the dstack server at ${url}: ${describeNetworkError(cause)}`, { cause })
    }).pipe(Effect.flatMap((response) => (response.ok ? Effect.succeed(response) : failure(method, response))))

  const projectPath = (route: string) => `/api/project/${encodeURIComponent(options.project)}/${route}`

  return {
    url,
    project: options.project,
    call,
    callWith,
    callRaw,
    projectPath,
    server: {
      getInfo: () => call({ method: "server.getInfo", path: "/api/server/get_info", response: ServerInfo, idempotent: true })
    },
    users: {
      getMyUser: () => call({ method: "users.getMyUser", path: "/api/users/get_my_user", response: User, idempotent: true })
    },
    projects: {
      list: () => call({ method: "projects.list", path: "/api/projects/list", response: Schema.Array(Project), idempotent: true }),
      get: (name = options.project) =>
        call({ method: "projects.get", path: `/api/projects/${encodeURIComponent(name)}/get`, response: Project, idempotent: true })
    },
    runs: {
      getPlan: (runSpec) =>
        callWith({ method: "runs.getPlan", path: projectPath("runs/get_plan"), response: Api.RunPlan, idempotent: true }, Api.GetPlanRequest, { runSpec }),
      apply: (plan, force = false) =>
        callWith({ method: "runs.apply", path: projectPath("runs/apply"), response: RunEntity, idempotent: false }, Api.ApplyRequest, {
          plan: {
            runSpec: plan.runSpec,
            // current_resource is free-form in the request: send the run in its wire form.
            currentResource: plan.currentResource === undefined ? null : Schema.encodeSync(RunEntity)(plan.currentResource)
          },
          force
        }),
      get: (runName) =>
        callWith({ method: "runs.get", path: projectPath("runs/get"), response: RunEntity, idempotent: true }, Api.GetRunRequest, { runName }),
      list: (query = {}) =>
        callWith({ method: "runs.list", path: "/api/runs/list", response: Api.RunList, idempotent: true }, Api.ListRunsRequest, {
          projectName: options.project,
          onlyActive: query.all !== true,
          limit: query.limit ?? 100,
          ascending: false,
          ...(query.prevSubmittedAt ? { prevSubmittedAt: query.prevSubmittedAt } : {}),
          ...(query.prevRunId ? { prevRunId: query.prevRunId } : {})
        }),
      stop: (runNames, abort = false) =>
        Effect.asVoid(callWith({ method: "runs.stop", path: projectPath("runs/stop"), response: Api.Empty, idempotent: false }, Api.StopRunsRequest, { runsNames: runNames, abort })),
      delete: (runNames) =>
        Effect.asVoid(callWith({ method: "runs.delete", path: projectPath("runs/delete"), response: Api.Empty, idempotent: false }, Api.DeleteRunsRequest, { runsNames: runNames }))
    },
    workflows: {
      getPlan: (request) =>
        callWith({ method: "workflows.getPlan", path: projectPath("workflows/get_plan"), response: WorkflowsApi.WorkflowPlanResponse, idempotent: true }, WorkflowsApi.WorkflowPlanRequest, request),
      submit: (request) =>
        callWith({ method: "workflows.submit", path: projectPath("workflows/submit"), response: WorkflowsApi.WorkflowRunWire, idempotent: false }, WorkflowsApi.SubmitWorkflowRequest, request),
      get: (name) =>
        callWith({ method: "workflows.get", path: projectPath("workflows/get"), response: WorkflowsApi.WorkflowRunWire, idempotent: true }, WorkflowsApi.GetWorkflowRequest, { name }),
      list: () => call({ method: "workflows.list", path: projectPath("workflows/list"), response: WorkflowsApi.WorkflowRunList, idempotent: true }, {}),
      stop: (name, abort = false) =>
        Effect.asVoid(callWith({ method: "workflows.stop", path: projectPath("workflows/stop"), response: Api.Empty, idempotent: true }, WorkflowsApi.StopWorkflowRequest, { name, abort }))
    },
    artifacts: {
      list: (runName) =>
        callWith({ method: "artifacts.list", path: projectPath("artifacts/list"), response: WorkflowsApi.ArtifactList, idempotent: true }, WorkflowsApi.ListArtifactsRequest, { runName }),
      download: (runName, jobName, signal) => {
        const params = new URLSearchParams({ run_name: runName })
        if (jobName !== undefined) params.set("job_name", jobName)
        return streamGet("artifacts.download", `${projectPath("artifacts/download")}?${params}`, signal, "application/gzip")
      }
    },
    fleets: {
      getPlan: (spec) =>
        callWith({ method: "fleets.getPlan", path: projectPath("fleets/get_plan"), response: FleetsApi.FleetPlan, idempotent: true }, FleetsApi.GetFleetPlanRequest, { spec }),
      apply: (spec, force = false) =>
        callWith({ method: "fleets.apply", path: projectPath("fleets/apply"), response: FleetsApi.Fleet, idempotent: false }, FleetsApi.ApplyFleetPlanRequest, { plan: { spec, currentResource: null }, force }),
      get: (name) =>
        callWith({ method: "fleets.get", path: projectPath("fleets/get"), response: FleetsApi.Fleet, idempotent: true }, FleetsApi.GetFleetRequest, { name }),
      list: () => call({ method: "fleets.list", path: projectPath("fleets/list"), response: FleetsApi.FleetList, idempotent: true }, {}),
      delete: (names) =>
        Effect.asVoid(callWith({ method: "fleets.delete", path: projectPath("fleets/delete"), response: Api.Empty, idempotent: false }, FleetsApi.DeleteFleetsRequest, { names })),
      deleteInstances: (name, instanceNums) =>
        Effect.asVoid(callWith({ method: "fleets.deleteInstances", path: projectPath("fleets/delete_instances"), response: Api.Empty, idempotent: false }, FleetsApi.DeleteFleetInstancesRequest, { name, instanceNums }))
    },
    repos: {
      init: (repoId, repoInfo, repoCreds) =>
        callRaw("repos.init", projectPath("repos/init"), { repo_id: repoId, repo_info: repoInfo, ...(repoCreds === undefined ? {} : { repo_creds: repoCreds }) }).pipe(
          Effect.flatMap((response) => Effect.promise(() => response.body?.cancel() ?? Promise.resolve())),
          Effect.asVoid
        ),
      uploadCode: (repoId, hash, body) =>
        Effect.tryPromise({
          try: (abort) =>
            fetchImpl(`${url}${projectPath("repos/upload_code")}?repo_id=${encodeURIComponent(repoId)}&hash=${encodeURIComponent(hash)}`, {
              method: "POST",
              headers: { authorization: headers.authorization, "content-type": "application/octet-stream", accept: "application/json" },
              body: body as BodyInit,
              signal: abort,
              // A streamed request body needs half-duplex in Node's and Deno's fetch.
              ...({ duplex: "half" } as object)
            }),
          catch: (cause) => error("repos.uploadCode", "Unreachable", `cannot reach the dstack server at ${url}: ${describeNetworkError(cause)}`, { cause })
        }).pipe(
          Effect.flatMap((response) => (response.ok ? Effect.promise(() => response.json() as Promise<any>) : failure("repos.uploadCode", response))),
          Effect.map((answer) => ({ stored: answer?.stored !== false, size: Number(answer?.size ?? 0) }))
        )
    },
    logs: {
      poll: (query) =>
        callWith({ method: "logs.poll", path: projectPath("logs/poll"), response: Api.JobSubmissionLogs, idempotent: true }, Api.PollLogsRequest, {
          descending: false,
          limit: 1000,
          diagnose: false,
          ...query
        }),
      stream: (query, signal) => {
        const params = new URLSearchParams({ run_name: query.runName })
        if (query.jobSubmissionId) params.set("job_submission_id", query.jobSubmissionId)
        if (query.startTime) params.set("start_time", query.startTime.toISOString())
        if (query.diagnose) params.set("diagnose", "true")
        return streamGet("logs.stream", `${projectPath("logs/stream")}?${params}`, signal)
      }
    }
  }
}

/** The API as a layer, for Effect programs: `Effect.provide(program, DstackApi.layer(opts))`. */
export const layer = (options: DstackApiOptions): Layer.Layer<DstackApi> => Layer.sync(DstackApi, () => make(options))

/** Aborts when any of the signals aborts (AbortSignal.any is missing from older runtimes). */
const anySignal = (signals: ReadonlyArray<AbortSignal>): AbortSignal => {
  const any = (AbortSignal as unknown as { any?: (s: ReadonlyArray<AbortSignal>) => AbortSignal }).any
  if (any) return any(signals)
  const controller = new AbortController()
  for (const s of signals) {
    if (s.aborted) controller.abort(s.reason)
    else s.addEventListener("abort", () => controller.abort(s.reason), { once: true })
  }
  return controller.signal
}
