/**
 * The runner agent: one job's life on a host, as upstream's runner walks it
 * (wait_submit → wait_run → serve_logs → wait_logs_finished), then the next job. It takes the
 * submission and the code (materialized by the repo type's Repo), starts the job with the
 * executor its build was given for it (`docker` with an image, `process` without), enforces
 * max_duration, and keeps the job's states and output for pulls and live followers.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Context, Duration, Effect, Either, Exit, Layer, Schema, Scope } from "effect"
import type { JobStatus, JobTerminationReason } from "../domain/Status.ts"
import type { ExecObserver, ExecRequest, ExecSession, Execution, ExecutionExit, ExecutionObserver, ExecutionSpec, Executor, ExecutorError } from "../ports/Executor.ts"
import { executorNameFor, PROCESS_EXECUTOR } from "../ports/Executor.ts"
import type { Repo } from "../ports/Repo.ts"
import { nvidiaGpuUsage } from "./HostUsage.ts"
import type { JobEventLogOptions, JobEventsSince } from "./JobEventLog.ts"
import { JobEventLog } from "./JobEventLog.ts"
import { runnerRepos } from "../repos/RepoPorts.ts"
import type { RunnerMetrics, SubmitBody } from "./RunnerProtocol.ts"
import { unmetHostRequirements } from "./HostRequirements.ts"
import { toExecutionSpec } from "./RunnerProtocol.ts"
import { assignServicePort } from "./ServicePort.ts"
import { type ArtifactFile, artifactManifest, jobDirectory, packArtifacts } from "./Artifacts.ts"
import { extractTarball } from "../repos/Tarball.ts"
import type { Stream } from "effect"

/** Where the runner is in its one job's life. */
export type RunnerState = "wait_submit" | "wait_run" | "serve_logs" | "wait_logs_finished"

export const RunnerErrorReason = Schema.Literal("Invalid", "Conflict", "Internal")
export type RunnerErrorReason = typeof RunnerErrorReason.Type

/** A request the runner refused: bad input (Invalid) or the wrong moment (Conflict). */
export class RunnerError extends Schema.TaggedError<RunnerError>("@dstack-ts/core/RunnerError")("RunnerError", {
  module: Schema.Literal("RunnerAgent"),
  method: Schema.String,
  reason: RunnerErrorReason,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

const refuse = (method: string, reason: RunnerErrorReason, message: string, cause?: unknown) =>
  new RunnerError({ module: "RunnerAgent", method, reason, message, cause })

export interface RunnerAgentService {
  readonly state: Effect.Effect<RunnerState>
  /** Takes the job. Only in wait_submit. */
  readonly submit: (body: SubmitBody) => Effect.Effect<void, RunnerError>
  /** Extracts a tar(.gz) archive of the job's code into the repo directory. Only in wait_run. */
  readonly uploadCode: (archive: Uint8Array) => Effect.Effect<void, RunnerError>
  /** Starts the job in the background. Only in wait_run. */
  readonly run: Effect.Effect<void, RunnerError>
  /**
   * Extracts a tar.gz of a dependency's artifacts (streamed) into the job's working directory.
   * Only in wait_run, after the code.
   */
  readonly uploadArtifacts: (archive: Stream.Stream<Uint8Array, Error>) => Effect.Effect<void, RunnerError>
  /** The files of the ended job's artifacts (`JobSpec.artifacts`), with sizes and SHA-256. Only in wait_logs_finished. */
  readonly artifactManifest: Effect.Effect<ReadonlyArray<ArtifactFile>, RunnerError>
  /** The ended job's artifacts as a tar.gz stream. Only in wait_logs_finished. */
  readonly artifactArchive: Effect.Effect<Stream.Stream<Uint8Array, Error>, RunnerError>
  /**
   * submit, uploadCode (when `code` is given) and run in one step. When the upload is refused
   * the job ends `failed` (executor_error) at once, so the runner takes the next submit.
   */
  readonly start: (body: SubmitBody, code: Uint8Array | undefined) => Effect.Effect<void, RunnerError>
  /** Everything after `timestamp` (ms). */
  readonly pull: (timestamp: number) => Effect.Effect<JobEventsSince>
  /** Stops the job: gracefully (its stop_duration as grace period) or, with abort, at once. */
  readonly stop: (abort: boolean) => Effect.Effect<void>
  readonly metrics: Effect.Effect<RunnerMetrics>
  /** The job has ended and its final state is recorded. */
  readonly finished: Effect.Effect<boolean>
  /** The event log, for live followers (subscribe/changedAfter). */
  readonly events: JobEventLog
  /** Ports the job publishes on 127.0.0.1 (docker), once it runs. */
  readonly ports: Effect.Effect<ReadonlyArray<{ readonly containerPort: number; readonly hostPort: number }>>
  /**
   * Upstream's `network_mode` of the running job: `bridge` when its executor publishes its ports
   * from a network of its own (a container's), `host` when it listens on the host itself.
   */
  readonly networkMode: Effect.Effect<"host" | "bridge">
  /**
   * Runs a command or a shell where the job runs (its executor's `exec`), while it runs:
   * Conflict when no job runs, Invalid when its executor cannot.
   */
  readonly exec: (request: ExecRequest, observer: ExecObserver) => Effect.Effect<ExecSession, RunnerError>
  /**
   * An SSH connection to the job opened (the server's proxy holds a presence socket per
   * connection, and every exec counts): answers the function that says it closed. A dev
   * environment's `inactivity_duration` counts from the last one closing.
   */
  readonly connected: () => () => void
}

export class RunnerAgent extends Context.Tag("@dstack-ts/core/RunnerAgent")<RunnerAgent, RunnerAgentService>() {}

/** Options of the runner agent. */
export interface RunnerAgentOptions {
  /** The runner's directory; the job's code goes to `<workDir>/repo`. */
  readonly workDir: string
  /**
   * The executors this runner has, by name: a job with an image runs on `docker`, one without
   * on `process` (see the Executor port). A job whose executor is missing fails with a message
   * naming the plugin to add. A runner build gets them from its plugins (`serveRunner`'s
   * `plugins`).
   */
  readonly executors?: Readonly<Record<string, Executor>>
  /**
   * Repo types beyond the built-in `local`, `remote` and `virtual`, by type: the job's code is
   * materialized by the Repo of its `repo_type`.
   */
  readonly repos?: Readonly<Record<string, Repo>>
  /**
   * How much of the job's output stays in memory and on disk (see JobEventLog); output past
   * the memory budget is spilled under `<workDir>/output` by default.
   */
  readonly output?: Omit<JobEventLogOptions, "now">
  /**
   * The runner runs inside the job's own container (a Kubernetes pod started from the job's
   * image): a job with an image then runs on the `process` executor, since this container
   * already is that image. Default false. The runner program sets it from
   * `DSTACK_RUNNER_IN_CONTAINER=1`.
   */
  readonly inContainer?: boolean
}

/** Removes `dir` with everything in it, unless it is already empty (or gone): then nothing to do. */
const clearDir = (dir: string): void => {
  let empty: boolean
  try {
    empty = fs.readdirSync(dir).length === 0
  } catch {
    empty = false
  }
  if (!empty) fs.rmSync(dir, { recursive: true, force: true })
}

/** First-party plugins of the executors core knows by name, for messages. */
const EXECUTOR_PLUGINS: Readonly<Record<string, string>> = {
  docker: "@dstack-ts/executor-docker",
  process: "@dstack-ts/executor-process"
}

const missingExecutor = (name: string, image: string | undefined, have: ReadonlyArray<string>): string => {
  const plugin = EXECUTOR_PLUGINS[name] ?? `a plugin that contributes the executor ${JSON.stringify(name)}`
  const what = image ? `the job has an image (${image}), which runs on the ${name} executor` : `the job has no image, so it runs on the ${name} executor`
  return `${what}, but this runner has no ${name} executor (it has: ${have.join(", ") || "none"}): add ${plugin} to the runner build's plugins`
}

const missingRepoType = (type: string, have: ReadonlyArray<string>): string =>
  `the job's code is of repo type ${JSON.stringify(type)}, which this runner cannot materialize (it knows: ${have.join(", ")}): add the plugin that contributes the ${type} repo to the runner build's plugins`

const terminationOf = (
  error: ExecutorError
): { reason: JobTerminationReason; state: JobStatus } => {
  switch (error.reason) {
    case "CreatingContainer":
      return { reason: "creating_container_error", state: "failed" }
    case "PortsBinding":
      return { reason: "ports_binding_failed", state: "failed" }
    case "Executor":
      return { reason: "executor_error", state: "failed" }
  }
}

/** Below this many free bytes the runner's disk counts as full. */
const DISK_FULL_BYTES = 1 << 20

/**
 * A sentence saying the runner's disk is full when the filesystem of `dir` has less than 1 MiB
 * left for unprivileged writes; undefined when it has room, or cannot be asked (a runtime
 * without statfs).
 */
export const diskFullNote = (dir: string): string | undefined => {
  try {
    const st = fs.statfsSync(dir)
    const free = Number(st.bavail) * Number(st.bsize)
    return free < DISK_FULL_BYTES ? `the runner's disk is full: no space left on the filesystem of ${dir} (${free} bytes free)` : undefined
  } catch {
    return undefined
  }
}

const HOUR_MS = 60 * 60 * 1000

/** What a job that wrote past its hourly log quota is told. */
const logQuotaMessage = (quota: number): string =>
  `the job wrote more than its log quota of ${quota.toLocaleString("en-US")} bytes within an hour`

/**
 * Makes a runner agent in a scope; closing the scope aborts a job that still runs.
 *
 * @example
 * const agent = yield* RunnerAgent.make({ workDir: "/var/lib/dstack-ts/runner" })
 */
export const make = (options: RunnerAgentOptions): Effect.Effect<RunnerAgentService, never, Scope.Scope> =>
  Effect.gen(function* () {
    const scope = yield* Effect.scope
    const repoDir = path.resolve(options.workDir, "repo")
    const executors = options.executors ?? {}
    const repos = runnerRepos(options.repos ?? {})
    const events = new JobEventLog({ spillDir: path.resolve(options.workDir, "output"), ...options.output })
    yield* Effect.addFinalizer(() => Effect.sync(() => events.close()))

    let state: RunnerState = "wait_submit"
    let submission: SubmitBody | undefined
    let execution: Execution | undefined
    // A process replica of a service: the host port it was given (see ServicePort.ts).
    let servicePort: { readonly containerPort: number; readonly hostPort: number } | undefined
    let stopRequest: "stop" | "abort" | undefined
    let maxDurationExceeded = false
    let inactivityExceeded = false
    // The job's log bytes in the hour that began with its first byte after the last such hour
    // (upstream's hourly log quota, `log_quota_hour`); past the quota nothing more is kept.
    let quotaHour = { start: 0, bytes: 0 }
    let logQuotaExceeded = false
    let openConnections = 0
    let lastActive = Date.now()
    let lastCpu: { at: number; cpu: number } | undefined

    const stopGrace = () => Duration.seconds(submission?.jobSpec.stopDuration ?? 0)

    yield* Effect.addFinalizer(() => (execution ? Effect.asVoid(execution.abort) : Effect.void))

    const finish = (
      status: JobStatus,
      reason: JobTerminationReason,
      message?: string,
      exitStatus?: number
    ) =>
      Effect.sync(() => {
        events.addState({
          state: status,
          terminationReason: reason,
          ...(message ? { terminationMessage: message } : {}),
          ...(exitStatus !== undefined ? { exitStatus } : {})
        })
        state = "wait_logs_finished"
      })

    const finishWithExit = (exit: ExecutionExit) => {
      if (inactivityExceeded) {
        return finish("terminated", "inactivity_duration_exceeded", `no SSH connection for ${submission!.inactivityDuration}s (inactivity_duration)`, exit.exitCode)
      }
      if (logQuotaExceeded) {
        return finish("failed", "log_quota_exceeded", logQuotaMessage(submission!.logQuotaHour!), exit.exitCode)
      }
      if (maxDurationExceeded) {
        return finish("terminated", "max_duration_exceeded", `the job ran longer than its max_duration of ${submission!.jobSpec.maxDuration}s`, exit.exitCode)
      }
      if (exit.endedBy === "abort") return finish("terminated", "aborted_by_user", undefined, exit.exitCode)
      if (exit.endedBy === "stop") return finish("terminated", "terminated_by_user", undefined, exit.exitCode)
      if (exit.exitCode === 0) return finish("done", "done_by_runner", undefined, 0)
      // A job that failed on a full disk is told apart from one that failed on its own: its
      // message then says so (the reason that carries a message to the server).
      const full = diskFullNote(options.workDir)
      if (full !== undefined) {
        events.addRunnerLog(full)
        return finish("failed", "executor_error", `${full} (the job exited with status ${exit.exitCode})`, exit.exitCode)
      }
      return finish("failed", "container_exited_with_error", `the job exited with status ${exit.exitCode}`, exit.exitCode)
    }

    /** Stops the job for its log quota (once it has started: see `execute`). */
    const stopForQuota = () => {
      if (execution !== undefined) Effect.runFork(execution.stop(stopGrace()))
    }

    /** Keeps a piece of the job's output, up to its hourly log quota; past it, stops the job. */
    const keepLog = (bytes: Uint8Array) => {
      const quota = submission?.logQuotaHour
      if (quota === undefined) return events.addJobLog(bytes)
      if (logQuotaExceeded) return
      const now = Date.now()
      if (now - quotaHour.start >= HOUR_MS) quotaHour = { start: now, bytes: 0 }
      quotaHour.bytes += bytes.length
      if (quotaHour.bytes <= quota) return events.addJobLog(bytes)
      const within = bytes.length - (quotaHour.bytes - quota)
      if (within > 0) events.addJobLog(bytes.subarray(0, within))
      logQuotaExceeded = true
      events.addRunnerLog(`${logQuotaMessage(quota)}: stopping the job`)
      stopForQuota()
    }

    const observer: ExecutionObserver = {
      log: (_stream, bytes) => keepLog(bytes),
      pulling: () => {
        events.addState({ state: "pulling" })
        events.addRunnerLog("pulling the image")
      },
      note: (message) => events.addRunnerLog(message)
    }

    const execute = (body: SubmitBody) =>
      Effect.gen(function* () {
        const made = toExecutionSpec(body, repoDir)
        if (Either.isLeft(made)) return yield* finish("failed", "executor_error", made.left)
        // Every job knows its cluster's MPI hostfile (one line per node, `IP slots=GPUS`).
        const hostfile = yield* Effect.either(Effect.try(() => writeMpiHostfile(repoDir, body.clusterInfo)))
        if (Either.isLeft(hostfile)) return yield* finish("failed", "executor_error", `cannot write the MPI hostfile: ${String(hostfile.left.error)}`)
        const assigned = yield* assignServicePort(body, withMpiHostfile(made.right, hostfile.right))
        servicePort = assigned.hostPort
        const spec = assigned.spec
        const executorName = options.inContainer === true ? PROCESS_EXECUTOR : executorNameFor(spec)
        const executor = executors[executorName]
        if (executor === undefined) {
          const message = missingExecutor(executorName, spec.image, Object.keys(executors))
          events.addRunnerLog(message)
          return yield* finish("failed", "executor_error", message)
        }
        if (!spec.image) {
          const unmet = unmetHostRequirements({ python: body.jobSpec.python, nvcc: body.jobSpec.nvcc })
          if (unmet !== undefined) {
            events.addRunnerLog(unmet)
            return yield* finish("failed", "executor_error", unmet)
          }
        }
        events.addRunnerLog(`starting the job with the ${executorName} executor`)
        const started = yield* Effect.either(executor.start(spec, observer))
        if (Either.isLeft(started)) {
          const error = started.left
          const { reason, state: status } = terminationOf(error)
          events.addRunnerLog(error.message)
          return yield* finish(status, reason, error.message)
        }
        execution = started.right
        events.addState({ state: "running" })
        // Output that passed the quota before the executor answered.
        if (logQuotaExceeded) stopForQuota()
        lastActive = Date.now()
        const inactivity = body.inactivityDuration
        if (inactivity !== undefined && inactivity > 0) {
          const running = execution
          yield* Effect.forkIn(
            Effect.gen(function* () {
              for (;;) {
                yield* Effect.sleep(Duration.millis(Math.min(1000, inactivity * 250)))
                if (state !== "serve_logs" || execution !== running || stopRequest !== undefined) return
                if (openConnections === 0 && Date.now() - lastActive >= inactivity * 1000) {
                  inactivityExceeded = true
                  events.addRunnerLog(`no SSH connection for ${inactivity}s (inactivity_duration): stopping the dev environment`)
                  return yield* running.stop(stopGrace())
                }
              }
            }),
            scope
          )
        }
        if (stopRequest) yield* Effect.forkIn(stopRequest === "abort" ? execution.abort : execution.stop(stopGrace()), scope)
        const maxDuration = body.jobSpec.maxDuration
        const exit =
          maxDuration === null
            ? yield* execution.exit
            : yield* execution.exit.pipe(
                Effect.timeoutTo({
                  duration: Duration.millis(maxDuration * 1000),
                  onSuccess: Effect.succeed,
                  onTimeout: () =>
                    Effect.suspend(() => {
                      maxDurationExceeded = true
                      events.addRunnerLog(`max_duration of ${maxDuration}s exceeded: stopping the job`)
                      return execution!.stop(stopGrace())
                    })
                }),
                Effect.flatten
              )
        yield* finishWithExit(exit)
      })

    const submit = (body: SubmitBody) =>
      Effect.gen(function* () {
        if (state === "wait_logs_finished") {
          // The previous job is over: this runner takes the next one, as upstream's host agent
          // would start a fresh runner. Its code and events go; the event clock keeps running.
          yield* Effect.try({
            try: () => clearDir(repoDir),
            catch: (cause) => refuse("submit", "Internal", `cannot clear the repo directory ${repoDir}: ${String(cause)}`, cause)
          })
          events.clear()
          submission = undefined
          execution = undefined
          stopRequest = undefined
          maxDurationExceeded = false
          inactivityExceeded = false
          quotaHour = { start: 0, bytes: 0 }
          logQuotaExceeded = false
          state = "wait_submit"
        }
        if (state !== "wait_submit") {
          return yield* Effect.fail(refuse("submit", "Conflict", `the runner already has a job (state ${state})`))
        }
        const spec = toExecutionSpec(body, repoDir)
        if (Either.isLeft(spec)) return yield* Effect.fail(refuse("submit", "Invalid", spec.left))
        yield* Effect.try({
          try: () => fs.mkdirSync(repoDir, { recursive: true }),
          catch: (cause) => refuse("submit", "Internal", `cannot create the repo directory ${repoDir}: ${String(cause)}`, cause)
        })
        submission = body
        state = "wait_run"
        events.addRunnerLog(`job ${body.jobSpec.jobName} submitted`)
      })

    const uploadCode = (archive: Uint8Array) =>
      Effect.gen(function* () {
        if (state !== "wait_run") {
          return yield* Effect.fail(refuse("upload_code", "Conflict", `code can only be uploaded after submit and before run (state ${state})`))
        }
        const repoData = submission?.jobSpec.repoData ?? { repoType: "local" as const }
        const repo = repos.get(repoData.repoType)
        if (repo === undefined) {
          return yield* Effect.fail(refuse("upload_code", "Invalid", missingRepoType(repoData.repoType, [...repos.keys()])))
        }
        const tarball = repoData.repoType === "local" || repoData.repoType === "virtual"
        // An empty tarball has nothing to extract; a remote repo is cloned even without a diff,
        // and a plugin's repo type may carry everything in its repo data.
        if (archive.length === 0 && tarball) return
        yield* repo.materialize({ repoData, archive, credentials: submission?.repoCredentials }, repoDir).pipe(
          Effect.mapError((e) =>
            tarball
              ? refuse("upload_code", "Invalid", `the code archive (tar.gz) was refused: ${e.message}`, e)
              : refuse("upload_code", e.reason === "Invalid" ? "Invalid" : "Internal", `cannot materialize the ${repoData.repoType} repo: ${e.message}`, e)
          )
        )
        const how = tarball ? "extracted" : repoData.repoType === "remote" ? "checked out" : `materialized (repo type ${repoData.repoType})`
        events.addRunnerLog(`code ${how} into ${repoDir} (${archive.length} bytes)`)
      })

    const run = Effect.gen(function* () {
      if (state !== "wait_run" || !submission) {
        return yield* Effect.fail(refuse("run", "Conflict", `run needs a submitted job that has not started (state ${state})`))
      }
      state = "serve_logs"
      const body = submission
      yield* execute(body).pipe(
        Effect.catchAllCause((cause) =>
          finish("failed", "executor_error", `the runner failed: ${cause.toString()}`)
        ),
        Effect.forkIn(scope)
      )
    })

    const jobDir = () => jobDirectory(repoDir, submission?.jobSpec.workingDir)

    const uploadArtifacts = (archive: Stream.Stream<Uint8Array, Error>) =>
      Effect.gen(function* () {
        if (state !== "wait_run") {
          return yield* Effect.fail(refuse("upload_artifacts", "Conflict", `artifacts can only be uploaded after submit and before run (state ${state})`))
        }
        const dir = jobDir()
        yield* Effect.try({
          try: () => fs.mkdirSync(dir, { recursive: true }),
          catch: (cause) => refuse("upload_artifacts", "Internal", `cannot create the working directory ${dir}: ${String(cause)}`, cause)
        })
        yield* extractTarball("RunnerAgent", archive, dir).pipe(
          Effect.mapError((e) => refuse("upload_artifacts", "Invalid", `the artifact archive was refused: ${e.message}`, e))
        )
        events.addRunnerLog(`artifacts of a dependency extracted into ${dir}`)
      })

    const endedWithArtifacts = (method: string) =>
      Effect.suspend(() => {
        if (state !== "wait_logs_finished" || submission === undefined) {
          return Effect.fail(refuse(method, "Conflict", `artifacts are kept once the job has ended (state ${state})`))
        }
        const artifacts = submission.jobSpec.artifacts ?? []
        if (artifacts.length === 0) return Effect.fail(refuse(method, "Invalid", `job ${submission.jobSpec.jobName} lists no artifacts`))
        return Effect.succeed({ dir: jobDir(), artifacts })
      })

    const manifest = Effect.flatMap(endedWithArtifacts("artifacts/manifest"), ({ artifacts, dir }) =>
      artifactManifest(dir, artifacts).pipe(Effect.mapError((e) => refuse("artifacts/manifest", "Invalid", e.message, e))))

    const archive = Effect.flatMap(endedWithArtifacts("artifacts/archive"), ({ artifacts, dir }) =>
      packArtifacts(dir, artifacts).pipe(Effect.mapError((e) => refuse("artifacts/archive", "Invalid", e.message, e))))

    const start = (body: SubmitBody, code: Uint8Array | undefined) =>
      Effect.gen(function* () {
        // A server that died after handing the job over (before it could note that it did)
        // hands it over again once restarted: the job runs once, and the answer is its events.
        if (body.jobSubmissionId !== undefined && state !== "wait_submit" && submission?.jobSubmissionId === body.jobSubmissionId) {
          if (state === "wait_run") yield* run
          return
        }
        yield* submit(body)
        if (code !== undefined) {
          yield* uploadCode(code).pipe(
            Effect.tapError((error) =>
              Effect.suspend(() => {
                events.addRunnerLog(error.message)
                return finish("failed", "executor_error", error.message)
              })
            )
          )
        }
        yield* run
      })

    const stop = (abort: boolean) =>
      Effect.gen(function* () {
        stopRequest = abort ? "abort" : (stopRequest ?? "stop")
        if (state === "wait_submit" || state === "wait_run") {
          events.addRunnerLog("stopped before the job started")
          return yield* finish("terminated", abort ? "aborted_by_user" : "terminated_by_user")
        }
        // A job still starting is stopped as soon as it runs (see execute).
        if (execution && state === "serve_logs") {
          // The stop outlives this request: the job's end is reported through the event log.
          yield* Effect.forkIn(abort ? execution.abort : execution.stop(stopGrace()), scope)
        }
      })

    const metrics = Effect.gen(function* () {
      const usage = execution && state === "serve_logs" ? yield* execution.usage : { cpuUsageMicro: 0, memoryUsageBytes: 0 }
      const gpus = yield* nvidiaGpuUsage
      const now = Date.now()
      const previous = lastCpu
      lastCpu = { at: now, cpu: usage.cpuUsageMicro }
      const elapsedMicro = previous ? (now - previous.at) * 1000 : 0
      const cpuPercent = previous && elapsedMicro > 0 ? ((usage.cpuUsageMicro - previous.cpu) / elapsedMicro) * 100 : 0
      return {
        timestamp_micro: now * 1000,
        cpu_usage_micro: usage.cpuUsageMicro,
        cpu_percent: Math.max(0, Math.round(cpuPercent * 100) / 100),
        memory_usage_bytes: usage.memoryUsageBytes,
        memory_working_set_bytes: usage.memoryUsageBytes,
        gpus
      } satisfies RunnerMetrics
    })

    return {
      state: Effect.sync(() => state),
      submit,
      uploadCode,
      run,
      uploadArtifacts,
      artifactManifest: manifest,
      artifactArchive: archive,
      start,
      pull: (timestamp) => Effect.sync(() => events.since(timestamp)),
      stop,
      metrics,
      finished: Effect.sync(() => state === "wait_logs_finished"),
      events,
      ports: Effect.sync(() => [...(execution?.ports ?? []), ...(servicePort === undefined ? [] : [servicePort])]),
      networkMode: Effect.sync(() => ((execution?.ports.length ?? 0) > 0 ? "bridge" : "host")),
      connected: () => {
        openConnections++
        let open = true
        return () => {
          if (!open) return
          open = false
          openConnections--
          lastActive = Date.now()
        }
      },
      exec: (request, execObserver) =>
        Effect.suspend(() => {
          const running = execution
          if (running === undefined || state !== "serve_logs") return Effect.fail(refuse("exec", "Conflict", `no job is running (state ${state})`))
          if (running.exec === undefined) return Effect.fail(refuse("exec", "Invalid", "the job's executor cannot run commands beside it"))
          return running.exec(request, execObserver).pipe(Effect.mapError((error) => refuse("exec", "Conflict", error.message, error)))
        })
    } satisfies RunnerAgentService
  })

/** The runner agent as a layer; the job is aborted when the layer is released. */
export const layer = (options: RunnerAgentOptions): Layer.Layer<RunnerAgent> => Layer.scoped(RunnerAgent, make(options))

/** Runs `make` outside a layer, for the HTTP edge: returns the agent and a close function. */
export const makeUnscoped = (options: RunnerAgentOptions) =>
  Effect.gen(function* () {
    const scope = yield* Scope.make()
    const agent = yield* make(options).pipe(Scope.extend(scope))
    return { agent, close: Scope.close(scope, Exit.void) }
  })

/** Where the MPI hostfile is inside a container. */
const CONTAINER_MPI_HOSTFILE = "/dstack/mpi_hostfile"

/** Writes the cluster's MPI hostfile beside the repo directory; answers its path. */
const writeMpiHostfile = (repoDir: string, cluster: SubmitBody["clusterInfo"]): string => {
  const file = path.join(path.dirname(repoDir), `${path.basename(repoDir)}.mpi_hostfile`)
  const slots = Math.max(1, cluster.gpusPerJob)
  fs.writeFileSync(file, cluster.jobIps.map((ip) => `${ip} slots=${slots}\n`).join(""))
  return file
}

/** The job's spec with `DSTACK_MPI_HOSTFILE` (mounted into a container at a fixed path). */
const withMpiHostfile = (spec: ExecutionSpec, file: string): ExecutionSpec =>
  spec.image === undefined
    ? { ...spec, env: { DSTACK_MPI_HOSTFILE: file, ...spec.env } }
    : { ...spec, env: { DSTACK_MPI_HOSTFILE: CONTAINER_MPI_HOSTFILE, ...spec.env }, mounts: [...spec.mounts, { hostPath: file, containerPath: CONTAINER_MPI_HOSTFILE }] }
