// The engine end to end: a real server (embedded state store), real runners reached over
// HTTP, real process jobs. The backend is the test-only in-process plugin.
import { execSync } from "node:child_process"
import { Effect, Layer } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Backend, definePlugin } from "@dstack-ts/core"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { StateStore, StateStoreError, type StateStoreService } from "../../core/src/ports/StateStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { appCall } from "../support/api.ts"
import { makeInProcessPlugin } from "../support/inprocess-backend.ts"

const TOKEN = "engine-e2e-token"
let server: Server
const inproc = makeInProcessPlugin()

const call = appCall(() => server, TOKEN)

const runSpec = (configuration: Record<string, unknown>, runName?: string) => ({
  run_spec: {
    ...(runName ? { run_name: runName } : {}),
    repo_id: "e2e",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "task", resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }, ...configuration }
  }
})

const waitFor = async (name: string, done: (run: any) => boolean, timeoutMs = 20_000) => {
  const start = Date.now()
  let last: any
  while (Date.now() - start < timeoutMs) {
    last = (await call("/api/project/main/runs/get", { run_name: name })).body
    if (done(last)) return last
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`run ${name} did not get there in time; last: ${JSON.stringify(last?.status)} ${JSON.stringify(last?.jobs?.[0]?.job_submissions)}`)
}
const finished = (run: any) => ["done", "failed", "terminated"].includes(run.status)

/** The instance's status once it is idle, or after 10 s (read from the store itself, uncounted). */
const idleSoon = async (instanceId: string): Promise<string> => {
  const start = Date.now()
  for (;;) {
    const row = await Effect.runPromise(rawStore!.instances.get(instanceId))
    if (row.status === "idle" || Date.now() - start > 10_000) return row.status
    await new Promise((r) => setTimeout(r, 50))
  }
}

const logsOf = async (name: string) =>
  (await call("/api/project/main/logs/poll", { run_name: name })).body.logs.map((l: any) => l.message).join("")

// The run writes the store sees (run id and status), to check the engine writes nothing it need
// not, and the reads of single instance rows, to check it reads none it need not.
const runWrites: Array<{ readonly id: string; readonly status: string | undefined }> = []
const instanceReads: Array<string> = []
let rawStore: StateStoreService | undefined
const countedState = Layer.effect(
  StateStore,
  Effect.map(StateStore, (s) => {
    rawStore = s
    return {
      ...s,
      runs: { ...s.runs, update: ((id, patch, options) => Effect.zipRight(Effect.sync(() => runWrites.push({ id, status: patch.status })), s.runs.update(id, patch, options))) as typeof s.runs.update },
      instances: { ...s.instances, get: ((id) => Effect.zipRight(Effect.sync(() => instanceReads.push(id)), s.instances.get(id))) as typeof s.instances.get }
    }
  })
).pipe(Layer.provide(EmbeddedStateStore.layerMemory()))

beforeAll(async () => {
  server = await createServer({
    state: countedState,
    blobs: blobsMemory,
    adminToken: TOKEN,
    plugins: [inproc.plugin],
    compute: { defaultBackends: [{ type: "inprocess" }] },
    engine: { resyncMs: 60_000 }
  })
}, 60_000)
afterAll(async () => {
  await server?.close()
})

describe("engine end to end", () => {
  it("plans a run with the backend's offer and explains when nothing fits", async () => {
    const plan = await call("/api/project/main/runs/get_plan", runSpec({ commands: ["true"] }))
    expect(plan.status).toBe(200)
    expect(plan.body.job_plans[0].offers[0].backend).toBe("inprocess")
    const none = await call("/api/project/main/runs/get_plan", runSpec({ commands: ["true"], resources: { gpu: "A100:1" } }))
    expect(none.body.job_plans[0].offers).toEqual([])
    expect(none.body.job_plans[0].no_offers_reason).toMatch(/gpu/)
  })

  it("runs a task to done with its output in the log", async () => {
    const applied = await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo hello from the engine", "echo second line"] }, "hello-run") })
    expect(applied.status).toBe(200)
    expect(applied.body.status).toBe("submitted")
    const run = await waitFor("hello-run", finished)
    expect(run.status).toBe("done")
    expect(run.jobs[0].job_submissions[0]).toMatchObject({ status: "done", termination_reason: "done_by_runner", exit_status: 0 })
    expect(await logsOf("hello-run")).toBe("hello from the engine\nsecond line\n")
    // The worker takes the record the apply stored as it is: nothing is written while the run
    // is still submitted (a re-read of the row it holds used to write it again).
    const statuses = runWrites.filter((w) => w.id === applied.body.id).map((w) => w.status)
    expect(statuses).not.toContain("submitted")
    expect(statuses.at(-1)).toBe("done")
  })

  it("reports a failing command with its exit status and reason", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo about to fail", "exit 3"] }, "failing-run") })
    const run = await waitFor("failing-run", finished)
    expect(run.status).toBe("failed")
    expect(run.termination_reason).toBe("job_failed")
    expect(run.jobs[0].job_submissions[0]).toMatchObject({ status: "failed", termination_reason: "container_exited_with_error", exit_status: 3 })
    expect(await logsOf("failing-run")).toContain("about to fail")
  })

  it("stops a running run and keeps the lines it printed", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo started", "sleep 30"] }, "sleepy-run") })
    await waitFor("sleepy-run", (r) => r.status === "running")
    // wait for the first line to be stored before stopping
    const start = Date.now()
    while (!(await logsOf("sleepy-run")).includes("started") && Date.now() - start < 10_000) await new Promise((r) => setTimeout(r, 50))
    const stop = await call("/api/project/main/runs/stop", { runs_names: ["sleepy-run"], abort: false })
    expect(stop.status).toBe(200)
    const run = await waitFor("sleepy-run", finished)
    expect(run.status).toBe("terminated")
    expect(run.termination_reason).toBe("stopped_by_user")
    expect(run.jobs[0].job_submissions[0].termination_reason).toBe("terminated_by_user")
    expect(await logsOf("sleepy-run")).toContain("started")
  })

  it("aborts a running run at once", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["trap '' TERM; echo stubborn; sleep 30"] }, "abort-run") })
    await waitFor("abort-run", (r) => r.status === "running")
    const started = Date.now()
    await call("/api/project/main/runs/stop", { runs_names: ["abort-run"], abort: true })
    const run = await waitFor("abort-run", finished)
    expect(Date.now() - started).toBeLessThan(10_000)
    expect(run.status).toBe("terminated")
    expect(run.termination_reason).toBe("aborted_by_user")
    expect(run.jobs[0].job_submissions[0].termination_reason).toBe("aborted_by_user")
  })

  it("stops a job that runs past max_duration", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo working", "sleep 30"], max_duration: "2s" }, "slow-run") })
    const run = await waitFor("slow-run", finished, 25_000)
    expect(run.jobs[0].job_submissions[0].termination_reason, JSON.stringify(run.jobs[0].job_submissions[0])).toBe("max_duration_exceeded")
    expect(run.status).toBe("failed")
    expect(await logsOf("slow-run")).toContain("working")
  })

  it("retries a failed job per retry.on_events and succeeds on the next submission", async () => {
    const marker = `/tmp/dstack-e2e-retry-${Date.now()}`
    await call("/api/project/main/runs/apply", {
      plan: runSpec({ commands: [`if [ -f ${marker} ]; then echo second try; else touch ${marker}; echo first try; exit 1; fi`], retry: { on_events: ["error"], duration: "10m" } }, "retry-run")
    })
    // the upstream backoff before the first resubmission is 15 s
    const run = await waitFor("retry-run", finished, 40_000)
    expect(run.status).toBe("done")
    const subs = run.jobs[0].job_submissions
    expect(subs.map((s: any) => s.status)).toEqual(["failed", "done"])
    expect(subs[1].submission_num).toBe(1)
  }, 60_000)

  it("refuses a process job whose python version the host lacks, saying what the host has", async () => {
    const host = execSync("python3 --version 2>&1 || true").toString()
    const have = /Python (\d+\.\d+)/.exec(host)?.[1]
    const wanted = have === "3.9" ? "3.10" : "3.9"
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["python3 --version"], python: wanted }, "python-run") })
    const run = await waitFor("python-run", finished)
    expect(run.status).toBe("failed")
    expect(run.jobs[0].job_submissions[0].termination_reason).toBe("executor_error")
    expect(run.jobs[0].job_submissions[0].termination_reason_message).toContain(`python ${wanted} was requested but this host has`)
  })

  it("fails a run that no offer fits, saying why", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["true"], resources: { gpu: "H100:8" } }, "no-gpu-run") })
    const run = await waitFor("no-gpu-run", finished)
    expect(run.status).toBe("failed")
    expect(run.jobs[0].job_submissions[0].termination_reason).toBe("failed_to_start_due_to_no_capacity")
    expect(run.jobs[0].job_submissions[0].termination_reason_message).toMatch(/gpu/)
  })

  it("reuses the idle instance for the next run", async () => {
    const before = inproc.created.length
    const reads = instanceReads.length
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo again"] }, "reuse-run") })
    const run = await waitFor("reuse-run", finished)
    expect(run.status).toBe("done")
    expect(inproc.created.length).toBe(before)
    // Taken and given back without reading its row alone: the release writes at the version the
    // engine wrote it busy.
    const instanceId = run.jobs[0].job_submissions.at(-1).job_provisioning_data.instance_id as string
    expect(await idleSoon(instanceId)).toBe("idle")
    expect(instanceReads.slice(reads)).toEqual([])
  })

  it("gives an instance back idle though its row was written by someone else while the job ran", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["sleep 1"] }, "rewritten-run") })
    await waitFor("rewritten-run", (r) => r.status === "running")
    const [busy] = await Effect.runPromise(rawStore!.instances.list({ statuses: ["busy"] }))
    expect(busy).toBeDefined()
    // Another writer (a fleet check, an operator) changes the row: the engine's copy is stale.
    const rewritten = await Effect.runPromise(rawStore!.instances.update(busy.id, { doc: { ...(busy.doc as object) } }))
    expect(rewritten.version).toBe(busy.version + 1)
    const reads = instanceReads.length
    expect((await waitFor("rewritten-run", finished)).status).toBe("done")
    expect(await idleSoon(busy.id)).toBe("idle")
    expect((await Effect.runPromise(rawStore!.instances.get(busy.id))).version).toBeGreaterThan(rewritten.version)
    // The write at the stale version conflicted, and the row was read again.
    expect(instanceReads.slice(reads)).toContain(busy.id)
  })

  it("streams a live log to a follower until the run ends", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ commands: ["for i in 1 2 3; do echo tick $i; sleep 0.2; done"] }, "stream-run") })
    await waitFor("stream-run", (r) => r.jobs[0].job_submissions[0].status !== "submitted")
    const res = await server.app.request("/api/project/main/logs/stream?run_name=stream-run", { headers: { authorization: `Bearer ${TOKEN}` } })
    expect(res.status).toBe(200)
    const text = await res.text()
    const lines = [...text.matchAll(/^data: (.*)$/gm)].map((m) => m[1])
    const messages = lines.slice(0, -1).flatMap((l) => JSON.parse(l)).map((e: any) => e.message).join("")
    expect(messages).toBe("tick 1\ntick 2\ntick 3\n")
    expect(text).toMatch(/event: end\ndata: \{"status":"done"/)
  })

  it("lists runs newest first and deletes finished ones", async () => {
    const list = await call("/api/runs/list", { project_name: "main" })
    expect(list.status).toBe(200)
    const names = list.body.map((r: any) => r.run_spec.run_name)
    expect(names[0]).toBe("stream-run")
    expect(names).toContain("hello-run")
    const del = await call("/api/project/main/runs/delete", { runs_names: ["hello-run"] })
    expect(del.status).toBe(200)
    expect((await call("/api/project/main/runs/get", { run_name: "hello-run" })).status).toBe(400)
  })
})

/** Waits for a run of `target` to get there, polling runs/get. */
const waitOn = async (target: Server, name: string, done: (run: any) => boolean, timeoutMs = 20_000) => {
  const start = Date.now()
  let last: any
  while (Date.now() - start < timeoutMs) {
    last = (await appCall(() => target, TOKEN)("/api/project/main/runs/get", { run_name: name })).body
    if (done(last)) return last
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`run ${name} did not get there in time; last: ${JSON.stringify(last?.status)} ${JSON.stringify(last?.jobs?.[0]?.job_submissions)}`)
}

describe("engine: errors in planning are shown as what they are", () => {
  // `picky` refuses a configuration without hosts; `broken` has a bug in its catalog.
  const picky = definePlugin({
    name: "@dstack-ts/test-backend-picky",
    version: "0.1.0",
    core: "^0.1.0",
    backends: {
      picky: (config) =>
        (config as { hosts?: unknown }).hosts === undefined
          ? Backend.fail("picky", "make", "Invalid", "hosts: required (the machines to run on)")
          : Effect.die(new Error("not used in these tests"))
    }
  })
  const broken = definePlugin({
    name: "@dstack-ts/test-backend-broken",
    version: "0.1.0",
    core: "^0.1.0",
    backends: {
      broken: () =>
        Effect.succeed(Backend.make({
          type: "broken",
          catalog: () => Effect.sync(() => { throw new TypeError("the catalog has a bug") }),
          createInstance: () => Backend.fail("broken", "createInstance", "Invalid", "never reached"),
          terminateInstance: () => Effect.void
        }))
    }
  })
  const own = makeInProcessPlugin()
  let planning: Server
  const ask = appCall(() => planning, TOKEN)

  beforeAll(async () => {
    planning = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [own.plugin, picky, broken],
      compute: { defaultBackends: [{ type: "inprocess" }, { type: "picky", config: {} }, { type: "broken" }] },
      engine: { resyncMs: 60_000 }
    })
  }, 60_000)
  afterAll(async () => {
    await planning?.close()
  })

  it("plans with the backends that work, and names a backend its plugin refused with the plugin's message", async () => {
    const plan = await ask("/api/project/main/runs/get_plan", runSpec({ commands: ["true"], backends: ["inprocess", "picky"] }))
    expect(plan.status, JSON.stringify(plan.body)).toBe(200)
    expect(plan.body.job_plans[0].offers.map((o: any) => o.backend)).toEqual(["inprocess"])
    const refused = await ask("/api/project/main/runs/get_plan", runSpec({ commands: ["true"], backends: ["picky"] }))
    expect(refused.status, JSON.stringify(refused.body)).toBe(200)
    expect(refused.body.job_plans[0].offers).toEqual([])
    expect(refused.body.job_plans[0].no_offers_reason).toContain("backend picky failed: hosts: required (the machines to run on)")
  })

  it("lists a default backend its plugin refused among the project's backends (not dropped with the others)", async () => {
    const listed = await ask("/api/project/main/backends/list", {})
    expect(listed.status, JSON.stringify(listed.body)).toBe(200)
    expect(listed.body.map((b: any) => b.name).sort()).toEqual(["broken", "inprocess", "picky"])
  })

  it("fails a run on a backend its plugin refused, saying which backend and why", async () => {
    await ask("/api/project/main/runs/apply", { plan: runSpec({ commands: ["true"], backends: ["picky"] }, "picky-run") })
    const run = await waitOn(planning, "picky-run", finished)
    const sub = run.jobs[0].job_submissions[0]
    expect(sub.termination_reason).toBe("failed_to_start_due_to_no_capacity")
    expect(sub.termination_reason_message).toContain("backend picky failed: hosts: required (the machines to run on)")
  })

  it("ends a job whose planning hit a bug as terminated by the server with the error, not as no capacity", async () => {
    await ask("/api/project/main/runs/apply", { plan: runSpec({ commands: ["true"], backends: ["broken"] }, "bug-run") })
    const run = await waitOn(planning, "bug-run", finished)
    const sub = run.jobs[0].job_submissions[0]
    expect(sub.termination_reason, JSON.stringify(sub)).toBe("terminated_by_server")
    expect(sub.termination_reason_message).toBe("provisioning failed: TypeError: the catalog has a bug")
  })
})

describe("engine: a takeover resumes following a runner after the last stored line", () => {
  // The store fails the engine's read of where a job's log ends `failPolls` times, and one
  // renewal of leases answers that none was kept (as when another replica took the runs).
  const faults = { failPolls: 0, loseLeases: false }
  const own = makeInProcessPlugin()
  let takeover: Server
  const ask = appCall(() => takeover, TOKEN)

  beforeAll(async () => {
    const state = Layer.effect(
      StateStore,
      Effect.map(StateStore, (store) => ({
        ...store,
        runs: {
          ...store.runs,
          renewMany: (held, leaseMs) =>
            Effect.suspend(() => {
              if (!faults.loseLeases) return store.runs.renewMany(held, leaseMs)
              faults.loseLeases = false
              return Effect.succeed([])
            })
        },
        logs: {
          ...store.logs,
          poll: (query) =>
            Effect.suspend(() => {
              if (!(query.descending === true && query.limit === 1 && faults.failPolls > 0)) return store.logs.poll(query)
              faults.failPolls--
              return Effect.fail(new StateStoreError({ module: "test", method: "logs.poll", reason: "Unavailable", message: "the database is restarting" }))
            })
        }
      }))
    ).pipe(Layer.provide(EmbeddedStateStore.layerMemory()))
    takeover = await createServer({
      state,
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [own.plugin],
      compute: { defaultBackends: [{ type: "inprocess" }] },
      engine: { leaseMs: 3_000, resyncMs: 300 }
    })
  }, 60_000)
  afterAll(async () => {
    await takeover?.close()
  })

  it("asks again when the last stored log position cannot be read, and stores no line twice", async () => {
    await ask("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo start", "sleep 4", "echo end"] }, "takeover-run") })
    await waitOn(takeover, "takeover-run", (r) => r.status === "running")
    const logs = async () => (await ask("/api/project/main/logs/poll", { run_name: "takeover-run" })).body.logs.map((l: any) => l.message).join("")
    const started = Date.now()
    while (!(await logs()).includes("start") && Date.now() - started < 10_000) await new Promise((r) => setTimeout(r, 50))
    expect(await logs()).toBe("start\n")
    // The worker loses its lease; the next resync claims the run again and resumes its job.
    faults.failPolls = 3
    faults.loseLeases = true
    const run = await waitOn(takeover, "takeover-run", finished, 30_000)
    expect(faults.loseLeases, "the lease was lost").toBe(false)
    expect(run.status, JSON.stringify(run.jobs[0].job_submissions)).toBe("done")
    expect(await logs()).toBe("start\nend\n")
    expect(faults.failPolls, "the takeover asked until it read the last log position").toBe(0)
  }, 60_000)
})

describe("engine: a run that ends while its instance is being made gives the instance back", () => {
  const slow = makeInProcessPlugin({ createDelayMs: 1_500 })
  let slowServer: Server
  const slowCall = appCall(() => slowServer, TOKEN)

  beforeAll(async () => {
    slowServer = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [slow.plugin],
      compute: { defaultBackends: [{ type: "inprocess" }] },
      engine: { resyncMs: 60_000 }
    })
  }, 60_000)
  afterAll(async () => {
    await slowServer?.close()
  })

  it("aborted while the backend creates its instance: the instance ends idle for the next run, not busy with no job", async () => {
    await slowCall("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo never"] }, "abort-early") })
    // The backend is making the instance (the engine has stored it before asking).
    const deadline = Date.now() + 10_000
    while (Date.now() < deadline) {
      const instances = (await slowCall("/api/instances/list", {})).body as Array<any>
      if (instances.length > 0) break
      await new Promise((r) => setTimeout(r, 20))
    }
    expect(slow.created).toEqual([])
    await slowCall("/api/project/main/runs/stop", { runs_names: ["abort-early"], abort: true })
    const start = Date.now()
    let last: any
    while (Date.now() - start < 15_000) {
      const run = (await slowCall("/api/project/main/runs/get", { run_name: "abort-early" })).body
      last = (await slowCall("/api/instances/list", {})).body
      if (finished(run) && last.length === 1 && last[0].status === "idle") break
      await new Promise((r) => setTimeout(r, 100))
    }
    expect(last.map((i: any) => i.status), JSON.stringify(last)).toEqual(["idle"])
    expect(slow.created).toHaveLength(1)
    // The next run gets that instance.
    await slowCall("/api/project/main/runs/apply", { plan: runSpec({ commands: ["echo reused"] }, "after-abort") })
    const run = await (async () => {
      for (const t = Date.now(); Date.now() - t < 20_000; await new Promise((r) => setTimeout(r, 100))) {
        const got = (await slowCall("/api/project/main/runs/get", { run_name: "after-abort" })).body
        if (finished(got)) return got
      }
      throw new Error("after-abort did not finish")
    })()
    expect(run.status).toBe("done")
    expect(slow.created).toHaveLength(1)
  }, 60_000)
})
