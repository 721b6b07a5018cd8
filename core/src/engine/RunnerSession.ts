/**
 * The engine's side of the runner protocol: wait until a runner answers, hand it a job (spec,
 * code, run: one `POST /api/start`, or three requests to an older runner), follow its live
 * event stream from a cursor (or straight from the hand-over's answer), and stop it. Runner
 * states become job lifecycle events; log events go to a sink in batches.
 */
import { Data, Duration, Effect, Schedule, Schema, type Scope, Stream } from "effect"
import { createParser, type EventSourceMessage } from "eventsource-parser"
import type { RunnerClient } from "../ports/RunnerTransport.ts"
import { RunnerTransportError } from "../ports/RunnerTransport.ts"
import { Buffer } from "node:buffer"
import { EVENT_STREAM_CONTENT_TYPE, EVENT_STREAM_VERSION, eventStreamVersion, FrameDecoder, HEARTBEAT_HEADER, HEARTBEAT_PARAM, type StreamFrame } from "../runner/EventStream.ts"
import { encodeStartBody, JobStateEvent, type LogEvent, START_CONTENT_TYPE, SubmitBody } from "../runner/RunnerProtocol.ts"
import { JobEvent, type RunnerTerminationReason } from "./JobLifecycle.ts"

const MODULE = "RunnerSession"

const FINAL_STATES: ReadonlySet<string> = new Set(["done", "failed", "terminated", "aborted"])

const RUNNER_REASONS: ReadonlySet<string> = new Set<RunnerTerminationReason>([
  "container_exited_with_error",
  "ports_binding_failed",
  "creating_container_error",
  "executor_error",
  "max_duration_exceeded",
  "log_quota_exceeded",
  "inactivity_duration_exceeded"
])

/** What one runner state report means for the job, or undefined when it changes nothing. */
export const jobEventOfRunnerState = (state: JobStateEvent): JobEvent | undefined => {
  switch (state.state) {
    case "pulling":
      return JobEvent.RunnerPulling()
    case "running":
      return JobEvent.RunnerRunning()
    case "done":
      return JobEvent.RunnerExited({ exitStatus: state.exitStatus ?? 0 })
    case "failed":
    case "terminated":
    case "aborted": {
      const reason = state.terminationReason
      if (reason === "container_exited_with_error" || reason === undefined || !RUNNER_REASONS.has(reason)) {
        return JobEvent.RunnerExited({ exitStatus: state.exitStatus ?? (state.state === "failed" ? 1 : 143) })
      }
      return JobEvent.RunnerFailed({ reason: reason as RunnerTerminationReason, message: state.terminationMessage })
    }
    default:
      return undefined
  }
}

const transportError = (method: string, message: string, cause?: unknown) =>
  new RunnerTransportError({ module: MODULE, method, reason: "Transport", message, ...(cause === undefined ? {} : { cause }) })

const expectOk = (method: string) => (response: Response) =>
  response.ok
    ? Effect.succeed(response)
    : Effect.flatMap(Effect.promise(() => response.text()), (text) =>
      Effect.fail(
        new RunnerTransportError({
          module: MODULE,
          method,
          reason: response.status >= 500 ? "Transport" : "Invalid",
          message: `runner ${method} answered ${response.status}: ${text.slice(0, 500)}`
        })
      ))

/** When a runner (by base URL) last answered: a check moments ago is not repeated. */
const healthyAt = new Map<string, number>()
const HEALTHY_FOR_MS = 2_000

/** Records that the runner behind `client` answered just now (seen alive some other way). */
export const noteHealthy = (client: RunnerClient): void => {
  if (healthyAt.size > 10_000) healthyAt.clear()
  healthyAt.set(client.baseUrl, Date.now())
}

/**
 * Waits until the runner answers its health check, retrying every `intervalMs` up to
 * `timeoutMs`; at once when it answered (or was noted healthy) within the last 2 s.
 */
export const waitHealthy = (client: RunnerClient, timeoutMs: number, intervalMs = 100): Effect.Effect<void, RunnerTransportError> =>
  Effect.suspend(() => {
    const at = healthyAt.get(client.baseUrl)
    return at !== undefined && Date.now() - at < HEALTHY_FOR_MS ? Effect.void : checkHealthy(client, timeoutMs, intervalMs)
  })

const checkHealthy = (client: RunnerClient, timeoutMs: number, intervalMs: number) =>
  client.fetch("/api/healthcheck").pipe(
    Effect.flatMap(expectOk("healthcheck")),
    Effect.tap(() => Effect.sync(() => noteHealthy(client))),
    Effect.retry(Schedule.spaced(Duration.millis(intervalMs))),
    Effect.timeoutFail({
      duration: Duration.millis(timeoutMs),
      onTimeout: () => transportError("healthcheck", `the runner at ${client.baseUrl} did not answer within ${Math.round(timeoutMs / 1000)}s`)
    }),
    Effect.asVoid
  )

/**
 * How long a followed runner may take to answer a health check, for a job allowed to stay
 * unreachable `unreachableMs`: half of it, within 2..10 s.
 */
export const healthTimeoutMs = (unreachableMs: number): number => Math.min(10_000, Math.max(2_000, Math.round(unreachableMs / 2)))

/**
 * How often a followed runner's stream is asked to heartbeat while its job is quiet, for a job
 * allowed to stay unreachable `unreachableMs`: a twelfth of it, within 2..10 s (10 s for the
 * default 2 minutes). A runner that stalls is then found within this plus `healthTimeoutMs` (at
 * most 20 s), well inside the limit; each heartbeat costs the server a read of the stream, so
 * the longer interval is what lets it follow many quiet jobs cheaply.
 */
export const heartbeatEveryMs = (unreachableMs: number): number => Math.min(10_000, Math.max(2_000, Math.round(unreachableMs / 12)))

/**
 * How a follower tells the runner alive from its event stream: the stream is asked for a
 * heartbeat every `everyMs` while the job is quiet, and a runner that grants it (an older one
 * does not) sets `heartbeating` for `watchHealth`. `heardAt` is when the stream last brought
 * anything or its reader last went back to it for more (epoch ms), and `handling` is set while
 * the reader handles what it brought (see `handling`): a reader held up by its own work (a slow
 * database) has not been waiting on the runner. Each request for a stream clears
 * `heartbeating` until its answer grants it.
 */
export interface StreamLiveness {
  readonly everyMs: number
  heartbeating: boolean
  heardAt: number
  handling: boolean
}

export const streamLiveness = (everyMs: number): StreamLiveness => ({ everyMs, heartbeating: false, heardAt: 0, handling: false })

/** Runs a reader's handling of what the stream brought: the silence it is judged by starts when it is done. */
export const handling = <A, E, R>(liveness: StreamLiveness, effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.suspend(() => {
    liveness.handling = true
    return Effect.ensuring(effect, Effect.sync(() => {
      liveness.handling = false
      liveness.heardAt = Date.now()
    }))
  })

/**
 * Watches a followed runner, every `everyMs` (first after `everyMs`), for as long as it runs: a
 * job's event stream stays quiet while the job prints nothing, so something else must tell a
 * runner that stopped answering (a stalled connection, a hung host) from a quiet job. While the
 * stream heartbeats (`liveness`), that is the stream itself: it fails when nothing, not even a
 * heartbeat, came for its interval plus `timeoutMs`, and asks nothing of the runner. Otherwise
 * it asks the runner's health check, and fails when an answer does not come within `timeoutMs`
 * or is not a 2xx. `onAnswer` runs on each sign of life. A check carries `acknowledged()` (the
 * newest event the server has stored, when above 0), so that the runner lets go of what the
 * server already has: with a heartbeating stream one is still asked whenever more was stored
 * since the last (a chatty job), and never for a quiet one.
 */
export const watchHealth = (
  client: RunnerClient,
  options: {
    readonly everyMs: number
    readonly timeoutMs: number
    readonly onAnswer: Effect.Effect<void>
    readonly acknowledged?: () => number
    readonly liveness?: StreamLiveness
  }
): Effect.Effect<never, RunnerTransportError> => {
  let sent = 0
  const check = Effect.suspend(() => {
    const acknowledged = options.acknowledged?.() ?? 0
    const liveness = options.liveness
    if (liveness?.heartbeating === true) {
      const silent = Date.now() - liveness.heardAt
      if (!liveness.handling && silent > liveness.everyMs + options.timeoutMs) {
        return Effect.fail(transportError("logs_stream", `the runner at ${client.baseUrl} sent nothing on the job's event stream, not even its heartbeat, for ${Math.round(silent / 1000)}s`))
      }
      if (acknowledged <= sent) return Effect.void
    }
    sent = acknowledged
    return client.fetch(acknowledged > 0 ? `/api/healthcheck?acknowledged=${acknowledged}` : "/api/healthcheck").pipe(
      Effect.flatMap(expectOk("healthcheck")),
      Effect.flatMap((response) =>
        Effect.tryPromise({ try: () => response.text(), catch: (cause) => transportError("healthcheck", `the runner's health check answer broke off: ${String(cause)}`, cause) })
      ),
      Effect.timeoutFail({
        duration: Duration.millis(options.timeoutMs),
        onTimeout: () => transportError("healthcheck", `the runner at ${client.baseUrl} did not answer its health check within ${Math.round(options.timeoutMs / 1000)}s`)
      }),
      Effect.asVoid
    )
  })
  return Effect.sleep(Duration.millis(options.everyMs)).pipe(
    Effect.zipRight(check),
    Effect.zipRight(options.onAnswer),
    Effect.forever
  )
}

const encodeSubmit = Schema.encodeSync(SubmitBody)

/** The runner answered submit with 409: it still has a job. */
class RunnerBusy extends Data.TaggedError("RunnerBusy")<{ readonly text: string }> {}
const SUBMIT_BUSY_SECONDS = 10

/**
 * Posts a hand-over request; a runner still ending its previous job (an aborted job's instance
 * is released at once) answers 409 for a moment, so it is asked again until it takes the job.
 * Answers the response as it came (any other status), for the caller to judge.
 */
const postTakingTurns = (client: RunnerClient, method: string, path: string, init: RequestInit) =>
  client.fetch(path, { ...init, method: "POST" }).pipe(
    Effect.flatMap((response) =>
      response.status === 409
        ? Effect.flatMap(Effect.promise(() => response.text()), (text) => Effect.fail(new RunnerBusy({ text })))
        : Effect.succeed(response)
    ),
    Effect.retry({ while: (e) => e._tag === "RunnerBusy", schedule: Schedule.spaced(Duration.millis(20)).pipe(Schedule.upTo(Duration.seconds(SUBMIT_BUSY_SECONDS))) }),
    Effect.catchTag("RunnerBusy", (e) =>
      Effect.fail(new RunnerTransportError({ module: MODULE, method, reason: "Invalid", message: `runner ${method} answered 409 for ${SUBMIT_BUSY_SECONDS}s: ${e.text.slice(0, 500)}` }))
    )
  )

/**
 * Runners (by base URL) that do not know `POST /api/start` (an older runner answers 404): they
 * are handed jobs with submit, upload_code and run, as upstream's runner is.
 */
const withoutStart = new Set<string>()

/** The first steps of a hand-over in steps: submit the spec, then upload the code (if any). */
const submitAndUploadCode = (client: RunnerClient, json: string, code: Uint8Array | undefined) =>
  Effect.gen(function* () {
    yield* postTakingTurns(client, "submit", "/api/submit", { headers: { "content-type": "application/json" }, body: json }).pipe(
      Effect.flatMap(expectOk("submit"))
    )
    if (code !== undefined) {
      yield* client.fetch("/api/upload_code", {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: code as unknown as BodyInit
      }).pipe(Effect.flatMap(expectOk("upload_code")))
    }
  })

/** The three-request hand-over of upstream's runner: submit the spec, upload the code (if any), run. */
const startJobInSteps = (client: RunnerClient, json: string, code: Uint8Array | undefined) =>
  Effect.gen(function* () {
    yield* submitAndUploadCode(client, json, code)
    yield* client.fetch("/api/run", { method: "POST" }).pipe(Effect.flatMap(expectOk("run")))
  })

/**
 * `POST /api/start` (spec and code in one body); `undefined` when the runner is an older one
 * without it, which is remembered.
 */
const postStart = (client: RunnerClient, json: string, code: Uint8Array | undefined, accept: string, cursor: number, liveness?: StreamLiveness) =>
  Effect.suspend(() => {
    if (withoutStart.has(client.baseUrl)) return Effect.succeed(undefined)
    if (liveness !== undefined) liveness.heartbeating = false
    return postTakingTurns(client, "start", `/api/start?timestamp=${cursor}${heartbeatQuery(liveness)}`, {
      headers: { "content-type": START_CONTENT_TYPE, accept },
      body: encodeStartBody(json, code) as unknown as BodyInit
    }).pipe(
      Effect.flatMap((response) => {
        if (response.status !== 404 && response.status !== 405) return expectOk("start")(response)
        return Effect.promise(() => response.text()).pipe(
          Effect.map(() => {
            if (withoutStart.size > 10_000) withoutStart.clear()
            withoutStart.add(client.baseUrl)
            return undefined
          })
        )
      })
    )
  })

/**
 * Hands the job to the runner: the spec, the code (if any), start it — one request to a
 * runner that knows `POST /api/start`, else submit, upload_code and run.
 */
export const startJob = (client: RunnerClient, body: SubmitBody, code: Uint8Array | undefined) =>
  Effect.gen(function* () {
    const json = JSON.stringify(encodeSubmit(body))
    const started = yield* postStart(client, json, code, "application/json", 0)
    if (started !== undefined) {
      yield* Effect.promise(() => started.text())
      return
    }
    yield* startJobInSteps(client, json, code)
  })

/**
 * Hands the job to the runner (as `startJob`) and answers its live events after `cursor`, as
 * `followEvents` does, once the runner has taken the job. A runner that knows `POST /api/start`
 * answers that one request with the event stream: the hand-over and the follow cost one round
 * trip, and the first events (`running`, the first output) come on the same connection. An
 * older runner is handed the job in steps and followed with `GET /logs_stream`. The stream
 * belongs to the scope (a stream not run is cancelled when the scope closes).
 */
export const startFollowing = (
  client: RunnerClient,
  body: SubmitBody,
  code: Uint8Array | undefined,
  cursor = 0,
  liveness?: StreamLiveness
): Effect.Effect<Stream.Stream<RunnerStreamEvent, RunnerTransportError>, RunnerTransportError, Scope.Scope> =>
  Effect.gen(function* () {
    const json = JSON.stringify(encodeSubmit(body))
    const started = yield* postStart(client, json, code, EVENT_STREAM_CONTENT_TYPE, cursor, liveness)
    if (started !== undefined) return yield* eventsOfResponse(client, "start", started, liveness)
    yield* startJobInSteps(client, json, code)
    return followEvents(client, cursor, liveness)
  })

/**
 * Hands a workflow job that gets its dependencies' artifacts to the runner, in steps: submit,
 * upload_code, each archive streamed to `upload_artifacts`, run; then follows its events.
 */
export const startFollowingWithArtifacts = <E>(
  client: RunnerClient,
  body: SubmitBody,
  code: Uint8Array | undefined,
  archives: ReadonlyArray<{ readonly key: string; readonly stream: Stream.Stream<Uint8Array, E> }>,
  liveness?: StreamLiveness
): Effect.Effect<Stream.Stream<RunnerStreamEvent, RunnerTransportError>, RunnerTransportError> =>
  Effect.gen(function* () {
    yield* submitAndUploadCode(client, JSON.stringify(encodeSubmit(body)), code)
    for (const archive of archives) {
      yield* client.fetch("/api/upload_artifacts", {
        method: "POST",
        headers: { "content-type": "application/gzip" },
        body: Stream.toReadableStream(Stream.orDie(archive.stream)) as unknown as BodyInit,
        duplex: "half"
      } as RequestInit).pipe(
        Effect.flatMap(expectOk("upload_artifacts")),
        Effect.mapError((e) => transportError("upload_artifacts", `cannot hand the artifacts ${archive.key} to the runner: ${e.message}`, e))
      )
    }
    yield* client.fetch("/api/run", { method: "POST" }).pipe(Effect.flatMap(expectOk("run")))
    return followEvents(client, 0, liveness)
  })

/** The ended job's artifacts on the runner: their manifest, and the archive as a stream. */
export const fetchArtifacts = (client: RunnerClient) =>
  Effect.gen(function* () {
    const manifest = yield* client.fetch("/api/artifacts/manifest").pipe(
      // The runner's refusal (a missing folder) is the message, without its JSON around it.
      Effect.flatMap((r) =>
        r.ok || r.status >= 500
          ? expectOk("artifacts/manifest")(r)
          : Effect.flatMap(Effect.promise(() => r.text()), (text) => {
            let msg = text.slice(0, 500)
            try {
              msg = (JSON.parse(text) as { detail: Array<{ msg: string }> }).detail.map((d) => d.msg).join("; ")
            } catch { /* not the runner's JSON: shown as it came */ }
            return Effect.fail(new RunnerTransportError({ module: MODULE, method: "artifacts/manifest", reason: "Invalid", message: msg }))
          })
      ),
      Effect.flatMap((r) => Effect.promise(() => r.json() as Promise<{ files: ReadonlyArray<{ path: string; size: number; sha256: string }> }>))
    )
    const response = yield* client.fetch("/api/artifacts/archive").pipe(Effect.flatMap(expectOk("artifacts/archive")))
    const body = response.body
    const archive = body === null
      ? Stream.empty
      : Stream.fromReadableStream({ evaluate: () => body, onError: (cause) => transportError("artifacts/archive", `the artifact archive broke off: ${String(cause)}`, cause) })
    return { files: manifest.files, archive }
  })

/** Asks the runner to stop the job: gracefully, or at once with `abort`. */
export const stopJob = (client: RunnerClient, abort: boolean) =>
  client.fetch("/api/stop", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ abort })
  }).pipe(Effect.flatMap(expectOk("stop")), Effect.asVoid)

/** One event of the runner's live stream. */
export type RunnerStreamEvent =
  | { readonly _tag: "State"; readonly state: JobStateEvent }
  | { readonly _tag: "Log"; readonly log: LogEvent; readonly source: "stdout" | "runner" }
  | { readonly _tag: "End"; readonly lastUpdated: number }
  /** The runner is there and the job quiet (only to a follower that asked for heartbeats). */
  | { readonly _tag: "Heartbeat" }

const decodeState = Schema.decodeUnknownSync(JobStateEvent)

// An older runner's Server-Sent Events: one JSON event per event, output in base64.
const decodeLogData = (data: string): LogEvent => {
  const raw = JSON.parse(data) as { timestamp?: unknown; message?: unknown }
  if (typeof raw.timestamp !== "number" || typeof raw.message !== "string") {
    throw new Error(`a log event needs a numeric timestamp and a base64 message, got ${data.slice(0, 200)}`)
  }
  const bytes = Buffer.from(raw.message, "base64")
  return { timestamp: raw.timestamp, message: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) }
}

const fromSse = (message: EventSourceMessage): RunnerStreamEvent | undefined => {
  switch (message.event) {
    case "state":
      return { _tag: "State", state: decodeState(JSON.parse(message.data)) }
    case "log":
      return { _tag: "Log", log: decodeLogData(message.data), source: "stdout" }
    case "runner_log":
      return { _tag: "Log", log: decodeLogData(message.data), source: "runner" }
    case "end":
      return { _tag: "End", lastUpdated: Number(JSON.parse(message.data).last_updated ?? 0) }
    default:
      return undefined
  }
}

const fromFrame = (event: StreamFrame): RunnerStreamEvent => {
  switch (event.kind) {
    case "state":
      return { _tag: "State", state: event.state }
    case "log":
      return { _tag: "Log", log: { timestamp: event.timestamp, message: event.message }, source: "stdout" }
    case "runner_log":
      return { _tag: "Log", log: { timestamp: event.timestamp, message: event.message }, source: "runner" }
    case "end":
      return { _tag: "End", lastUpdated: event.timestamp }
    case "heartbeat":
      return HEARTBEAT
  }
}

const HEARTBEAT: RunnerStreamEvent = { _tag: "Heartbeat" }

/** The query that asks for heartbeats (`&heartbeat=<ms>`), or nothing. */
const heartbeatQuery = (liveness: StreamLiveness | undefined): string => (liveness === undefined ? "" : `&${HEARTBEAT_PARAM}=${liveness.everyMs}`)

/** Turns the chunks of a response body into events: frames from a current runner, SSE from an older one. */
const eventDecoder = (binary: boolean): ((chunk: Uint8Array) => Array<RunnerStreamEvent>) => {
  if (binary) {
    const frames = new FrameDecoder()
    return (chunk) => frames.push(chunk).map(fromFrame)
  }
  const text = new TextDecoder()
  const pending: Array<RunnerStreamEvent> = []
  const parser = createParser({
    onEvent: (message) => {
      const event = fromSse(message)
      if (event) pending.push(event)
    }
  })
  return (chunk) => {
    parser.feed(text.decode(chunk, { stream: true }))
    return pending.splice(0)
  }
}

/**
 * The runner's live events after `cursor` (epoch ms), as a stream that ends with `End` once the
 * job has ended and every event was delivered. Each read of the connection becomes one chunk
 * of events, so a consumer that works chunk by chunk handles a burst of output in one go.
 *
 * The stream is the runner's binary event stream (EventStream.ts); a runner that answers with
 * Server-Sent Events is an older one and is read as such, and one that speaks another version
 * of the binary stream is refused with an error that says so.
 */
export const followEvents = (client: RunnerClient, cursor: number, liveness?: StreamLiveness): Stream.Stream<RunnerStreamEvent, RunnerTransportError> =>
  Stream.unwrapScoped(
    Effect.suspend(() => {
      if (liveness !== undefined) liveness.heartbeating = false
      return client.fetch(`/logs_stream?timestamp=${cursor}${heartbeatQuery(liveness)}`, {
        headers: { accept: `${EVENT_STREAM_CONTENT_TYPE}, text/event-stream;q=0.5` }
      })
    }).pipe(
      Effect.flatMap(expectOk("logs_stream")),
      Effect.flatMap((response) => eventsOfResponse(client, "logs_stream", response, liveness))
    )
  )

/**
 * The events of a response that carries the runner's event stream (`logs_stream`, or `start`
 * asked for the stream): binary frames, or an older runner's Server-Sent Events. The body is
 * cancelled when the scope closes, in case the stream is never run.
 */
const eventsOfResponse = (
  client: RunnerClient,
  method: string,
  response: Response,
  liveness?: StreamLiveness
): Effect.Effect<Stream.Stream<RunnerStreamEvent, RunnerTransportError>, RunnerTransportError, Scope.Scope> =>
  Effect.gen(function* () {
    if (response.body === null) return yield* Effect.fail(transportError(method, "the runner sent an empty stream"))
    const body = response.body
    yield* Effect.addFinalizer(() => Effect.promise(() => body.cancel().catch(() => {})))
    const contentType = response.headers.get("content-type")
    const version = eventStreamVersion(contentType)
    const refuse = (message: string) => Effect.fail(new RunnerTransportError({ module: MODULE, method, reason: "Invalid", message }))
    if (version !== undefined && version !== EVENT_STREAM_VERSION) {
      return yield* refuse(
        `the runner at ${client.baseUrl} streams events in version ${version} of the event stream, this server reads version ${EVENT_STREAM_VERSION}: run a runner of the server's version`
      )
    }
    if (version === undefined && !(contentType ?? "").toLowerCase().startsWith("text/event-stream")) {
      return yield* refuse(`the runner at ${client.baseUrl} answered the event stream with ${contentType ?? "no content type"}`)
    }
    const decode = eventDecoder(version !== undefined)
    // A runner that grants heartbeats says so (an older one ignores the ask): from now on the
    // stream itself tells it alive, every read of it noted.
    const heartbeats = liveness !== undefined && version !== undefined && response.headers.get(HEARTBEAT_HEADER) !== null ? liveness : undefined
    if (heartbeats !== undefined) {
      heartbeats.heardAt = Date.now()
      heartbeats.heartbeating = true
    }
    return Stream.fromReadableStream({
      evaluate: () => body,
      onError: (cause) => transportError(method, `the runner's event stream broke: ${String(cause)}`, cause)
    }).pipe(
      Stream.mapConcatEffect((chunk) =>
        Effect.try({
          try: () => {
            if (heartbeats !== undefined) heartbeats.heardAt = Date.now()
            return decode(chunk)
          },
          catch: (cause) => transportError(method, `the runner sent a malformed event: ${String(cause)}`, cause)
        })
      ),
      // A job's final state comes after all its logs: anything past it belongs to the runner's
      // next job, so a follower stops there even if the `end` event has not come yet.
      Stream.takeUntil((event) => event._tag === "End" || (event._tag === "State" && FINAL_STATES.has(event.state.state)))
    )
  })
