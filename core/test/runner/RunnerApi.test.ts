// The runner's HTTP API end to end over a real port, with real processes (and real dockerd
// for the container jobs): submit → upload_code → run → pull / live stream → final state, and
// the same in one request (POST /api/start, answered with the binary event stream).
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as path from "node:path"
import { describeWith } from "../../../test/support/components.ts"
import { BUSYBOX_IMAGE, dockerUnavailableReason, ensureBusyboxImage } from "../../../test/support/docker.ts"
import type { RunningRunner } from "../../src/runner/serveRunner.ts"
import { serveRunner } from "../../src/runner/serveRunner.ts"
import executorDocker from "@dstack-ts/executor-docker"
import { definePlugin } from "../../src/plugin/Plugin.ts"
import executorProcess from "@dstack-ts/executor-process"
import { EVENT_STREAM_CONTENT_TYPE, FrameDecoder, type StreamFrame } from "../../src/runner/EventStream.ts"
import { encodeStartBody, START_CONTENT_TYPE } from "../../src/runner/RunnerProtocol.ts"
import { decodeMessage, logText, readSse, submitBody, tarGz, tmpDir } from "./support.ts"

const runners: Array<RunningRunner> = []
afterEach(async () => {
  await Promise.all(runners.splice(0).map((r) => r.close()))
})

const startRunner = async (plugins: ReadonlyArray<unknown> = [executorProcess, executorDocker]) => {
  const workDir = tmpDir("dstack-ts-runner-")
  const runner = await serveRunner({ port: 0, workDir, plugins })
  runners.push(runner)
  return { runner, workDir }
}

const post = (runner: RunningRunner, route: string, body?: unknown, raw?: Uint8Array) =>
  fetch(`${runner.url}${route}`, {
    method: "POST",
    ...(raw ? { body: raw as Uint8Array<ArrayBuffer>, headers: { "content-type": "application/octet-stream" } } : {}),
    ...(body !== undefined ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } } : {})
  })

const postOk = async (runner: RunningRunner, route: string, body?: unknown, raw?: Uint8Array) => {
  const res = await post(runner, route, body, raw)
  if (res.status !== 200) throw new Error(`${route}: HTTP ${res.status} ${await res.text()}`)
  return res.json()
}

interface PullJson {
  job_states: Array<{ state: string; timestamp: number; termination_reason?: string; termination_message?: string; exit_status?: number }>
  job_logs: Array<{ timestamp: number; message: string }>
  runner_logs: Array<{ timestamp: number; message: string }>
  last_updated: number
  has_more: boolean
}

const pull = async (runner: RunningRunner, timestamp = 0): Promise<PullJson> =>
  (await fetch(`${runner.url}/api/pull?timestamp=${timestamp}`)).json() as Promise<PullJson>

/** Pulls until the job reaches a final state; returns everything pulled. */
const pullUntilFinished = async (runner: RunningRunner, timeoutMs = 20_000) => {
  const all: PullJson = { job_states: [], job_logs: [], runner_logs: [], last_updated: 0, has_more: false }
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    const next = await pull(runner, all.last_updated)
    all.job_states.push(...next.job_states)
    all.job_logs.push(...next.job_logs)
    all.runner_logs.push(...next.runner_logs)
    all.last_updated = next.last_updated
    if (all.job_states.some((s) => ["done", "failed", "terminated"].includes(s.state)) && !next.has_more) return all
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`the job did not finish in ${timeoutMs} ms: ${JSON.stringify(all.job_states)}`)
}

const finalState = (p: PullJson) => p.job_states[p.job_states.length - 1]

describe("runner HTTP API with the process executor", () => {
  it("submit → upload_code → run → live stream and pull → done, with the upstream env", async () => {
    const { runner, workDir } = await startRunner()
    expect(runner.port).toBeGreaterThan(0)
    const health = await (await fetch(`${runner.url}/api/healthcheck`)).json()
    expect(health).toMatchObject({ service: "dstack-ts-runner" })

    await postOk(
      runner,
      "/api/submit",
      submitBody(
        {
          commands: [
            "cat hello.txt",
            'echo "run=$DSTACK_RUN_NAME repo=$DSTACK_REPO_ID nodes=$DSTACK_NODES_NUM rank=$DSTACK_NODE_RANK master=$DSTACK_MASTER_NODE_IP gpus=$DSTACK_GPUS_NUM/$DSTACK_GPUS_PER_NODE"',
            'echo "ips=$(echo "$DSTACK_NODES_IPS" | tr "\\n" ,)"',
            'echo "token=$TOKEN mine=$MINE"',
            "pwd"
          ],
          env: { TOKEN: "${{ secrets.TOKEN }}", MINE: "x y" },
          job_num: 1,
          working_dir: "src"
        },
        { secrets: { TOKEN: "s3cret" } }
      )
    )
    await postOk(runner, "/api/upload_code", undefined, await tarGz({ "src/hello.txt": "hello from the code\n" }))

    const stream = await fetch(`${runner.url}/logs_stream?timestamp=0`)
    expect(stream.headers.get("content-type")).toContain("text/event-stream")
    const streamed = readSse(stream)
    await postOk(runner, "/api/run")
    const events = await streamed

    const states = events.filter((e) => e.event === "state").map((e) => JSON.parse(e.data))
    expect(states.map((s) => s.state)).toEqual(["running", "done"])
    expect(states[1]).toMatchObject({ termination_reason: "done_by_runner", exit_status: 0 })
    const output = events.filter((e) => e.event === "log").map((e) => decodeMessage(JSON.parse(e.data).message)).join("")
    const repoDir = fs.realpathSync(path.join(workDir, "repo"))
    expect(output).toBe(
      [
        "hello from the code",
        "run=my-run repo=my-repo nodes=2 rank=1 master=10.0.0.1 gpus=0/0",
        "ips=10.0.0.1,10.0.0.2,",
        "token=s3cret mine=x y",
        path.join(repoDir, "src"),
        ""
      ].join("\n")
    )
    // Within each kind, events arrive in timestamp order.
    for (const kind of ["state", "log", "runner_log"]) {
      const ids = events.filter((e) => e.event === kind).map((e) => Number(e.id))
      expect(ids.every((t, i) => i === 0 || t > ids[i - 1])).toBe(true)
    }
    expect(events[events.length - 1].event).toBe("end")

    // Pull from the start gives the same, in timestamp order; pulling from last_updated gives nothing new.
    const all = await pull(runner, 0)
    expect(all.job_states.map((s) => s.state)).toEqual(["running", "done"])
    expect(logText(all.job_logs)).toBe(output)
    const stamps = all.job_logs.map((l) => l.timestamp)
    expect(stamps.every((t, i) => i === 0 || t > stamps[i - 1])).toBe(true)
    const none = await pull(runner, all.last_updated)
    expect(none).toMatchObject({ job_states: [], job_logs: [], runner_logs: [], last_updated: all.last_updated })
  })

  it("streams output live: the first line arrives while the job still runs", async () => {
    const { runner } = await startRunner()
    // The job prints its first line, then waits for a file that the test creates only once that
    // line has reached it: a stream that held lines back would leave the job waiting (it gives
    // up after 30 s and exits 7).
    const gate = path.join(tmpDir("dstack-ts-gate-"), "gate")
    const wait = `i=0; while [ ! -e ${gate} ]; do i=$((i+1)); [ $i -gt 600 ] && exit 7; sleep 0.05; done`
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo first", wait, "echo second"] }))
    let gateOpenedAfter: ReadonlyArray<string> | undefined
    const seen: Array<string> = []
    const streamed = readSse(await fetch(`${runner.url}/logs_stream`), (e) => {
      if (e.event !== "log") return
      seen.push(decodeMessage(JSON.parse(e.data).message))
      if (gateOpenedAfter === undefined && seen.join("").includes("first")) {
        gateOpenedAfter = [...seen]
        fs.writeFileSync(gate, "")
      }
    })
    await postOk(runner, "/api/run")
    const events = await streamed
    expect(gateOpenedAfter?.join("")).toBe("first\n")
    expect(seen.join("")).toBe("first\nsecond\n")
    expect(events.filter((e) => e.event === "state").map((e) => JSON.parse(e.data).state).at(-1)).toBe("done")
  })

  it("a health check with ?acknowledged= is taken (the runner drops the spill files the server has stored); a bad value is refused naming it", async () => {
    const { runner } = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo one", "echo two"] }))
    await postOk(runner, "/api/run")
    const all = await pullUntilFinished(runner)
    expect(logText(all.job_logs)).toBe("one\ntwo\n")
    const stored = all.job_logs.at(-1)!.timestamp
    const health = await fetch(`${runner.url}/api/healthcheck?acknowledged=${stored}`)
    expect(health.status).toBe(200)
    expect((await health.json()).job).toBe("ended")
    // Output in memory stays (for readers from the start, as `dstack attach`), states too.
    const after = await pull(runner, 0)
    expect(logText(after.job_logs)).toBe("one\ntwo\n")
    expect(finalState(after)).toMatchObject({ state: "done" })
    const bad = await fetch(`${runner.url}/api/healthcheck?acknowledged=soon`)
    expect(bad.status).toBe(400)
    expect(await bad.text()).toContain("acknowledged must be a non-negative number of milliseconds")
  })

  it("sends a heartbeat after each quiet interval to a stream that asks for one (and none to one that does not); a bad interval is refused naming it", async () => {
    const { runner } = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo one", "sleep 1.5", "echo two"] }))
    const accept = { accept: EVENT_STREAM_CONTENT_TYPE }
    const asked = fetch(`${runner.url}/logs_stream?timestamp=0&heartbeat=300`, { headers: accept })
    const plain = fetch(`${runner.url}/logs_stream?timestamp=0`, { headers: accept })
    const began = Date.now()
    await postOk(runner, "/api/run")
    const [withBeats, without] = await Promise.all([asked, plain])
    expect(withBeats.headers.get("dstack-runner-heartbeat")).toBe("300")
    expect(without.headers.get("dstack-runner-heartbeat")).toBeNull()
    const [beating, quiet] = await Promise.all([readFrames(withBeats), readFrames(without)])
    const tookMs = Date.now() - began
    // The same events either way; the heartbeats come in the 1.5 s the job prints nothing, each
    // at the stream's cursor (the newest event sent before it).
    expect(beating.output).toBe("one\ntwo\n")
    expect(quiet.output).toBe(beating.output)
    expect(quiet.events.filter((e) => e.kind === "heartbeat")).toEqual([])
    const kinds = beating.events.map((e) => e.kind)
    const beats = kinds.filter((k) => k === "heartbeat").length
    expect(beats, kinds.join(",")).toBeGreaterThanOrEqual(3)
    // Never more than one per quiet interval.
    expect(beats, kinds.join(",")).toBeLessThanOrEqual(Math.ceil(tookMs / 300) + 1)
    beating.events.forEach((e, i) => {
      if (e.kind === "heartbeat" && i > 0) expect(e.timestamp).toBe(Math.max(...beating.events.slice(0, i).map((p) => p.timestamp)))
    })
    expect(kinds.filter((k) => k !== "heartbeat")).toEqual(quiet.events.map((e) => e.kind))
    // An interval outside 100 ms..60 s is brought within; one that is no number is refused.
    const short = await fetch(`${runner.url}/logs_stream?timestamp=0&heartbeat=5`, { headers: accept })
    expect(short.headers.get("dstack-runner-heartbeat")).toBe("100")
    await readFrames(short)
    const bad = await fetch(`${runner.url}/logs_stream?timestamp=0&heartbeat=often`, { headers: accept })
    expect(bad.status).toBe(400)
    expect(await bad.text()).toContain("heartbeat must be a positive number of milliseconds")
  })

  it("a non-zero exit is failed with container_exited_with_error and the exit status", async () => {
    const { runner } = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo oops >&2", "exit 3"] }))
    await postOk(runner, "/api/run")
    const result = await pullUntilFinished(runner)
    expect(finalState(result)).toMatchObject({ state: "failed", termination_reason: "container_exited_with_error", exit_status: 3 })
    expect(logText(result.job_logs)).toBe("oops\n")
  })

  it("enforces log_quota_hour: a job writing past it keeps exactly the quota, is stopped and fails with log_quota_exceeded", async () => {
    const { runner } = await startRunner()
    // 20,000 bytes at once, then a wait that only the quota's stop cuts short.
    await postOk(runner, "/api/submit", submitBody({ commands: ["head -c 20000 /dev/zero | tr '\\0' x", "sleep 30"], stop_duration: 5 }, { log_quota_hour: 5000 }))
    await postOk(runner, "/api/run")
    const result = await pullUntilFinished(runner)
    expect(finalState(result)).toMatchObject({
      state: "failed",
      termination_reason: "log_quota_exceeded",
      termination_message: "the job wrote more than its log quota of 5,000 bytes within an hour"
    })
    expect(logText(result.job_logs)).toBe("x".repeat(5000))
    expect(logText(result.runner_logs)).toContain("log quota of 5,000 bytes within an hour: stopping the job")
  })

  it("log_quota_hour leaves a job within it alone, and a submit without it sets no quota", async () => {
    for (const extra of [{ log_quota_hour: 5000 }, {}]) {
      const { runner } = await startRunner()
      await postOk(runner, "/api/submit", submitBody({ commands: ["head -c 4000 /dev/zero | tr '\\0' y"] }, extra))
      await postOk(runner, "/api/run")
      const result = await pullUntilFinished(runner)
      expect(finalState(result)).toMatchObject({ state: "done", termination_reason: "done_by_runner" })
      expect(logText(result.job_logs)).toBe("y".repeat(4000))
    }
  })

  it("refuses a log_quota_hour that is not a positive whole number of bytes", async () => {
    const { runner } = await startRunner()
    for (const quota of [0, -1, 1.5, "big"]) {
      const res = await fetch(`${runner.url}/api/submit`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(submitBody({ commands: ["true"] }, { log_quota_hour: quota })) })
      expect(res.status, String(quota)).toBe(400)
      expect(await res.text()).toContain("log_quota_hour")
    }
  })

  it("enforces max_duration: the job is stopped and terminated with max_duration_exceeded", async () => {
    const { runner } = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo started", "sleep 30"], max_duration: 0.5, stop_duration: 5 }))
    const started = Date.now()
    await postOk(runner, "/api/run")
    const result = await pullUntilFinished(runner)
    expect(Date.now() - started).toBeLessThan(5_000)
    expect(finalState(result)).toMatchObject({ state: "terminated", termination_reason: "max_duration_exceeded" })
    expect(logText(result.runner_logs)).toContain("max_duration of 0.5s exceeded")
  })

  it("stop ends the job gracefully (terminated_by_user), abort at once (aborted_by_user)", async () => {
    for (const [abort, reason] of [
      [false, "terminated_by_user"],
      [true, "aborted_by_user"]
    ] as const) {
      const { runner } = await startRunner()
      await postOk(runner, "/api/submit", submitBody({ commands: ["trap 'echo bye; exit 5' TERM; echo started; while :; do sleep 0.05; done"] }))
      await postOk(runner, "/api/run")
      for (let i = 0; i < 100 && !logText((await pull(runner)).job_logs).includes("started"); i++) await new Promise((r) => setTimeout(r, 20))
      await postOk(runner, "/api/stop", { abort })
      const result = await pullUntilFinished(runner)
      expect(finalState(result)).toMatchObject({ state: "terminated", termination_reason: reason })
      // bash may also report its killed `sleep` ("Terminated") on stderr before the trap runs.
      const output = logText(result.job_logs)
      if (abort) expect(output).toBe("started\n")
      else expect(output).toMatch(/^started\n(Terminated\n)?bye\n$/)
      expect(finalState(result).exit_status).toBe(abort ? 137 : 5)
    }
  })

  it("reports metrics of the running job", async () => {
    const { runner } = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo started", "sleep 30"] }))
    await postOk(runner, "/api/run")
    for (let i = 0; i < 100 && !logText((await pull(runner)).job_logs).includes("started"); i++) await new Promise((r) => setTimeout(r, 20))
    const metrics = await (await fetch(`${runner.url}/api/metrics`)).json()
    expect(metrics.memory_usage_bytes).toBeGreaterThan(0)
    expect(metrics).toHaveProperty("cpu_percent")
    expect(Array.isArray(metrics.gpus)).toBe(true)
    await postOk(runner, "/api/stop", { abort: true })
  })

  it("refuses bad input and requests out of order with a clear message", async () => {
    const { runner } = await startRunner()
    const expectError = async (res: Response, status: number, pattern: RegExp) => {
      expect(res.status).toBe(status)
      const body = await res.json()
      expect(body.detail[0].msg).toMatch(pattern)
    }
    await expectError(await post(runner, "/api/run"), 409, /run needs a submitted job/)
    await expectError(await post(runner, "/api/upload_code", undefined, new Uint8Array([1, 2, 3])), 409, /after submit/)
    await expectError(await post(runner, "/api/submit", { run: {} }), 400, /job_spec/)
    await expectError(await post(runner, "/api/submit", submitBody({ commands: 7 })), 400, /commands/)
    await expectError(await post(runner, "/api/submit", submitBody({ env: { A: "${{ secrets.NOPE }}" } })), 400, /env\.A refers to secret NOPE/)
    await expectError(await fetch(`${runner.url}/api/pull?timestamp=abc`), 400, /timestamp/)
    await postOk(runner, "/api/submit", submitBody({ commands: ["true"] }))
    await expectError(await post(runner, "/api/submit", submitBody({ commands: ["true"] })), 409, /already has a job/)
    await expectError(await post(runner, "/api/upload_code", undefined, new TextEncoder().encode("not a tarball at all")), 400, /tar\.gz/)
    await expectError(await post(runner, "/api/stop", { abort: "yes" }), 400, /abort/)
  })

  it("a missing working_dir fails the job with executor_error", async () => {
    const { runner } = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ commands: ["true"], working_dir: "does/not/exist" }))
    await postOk(runner, "/api/run")
    const result = await pullUntilFinished(runner)
    expect(finalState(result)).toMatchObject({ state: "failed", termination_reason: "executor_error" })
    expect(finalState(result).termination_message).toMatch(/working_dir .*does\/not\/exist/)
  })
})

/** Reads the binary event stream of a response to its end: states, job output, runner notes. */
const readFrames = async (response: Response) => {
  expect(response.headers.get("content-type")).toBe(EVENT_STREAM_CONTENT_TYPE)
  const frames = new FrameDecoder()
  const events: Array<StreamFrame> = []
  for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) events.push(...frames.push(chunk))
  const text = (kind: string) =>
    Buffer.concat(events.flatMap((e) => (e.kind === kind ? [(e as { message: Uint8Array }).message] : []))).toString("utf8")
  return { events, states: events.flatMap((e) => (e.kind === "state" ? [e.state] : [])), output: text("log"), notes: text("runner_log") }
}

const start = (runner: RunningRunner, body: unknown, code: Uint8Array | undefined, accept = EVENT_STREAM_CONTENT_TYPE) =>
  fetch(`${runner.url}/api/start?timestamp=0`, {
    method: "POST",
    headers: { "content-type": START_CONTENT_TYPE, accept },
    body: encodeStartBody(JSON.stringify(body), code) as Uint8Array<ArrayBuffer>
  })

describe("a runner build without the executor a job needs", () => {
  it("fails a job with an image on a runner with no docker executor, naming the plugin to add", async () => {
    const { runner } = await startRunner([executorProcess])
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo never"], image_name: "busybox" }))
    await postOk(runner, "/api/run")
    const pulled = await pullUntilFinished(runner)
    const message = "the job has an image (busybox), which runs on the docker executor, but this runner has no docker executor (it has: process): add @dstack-ts/executor-docker to the runner build's plugins"
    expect(finalState(pulled)).toMatchObject({ state: "failed", termination_reason: "executor_error", termination_message: message })
    // Runner messages are a stream of lines: two written in the same millisecond share one event.
    const runnerLines = pulled.runner_logs.map((l) => decodeMessage(l.message)).join("").split("\n")
    expect(runnerLines).toContain(message)
    expect(pulled.job_logs).toEqual([])
  })

  it("inside the job's own container (inContainer: a Kubernetes pod), a job with an image runs in place on the process executor", async () => {
    const workDir = tmpDir("dstack-ts-runner-")
    const runner = await serveRunner({ port: 0, workDir, plugins: [executorProcess], inContainer: true })
    runners.push(runner)
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo in-place"], image_name: "busybox" }))
    await postOk(runner, "/api/run")
    const pulled = await pullUntilFinished(runner)
    expect(finalState(pulled)).toMatchObject({ state: "done" })
    expect(pulled.job_logs.map((l) => decodeMessage(l.message)).join("")).toContain("in-place")
  })

  it("fails a job without an image on a runner with no executors at all, naming @dstack-ts/executor-process", async () => {
    const { runner } = await startRunner([])
    await postOk(runner, "/api/submit", submitBody({ commands: ["echo never"] }))
    await postOk(runner, "/api/run")
    expect(finalState(await pullUntilFinished(runner))).toMatchObject({
      state: "failed",
      termination_reason: "executor_error",
      termination_message: expect.stringContaining("no process executor (it has: none): add @dstack-ts/executor-process")
    })
  })

  it("refuses to start with two plugins that contribute the same executor, naming both", async () => {
    const twin = definePlugin({ name: "@acme/executor-process", version: "2.0.0", core: "^0.1.0", executors: { process: executorProcess.executors!.process } })
    await expect(serveRunner({ port: 0, workDir: tmpDir("dstack-ts-runner-"), plugins: [executorProcess, twin] })).rejects.toThrow(
      'executor "process" is contributed by both @dstack-ts/executor-process@0.1.0 and @acme/executor-process@2.0.0'
    )
  })
})

describe("POST /api/start: submit, upload_code and run in one request", () => {
  it("takes the spec and the code, runs the job and answers with its event stream to the end", async () => {
    const { runner } = await startRunner()
    const code = await tarGz({ "src/hello.txt": "hello from the code\n" })
    const response = await start(runner, submitBody({ commands: ["cat hello.txt", 'echo "rank=$DSTACK_NODE_RANK"'], working_dir: "src", job_num: 1 }), code)
    expect(response.status).toBe(200)
    const { events, states, output, notes } = await readFrames(response)
    expect(states.map((s) => s.state)).toEqual(["running", "done"])
    expect(states[1]).toMatchObject({ terminationReason: "done_by_runner", exitStatus: 0 })
    expect(output).toBe("hello from the code\nrank=1\n")
    expect(notes).toContain("extracted")
    expect(events.at(-1)?.kind).toBe("end")
    // The same job as pull sees it.
    const all = await pull(runner, 0)
    expect(all.job_states.map((s) => s.state)).toEqual(["running", "done"])
    expect(logText(all.job_logs)).toBe(output)
  })

  it("starts the next job on the runner in a clean repo directory", async () => {
    const { runner } = await startRunner()
    const first = await readFrames(await start(runner, submitBody({ commands: ["echo left > left.txt", "ls"] }), await tarGz({ "code.txt": "1" })))
    expect(first.output).toBe("code.txt\nleft.txt\n")
    // A job that leaves nothing, then one that looks: neither the files nor the code of the jobs before.
    expect((await readFrames(await start(runner, submitBody({ commands: ["ls | wc -l"] }), undefined))).output.trim()).toBe("0")
    expect((await readFrames(await start(runner, submitBody({ commands: ["ls"] }), undefined))).output).toBe("")
  })

  it("answers a repeated start of the submission it has with that job's events, without starting it again", async () => {
    const { runner } = await startRunner()
    const marker = path.join(tmpDir("dstack-runner-repeat-"), "ran")
    const body = submitBody({ commands: [`echo x >> ${marker}`, "echo once"] }, { job_submission_id: "sub-1" })
    const first = await readFrames(await start(runner, body, undefined))
    expect(first.states.map((s) => s.state)).toEqual(["running", "done"])
    // A server that died before it noted the hand-over hands the job over again.
    const again = await readFrames(await start(runner, body, undefined))
    expect(again.states.map((s) => s.state)).toEqual(["running", "done"])
    expect(again.output).toBe("once\n")
    expect(fs.readFileSync(marker, "utf8")).toBe("x\n")
    // Another submission is a new job.
    const next = await readFrames(await start(runner, submitBody({ commands: [`echo x >> ${marker}`] }, { job_submission_id: "sub-2" }), undefined))
    expect(next.states.map((s) => s.state)).toEqual(["running", "done"])
    expect(fs.readFileSync(marker, "utf8")).toBe("x\nx\n")
  })

  it("answers {} to a client that does not ask for the stream; without code nothing is extracted", async () => {
    const { runner } = await startRunner()
    const response = await start(runner, submitBody({ commands: ["echo plain"] }), undefined, "application/json")
    expect(response.status).toBe(200)
    expect(await response.json()).toEqual({})
    const result = await pullUntilFinished(runner)
    expect(finalState(result)).toMatchObject({ state: "done", exit_status: 0 })
    expect(logText(result.job_logs)).toBe("plain\n")
    expect(logText(result.runner_logs)).not.toContain("extracted")
  })

  it("refuses a malformed body, a job while it has one, and a bad archive (the job fails, the next one is taken)", async () => {
    const { runner } = await startRunner()
    const expectError = async (res: Response, status: number, pattern: RegExp) => {
      expect(res.status).toBe(status)
      const body = await res.json()
      expect(body.detail[0].msg).toMatch(pattern)
    }
    const raw = (bytes: Uint8Array, contentType = START_CONTENT_TYPE) =>
      fetch(`${runner.url}/api/start`, { method: "POST", headers: { "content-type": contentType }, body: bytes as Uint8Array<ArrayBuffer> })
    await expectError(await raw(new Uint8Array([0, 0])), 400, /5-byte header/)
    await expectError(await raw(new Uint8Array([7, 0, 0, 0, 2, 123, 125])), 400, /code flag \(byte 0\) must be 0 or 1, got 7/)
    await expectError(await raw(new Uint8Array([0, 0, 0, 0, 9, 123, 125])), 400, /9 bytes, but only 2 follow/)
    await expectError(await raw(new Uint8Array([0, 0, 0, 0, 2, 123, 125, 1])), 400, /1 bytes after the submit JSON but its code flag/)
    await expectError(await raw(new Uint8Array([0, 0, 0, 0, 2, 123, 123])), 400, /submit JSON is not JSON/)
    await expectError(await raw(encodeStartBody("{}", undefined), "application/json"), 400, /must be application\/x-dstack-ts-start/)
    await expectError(await start(runner, { run: {} }, undefined), 400, /job_spec/)
    await expectError(await start(runner, submitBody({ commands: ["true"] }), new TextEncoder().encode("not a tarball at all")), 400, /tar\.gz/)
    // The refused archive ended that job: the runner says why and takes the next one.
    const failed = await pull(runner, 0)
    expect(finalState(failed)).toMatchObject({ state: "failed", termination_reason: "executor_error" })
    expect(finalState(failed).termination_message).toMatch(/tar\.gz/)
    const running = await start(runner, submitBody({ commands: ["sleep 30"] }), undefined, "application/json")
    expect(running.status).toBe(200)
    await running.arrayBuffer()
    await expectError(await start(runner, submitBody({ commands: ["true"] }), undefined), 409, /already has a job/)
    await postOk(runner, "/api/stop", { abort: true })
  })
})

const unavailable = await dockerUnavailableReason()

describeWith("docker", unavailable === undefined, unavailable ?? "", () => {
  beforeAll(async () => {
    await ensureBusyboxImage()
  })

  it("runs a job in a container end to end", async () => {
    const { runner } = await startRunner()
    await postOk(
      runner,
      "/api/submit",
      submitBody({
        image_name: BUSYBOX_IMAGE,
        commands: ["cat hello.txt", 'echo "rank=$DSTACK_NODE_RANK mine=$MINE"', "pwd"],
        env: { MINE: "from docker" }
      })
    )
    await postOk(runner, "/api/upload_code", undefined, await tarGz({ "hello.txt": "code in a container\n" }))
    await postOk(runner, "/api/run")
    const result = await pullUntilFinished(runner)
    expect(result.job_states.map((s) => s.state)).toEqual(["running", "done"])
    expect(logText(result.job_logs)).toBe("code in a container\nrank=0 mine=from docker\n/workflow\n")
  })

  it("publishes the job's app ports on 127.0.0.1 and reports them in job_runtime_data", async () => {
    const { runner } = await startRunner()
    const before = await (await fetch(`${runner.url}/api/job_runtime_data`)).json()
    expect(before).toEqual({ network_mode: "host", ports: {} })
    await postOk(
      runner,
      "/api/submit",
      submitBody({
        image_name: BUSYBOX_IMAGE,
        commands: ["httpd -f -p 8080 -h /workflow"],
        app_specs: [{ port: 8080, app_name: "web" }],
        stop_duration: 1
      })
    )
    await postOk(runner, "/api/upload_code", undefined, await tarGz({ "index.html": "served by the job\n" }))
    await postOk(runner, "/api/run")
    let hostPort = 0
    for (let i = 0; i < 100 && !hostPort; i++) {
      const data = await (await fetch(`${runner.url}/api/job_runtime_data`)).json()
      hostPort = data.ports["8080"] ?? 0
      if (!hostPort) await new Promise((r) => setTimeout(r, 20))
    }
    expect(hostPort).toBeGreaterThan(0)
    // Published from the container's network: the server's proxy checks for an HTTP answer there.
    expect((await (await fetch(`${runner.url}/api/job_runtime_data`)).json()).network_mode).toBe("bridge")
    let body = ""
    for (let i = 0; i < 50 && body === ""; i++) {
      body = await fetch(`http://127.0.0.1:${hostPort}/index.html`).then((r) => (r.ok ? r.text() : ""), () => "")
      if (body === "") await new Promise((r) => setTimeout(r, 50))
    }
    expect(body).toBe("served by the job\n")
    await postOk(runner, "/api/stop", { abort: false })
    expect(finalState(await pullUntilFinished(runner))).toMatchObject({ state: "terminated", termination_reason: "terminated_by_user" })
  })

  it("a missing image fails the job with creating_container_error naming the image", async () => {
    const { runner } = await startRunner()
    await postOk(runner, "/api/submit", submitBody({ image_name: "dstack-ts-test/not-there:1", commands: ["true"] }))
    await postOk(runner, "/api/run")
    const result = await pullUntilFinished(runner)
    expect(result.job_states.map((s) => s.state)).toEqual(["pulling", "failed"])
    expect(finalState(result)).toMatchObject({ termination_reason: "creating_container_error" })
    expect(finalState(result).termination_message).toContain("dstack-ts-test/not-there:1")
  })
})
