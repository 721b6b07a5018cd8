/**
 * A run's log as an async iterable of bytes: the stored pages (`logs/poll`) for a finished run
 * or when not following, the live stream (`logs/stream`, Server-Sent Events: `logs` events,
 * then `end`) for an active one. The server's stream replays what is stored first and ends
 * once the run has finished, so following never loses or repeats a line.
 */
import { Effect, Exit, Cause, Option } from "effect"
import { LogFrames } from "@dstack-ts/core/wire"
import { isRunStatusFinished } from "@dstack-ts/core/wire"
import { concatBytes } from "@dstack-ts/core/wire"
import type { DstackApiShape } from "./DstackApi.ts"
import type { RunData, RunLogsOptions } from "./Run.ts"

const encoder = new TextEncoder()

const run = async <A, E>(effect: Effect.Effect<A, E>): Promise<A> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) return exit.value
  const failure = Cause.failureOption(exit.cause)
  throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
}

/** The submission to read: the latest of the chosen job (the server's default when absent). */
const submissionOf = (data: RunData, options: RunLogsOptions): string | undefined => {
  if (options.jobNum === undefined && options.replicaNum === undefined) return undefined
  const job = data.entity.jobs.find(
    (j) => j.jobSpec.jobNum === (options.jobNum ?? 0) && (j.jobSpec.replicaNum ?? 0) === (options.replicaNum ?? 0)
  )
  return job?.jobSubmissions[job.jobSubmissions.length - 1]?.id
}

/** Parses a text/event-stream body into `{ event, data }` records. */
export async function* serverSentEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: string }> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ""
  // Where to look for the next blank line: a megabyte event arrives in many reads, and the
  // part already searched is not searched again.
  let searched = 0
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      const text = decoder.decode(value, { stream: true })
      buffer += text.includes("\r") ? text.replace(/\r\n?/g, "\n") : text
      let end: number
      while ((end = buffer.indexOf("\n\n", searched)) >= 0) {
        const block = buffer.slice(0, end)
        buffer = buffer.slice(end + 2)
        searched = 0
        let event = "message"
        const data: Array<string> = []
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim()
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""))
        }
        if (data.length > 0) yield { event, data: data.join("\n") }
      }
      searched = Math.max(0, buffer.length - 1)
    }
  } finally {
    reader.releaseLock()
    await body.cancel().catch(() => {})
  }
}

/** The messages of a `logs` event (a JSON array of `LogEventWire`, api/runs.ts), checked by hand: it is the hot path of following. */
const messagesOf = (payload: string): Array<string> => {
  const events = JSON.parse(payload) as unknown
  if (!Array.isArray(events)) throw new Error(`a logs event must be a JSON array, got ${payload.slice(0, 100)}`)
  return events.map((e: { message?: unknown }, i) => {
    if (typeof e?.message !== "string") throw new Error(`logs event ${i} has no message string`)
    return e.message
  })
}

/**
 * The output in a binary log stream (api/logFrames.ts): the frames' bytes as they arrive, the
 * frames of one read joined into one chunk; ends at `end`, throws at `error` or a cut stream.
 */
export async function* logFrames(body: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array, void, undefined> {
  const reader = body.getReader()
  const frames = new LogFrames.LogFrameDecoder()
  try {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) {
        throw new Error(`The server's log stream ended without its end frame${frames.pending > 0 ? ` (${frames.pending} bytes of a frame cut off)` : ""}`)
      }
      const output: Array<Uint8Array> = []
      let ended = false
      for (const frame of frames.push(value)) {
        if (frame.kind === "end") {
          ended = true
          break
        }
        if (frame.kind === "error") throw new Error(`The server's log stream failed: ${new TextDecoder().decode(frame.payload)}`)
        output.push(frame.payload)
      }
      if (output.length > 0) yield concatBytes(output)
      if (ended) return
    }
  } finally {
    reader.releaseLock()
    await body.cancel().catch(() => {})
  }
}

export async function* runLogs(api: DstackApiShape, data: RunData, options: RunLogsOptions): AsyncGenerator<Uint8Array, void, undefined> {
  const jobSubmissionId = submissionOf(data, options)
  const follow = options.follow !== false && !isRunStatusFinished(data.entity.status)
  if (follow) {
    const response = await run(
      api.logs.stream(
        { runName: data.runName, jobSubmissionId, startTime: options.since, diagnose: options.diagnose === true },
        options.signal
      )
    )
    if (response.body === null) return
    if ((response.headers.get("content-type") ?? "").startsWith(LogFrames.LOG_FRAMES_TYPE)) {
      yield* logFrames(response.body)
      return
    }
    for await (const { event, data: payload } of serverSentEvents(response.body)) {
      if (event === "logs") {
        // One chunk per event: many small lines are not worth a yield each.
        const messages = messagesOf(payload)
        if (messages.length > 0) yield encoder.encode(messages.length === 1 ? messages[0] : messages.join(""))
      }
      else if (event === "end") return
      else if (event === "error") throw new Error(`The server's log stream failed: ${payload}`)
    }
    return
  }
  let nextToken: string | undefined
  for (;;) {
    if (options.signal?.aborted) return
    const page = await run(
      api.logs.poll({
        runName: data.runName,
        ...(jobSubmissionId ? { jobSubmissionId } : {}),
        ...(options.since && nextToken === undefined ? { startTime: options.since } : {}),
        ...(nextToken ? { nextToken } : {}),
        diagnose: options.diagnose === true
      })
    )
    for (const e of page.logs) yield encoder.encode(e.message)
    if (!page.nextToken || page.logs.length === 0) return
    nextToken = page.nextToken
  }
}
