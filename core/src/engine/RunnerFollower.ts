/**
 * Following a runner: hands a job to the runner on its instance (spec and code, unless a
 * previous owner of the run did) and follows the runner's event stream for as long as the job
 * lives, storing its log lines and reporting its states to the run's worker. A broken
 * connection is resumed from the last stored line, so no line is lost or stored twice; a runner
 * unreachable for too long ends the job. After a takeover (another replica, or a restarted
 * engine, resuming a job already handed over) following resumes after the last line stored
 * for the job: a store that cannot say where that is is asked again, and never read as "no
 * lines yet", which would store every line again.
 */
import { Cause, Duration, Effect, Schedule, type Scope, Stream } from "effect"
import type { JobProvisioningData, JobSpec } from "../domain/Job.ts"
import type { Run } from "../domain/Run.ts"
import type { BlobStore } from "../ports/BlobStore.ts"
import { type RunnerClient, RunnerTransportError } from "../ports/RunnerTransport.ts"
import type { NewLogEvent, StateStoreError, StateStoreService } from "../ports/StateStore.ts"
import type { ComputeService } from "./Compute.ts"
import { singleNode, waitForCluster } from "./Cluster.ts"
import { errorMessage } from "./internal.ts"
import { faultPoint } from "../internal/Faults.ts"
import { JobEvent } from "./JobLifecycle.ts"
import * as ProjectSecrets from "../secrets/ProjectSecrets.ts"
import * as RepoCredentials from "../secrets/RepoCredentials.ts"
import { fetchArtifacts, followEvents, handling, healthTimeoutMs, heartbeatEveryMs, jobEventOfRunnerState, type RunnerStreamEvent, startFollowing, startFollowingWithArtifacts, streamLiveness, waitHealthy, watchHealth } from "./RunnerSession.ts"
import { artifactKeys, keepArtifacts } from "../workflows/Artifacts.ts"

/**
 * Runs `f` with a client of the runner on the instance `pd` of `project` describes, through its
 * backend's transport (the project's backend made first: `Compute.target`). `connectTimeoutMs`: the transport's connect (an SSH login, with its own retries)
 * fails after that long instead of taking as long as the transport allows.
 */
export const withRunner = <A, E>(
  compute: ComputeService,
  project: string,
  pd: JobProvisioningData,
  f: (client: RunnerClient) => Effect.Effect<A, E, Scope.Scope>,
  connectTimeoutMs?: number
): Effect.Effect<A, E | RunnerTransportError> =>
  compute.transport(pd.backend).pipe(
    Effect.flatMap((transport) => Effect.flatMap(compute.target(project, pd), (target) => transport.connect(target))),
    (connect) =>
      connectTimeoutMs === undefined
        ? connect
        : Effect.timeoutFail(connect, {
          duration: Duration.millis(connectTimeoutMs),
          onTimeout: () =>
            new RunnerTransportError({
              module: "RunnerFollower",
              method: "connect",
              reason: "Timeout",
              message: `no connection to the runner's instance ${pd.hostname} (backend ${pd.backend}) within ${(connectTimeoutMs / 1000).toFixed(1)}s`
            })
        }),
    Effect.flatMap(f),
    Effect.scoped
  )

/** The least time a reconnect to a runner is given (see `follow`). */
const CONNECT_AT_LEAST_MS = 1_000

export interface FollowerOptions {
  readonly store: StateStoreService
  readonly blobs: BlobStore
  readonly compute: ComputeService
  /** How long a runner may take to answer on a new instance. */
  readonly provisioningTimeoutMs: number
  /** How long a runner may stay unreachable before its job ends as instance_unreachable. */
  readonly unreachableMs: number
  /** Bytes of log output a job may write in an hour, told to its runner; 0 or absent: no quota. */
  readonly logQuotaPerJobHour?: number
}

/** The job a follower follows. */
export interface FollowedJob {
  readonly run: Run
  readonly submissionId: string
  readonly spec: JobSpec
  readonly pd: JobProvisioningData
  /** A previous owner of the run handed the job over already: resume following it. */
  readonly alreadyHanded: boolean
  /**
   * The job was on its instance when this worker took the run (a takeover or a restart): a
   * previous owner may have handed it over without noting it, so the hand-over resumes after
   * the last stored log line (the runner answers a repeated hand-over with the job's events).
   */
  readonly resumed?: boolean
  /** Whether the run's lease may still be relied on: without it another replica may be following too. */
  readonly leaseTrusted: () => boolean
}

/** What a follower tells the run's worker. */
export interface FollowerReports {
  /** The runner reported a state that changes the job (or the job must end). */
  readonly jobEvent: (event: JobEvent) => Effect.Effect<void>
  /** The runner took the job. */
  readonly handedOver: Effect.Effect<void>
  /**
   * Whether the follower waits for the instance's runner to start (`Backend.updateProvisioningData`):
   * true when it begins to, false once the runner is up or the wait ended. Nothing was handed over
   * meanwhile, so a stop then has no runner to ask: the worker ends the wait instead.
   */
  readonly runnerStarting?: (starting: boolean) => Effect.Effect<void>
}

/** Failing reads of the last stored log position are asked again this often, at most. */
const LAST_POSITION_RETRY = Schedule.exponential(Duration.millis(200)).pipe(Schedule.union(Schedule.spaced(Duration.seconds(5))))

/** A failure of the state store (not of the runner) while following. */
const isStoreError = (error: unknown): error is StateStoreError =>
  typeof error === "object" && error !== null && (error as { _tag?: unknown })._tag === "StateStoreError"

/**
 * How often a followed runner is watched: its stream's silence judged against its heartbeat
 * (`heartbeatEveryMs`), and its health check asked when more was stored since (a chatty job's
 * acknowledgment) or when the runner does not heartbeat (an older runner).
 */
const HEALTH_EVERY_MS = 2_000

/** The job's code, from the blob store, when the job has any. */
const readCode = (options: FollowerOptions, project: string, spec: JobSpec, repoId: string) =>
  spec.repoCodeHash === undefined
    ? Effect.succeed(undefined)
    : options.store.codes.get(project, repoId, spec.repoCodeHash).pipe(
      Effect.flatMap((record) => options.blobs.getBytes(record.blobKey)),
      Effect.map((bytes): Uint8Array | undefined => bytes)
    )

/**
 * The credentials stored with a remote repo (`repo_creds` of repos/init) in the runner's form;
 * undefined for other repo types and for a repo stored without them (or never initialised).
 */
const readRepoCredentials = (store: StateStoreService, project: string, repoId: string, spec: JobSpec) =>
  spec.repoData?.repoType !== "remote"
    ? Effect.succeed(undefined)
    : store.repos.get(project, repoId).pipe(
      Effect.flatMap((record) => RepoCredentials.open(project, repoId, record.creds)),
      Effect.map((stored) => {
        const creds = (stored ?? {}) as Record<string, unknown>
        const text = (key: string) => (typeof creds[key] === "string" && creds[key] !== "" ? (creds[key] as string) : undefined)
        const found = { cloneUrl: text("clone_url"), privateKey: text("private_key"), oauthToken: text("oauth_token") }
        return found.privateKey === undefined && found.oauthToken === undefined && found.cloneUrl === undefined ? undefined : found
      }),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined))
    )

/**
 * The timestamp of the last log line stored for the submission (0 when none is): a takeover
 * follows the runner from there. A failed read is logged and tried again for up to
 * `unreachableMs`, then fails the follower.
 */
export const lastStoredLogAt = (
  store: StateStoreService,
  project: string,
  submissionId: string,
  unreachableMs: number
): Effect.Effect<number, StateStoreError> =>
  store.logs.poll({ project, jobSubmissionId: submissionId, descending: true, limit: 1 }).pipe(
    Effect.map((page) => page.events[0]?.timestamp.getTime() ?? 0),
    Effect.tapError((e) =>
      Effect.logWarning(`job ${submissionId}: cannot read where its stored log ends (to resume following its runner), asking again: ${errorMessage(e)}`)
    ),
    Effect.retry(LAST_POSITION_RETRY.pipe(Schedule.upTo(Duration.millis(unreachableMs))))
  )

/**
 * How the job's instance ended on its own, when its backend can say (`Backend.instanceEnd`:
 * a batch scheduler's time limit, a preemption, a failed node); undefined otherwise, and when
 * the backend cannot be asked (that is logged: the runner's own account then stands).
 */
const instanceEnd = (compute: ComputeService, project: string, pd: JobProvisioningData): Effect.Effect<JobEvent | undefined> =>
  compute.backend(project, pd.backend).pipe(
    Effect.flatMap((backend) => (backend.instanceEnd === undefined ? Effect.succeed(undefined) : backend.instanceEnd(pd))),
    Effect.map((end) => (end === undefined ? undefined : JobEvent.InstanceEnded({ reason: end.reason, message: end.message }))),
    Effect.catchAll((e) => Effect.as(Effect.logWarning(`cannot ask backend ${pd.backend} how instance ${pd.instanceId} ended: ${errorMessage(e)}`), undefined))
  )

/** How often a backend is asked again whether an instance's runner is up, at least (its own answer may take longer). */
const STARTING_EVERY_MS = 200

/**
 * For a backend whose instance exists before its runner can be reached
 * (`Backend.updateProvisioningData`): reports the job pulling and waits until the backend
 * answers the completed provisioning data (reported too, to be stored), for at most
 * `timeoutMs`. Answers the data to reach the runner with, or undefined when the job was ended
 * (reported: the runner did not start in time, or its backend says it never will).
 */
const awaitRunnerStart = (
  compute: ComputeService,
  project: string,
  pd: JobProvisioningData,
  timeoutMs: number,
  reports: FollowerReports
): Effect.Effect<JobProvisioningData | undefined> =>
  Effect.gen(function* () {
    const backend = yield* compute.backend(project, pd.backend).pipe(Effect.option)
    if (backend._tag === "None" || backend.value.updateProvisioningData === undefined) return pd
    const update = backend.value.updateProvisioningData
    const deadline = Date.now() + timeoutMs
    let reported = false
    let lastError: string | undefined
    yield* reports.runnerStarting?.(true) ?? Effect.void
    while (true) {
      const answer = yield* update(pd).pipe(Effect.either)
      if (answer._tag === "Right" && answer.right !== undefined) {
        if (answer.right !== pd) yield* reports.jobEvent(JobEvent.RunnerStarting({ provisioningData: answer.right }))
        yield* reports.runnerStarting?.(false) ?? Effect.void
        return answer.right
      }
      if (answer._tag === "Left") {
        // The runner will never come up (it refused to start, the instance ended): the job
        // ends now with the backend's words. A failure that may pass is asked again.
        // An instance gone (`NotFound`) ends the job as its backend says it ended, when it can.
        if (!answer.left.isRetryable) {
          const ended = answer.left.reason === "NotFound" ? yield* instanceEnd(compute, project, pd) : undefined
          yield* reports.jobEvent(ended ?? JobEvent.InstanceEnded({ reason: "executor_error", message: `the runner did not start on instance ${pd.instanceId}: ${errorMessage(answer.left)}` }))
          yield* reports.runnerStarting?.(false) ?? Effect.void
          return undefined
        }
        lastError = errorMessage(answer.left)
        yield* Effect.logWarning(`instance ${pd.instanceId} (backend ${pd.backend}): cannot ask whether its runner is up, asking again: ${lastError}`)
      } else if (!reported) {
        reported = true
        yield* reports.jobEvent(JobEvent.RunnerStarting({}))
      }
      if (Date.now() >= deadline) {
        yield* reports.runnerStarting?.(false) ?? Effect.void
        yield* reports.jobEvent(JobEvent.InstanceEnded({
          reason: "waiting_runner_limit_exceeded",
          message: `the runner on instance ${pd.instanceId} (backend ${pd.backend}) did not start within the provisioning timeout (${Math.round(timeoutMs / 1000)}s)${lastError === undefined ? "" : `: ${lastError.slice(0, 500)}`}`
        }))
        return undefined
      }
      yield* Effect.sleep(Duration.millis(Math.min(STARTING_EVERY_MS, Math.max(0, deadline - Date.now()))))
    }
  })

/** A runner's report that ends the job with an error: its backend may know better why (the instance ended under it). */
const endsWithError = (event: JobEvent): boolean =>
  (event._tag === "RunnerExited" && event.exitStatus !== 0) || event._tag === "RunnerFailed"

/**
 * Hands the job to its runner (unless a previous owner did) and follows its events and logs
 * until the job ends on the runner. Every way it can fail becomes a job event for the worker:
 * an unreachable runner `InstanceUnreachable`, anything else `RunnerFailed` with the cause.
 */
export const follow = (options: FollowerOptions, job: FollowedJob, reports: FollowerReports): Effect.Effect<void> => {
  const { store, compute } = options
  const { run, submissionId, spec } = job
  // Completed by the backend before the hand-over where its runner starts after the instance.
  let pd = job.pd
  return Effect.gen(function* () {
    let cursor = 0
    let unreachableSince: number | undefined
    // Stores a stream's logs and reports its states, chunk by chunk, until it ends.
    // A job that lists artifacts and ended done has them kept before its end is reported:
    // afterwards its instance may take another job, which clears the working directory.
    const keep = (client: RunnerClient) =>
      Effect.gen(function* () {
        const { files, archive } = yield* fetchArtifacts(client)
        yield* keepArtifacts(options.blobs, artifactKeys(run.projectName, run.id, spec.jobName), {
          runName: run.runSpec.runName ?? "",
          jobName: spec.jobName,
          paths: spec.artifacts ?? [],
          files
        }, archive)
      }).pipe(Effect.either)
    // A runner whose stream stops heartbeating (an older runner: whose health check stops
    // answering) ends the wait on its stream (which may hang on a stalled connection); each sign
    // of life shows it reachable, however quiet its job is.
    const liveness = streamLiveness(heartbeatEveryMs(options.unreachableMs))
    const watched = <A, E, R>(client: RunnerClient, effect: Effect.Effect<A, E, R>) =>
      Effect.raceFirst(
        effect,
        watchHealth(client, {
          everyMs: HEALTH_EVERY_MS,
          liveness,
          timeoutMs: healthTimeoutMs(options.unreachableMs),
          // What is stored (the cursor moves only then) need not stay on the runner.
          acknowledged: () => cursor,
          onAnswer: Effect.sync(() => {
            unreachableSince = undefined
          })
        })
      )
    const consume = (client: RunnerClient, events: Stream.Stream<RunnerStreamEvent, RunnerTransportError>) =>
      events.pipe(
        // One chunk per read of the runner's stream: under heavy output a big batch
        // and one append; a trickle goes out line by line without waiting.
        Stream.runForEachChunk((chunk) =>
          Effect.gen(function* () {
            unreachableSince = undefined
            const logs: Array<NewLogEvent> = []
            let last = cursor
            for (const event of chunk) {
              if (event._tag === "Log") {
                logs.push({ project: run.projectName, jobSubmissionId: submissionId, timestamp: new Date(event.log.timestamp), source: event.source, message: event.log.message })
                last = Math.max(last, event.log.timestamp)
              } else if (event._tag === "State") last = Math.max(last, event.state.timestamp)
            }
            if (logs.length > 0) {
              // Without a trusted lease another replica may be following too.
              if (!job.leaseTrusted()) return yield* Effect.interrupt
              yield* store.logs.append(logs)
              faultPoint("logs.stored")
            }
            for (const event of chunk) {
              if (event._tag === "State") {
                let jobEvent = jobEventOfRunnerState(event.state)
                if (event.state.state === "done" && (spec.artifacts ?? []).length > 0) {
                  const kept = yield* keep(client)
                  if (kept._tag === "Left") {
                    const e = kept.left
                    jobEvent = JobEvent.RunnerFailed({ reason: "executor_error", message: `cannot keep the job's artifacts: ${e instanceof Error ? e.message : errorMessage(e)}` })
                  }
                }
                if (jobEvent && endsWithError(jobEvent)) jobEvent = (yield* instanceEnd(compute, run.projectName, pd)) ?? jobEvent
                if (jobEvent) yield* reports.jobEvent(jobEvent)
              }
            }
            // Only what is stored moves the cursor: a reconnect resumes right after
            // it, neither losing nor repeating a line.
            cursor = last
          }).pipe(Effect.uninterruptible, (effect) => handling(liveness, effect))
        )
      )
    if (job.alreadyHanded) {
      cursor = yield* lastStoredLogAt(store, run.projectName, submissionId, options.unreachableMs)
    } else {
      // The values of the secrets the job refers to travel only in the hand-over; the stored
      // spec keeps the references. A missing or unreadable secret fails the job, by name.
      const secrets = yield* ProjectSecrets.forJob(store, run.projectName, spec).pipe(Effect.either)
      if (secrets._tag === "Left") {
        yield* reports.jobEvent(JobEvent.RunnerFailed({ reason: "executor_error", message: `Secrets interpolation error: ${secrets.left.message}` }))
        return
      }
      const started = yield* awaitRunnerStart(compute, run.projectName, pd, options.provisioningTimeoutMs, reports)
      if (started === undefined) return
      pd = started
      const code = yield* readCode(options, run.projectName, spec, run.runSpec.repoId)
      // The nodes of a multi-node replica start only once every one of them has its instance.
      const clusterInfo = spec.jobsPerReplica > 1
        ? yield* waitForCluster(store, run, spec, options.provisioningTimeoutMs)
        : singleNode(pd)
      // A private remote repo's credentials (repos/init's repo_creds) travel only in the hand-over too.
      // Credentials that cannot be opened (the server's secrets key changed or is gone) fail the job saying so.
      const repoCredentials = yield* readRepoCredentials(store, run.projectName, run.runSpec.repoId, spec).pipe(
        Effect.catchTag("SecretCipherError", (e) =>
          Effect.as(reports.jobEvent(JobEvent.RunnerFailed({ reason: "executor_error", message: `cannot open the repo's credentials: ${e.message}` })), "failed" as const))
      )
      if (repoCredentials === "failed") return
      const body = {
        run: { id: run.id, runName: run.runSpec.runName, repoId: run.runSpec.repoId },
        jobSpec: spec,
        clusterInfo,
        secrets: secrets.right,
        ...(repoCredentials !== undefined ? { repoCredentials } : {}),
        jobSubmissionId: submissionId,
        ...inactivityOf(run.runSpec.configuration),
        ...((options.logQuotaPerJobHour ?? 0) > 0 ? { logQuotaHour: options.logQuotaPerJobHour } : {})
      } as any
      if (job.resumed === true) cursor = yield* lastStoredLogAt(store, run.projectName, submissionId, options.unreachableMs)
      // The hand-over answers with the job's event stream (one request; an older
      // runner is handed the job in steps and followed as before): follow it at once.
      // A failed hand-over fails the job; a stream that breaks afterwards is resumed
      // below like any other.
      faultPoint("job.handing")
      const followed = yield* withRunner(compute, run.projectName, pd, (client) =>
        Effect.gen(function* () {
          yield* waitHealthy(client, options.provisioningTimeoutMs)
          const inputs = spec.artifactInputs ?? []
          const events = yield* watched(
            client,
            inputs.length === 0
              ? startFollowing(client, body, code, cursor, liveness)
              : startFollowingWithArtifacts(client, body, code, inputs.map((key) => ({ key, stream: options.blobs.stream(key) })), liveness)
          )
          yield* reports.handedOver
          faultPoint("job.handed")
          return yield* watched(client, consume(client, events)).pipe(Effect.either)
        })
      )
      if (followed._tag === "Right") return
      if (!isStoreError(followed.left)) unreachableSince ??= Date.now()
      yield* Effect.sleep(Duration.millis(500))
    }
    // Follow; reconnect from the last event after a broken connection. A runner gone because
    // its instance ended on its own (a backend that can say so) ends the job with that reason.
    let askedEndAt = 0
    while (true) {
      // Connecting again (an SSH login that the transport retries) may take no longer than
      // what is left of the unreachable limit: a host that died with its connection is then
      // told within the limit, not after the transport's own retries. A host merely slow to
      // log in still connects: the transport's attempt goes on, and the next round joins it.
      const connectTimeoutMs = Math.max(CONNECT_AT_LEAST_MS, unreachableSince === undefined ? options.unreachableMs : unreachableSince + options.unreachableMs - Date.now())
      const outcome = yield* withRunner(compute, run.projectName, pd, (client) => watched(client, consume(client, followEvents(client, cursor, liveness))), connectTimeoutMs).pipe(Effect.either)
      if (outcome._tag === "Right") return
      if (isStoreError(outcome.left)) {
        // The runner is fine; the database is not (its logs could not be stored): follow again
        // from the last stored line once it answers, without counting the runner unreachable.
        yield* Effect.logWarning(`job ${submissionId}: cannot store its runner's events, following again shortly: ${errorMessage(outcome.left)}`)
        yield* Effect.sleep(Duration.seconds(1))
        continue
      }
      const now = Date.now()
      unreachableSince ??= now
      if (now - askedEndAt >= 2_000) {
        askedEndAt = now
        const ended = yield* instanceEnd(compute, run.projectName, pd)
        if (ended !== undefined) {
          yield* reports.jobEvent(ended)
          return
        }
      }
      if (now - unreachableSince > options.unreachableMs) {
        const message = `the runner did not answer for ${Math.round((now - unreachableSince) / 1000)}s: ${errorMessage(outcome.left).slice(0, 500)}`
        yield* reports.jobEvent(JobEvent.InstanceUnreachable({ message }))
        return
      }
      yield* Effect.sleep(Duration.millis(500))
    }
  }).pipe(
    Effect.catchAllCause((cause) => {
      if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
      const error = Cause.squash(cause)
      const what = job.alreadyHanded ? "could not resume following the job's runner" : "could not hand the job to its runner"
      return reports.jobEvent(
        JobEvent.RunnerFailed({ reason: "executor_error", message: `${what}: ${error instanceof Error ? error.message : errorMessage(error)}` })
      )
    }),
    Effect.asVoid
  )
}

/** A dev environment's `inactivity_duration` for the runner, which stops it after that long without an SSH connection. */
const inactivityOf = (configuration: { readonly type: string; readonly inactivityDuration?: number | "off" | undefined }): { inactivityDuration?: number } =>
  configuration.type === "dev-environment" && typeof configuration.inactivityDuration === "number" ? { inactivityDuration: configuration.inactivityDuration } : {}
