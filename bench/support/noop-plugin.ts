// A no-op backend for the scheduler benchmark (bench only — never for e2e tests): its instances
// start nothing, and a transport of the same name answers the runner protocol for each
// instance in process (no sockets): healthcheck, submit, upload_code, run, stop and
// `GET /logs_stream`. A job "runs" at once (state `running` and one log line when `/api/run`
// is called) and ends `done` after `job_seconds` (never, when negative), so the engine's whole
// path — claim, plan, provision, hand over, follow — is measured without process start-up.
// `stats()` tells when each job was handed over (submit) and started (run).
import {
  Backend,
  CORE_VERSION,
  definePlugin,
  InstanceDisk,
  InstanceOffer,
  InstanceResources,
  InstanceType,
  JobProvisioningData
} from "@dstack-ts/core"
import { type RunnerClient, type RunnerTransport, RunnerTransportError } from "../../core/src/ports/RunnerTransport.ts"
import { Effect } from "effect"

const TYPE = "noop"

export interface NoopConfig {
  /** Instances at most (default: no limit). */
  readonly max_instances?: number
  /** How long a job runs before it ends `done`; negative: until stopped. Default -1. */
  readonly job_seconds?: number
}

type Listener = () => void

/** One instance's runner, in memory. */
class FakeRunner {
  state: "wait_submit" | "wait_run" | "running" | "done" = "wait_submit"
  events: Array<{ t: number; event: string; data: string }> = []
  listeners = new Set<Listener>()
  clock = 0
  timer: ReturnType<typeof setTimeout> | undefined

  constructor(readonly jobSeconds: number) {}

  private tick(): number {
    this.clock = Math.max(this.clock + 1, Date.now())
    return this.clock
  }

  push(event: string, payload: Record<string, unknown>): void {
    const t = this.tick()
    this.events.push({ t, event, data: JSON.stringify({ ...payload, timestamp: t }) })
    for (const l of [...this.listeners]) l()
  }

  finish(state: "done" | "terminated", extra: Record<string, unknown> = {}): void {
    if (this.state === "done") return
    if (this.timer) clearTimeout(this.timer)
    this.state = "done"
    this.push("state", { state, ...extra })
  }
}

const json = (body: unknown, status = 200) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } })

export interface NoopStats {
  /** ms (performance.timeOrigin-relative wall clock, Date.now()) of each submit and run call. */
  readonly submits: ReadonlyArray<number>
  readonly runs: ReadonlyArray<number>
  readonly instances: number
}

const runners = new Map<string, FakeRunner>()
const submits: Array<number> = []
const runs: Array<number> = []
let created = 0

export const stats = (): NoopStats => ({ submits, runs, instances: created })

const serveEvents = (runner: FakeRunner, cursor: number, signal: AbortSignal | null | undefined): Response => {
  const encoder = new TextEncoder()
  let listener: Listener | undefined
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      let sent = cursor
      let closed = false
      const close = () => {
        if (closed) return
        closed = true
        if (listener) runner.listeners.delete(listener)
        try {
          controller.close()
        } catch {}
      }
      const flush = () => {
        if (closed) return
        let out = ""
        for (const e of runner.events) {
          if (e.t <= sent) continue
          out += `event: ${e.event}\nid: ${e.t}\ndata: ${e.data}\n\n`
          sent = e.t
        }
        if (runner.state === "done") out += `event: end\nid: ${sent}\ndata: {"last_updated":${sent}}\n\n`
        if (out !== "") controller.enqueue(encoder.encode(out))
        if (runner.state === "done") close()
      }
      listener = flush
      runner.listeners.add(listener)
      signal?.addEventListener("abort", close)
      flush()
    },
    cancel() {
      if (listener) runner.listeners.delete(listener)
    }
  })
  return new Response(body, { headers: { "content-type": "text/event-stream" } })
}

const handle = async (runner: FakeRunner, path: string, init: RequestInit | undefined): Promise<Response> => {
  const url = new URL(path, "http://noop")
  const method = init?.method ?? "GET"
  switch (`${method} ${url.pathname}`) {
    case "GET /api/healthcheck":
      return json({ service: "dstack-ts-runner", version: "noop" })
    case "POST /api/submit":
      if (runner.state === "done") {
        runner.state = "wait_submit"
        runner.events = []
      }
      if (runner.state !== "wait_submit") return json({ detail: [{ msg: `the runner already has a job (state ${runner.state})`, code: "conflict" }] }, 409)
      submits.push(Date.now())
      runner.state = "wait_run"
      return json({})
    case "POST /api/upload_code":
      return json({})
    case "POST /api/run": {
      if (runner.state !== "wait_run") return json({ detail: [{ msg: `run needs a submitted job (state ${runner.state})`, code: "conflict" }] }, 409)
      runs.push(Date.now())
      runner.state = "running"
      runner.push("state", { state: "running" })
      runner.push("log", { message: btoa("hi\n") })
      if (runner.jobSeconds >= 0) runner.timer = setTimeout(() => runner.finish("done", { exit_status: 0 }), runner.jobSeconds * 1000)
      return json({})
    }
    case "POST /api/stop":
      runner.finish("terminated", { termination_reason: "terminated_by_user" })
      return json({})
    case "GET /logs_stream":
      return serveEvents(runner, Number(url.searchParams.get("timestamp") ?? 0), init?.signal)
    default:
      return json({ detail: [{ msg: `no route ${method} ${url.pathname}`, code: "not_found" }] }, 404)
  }
}

const transport: RunnerTransport = {
  name: TYPE,
  connect: (target) =>
    Effect.sync((): RunnerClient => ({
      baseUrl: `noop://${target.instanceId}`,
      fetch: (path, init) =>
        Effect.suspend(() => {
          const runner = runners.get(target.instanceId ?? "")
          if (runner === undefined) {
            return Effect.fail(new RunnerTransportError({ module: "noop", method: "fetch", reason: "Transport", message: `no noop runner ${target.instanceId}` }))
          }
          return Effect.promise(() => handle(runner, path, init))
        })
    })),
  forward: () => Effect.die(new Error("the noop transport forwards no ports"))
}

const offer = (available: boolean) =>
  new InstanceOffer({
    backend: TYPE,
    region: TYPE,
    price: 0,
    availability: available ? "available" : "not_available",
    instance: new InstanceType({
      name: "noop",
      resources: new InstanceResources({
        cpus: 64,
        memoryMib: 256 * 1024,
        gpus: [],
        spot: false,
        disk: new InstanceDisk({ sizeMib: 1024 * 1024 }),
        description: "a no-op instance"
      })
    })
  })

export const plugin = definePlugin({
  name: "@dstack-ts/bench-noop",
  version: "0.0.0",
  core: `^${CORE_VERSION}`,
  description: "Bench only: instances that start nothing, runners answered in process",
  backends: {
    noop: (raw) =>
      Effect.sync(() => {
        const config = (raw ?? {}) as NoopConfig
        const max = config.max_instances ?? Number.POSITIVE_INFINITY
        const jobSeconds = config.job_seconds ?? -1
        return Backend.make({
          type: TYPE,
          catalog: () => Effect.sync(() => [offer(runners.size < max)]),
          createInstance: (o) =>
            Effect.suspend(() => {
              if (runners.size >= max) return Backend.fail(TYPE, "createInstance", "NoCapacity", `${runners.size} of at most ${max} noop instances`)
              const id = `noop-${crypto.randomUUID()}`
              runners.set(id, new FakeRunner(jobSeconds))
              created++
              return Effect.succeed(
                new JobProvisioningData({
                  backend: TYPE,
                  instanceType: o.instance,
                  instanceId: id,
                  hostname: "noop",
                  region: TYPE,
                  price: 0,
                  username: "noop",
                  dockerized: false,
                  runnerPort: 1
                })
              )
            }),
          terminateInstance: (id) =>
            Effect.sync(() => {
              runners.get(id)?.finish("terminated")
              runners.delete(id)
            })
        })
      })
  },
  transports: { noop: () => Effect.succeed(transport) }
})
