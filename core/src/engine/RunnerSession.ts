/**
 * The engine's side of the runner protocol: wait until a runner answers, hand it a job (spec,
 * code, run), follow its live event stream from a cursor, and stop it. Runner states become
 * job lifecycle events; log events go to a sink in batches.
 */
import { Duration, Effect, Schedule, Schema, Stream } from "effect"
import { createParser, type EventSourceMessage } from "eventsource-parser"
import type { RunnerClient } from "../ports/RunnerTransport.ts"
import { RunnerTransportError } from "../ports/RunnerTransport.ts"
import { JobStateEvent, LogEvent, SubmitBody } from "../runner/RunnerProtocol.ts"
import { JobEvent, type RunnerTerminationReason } from "./JobLifecycle.ts"

const MODULE = "RunnerSession"

const FINAL_STATES: ReadonlySet<string> = new Set(["done", "failed", "terminated", "aborted"])

const RUNNER_REASONS: ReadonlySet<string> = new Set<RunnerTerminationReason>([
  "container_exited_with_error",
  "ports_binding_failed",
  "creating_container_error",
  "executor_error",
  "max_duration_exceeded",
  "log_quota_exceeded"
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

/** Waits until the runner answers its health check, retrying every `intervalMs` up to `timeoutMs`. */
export const waitHealthy = (client: RunnerClient, timeoutMs: number, intervalMs = 100) =>
  client.fetch("/api/healthcheck").pipe(
    Effect.flatMap(expectOk("healthcheck")),
    Effect.retry(Schedule.spaced(Duration.millis(intervalMs))),
    Effect.timeoutFail({
      duration: Duration.millis(timeoutMs),
      onTimeout: () => transportError("healthcheck", `the runner at ${client.baseUrl} did not answer within ${Math.round(timeoutMs / 1000)}s`)
    }),
    Effect.asVoid
  )

const encodeSubmit = Schema.encodeSync(SubmitBody)

/** Hands the job to the runner: submit the spec, upload the code (if any), start it. */
export const startJob = (client: RunnerClient, body: SubmitBody, code: Uint8Array | undefined) =>
  Effect.gen(function* () {
    yield* client.fetch("/api/submit", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(encodeSubmit(body))
    }).pipe(Effect.flatMap(expectOk("submit")))
    if (code !== undefined) {
      yield* client.fetch("/api/upload_code", {
        method: "POST",
        headers: { "content-type": "application/octet-stream" },
        body: code as unknown as BodyInit
      }).pipe(Effect.flatMap(expectOk("upload_code")))
    }
    yield* client.fetch("/api/run", { method: "POST" }).pipe(Effect.flatMap(expectOk("run")))
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

const decodeState = Schema.decodeUnknownSync(JobStateEvent)
const decodeLog = Schema.decodeUnknownSync(LogEvent)

const toEvent = (message: EventSourceMessage): RunnerStreamEvent | undefined => {
  switch (message.event) {
    case "state":
      return { _tag: "State", state: decodeState(JSON.parse(message.data)) }
    case "log":
      return { _tag: "Log", log: decodeLog(JSON.parse(message.data)), source: "stdout" }
    case "runner_log":
      return { _tag: "Log", log: decodeLog(JSON.parse(message.data)), source: "runner" }
    case "end":
      return { _tag: "End", lastUpdated: Number(JSON.parse(message.data).last_updated ?? 0) }
    default:
      return undefined
  }
}

/**
 * The runner's live events after `cursor` (epoch ms), as a stream that ends with `End` once the
 * job has ended and every event was delivered. Reading in chunks keeps a burst of log lines to
 * a handful of allocations.
 */
export const followEvents = (client: RunnerClient, cursor: number): Stream.Stream<RunnerStreamEvent, RunnerTransportError> =>
  Stream.unwrapScoped(
    Effect.gen(function* () {
      const response = yield* client.fetch(`/logs_stream?timestamp=${cursor}`, { headers: { accept: "text/event-stream" } }).pipe(
        Effect.flatMap(expectOk("logs_stream"))
      )
      if (response.body === null) return yield* Effect.fail(transportError("logs_stream", "the runner sent an empty stream"))
      const body = response.body
      return Stream.fromReadableStream({
        evaluate: () => body,
        onError: (cause) => transportError("logs_stream", `the runner's event stream broke: ${String(cause)}`, cause)
      }).pipe(
        Stream.mapAccum(
          { decoder: new TextDecoder(), pending: [] as Array<RunnerStreamEvent>, parser: undefined as ReturnType<typeof createParser> | undefined },
          (acc, chunk) => {
            const out: Array<RunnerStreamEvent> = []
            const parser = acc.parser ?? createParser({
              onEvent: (message) => {
                const event = toEvent(message)
                if (event) acc.pending.push(event)
              }
            })
            parser.feed(acc.decoder.decode(chunk, { stream: true }))
            out.push(...acc.pending)
            acc.pending.length = 0
            return [{ ...acc, parser }, out] as const
          }
        ),
        Stream.flattenIterables,
        // A job's final state comes after all its logs: anything past it belongs to the runner's
        // next job, so a follower stops there even if the `end` event has not come yet.
        Stream.takeUntil((event) => event._tag === "End" || (event._tag === "State" && FINAL_STATES.has(event.state.state)))
      )
    })
  )
