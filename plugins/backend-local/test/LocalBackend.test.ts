// The local backend on this machine: its offer matches what the OS reports, unmet requirements
// come with reasons, and instances are real runner processes that answer, run a job, and are
// gone after terminate or when the backend's scope closes.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { type Backend, JobProvisioningData, RunnerLaunch, RunnerTransport, ServerShutdown } from "@dstack-ts/core"
import { Effect, Either, Schedule, type Scope } from "effect"
import plugin, { LocalBackend } from "../src/index.ts"
import { Runner } from "@dstack-ts/core"
import { describeWith } from "../../../test/support/components.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../../../test/support/docker.ts"
import { modest, pidAlive, requirements, RUNNER_ENTRY, submitBody, tmpDir, writeScript } from "./support.ts"

const { cpuArchOf, detectGpus, diskSizeMib, gpuShortName, parseNvidiaSmi } = Runner.HostProbe

const config: Backend.InstanceConfiguration = {
  projectName: "main",
  instanceName: "local-test-0",
  instanceId: "11111111-1111-4111-8111-111111111111",
  sshKeys: []
}

/** The backend in the test's scope, with its own work directory. */
const backendIn = (options: LocalBackend.LocalBackendOptions = {}) =>
  LocalBackend.make({ workDir: tmpDir("dstack-ts-local-"), runnerEntry: RUNNER_ENTRY, ...options })

const firstOffer = (backend: Backend.Backend) =>
  Effect.map(backend.getOffers(modest()), ({ offers }) => {
    expect(offers).toHaveLength(1)
    return offers[0]
  })

const client = (port: number) => RunnerTransport.fetchClient("test", `http://127.0.0.1:${port}`)

const json = (response: Response) => Effect.promise(() => response.json() as Promise<any>)

/** A process that ended: gone, or a zombie its parent (this test process, through an earlier backend) has not reaped yet (Deno reaps later than Node). */
const ended = (pid: number): boolean => {
  try {
    if (fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("Z") === true) return true
  } catch {
    // no /proc entry: gone (or not Linux: ask the signal)
  }
  return !pidAlive(pid)
}

const post = (port: number, route: string, body?: unknown) =>
  client(port).fetch(route, {
    method: "POST",
    ...(body === undefined ? {} : { body: JSON.stringify(body), headers: { "content-type": "application/json" } })
  })

describe("offers", () => {
  it.scoped("one offer that describes this machine", () =>
    Effect.gen(function*() {
      const workDir = tmpDir("dstack-ts-local-")
      const backend = yield* LocalBackend.make({ workDir, runnerEntry: RUNNER_ENTRY })
      const offer = yield* firstOffer(backend)
      expect(offer).toMatchObject({ backend: "local", region: "local", price: 0, availability: "available" })
      expect(offer.instance.name).toBe("local")
      const r = offer.instance.resources
      expect(r.cpus).toBe(os.cpus().length)
      expect(r.memoryMib).toBe(Math.floor(os.totalmem() / 1024 / 1024))
      expect(r.spot).toBe(false)
      expect(r.cpuArch).toBe(cpuArchOf(os.arch()))
      const disk = yield* Effect.promise(() => diskSizeMib(workDir))
      expect(r.disk.sizeMib).toBe(disk)
      expect(r.disk.sizeMib).toBeGreaterThan(0)
      // The same GPUs nvidia-smi reports (none where it is not installed).
      const gpus = yield* Effect.promise(() => detectGpus("nvidia-smi"))
      expect(r.gpus.map((g) => ({ name: g.name, memoryMib: g.memoryMib }))).toEqual(gpus)
    }))

  it.scoped("a requirement this machine cannot meet gives no offer and says why", () =>
    Effect.gen(function*() {
      const backend = yield* backendIn()
      const gpus = backend.host.gpus.length
      const { offers, excluded } = yield* backend.getOffers(requirements({ cpu: "1..", disk: "0.5GB..", gpu: gpus + 1, memory: "4096GB.." }))
      expect(offers).toEqual([])
      expect(excluded).toHaveLength(1)
      const reasons = excluded[0].reasons
      expect(reasons).toHaveLength(2)
      expect(reasons.find((r) => r.startsWith("gpu:"))).toContain(`needs ${gpus + 1}`)
      expect(reasons.find((r) => r.startsWith("memory:"))).toContain("needs ≥4TB")
      // Spot only: the local machine is on-demand.
      const spot = yield* backend.getOffers(requirements({ cpu: "1..", memory: "0.5GB..", disk: "0.5GB.." }, { spot: true }))
      expect(spot.offers).toEqual([])
      expect(spot.excluded[0].reasons).toEqual(["spot: needs a spot instance, offer is on-demand"])
    }))

  it.scoped("GPUs come from nvidia-smi, with the short names requirements use", () =>
    Effect.gen(function*() {
      const dir = tmpDir("dstack-ts-smi-")
      const smi = writeScript(
        dir,
        "nvidia-smi",
        `#!/bin/sh\n[ "$1" = "--query-gpu=name,memory.total" ] || exit 9\necho "NVIDIA H100 80GB HBM3, 81559"\necho "NVIDIA H100 80GB HBM3, 81559"\n`
      )
      const backend = yield* backendIn({ nvidiaSmi: smi })
      expect(backend.host.gpus).toEqual([{ name: "H100", memoryMib: 81559 }, { name: "H100", memoryMib: 81559 }])
      const fits = yield* backend.getOffers(requirements({ cpu: "1..", memory: "0.5GB..", disk: "0.5GB..", gpu: "H100:70GB..:2" }))
      expect(fits.offers).toHaveLength(1)
      const a100 = yield* backend.getOffers(requirements({ cpu: "1..", memory: "0.5GB..", disk: "0.5GB..", gpu: "A100" }))
      expect(a100.offers).toEqual([])
      expect(a100.excluded[0].reasons[0]).toContain("instance has 2× H100 (79.65GB)")
      // A failing nvidia-smi (no driver) means no GPUs, not a broken backend.
      const broken = writeScript(dir, "broken-smi", "#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
      const without = yield* backendIn({ nvidiaSmi: broken })
      expect(without.host.gpus).toEqual([])
    }))

  it("parses nvidia-smi output and shortens GPU names", () => {
    expect(parseNvidiaSmi("NVIDIA A100-SXM4-80GB, 81920\n\nTesla T4, 15360\ngarbage\n")).toEqual([
      { name: "A100", memoryMib: 81920 },
      { name: "T4", memoryMib: 15360 }
    ])
    expect(gpuShortName("NVIDIA GeForce RTX 4090")).toBe("RTX4090")
    expect(gpuShortName("NVIDIA L40S")).toBe("L40S")
    expect(cpuArchOf("arm64")).toBe("arm")
    expect(cpuArchOf("riscv64")).toBeUndefined()
  })
})

describe("configuration", () => {
  it.scoped("the plugin's factory refuses a bad section, naming every wrong field", () =>
    Effect.gen(function*() {
      expect(plugin.name).toBe("@dstack-ts/backend-local")
      const factory = plugin.backends!.local
      const error = yield* Effect.flip(factory({ max_instances: 0, work_dir: 7, workDir: "/tmp/x" }))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toContain("max_instances")
      expect(error.message).toContain("work_dir")
      expect(error.message).toContain("workDir")
      const missing = yield* Effect.flip(factory({ runner_entry: "/nonexistent/runner.ts" }))
      expect(missing.reason).toBe("Invalid")
      expect(missing.message).toContain("/nonexistent/runner.ts does not exist")
      // No runner build anywhere: neither in the section nor from the server build.
      const none = yield* Effect.flip(factory({ work_dir: tmpDir("dstack-ts-local-") }))
      expect(none.reason).toBe("Invalid")
      expect(none.message).toContain("no runner build to start: set runner_entry in the local backend's configuration, or the server build's runner")
      // A good section makes a backend.
      const backend = yield* factory({ type: "local", work_dir: tmpDir("dstack-ts-local-"), max_instances: 3, runner_entry: RUNNER_ENTRY })
      expect(backend.type).toBe("local")
      // The server build's runner (createServer({ runner })) is the default; the section's wins.
      const fromServer = yield* factory({ work_dir: tmpDir("dstack-ts-local-") }).pipe(
        Effect.provide(RunnerLaunch.runnerProgramLayer({ entry: RUNNER_ENTRY }))
      )
      expect(fromServer.type).toBe("local")
      const sectionWins = yield* Effect.flip(
        factory({ runner_entry: "/nonexistent/own.ts" }).pipe(Effect.provide(RunnerLaunch.runnerProgramLayer({ entry: RUNNER_ENTRY })))
      )
      expect(sectionWins.message).toContain("/nonexistent/own.ts does not exist")
    }))
})

describe("instances", () => {
  it.live("createInstance starts a runner process that answers; terminate kills it, twice is fine", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const backend = yield* backendIn()
        const offer = yield* firstOffer(backend)
        const data = yield* backend.createInstance(offer, config)
        expect(data).toMatchObject({ backend: "local", hostname: "127.0.0.1", region: "local", price: 0, dockerized: false })
        expect(data.instanceId).toMatch(/^local-/)
        expect(data.instanceType.name).toBe("local")
        expect(data.runnerPort).toBeGreaterThan(0)
        const [instance] = yield* backend.instances
        expect(instance.instanceId).toBe(data.instanceId)
        expect(pidAlive(instance.pid)).toBe(true)
        expect(fs.existsSync(instance.dir)).toBe(true)
        // On Node the runner runs from the esbuild bundle, not through tsx.
        if (!("Deno" in globalThis) && fs.existsSync(`/proc/${instance.pid}/cmdline`)) {
          expect(fs.readFileSync(`/proc/${instance.pid}/cmdline`, "utf8")).toMatch(/\.runner\/runner-[^\0]*\.mjs/)
        }

        const health = yield* json(yield* client(data.runnerPort!).fetch("/api/healthcheck"))
        expect(health.service).toBe("dstack-ts-runner")

        yield* backend.terminateInstance(data.instanceId, data.region)
        expect(pidAlive(instance.pid)).toBe(false)
        expect(fs.existsSync(instance.dir)).toBe(false)
        expect(yield* backend.instances).toEqual([])
        const after = yield* Effect.either(client(data.runnerPort!).fetch("/api/healthcheck"))
        expect(Either.isLeft(after) && after.left.reason).toBe("Transport")
        // Idempotent: again, and for an id it never had.
        yield* backend.terminateInstance(data.instanceId, data.region)
        yield* backend.terminateInstance("local-never-was", "local")
      })
    ))

  it.live("a runner left by an earlier server process is stopped by the next one, from its provisioning data", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const workDir = tmpDir("dstack-ts-local-")
        const earlier = yield* LocalBackend.make({ workDir, runnerEntry: RUNNER_ENTRY, terminateGraceSeconds: 1 })
        const data = yield* earlier.createInstance(yield* firstOffer(earlier), config)
        const [instance] = yield* earlier.instances
        // The next server process: a backend of its own on the same work directory, which never
        // started that runner.
        const next = yield* LocalBackend.make({ workDir, runnerEntry: RUNNER_ENTRY, terminateGraceSeconds: 1 })
        expect(yield* next.instances).toEqual([])
        yield* next.terminateInstance(data.instanceId, data.region, data.backendData)
        expect(ended(instance.pid)).toBe(true)
        expect(fs.existsSync(instance.dir)).toBe(false)
        // Provisioning data naming a directory outside the work directory touches nothing (the
        // instance counts as gone, as an unknown one does).
        const outside = tmpDir("dstack-ts-local-outside-")
        yield* next.terminateInstance("local-x", "local", JSON.stringify({ pid: process.pid, dir: outside }))
        expect(fs.existsSync(outside)).toBe(true)
        expect(pidAlive(process.pid)).toBe(true)
      })
    ))

  it.live("a runner of an earlier server process that this one follows (reached) is treated as its own when it closes", () =>
    Effect.gen(function*() {
      const workDir = tmpDir("dstack-ts-local-")
      const options = { workDir, runnerEntry: RUNNER_ENTRY, terminateGraceSeconds: 1 }
      const closing = (runners: "stop" | "leave") => <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) =>
        Effect.scoped(effect).pipe(Effect.provideService(ServerShutdown, { runners: () => runners }))
      /** A backend of a later server process on the same work directory, told of `pds` (`reached`), then closed. */
      const reachedThenClosed = (runners: "stop" | "leave", ...pds: ReadonlyArray<JobProvisioningData>) =>
        closing(runners)(Effect.map(LocalBackend.make(options), (backend) => {
          for (const pd of pds) backend.reached!(pd)
        }))
      const job = (port: number) =>
        Effect.promise(async () => ((await (await fetch(`http://127.0.0.1:${port}/api/healthcheck`)).json()) as { job?: string }).job)
      // Whatever the test's outcome, no runner it started outlives it.
      const started: Array<number> = []
      yield* Effect.addFinalizer(() => Effect.sync(() => {
        for (const pid of started) if (!ended(pid)) process.kill(pid, "SIGKILL")
      }))
      // The earlier server process: two runners, each with a job (60 s and 1 s) when it closes
      // for a restart, so both are left running.
      const [long, short] = yield* closing("leave")(
        Effect.gen(function*() {
          const earlier = yield* LocalBackend.make(options)
          const offer = yield* firstOffer(earlier)
          const made = yield* Effect.all([earlier.createInstance(offer, config), earlier.createInstance(offer, config)])
          const runners = made.map((pd) => ({ pd, pid: JSON.parse(pd.backendData!).pid as number, dir: JSON.parse(pd.backendData!).dir as string }))
          started.push(...runners.map((r) => r.pid))
          for (const [pd, seconds] of [[made[0], 60], [made[1], 1]] as const) {
            expect((yield* post(pd.runnerPort!, "/api/submit", submitBody([`sleep ${seconds}`]))).status).toBe(200)
            expect((yield* post(pd.runnerPort!, "/api/run")).status).toBe(200)
          }
          return runners
        })
      )
      expect(JSON.parse(long.pd.backendData!).server).toBe(process.pid)
      for (const r of [long, short]) expect(ended(r.pid)).toBe(false)
      yield* Effect.retry(Effect.flatMap(job(short.pd.runnerPort!), (j) => (j === "running" ? Effect.fail("still running") : Effect.void)), Schedule.spaced("200 millis").pipe(Schedule.upTo("20 seconds")))
      // The next one follows both, then closes for a restart too: the runner whose job ended is
      // stopped and its directory removed; the one with a live job is left.
      yield* reachedThenClosed("leave", long.pd, short.pd)
      expect(ended(short.pid)).toBe(true)
      expect(fs.existsSync(short.dir)).toBe(false)
      expect(ended(long.pid)).toBe(false)
      // A backend that never reached it, and one told of it with provisioning data naming a
      // server process that still lives (another server's runner), leave it when they close.
      yield* reachedThenClosed("stop")
      yield* reachedThenClosed("stop", new JobProvisioningData({ ...long.pd, backendData: JSON.stringify({ ...JSON.parse(long.pd.backendData!), server: process.ppid }) }))
      expect(ended(long.pid)).toBe(false)
      // One that follows it counts it against max_instances while it runs, and closing for good
      // stops it.
      yield* closing("stop")(
        Effect.gen(function*() {
          const last = yield* LocalBackend.make({ ...options, maxInstances: 1 })
          expect((yield* firstOffer(last)).availability).toBe("available")
          last.reached!(long.pd)
          last.reached!(long.pd)
          expect((yield* firstOffer(last)).availability).toBe("not_available")
          expect((yield* Effect.flip(last.createInstance(yield* firstOffer(last), config))).reason).toBe("NoCapacity")
        })
      )
      expect(ended(long.pid)).toBe(true)
      expect(fs.existsSync(long.dir)).toBe(false)
    }).pipe(Effect.scoped), 60_000)

  it.live("the runner also starts from its TypeScript source, unbundled", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const backend = yield* backendIn({ bundleRunner: false })
        const data = yield* backend.createInstance(yield* firstOffer(backend), config)
        const health = yield* json(yield* client(data.runnerPort!).fetch("/api/healthcheck"))
        expect(health.service).toBe("dstack-ts-runner")
      })
    ))

  it.live("closing the backend's scope terminates every runner it started", () =>
    Effect.gen(function*() {
      const workDir = tmpDir("dstack-ts-local-")
      const pids = yield* Effect.scoped(
        Effect.gen(function*() {
          const backend = yield* LocalBackend.make({ workDir, runnerEntry: RUNNER_ENTRY })
          const offer = yield* firstOffer(backend)
          yield* Effect.all([backend.createInstance(offer, config), backend.createInstance(offer, config)], { concurrency: 2 })
          const pids = (yield* backend.instances).map((i) => i.pid)
          expect(pids).toHaveLength(2)
          for (const pid of pids) expect(pidAlive(pid)).toBe(true)
          return pids
        })
      )
      for (const pid of pids) expect(pidAlive(pid)).toBe(false)
      // Nothing left in the work directory: no instance directories, no runner bundle.
      const left = fs.readdirSync(workDir, { recursive: true }).filter((f) => !String(f).startsWith(".runner") || String(f).endsWith(".mjs"))
      expect(left).toEqual([])
    }))

  it.live("max_instances caps the runners: the offer turns not_available and createInstance fails with NoCapacity", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const backend = yield* backendIn({ maxInstances: 1 })
        const offer = yield* firstOffer(backend)
        const data = yield* backend.createInstance(offer, config)
        const full = yield* firstOffer(backend)
        expect(full.availability).toBe("not_available")
        const error = yield* Effect.flip(backend.createInstance(offer, config))
        expect(error.reason).toBe("NoCapacity")
        expect(error.isRetryable).toBe(true)
        expect(error.message).toContain("at most 1 local runners (max_instances)")
        yield* backend.terminateInstance(data.instanceId, data.region)
        expect((yield* firstOffer(backend)).availability).toBe("available")
      })
    ))

  it.live("a runner that fails to start gives a clear error with its stderr, and leaves no process", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const dir = tmpDir("dstack-ts-bad-runner-")
        const crashing = writeScript(dir, "crash.mjs", `console.error("boom: the runner cannot start"); process.exit(3)\n`)
        const backend = yield* backendIn({ runnerEntry: crashing })
        const offer = yield* firstOffer(backend)
        const error = yield* Effect.flip(backend.createInstance(offer, config))
        expect(error.reason).toBe("Unknown")
        expect(error.message).toContain(crashing)
        expect(error.message).toContain("exited with status 3 before it was ready")
        expect(error.message).toContain("boom: the runner cannot start")
        expect(yield* backend.instances).toEqual([])

        // One that prints something else than its address.
        const chatty = writeScript(dir, "chatty.mjs", `console.log("hello, I am not JSON"); setInterval(() => {}, 1000)\n`)
        const chattyBackend = yield* backendIn({ runnerEntry: chatty })
        const protocol = yield* Effect.flip(chattyBackend.createInstance(offer, config))
        expect(protocol.message).toContain(`printed "hello, I am not JSON" instead of its address`)

        // One that never answers: Timeout, and the process is killed.
        const hanging = writeScript(
          dir,
          "hang.mjs",
          `import * as fs from "node:fs"\nconst dir = process.argv[process.argv.indexOf("--work-dir") + 1]\nfs.writeFileSync(${JSON.stringify(path.join(dir, "pid"))}, String(process.pid))\nconsole.error("still warming up")\nsetInterval(() => {}, 1000)\n`
        )
        const slow = yield* backendIn({ runnerEntry: hanging, startTimeoutSeconds: 1.5 })
        const timeout = yield* Effect.flip(slow.createInstance(offer, config))
        expect(timeout.reason).toBe("Timeout")
        expect(timeout.message).toContain("did not report its address within 1.5s")
        expect(timeout.message).toContain("still warming up")
        const pid = Number(fs.readFileSync(path.join(dir, "pid"), "utf8"))
        expect(pid).toBeGreaterThan(0)
        expect(pidAlive(pid)).toBe(false)
      })
    ))

  it.live("runs a job end to end: submit, run, pull until done, and the output is there", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const backend = yield* backendIn()
        const data = yield* backend.createInstance(yield* firstOffer(backend), config)
        const port = data.runnerPort!
        expect((yield* post(port, "/api/submit", submitBody(["echo hello"]))).status).toBe(200)
        expect((yield* post(port, "/api/run")).status).toBe(200)
        const pulled = yield* pullUntilFinished(port)
        expect(pulled.states).toEqual(["running", "done"])
        expect(pulled.output).toBe("hello\n")

        // A finished runner takes the next job (the engine reuses idle local instances): the
        // second job's events start fresh, with none of the first job's output.
        expect((yield* post(port, "/api/submit", submitBody(["echo again"], "hello-0-1"))).status).toBe(200)
        expect((yield* post(port, "/api/run")).status).toBe(200)
        const again = yield* pullUntilFinished(port)
        expect(again.states).toEqual(["running", "done"])
        expect(again.output).toBe("again\n")
        yield* backend.terminateInstance(data.instanceId, data.region)
      })
    ))
})

const dockerReason = await dockerUnavailableReason()

describeWith("docker", dockerReason === undefined, dockerReason ?? "", () => {
  it.live("runs a container job (the runner loads dockerode from its bundle's install)", () =>
    Effect.scoped(
      Effect.gen(function*() {
        const image = yield* Effect.promise(() => ensureBusyboxImage())
        const backend = yield* backendIn()
        const data = yield* backend.createInstance(yield* firstOffer(backend), config)
        const port = data.runnerPort!
        const submitted = yield* post(port, "/api/submit", submitBody(["echo hello from $(uname -s)"], "docker-0-0", { image_name: image }))
        expect(submitted.status).toBe(200)
        expect((yield* post(port, "/api/run")).status).toBe(200)
        const pulled = yield* pullUntilFinished(port)
        expect(pulled.states[pulled.states.length - 1]).toBe("done")
        expect(pulled.output).toBe("hello from Linux\n")
      })
    ), 60_000)
})

/** Pulls `/api/pull` from the last cursor until a final state; answers the states and the output. */
const pullUntilFinished = (port: number) =>
  Effect.gen(function*() {
    const states: Array<string> = []
    let output = ""
    let cursor = 0
    const step = Effect.gen(function*() {
      const answer = yield* json(yield* client(port).fetch(`/api/pull?timestamp=${cursor}`))
      states.push(...answer.job_states.map((s: { state: string }) => s.state))
      output += answer.job_logs.map((l: { message: string }) => Buffer.from(l.message, "base64").toString("utf8")).join("")
      cursor = answer.last_updated
      const final = states.some((s) => ["done", "failed", "terminated"].includes(s)) && !answer.has_more
      return final ? Effect.void : Effect.fail("not yet" as const)
    }).pipe(Effect.flatten)
    yield* step.pipe(
      Effect.retry({ schedule: Schedule.spaced("50 millis"), while: (e) => e === "not yet" }),
      Effect.timeout("20 seconds")
    )
    return { states, output }
  })
