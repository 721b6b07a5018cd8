// /api/project/{p}/logs/*: pages of a job submission's log (`poll`, upstream's route) and a
// live stream (`stream`, Server-Sent Events) that first replays what is stored and then sends
// new lines the moment the engine stores them, ending once the run has finished.
import { Duration, Effect, Option, Queue, Runtime, Schema } from "effect"
import { streamSSE } from "hono/streaming"
import * as Api from "../../api/runs.ts"
import { isRunStatusFinished } from "../../domain/Status.ts"
import { loadRunByName } from "../../engine/RunRecord.ts"
import { StateStore, type LogEvent, type LogQuery } from "../../ports/StateStore.ts"
import { badRequest, fromStateStore, notFound } from "../ApiError.ts"
import { jsonRoute, rawRoute } from "../Route.ts"
import { resolveSubmission } from "./runs.ts"

const decoder = new TextDecoder("utf-8", { fatal: false })
const encodeEvents = Schema.encodeSync(Schema.Array(Api.LogEventWire))

const toWire = (events: ReadonlyArray<LogEvent>) =>
  events.map((e) => ({ timestamp: e.timestamp, logSource: e.source, message: decoder.decode(e.message) }))

const findSubmission = (project: string, runName: string, jobSubmissionId: string | null | undefined) =>
  Effect.gen(function* () {
    const loaded = yield* loadRunByName(project, runName).pipe(
      Effect.mapError((e) => (e.reason === "NotFound" ? notFound(`Run ${runName} does not exist in project ${project}`) : fromStateStore(e)))
    )
    const submission = resolveSubmission(loaded.record.run, jobSubmissionId)
    if (submission === undefined) {
      return yield* Effect.fail(
        jobSubmissionId
          ? badRequest(`Run ${runName} has no job submission ${jobSubmissionId}`, ["body", "job_submission_id"])
          : notFound(`Run ${runName} has no job submission yet`)
      )
    }
    return { runId: loaded.row.id, submission }
  })

const parseTime = (raw: string | undefined, name: string) => {
  if (raw === undefined || raw === "") return Effect.succeed(undefined)
  const date = /^\d+$/.test(raw) ? new Date(Number(raw)) : new Date(raw)
  return Number.isNaN(date.getTime()) ? Effect.fail(badRequest(`${name} must be an ISO date or epoch milliseconds, got ${raw}`, ["query", name])) : Effect.succeed(date)
}

export const logRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/logs/poll", summary: "A page of a job submission's log", tag: "logs", access: { project: "user" },
    request: Api.PollLogsRequest, response: Api.JobSubmissionLogs,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const { submission } = yield* findSubmission(project, input.runName, input.jobSubmissionId)
        const store = yield* StateStore
        const query: LogQuery = {
          project,
          jobSubmissionId: submission,
          descending: input.descending,
          limit: input.limit,
          diagnose: input.diagnose,
          ...(input.startTime ? { startTime: input.startTime } : {}),
          ...(input.endTime ? { endTime: input.endTime } : {}),
          ...(input.nextToken ? { nextToken: input.nextToken } : {})
        }
        const page = yield* store.logs.poll(query).pipe(Effect.mapError(fromStateStore))
        return { logs: toWire(page.events), ...(page.nextToken ? { nextToken: page.nextToken } : {}) }
      })
  }),
  rawRoute({
    method: "GET", path: "/api/project/:project_name/logs/stream", summary: "Follow a job submission's log live (Server-Sent Events)", tag: "logs", access: { project: "user" },
    requestDescription: "Query: run_name, job_submission_id (optional), start_time (optional, ISO or epoch ms), diagnose (optional)",
    responseDescription: "text/event-stream: `logs` events (a JSON array of {timestamp, log_source, message}), then `end` with the run's status",
    handler: (ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const c = ctx.hono
        const runName = c.req.query("run_name")
        if (!runName) return yield* Effect.fail(badRequest("run_name is required", ["query", "run_name"]))
        const startTime = yield* parseTime(c.req.query("start_time"), "start_time")
        const diagnose = c.req.query("diagnose") === "true"
        const { runId, submission } = yield* findSubmission(project, runName, c.req.query("job_submission_id"))
        const store = yield* StateStore
        const runtime = yield* Effect.runtime<StateStore>()

        const follow = (send: (event: string, data: string) => Promise<void>, aborted: () => boolean) =>
          Effect.scoped(
            Effect.gen(function* () {
              // Subscribe before the first read, so nothing appended in between is missed.
              const changes = yield* store.subscribe
              let cursor: string | undefined
              const drain = Effect.gen(function* () {
                while (true) {
                  const page = yield* store.logs.poll({
                    project,
                    jobSubmissionId: submission,
                    diagnose,
                    limit: 1000,
                    ...(cursor ? { nextToken: cursor } : startTime ? { startTime } : {})
                  })
                  if (page.events.length > 0) {
                    yield* Effect.promise(() => send("logs", JSON.stringify(encodeEvents(toWire(page.events)))))
                    cursor = page.cursor ?? cursor
                  }
                  if (!page.nextToken) return
                }
              })
              while (!aborted()) {
                yield* drain
                const { record } = yield* loadRunByName(project, runName).pipe(
                  Effect.catchAll(() => Effect.succeed(undefined as any)),
                  Effect.map((l) => l ?? { record: undefined })
                )
                const run = record?.run
                const sub = run?.jobs.flatMap((j: any) => j.jobSubmissions).find((s: any) => s.id === submission)
                const finished = run === undefined || isRunStatusFinished(run.status) || (sub !== undefined && ["done", "failed", "terminated", "aborted"].includes(sub.status))
                if (finished) {
                  // The engine stores a job's last lines before its final status: one more read gets them all.
                  yield* drain
                  yield* Effect.promise(() => send("end", JSON.stringify({ status: run?.status ?? "deleted", job_status: sub?.status ?? null })))
                  return
                }
                // Sleep until this submission's log or this run changes (or a safety timeout).
                while (true) {
                  const change = yield* Queue.take(changes).pipe(Effect.timeout(Duration.seconds(5)), Effect.option)
                  if (Option.isNone(change)) break
                  if ((change.value.kind === "log" && change.value.id === submission) || (change.value.kind === "run" && change.value.id === runId)) break
                }
                yield* Queue.takeAll(changes)
              }
            })
          )

        return streamSSE(c, async (stream) => {
          let closed = false
          stream.onAbort(() => {
            closed = true
          })
          await Runtime.runPromise(runtime)(
            follow((event, data) => stream.writeSSE({ event, data }), () => closed).pipe(
              Effect.catchAllCause((cause) =>
                Effect.promise(() => stream.writeSSE({ event: "error", data: JSON.stringify({ msg: String(cause) }) }))
              )
            )
          )
        })
      })
  })
]
