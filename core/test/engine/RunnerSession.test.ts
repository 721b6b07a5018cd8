// The engine's side of the runner's live stream against a real runner: the binary event
// stream across broken connections (no line lost or repeated when the follower resumes from
// its cursor), an older runner's Server-Sent Events, and a runner of another stream version;
// handing a job over in one request that answers with the event stream, and in steps to an
// older runner that does not know that request; a quiet job's stream heartbeating in place of
// health checks, and a stalled one told from it.
import { Effect, Schema, Stream } from "effect"
import { afterAll, describe, expect, it } from "vitest"
import { Hono } from "hono"
import { fetchClient, type RunnerClient } from "../../src/ports/RunnerTransport.ts"
import { followEvents, healthTimeoutMs, heartbeatEveryMs, type RunnerStreamEvent, startFollowing, handling, startJob as handOver, type StreamLiveness, streamLiveness, watchHealth } from "../../src/engine/RunnerSession.ts"
import { SubmitBody } from "../../src/runner/RunnerProtocol.ts"
import { serveRunner, type RunningRunner } from "../../src/runner/serveRunner.ts"
import executorProcess from "@dstack-ts/executor-process"
import { submitBody, tarGz, tmpDir } from "../runner/support.ts"
import { startFaultProxy } from "../../../test/support/fault-proxy.ts"

const LINES = 50_000
// 50,000 numbered lines of 100 bytes (5 MB): far more than the runner keeps in memory below.
const command = `awk 'BEGIN{p=sprintf("%90s",""); for(i=1;i<=${LINES};i++) printf "%09d%s\\n", i, p}'`

const runners: Array<RunningRunner> = []
afterAll(async () => {
  for (const runner of runners) await runner.close()
})

const startJob = async (commands: ReadonlyArray<string>) => {
  const runner = await serveRunner({ port: 0, workDir: tmpDir("dstack-session-"), output: { memoryBytes: 256 * 1024 }, plugins: [executorProcess] })
  runners.push(runner)
  const post = (path: string, body?: unknown) =>
    fetch(`${runner.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) })
  expect((await post("/api/submit", submitBody({ commands }))).status).toBe(200)
  expect((await post("/api/run")).status).toBe(200)
  return runner
}

/** A client whose event stream connections break after `cut()` bytes (a reset mid-frame). */
const breakingClient = (baseUrl: string, cut: () => number, transform?: (init: RequestInit | undefined) => RequestInit | undefined): RunnerClient => {
  const inner = fetchClient("test", baseUrl)
  return {
    baseUrl,
    fetch: (path, init) =>
      Effect.map(inner.fetch(path, transform ? transform(init) : init), (response) => {
        if (!path.startsWith("/logs_stream") || response.body === null) return response
        let left = cut()
        const reader = response.body.getReader()
        const body = new ReadableStream<Uint8Array>({
          pull: async (controller) => {
            const { done, value } = await reader.read()
            if (done) return controller.close()
            if (value.byteLength <= left) {
              left -= value.byteLength
              return controller.enqueue(value)
            }
            if (left > 0) controller.enqueue(value.subarray(0, left))
            await reader.cancel()
            controller.error(new Error("connection reset (test)"))
          },
          cancel: () => reader.cancel()
        })
        return new Response(body, { status: response.status, headers: response.headers })
      })
  }
}

/** Follows like the engine: the cursor moves after each chunk is handled; reconnects on errors. */
const followToEnd = async (client: RunnerClient) => {
  let cursor = 0
  let reconnects = 0
  const output: Array<Uint8Array> = []
  const states: Array<string> = []
  for (;;) {
    const result = await Effect.runPromise(
      Effect.either(
        Stream.runForEachChunk(followEvents(client, cursor), (chunk) =>
          Effect.sync(() => {
            for (const event of chunk as Iterable<RunnerStreamEvent>) {
              if (event._tag === "Log" && event.source === "stdout") {
                output.push(event.log.message)
                cursor = Math.max(cursor, event.log.timestamp)
              } else if (event._tag === "Log") cursor = Math.max(cursor, event.log.timestamp)
              else if (event._tag === "State") {
                states.push(event.state.state)
                cursor = Math.max(cursor, event.state.timestamp)
              }
            }
          })
        )
      )
    )
    if (result._tag === "Right") break
    if (result.left.reason !== "Transport" || ++reconnects > 500) throw result.left
  }
  return { text: Buffer.concat(output).toString("utf8"), states, reconnects }
}

const expectEveryLineOnce = (text: string) => {
  const lines = text.split("\n")
  expect(lines.pop()).toBe("")
  expect(lines.length).toBe(LINES)
  lines.forEach((line, i) => {
    if (Number(line.slice(0, 9)) !== i + 1 || line.length !== 99) throw new Error(`line ${i + 1} is ${JSON.stringify(line.slice(0, 20))}`)
  })
}

describe("following a runner's event stream", () => {
  it("resumes from its cursor after broken connections without losing or repeating a line", async () => {
    const runner = await startJob([command])
    // Cuts at odd offsets, inside headers and payloads alike.
    let n = 0
    const client = breakingClient(runner.url, () => 1 + ((n++ * 479_909 + 4099) % 1_500_000))
    const { text, states, reconnects } = await followToEnd(client)
    expect(reconnects).toBeGreaterThan(3)
    expectEveryLineOnce(text)
    expect(states.at(-1)).toBe("done")
  }, 60_000)

  it("reads an older runner's Server-Sent Events the same way", async () => {
    const runner = await startJob([command])
    // An older server's request: no binary stream in Accept, so the runner answers SSE.
    let n = 0
    const client = breakingClient(runner.url, () => (n++ < 3 ? 200_000 + n * 333 : Infinity), () => ({ headers: { accept: "text/event-stream" } }))
    const { text, states } = await followToEnd(client)
    expectEveryLineOnce(text)
    expect(states.at(-1)).toBe("done")
  }, 60_000)

  it("refuses a runner that streams another version of the event stream, saying which", async () => {
    const app = new Hono()
    app.get("/logs_stream", () => new Response(new Uint8Array(16), { headers: { "content-type": "application/x-dstack-ts-events; version=9" } }))
    const client: RunnerClient = { baseUrl: "http://runner.test", fetch: (path, init) => Effect.promise(() => Promise.resolve(app.request(path, init))) }
    const error = await Effect.runPromise(Effect.flip(Stream.runDrain(followEvents(client, 0))))
    expect(error.reason).toBe("Invalid")
    expect(error.message).toContain("version 9")
    expect(error.message).toContain("version 1")
  })
})

/** A client that records the requests it makes; `older` answers 404 to /api/start, as a runner before it did. */
const recordingClient = (baseUrl: string, older = false) => {
  const inner = fetchClient("test", baseUrl)
  const requests: Array<string> = []
  const client: RunnerClient = {
    baseUrl,
    fetch: (path, init) => {
      requests.push(`${init?.method ?? "GET"} ${path.split("?")[0]}`)
      if (older && path.startsWith("/api/start")) {
        return Effect.succeed(new Response(JSON.stringify({ detail: [{ msg: `no route POST /api/start`, code: "not_found" }] }), { status: 404 }))
      }
      return inner.fetch(path, init)
    }
  }
  return { client, requests }
}

const idleRunner = async () => {
  const runner = await serveRunner({ port: 0, workDir: tmpDir("dstack-session-"), plugins: [executorProcess] })
  runners.push(runner)
  return runner
}

/** Runs a stream of runner events to its end: states and job output. */
const collect = (events: Stream.Stream<RunnerStreamEvent, unknown>) =>
  Stream.runFold(events, { states: [] as Array<string>, output: "" }, (acc, event) =>
    event._tag === "State"
      ? { ...acc, states: [...acc.states, event.state.state] }
      : event._tag === "Log" && event.source === "stdout"
      ? { ...acc, output: acc.output + Buffer.from(event.log.message).toString("utf8") }
      : acc
  )

const job = (commands: ReadonlyArray<string>) => Schema.decodeUnknownSync(SubmitBody)(submitBody({ commands, working_dir: "src" }))

describe("handing a job to its runner", () => {
  it("submits, uploads, runs and follows in one request to a runner that knows /api/start", async () => {
    const runner = await idleRunner()
    const { client, requests } = recordingClient(runner.url)
    const code = await tarGz({ "src/hello.txt": "hello from the code\n" })
    const seen = await Effect.runPromise(Effect.scoped(Effect.flatMap(startFollowing(client, job(["cat hello.txt"]), code), collect)))
    expect(seen).toEqual({ states: ["running", "done"], output: "hello from the code\n" })
    expect(requests).toEqual(["POST /api/start"])

    // The next job on the same runner, handed over without following: one request too.
    const next = recordingClient(runner.url)
    await Effect.runPromise(handOver(next.client, job(["echo again"]), await tarGz({ "src/x": "" })))
    expect(next.requests).toEqual(["POST /api/start"])
    const followed = await Effect.runPromise(collect(followEvents(next.client, 0)))
    expect(followed).toEqual({ states: ["running", "done"], output: "again\n" })
  })

  it("hands a job to an older runner in steps (submit, upload_code, run) and follows it with logs_stream", async () => {
    const runner = await idleRunner()
    const { client, requests } = recordingClient(runner.url, true)
    const code = await tarGz({ "src/hello.txt": "hello from the code\n" })
    const seen = await Effect.runPromise(Effect.scoped(Effect.flatMap(startFollowing(client, job(["cat hello.txt"]), code), collect)))
    expect(seen).toEqual({ states: ["running", "done"], output: "hello from the code\n" })
    expect(requests).toEqual(["POST /api/start", "POST /api/submit", "POST /api/upload_code", "POST /api/run", "GET /logs_stream"])

    // It is remembered: the next job goes in steps at once.
    requests.length = 0
    await Effect.runPromise(handOver(client, job(["true"]), undefined))
    expect(requests).toEqual(["POST /api/submit", "POST /api/run"])
  })

  it("a job the runner refuses fails the hand-over with the runner's reason", async () => {
    const runner = await idleRunner()
    const { client } = recordingClient(runner.url)
    const error = await Effect.runPromise(Effect.flip(Effect.scoped(startFollowing(client, job(["true"]), new TextEncoder().encode("not a tarball")))))
    expect(error.reason).toBe("Invalid")
    expect(error.message).toMatch(/start answered 400: .*tar\.gz/)
  })
})

describe("telling a quiet runner alive", () => {
  /**
   * Follows the job as the engine does: the stream raced against the watch, the cursor
   * acknowledged as it moves. Counts the health checks asked before the stream's heartbeat was
   * granted (its answer may take a while on a busy machine) and after.
   */
  const watchFollowing = (inner: RunnerClient, liveness: StreamLiveness | undefined, timeoutMs = 2_000, handleMs = 0) => {
    let acknowledged = 0
    const events: Array<RunnerStreamEvent> = []
    const checks = { beforeGrant: 0, afterGrant: 0 }
    const client: RunnerClient = {
      baseUrl: inner.baseUrl,
      fetch: (path, init) => {
        if (path.startsWith("/api/healthcheck")) liveness?.heartbeating === true ? checks.afterGrant++ : checks.beforeGrant++
        return inner.fetch(path, init)
      }
    }
    const handle = (event: RunnerStreamEvent) =>
      Effect.sync(() => {
        events.push(event)
        if (event._tag === "Log") acknowledged = Math.max(acknowledged, event.log.timestamp)
        else if (event._tag === "State") acknowledged = Math.max(acknowledged, event.state.timestamp)
      }).pipe(Effect.zipLeft(Effect.sleep(handleMs)))
    const followed = Stream.runForEach(followEvents(client, 0, liveness), (event) => liveness !== undefined ? handling(liveness, handle(event)) : handle(event))
    const watch = watchHealth(client, { everyMs: 200, timeoutMs, onAnswer: Effect.void, acknowledged: () => acknowledged, ...(liveness !== undefined ? { liveness } : {}) })
    return { events, checks, run: Effect.runPromise(Effect.either(Effect.raceFirst(followed, watch))) }
  }

  it("the heartbeat's interval follows the unreachable limit: a stalled runner is found well inside it, a long limit heartbeats less often", () => {
    expect(heartbeatEveryMs(2 * 60_000)).toBe(10_000)
    expect(heartbeatEveryMs(60_000)).toBe(5_000)
    expect(heartbeatEveryMs(8_000)).toBe(2_000)
    expect(heartbeatEveryMs(60 * 60_000)).toBe(10_000)
    // The silence that fails a watch (an interval without a heartbeat, and the health timeout) never outlasts the limit itself.
    for (const limit of [4_000, 8_000, 24_000, 60_000, 2 * 60_000, 10 * 60_000]) {
      expect(heartbeatEveryMs(limit) + healthTimeoutMs(limit), `limit ${limit} ms`).toBeLessThanOrEqual(limit)
    }
  })

  it("a stream that heartbeats stands for the health check: a quiet job costs no request, only acknowledgments of what was stored; a runner that does not grant it is asked as before", async () => {
    const commands = ["echo one", "sleep 2", "echo two"]
    const beating = fetchClient("test", (await startJob(commands)).url)
    const polled = fetchClient("test", (await startJob(commands)).url)
    // A runner that does not grant the heartbeat (an older one: its answer lacks the header).
    const older = fetchClient("test", (await startJob(commands)).url)
    const olderClient: RunnerClient = {
      baseUrl: older.baseUrl,
      fetch: (path, init) =>
        Effect.map(older.fetch(path, init), (response) => {
          const headers = new Headers(response.headers)
          headers.delete("dstack-runner-heartbeat")
          return new Response(response.body, { status: response.status, headers })
        })
    }
    const liveness = streamLiveness(200)
    const notGranted = streamLiveness(200)
    const [withBeats, without, ungranted] = [watchFollowing(beating, liveness), watchFollowing(polled, undefined), watchFollowing(olderClient, notGranted)]
    const [a, b, c] = await Promise.all([withBeats.run, without.run, ungranted.run])
    expect([a._tag, b._tag, c._tag]).toEqual(["Right", "Right", "Right"])
    expect([liveness.heartbeating, notGranted.heartbeating]).toEqual([true, false])
    const all = (checks: { beforeGrant: number; afterGrant: number }) => checks.beforeGrant + checks.afterGrant
    // Over the 2 s of quiet: ~10 heartbeats on the stream and, once granted, a health check
    // only when the cursor had moved since the last (after "one" and the states around it, and
    // at the end), against one every 200 ms for a runner that is asked.
    expect(withBeats.events.filter((e) => e._tag === "Heartbeat").length).toBeGreaterThanOrEqual(5)
    expect(withBeats.checks.afterGrant).toBeLessThanOrEqual(3)
    expect(all(without.checks)).toBeGreaterThanOrEqual(8)
    // Asked for heartbeats and not granted them: asked its health check as before.
    expect(all(ungranted.checks)).toBeGreaterThanOrEqual(8)
    expect(without.events.filter((e) => e._tag === "Heartbeat")).toEqual([])
  }, 30_000)

  it("a reader held up by its own work (a slow database) is not taken for a silent runner", async () => {
    const runner = await startJob(["echo one", "echo two", "echo three"])
    const liveness = streamLiveness(200)
    // Each event takes the reader 1.2 s, past the 0.7 s of silence a waiting reader is allowed.
    const followed = watchFollowing(fetchClient("test", runner.url), liveness, 500, 1_200)
    const outcome = await followed.run
    expect(outcome._tag).toBe("Right")
    expect(followed.events.filter((e) => e._tag === "Log").length).toBeGreaterThanOrEqual(1)
  }, 30_000)

  it("a stream that stops heartbeating (the connection stalls) fails the watch, saying so", async () => {
    const runner = await startJob(["sleep 30"])
    const proxy = await startFaultProxy({ targetHost: "127.0.0.1", targetPort: Number(new URL(runner.url).port) })
    try {
      const liveness = streamLiveness(200)
      const followed = watchFollowing(fetchClient("test", `http://127.0.0.1:${proxy.port}`), liveness, 500)
      await expect.poll(() => followed.events.filter((e) => e._tag === "Heartbeat").length, { timeout: 5_000 }).toBeGreaterThanOrEqual(3)
      const stalledAt = Date.now()
      proxy.setMode({ kind: "stall" })
      const outcome = await followed.run
      // Nothing for its interval plus the timeout, seen at the next watch.
      expect(Date.now() - stalledAt).toBeLessThan(3_000)
      expect(outcome._tag).toBe("Left")
      expect(String((outcome as { left: { message: string } }).left.message)).toMatch(/sent nothing on the job's event stream, not even its heartbeat, for \ds/)
      // Once the heartbeat was granted the runner was asked its health check at most to
      // acknowledge the job's first state: the stream said everything.
      expect(followed.checks.afterGrant).toBeLessThanOrEqual(1)
    } finally {
      proxy.setMode({ kind: "pass" })
      await proxy.close()
    }
  }, 30_000)
})
