/**
 * The runner's HTTP API (upstream layout): healthcheck, metrics, submit, upload_code, run,
 * pull, stop, and `GET /logs_stream`, a Server-Sent Events feed of the same events as pull,
 * pushed the moment they happen; plus `POST /api/start` (ours), submit + upload_code + run in
 * one request that answers with the job's event stream.
 */
import { Effect, Either, Schema, Stream } from "effect"
import { Hono } from "hono"
import type { Context } from "hono"
import { streamSSE } from "hono/streaming"
import type { RunnerAgentService } from "./RunnerAgent.ts"
import { RunnerError } from "./RunnerAgent.ts"
import type { SocketTarget, UpgradeHandler } from "./adapter/types.ts"
import type { ExecSession } from "../ports/Executor.ts"
import { decodeExecControl, decodeExecStart, EXEC_PATH, type ExecReply, outputFrame, PRESENCE_PATH } from "./ExecProtocol.ts"
import { Buffer } from "node:buffer"
import { encodeFrames, EVENT_STREAM_CONTENT_TYPE, EVENT_STREAM_TYPE, HEARTBEAT_HEADER, HEARTBEAT_MAX_MS, HEARTBEAT_MIN_MS, HEARTBEAT_PARAM } from "./EventStream.ts"
import { decodeStartBody, JobStateEvent, PullResponse, START_CONTENT_TYPE, StopBody, SubmitBody } from "./RunnerProtocol.ts"

const STATUS_OF_REASON = { Invalid: 400, Conflict: 409, Internal: 500 } as const

const encodePull = Schema.encodeSync(PullResponse)
const encodeState = Schema.encodeSync(JobStateEvent)

const base64 = (bytes: Uint8Array): string => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("base64")

/** Output per write of the live streams: big enough to move bytes, small enough to interleave. */
const SSE_BATCH_BYTES = 1024 * 1024
const STREAM_BATCH_BYTES = 1024 * 1024

/** The runner's version, reported by the healthcheck (the version of @dstack-ts/core). */
export const RUNNER_VERSION = "0.1.0"

/** Runs an agent call at the HTTP edge; a RunnerError is thrown as is, for `onError`. */
const runAgent = async <A>(effect: Effect.Effect<A, RunnerError>): Promise<A> => {
  const result = await Effect.runPromise(Effect.either(effect))
  if (Either.isLeft(result)) throw result.left
  return result.right
}

const decodeBody = <A, I>(schema: Schema.Schema<A, I>, method: string, input: unknown): Effect.Effect<A, RunnerError> =>
  Schema.decodeUnknown(schema, { errors: "all" })(input).pipe(
    Effect.mapError(
      (error) =>
        new RunnerError({ module: "RunnerAgent", method, reason: "Invalid", message: `invalid ${method} body: ${error.message}`, cause: error })
    )
  )

const readJson = async (c: Context, method: string): Promise<unknown> => {
  const text = await c.req.text()
  if (text.trim() === "") return {}
  try {
    return JSON.parse(text)
  } catch (cause) {
    throw new RunnerError({ module: "RunnerAgent", method, reason: "Invalid", message: `the ${method} body is not JSON: ${(cause as Error).message}`, cause })
  }
}

const parseTimestamp = (raw: string | undefined, method = "pull", name = "timestamp"): number => {
  if (raw === undefined || raw === "") return 0
  const value = Number(raw)
  if (!Number.isFinite(value) || value < 0) {
    throw new RunnerError({ module: "RunnerAgent", method, reason: "Invalid", message: `${name} must be a non-negative number of milliseconds, got ${JSON.stringify(raw.slice(0, 100))}` })
  }
  return value
}

/**
 * The heartbeat interval a follower asks for (`?heartbeat=<ms>`), brought within
 * HEARTBEAT_MIN_MS..HEARTBEAT_MAX_MS; undefined when it asks for none.
 */
const parseHeartbeat = (raw: string | undefined, method: string): number | undefined => {
  if (raw === undefined || raw === "") return undefined
  const value = Number(raw)
  if (!Number.isFinite(value) || value <= 0) {
    throw new RunnerError({ module: "RunnerAgent", method, reason: "Invalid", message: `${HEARTBEAT_PARAM} must be a positive number of milliseconds, got ${JSON.stringify(raw.slice(0, 100))}` })
  }
  return Math.min(HEARTBEAT_MAX_MS, Math.max(HEARTBEAT_MIN_MS, Math.round(value)))
}

/**
 * The runner's WebSocket `GET /logs_ws[?start_time=<ISO 8601>]`, as upstream's runner serves
 * its CLI's attached logs: each message is raw bytes of the job's output (from `start_time`
 * on, else from the start), and the socket closes once the job has ended and all its output is
 * sent. Any other upgrade request is answered 404.
 */
export const runnerUpgrade = (agent: RunnerAgentService): UpgradeHandler => async (request) => {
  const url = new URL(request.url)
  if (url.pathname === EXEC_PATH) return execSocket(agent)
  if (url.pathname === PRESENCE_PATH) return presenceSocket(agent)
  if (url.pathname !== "/logs_ws") return new Response(`No WebSocket at ${url.pathname} (the runner's is /logs_ws)`, { status: 404 })
  const startTime = url.searchParams.get("start_time")
  let from = 0
  if (startTime !== null && startTime !== "") {
    const ms = Date.parse(startTime)
    if (Number.isNaN(ms)) return new Response(`start_time must be an ISO 8601 time, not ${JSON.stringify(startTime.slice(0, 100))}`, { status: 400 })
    from = Math.max(0, ms - 1)
  }
  return {
    kind: "messages",
    messages: async function* (signal) {
      let cursor = from
      while (!signal.aborted) {
        const finishedBefore = await runAgent(agent.finished)
        const batch = agent.events.read(cursor, SSE_BATCH_BYTES)
        for (const e of batch.events) if (e.kind === "log") yield e.message
        cursor = batch.lastUpdated
        if (batch.hasMore) continue
        if (finishedBefore) return
        await agent.events.changedAfter(cursor, signal)
      }
    }
  }
}

/**
 * The runner's exec WebSocket (ExecProtocol.ts): the first message says what to run, the agent
 * runs it where the job runs, and output and the exit travel back. A socket that closes early
 * hangs the command up (SIGHUP), as a closed terminal would.
 */
const execSocket = (agent: RunnerAgentService): SocketTarget => ({
  kind: "socket",
  open: (peer) => {
    const disconnected = agent.connected()
    let session: ExecSession | undefined
    let starting = false
    let exited = false
    let closedEarly = false
    const reply = (message: ExecReply) => peer.send(JSON.stringify(message))
    // Input that comes while the command starts is given to it once it has.
    const early: Array<Uint8Array | string> = []
    const handle = (s: ExecSession, data: Uint8Array | string) => {
      if (typeof data !== "string") return s.write(data)
      const control = decodeExecControl(data)
      if (Either.isLeft(control)) return
      const c = control.right
      if ("resize" in c) s.resize(c.resize.cols, c.resize.rows)
      else if ("eof" in c) s.endInput()
      else s.signal(c.signal)
    }
    return {
      message: (data) => {
        if (session === undefined) {
          if (starting) return void early.push(data)
          starting = true
          const start = typeof data === "string" ? decodeExecStart(data) : undefined
          if (start === undefined || Either.isLeft(start)) {
            reply({ error: `the first message must be the exec request (JSON)${start === undefined ? "" : `: ${start.left.message}`}` })
            return peer.close(1008, "bad request")
          }
          const { command, env, tty } = start.right
          void Effect.runPromise(Effect.either(agent.exec({ ...(command !== undefined ? { command } : {}), env, ...(tty !== undefined ? { tty } : {}) }, {
            output: (stream, bytes) => peer.send(outputFrame(stream, bytes)),
            exit: (result) => {
              exited = true
              reply({ exit: result })
              peer.close(1000)
            }
          }))).then((started) => {
            if (Either.isLeft(started)) {
              reply({ error: started.left.message })
              return peer.close(1000)
            }
            session = started.right
            reply({ started: true })
            for (const m of early.splice(0)) handle(session, m)
            if (closedEarly && !exited) session.signal("HUP")
          })
          return
        }
        handle(session, data)
      },
      closed: () => {
        disconnected()
        closedEarly = true
        if (session !== undefined && !exited) session.signal("HUP")
      }
    }
  }
})

/**
 * The runner's presence WebSocket (`/api/presence`): the server's SSH proxy holds one open per
 * SSH connection to the job, so that a dev environment's `inactivity_duration` sees it. Nothing
 * is sent either way.
 */
const presenceSocket = (agent: RunnerAgentService): SocketTarget => ({
  kind: "socket",
  open: () => {
    const disconnected = agent.connected()
    return { message: () => undefined, closed: disconnected }
  }
})

/**
 * The runner's Hono app over an agent.
 *
 * @example
 * const app = makeRunnerApp(agent)
 * await app.request("/api/healthcheck")
 */
export const makeRunnerApp = (agent: RunnerAgentService): Hono => {
  const app = new Hono()

  // `job`: whether a job was handed over and has not ended (a closing server leaves such
  // runners running and stops the others).
  // `?acknowledged=<ms>` (the server that follows the job asks this whenever more is stored): the
  // server has stored the job's events up to that timestamp, so the runner lets them go (see
  // JobEventLog.acknowledge): a long, chatty job keeps only what is not stored yet.
  app.get("/api/healthcheck", async (c) => {
    const acknowledged = parseTimestamp(c.req.query("acknowledged"), "healthcheck", "acknowledged")
    if (acknowledged > 0) agent.events.acknowledge(acknowledged)
    const state = await runAgent(agent.state)
    const job = state === "wait_submit" ? "none" : state === "wait_logs_finished" ? "ended" : "running"
    return c.json({ service: "dstack-ts-runner", version: RUNNER_VERSION, job })
  })

  app.get("/api/metrics", async (c) => c.json(await runAgent(agent.metrics)))

  app.post("/api/submit", async (c) => {
    const input = await readJson(c, "submit")
    await runAgent(Effect.flatMap(decodeBody(SubmitBody, "submit", input), agent.submit))
    return c.json({})
  })

  app.post("/api/upload_code", async (c) => {
    const body = new Uint8Array(await c.req.arrayBuffer())
    await runAgent(agent.uploadCode(body))
    return c.json({})
  })

  // Workflow artifacts: a dependency's archive (tar.gz, streamed) into the working directory
  // before run; the ended job's own artifacts as a manifest and a streamed tar.gz.
  app.post("/api/upload_artifacts", async (c) => {
    const body = c.req.raw.body
    const stream = body === null ? Stream.empty : Stream.fromReadableStream({ evaluate: () => body, onError: (cause) => new Error(`the upload broke: ${String(cause)}`) })
    await runAgent(agent.uploadArtifacts(stream))
    return c.json({})
  })

  app.get("/api/artifacts/manifest", async (c) => c.json({ files: await runAgent(agent.artifactManifest) }))

  app.get("/api/artifacts/archive", async () => {
    const stream = await runAgent(agent.artifactArchive)
    return new Response(Stream.toReadableStream(stream) as ReadableStream<Uint8Array>, { headers: { "content-type": "application/gzip" } })
  })

  app.post("/api/run", async (c) => {
    await runAgent(agent.run)
    return c.json({})
  })

  // submit + upload_code + run in one request (body: RunnerProtocol's start framing). A client
  // that accepts the binary event stream gets the job's events from `timestamp` as the answer,
  // so that following the job needs no second request; anyone else gets `{}`.
  app.post("/api/start", async (c) => {
    const contentType = (c.req.header("content-type") ?? "").toLowerCase()
    if (!contentType.startsWith(START_CONTENT_TYPE)) {
      throw new RunnerError({ module: "RunnerAgent", method: "start", reason: "Invalid", message: `the start body must be ${START_CONTENT_TYPE}, got ${contentType || "no content type"}` })
    }
    const cursor = parseTimestamp(c.req.query("timestamp"))
    const heartbeat = parseHeartbeat(c.req.query(HEARTBEAT_PARAM), "start")
    const framed = decodeStartBody(new Uint8Array(await c.req.arrayBuffer()))
    if (Either.isLeft(framed)) throw new RunnerError({ module: "RunnerAgent", method: "start", reason: "Invalid", message: framed.left })
    const { submit, code } = framed.right
    await runAgent(Effect.flatMap(decodeBody(SubmitBody, "start", submit), (body) => agent.start(body, code)))
    if ((c.req.header("accept") ?? "").includes(EVENT_STREAM_TYPE)) return binaryStream(cursor, heartbeat)
    return c.json({})
  })

  app.get("/api/pull", async (c) => {
    const since = parseTimestamp(c.req.query("timestamp"))
    return c.json(encodePull(await runAgent(agent.pull(since))))
  })

  // Where the job's ports are published (container port → 127.0.0.1 host port), as upstream's
  // job runtime data, so that a backend or an SSH tunnel can reach the job's apps.
  app.get("/api/job_runtime_data", async (c) => {
    const ports = await runAgent(agent.ports)
    const networkMode = await runAgent(agent.networkMode)
    return c.json({ network_mode: networkMode, ports: Object.fromEntries(ports.map((p) => [String(p.containerPort), p.hostPort])) })
  })

  app.post("/api/stop", async (c) => {
    const input = await readJson(c, "stop")
    await runAgent(Effect.flatMap(decodeBody(StopBody, "stop", input), ({ abort }) => agent.stop(abort)))
    return c.json({})
  })

  // Live events: the same cursor as pull (`timestamp`, or Last-Event-ID on reconnect). The
  // stream ends once the job has ended and its last events are sent. A client that accepts
  // the binary event stream (EventStream.ts) gets frames, with `?heartbeat=<ms>` a heartbeat
  // frame after each such quiet interval; anyone else Server-Sent Events.
  app.get("/logs_stream", (c) => {
    let cursor = parseTimestamp(c.req.header("Last-Event-ID") ?? c.req.query("timestamp"))
    if ((c.req.header("accept") ?? "").includes(EVENT_STREAM_TYPE)) return binaryStream(cursor, parseHeartbeat(c.req.query(HEARTBEAT_PARAM), "logs_stream"))
    return streamSSE(c, async (stream) => {
      const aborted = new AbortController()
      stream.onAbort(() => aborted.abort())
      while (!aborted.signal.aborted) {
        const finishedBefore = await runAgent(agent.finished)
        const batch = agent.events.read(cursor, SSE_BATCH_BYTES)
        // In timestamp order across kinds: a follower may rely on a job's final state coming
        // after every log line the job wrote. One write per batch.
        let text = ""
        for (const e of batch.events) {
          if (e.kind === "end") continue
          const data = e.kind === "state" ? JSON.stringify(encodeState(e.state)) : `{"timestamp":${e.timestamp},"message":"${base64(e.message)}"}`
          text += `event: ${e.kind}\nid: ${e.timestamp}\ndata: ${data}\n\n`
        }
        if (text !== "") await stream.write(text)
        cursor = batch.lastUpdated
        if (batch.hasMore) continue
        if (finishedBefore) {
          await stream.writeSSE({ event: "end", id: String(cursor), data: JSON.stringify({ last_updated: cursor }) })
          return
        }
        await agent.events.changedAfter(cursor, aborted.signal)
      }
    })
  })

  // The binary event stream: one buffer of frames per read, produced only when the client has
  // taken the previous one, so a slow follower holds the runner back instead of its memory.
  // With `heartbeatMs`, a heartbeat frame goes out after that long with nothing else to send.
  const binaryStream = (from: number, heartbeatMs: number | undefined): Response => {
    let cursor = from
    const aborted = new AbortController()
    /** Waits for an event after the cursor, at most `heartbeatMs`: false when none came. */
    const changedWithin = async (ms: number): Promise<boolean> => {
      const wait = new AbortController()
      const stop = () => wait.abort()
      aborted.signal.addEventListener("abort", stop)
      let quiet = false
      const timer = setTimeout(() => {
        quiet = true
        wait.abort()
      }, ms)
      try {
        await agent.events.changedAfter(cursor, wait.signal)
      } finally {
        clearTimeout(timer)
        aborted.signal.removeEventListener("abort", stop)
      }
      return !quiet
    }
    const body = new ReadableStream<Uint8Array>({
      pull: async (controller) => {
        for (;;) {
          if (aborted.signal.aborted) return
          const finishedBefore = await runAgent(agent.finished)
          const batch = agent.events.readFrames(cursor, STREAM_BATCH_BYTES)
          cursor = batch.lastUpdated
          if (batch.frames.byteLength > 0) controller.enqueue(batch.frames)
          if (!batch.hasMore && finishedBefore) {
            controller.enqueue(encodeFrames([{ kind: "end", timestamp: cursor }]))
            return controller.close()
          }
          if (batch.frames.byteLength > 0) return
          if (heartbeatMs === undefined) await agent.events.changedAfter(cursor, aborted.signal)
          else if (!(await changedWithin(heartbeatMs)) && !aborted.signal.aborted) {
            controller.enqueue(encodeFrames([{ kind: "heartbeat", timestamp: cursor }]))
            return
          }
        }
      },
      cancel: () => aborted.abort()
    }, { highWaterMark: 1 })
    return new Response(body, {
      headers: {
        "content-type": EVENT_STREAM_CONTENT_TYPE,
        "cache-control": "no-cache",
        ...(heartbeatMs !== undefined ? { [HEARTBEAT_HEADER]: String(heartbeatMs) } : {})
      }
    })
  }

  app.notFound((c) => c.json({ detail: [{ msg: `no route ${c.req.method} ${c.req.path}`, code: "not_found" }] }, 404))

  app.onError((error, c) => {
    if (error instanceof RunnerError) {
      return c.json({ detail: [{ msg: error.message, code: error.reason.toLowerCase() }] }, STATUS_OF_REASON[error.reason])
    }
    return c.json({ detail: [{ msg: `runner error: ${error.message}`, code: "error" }] }, 500)
  })

  return app
}
