// What a scale from zero asks of the state store, through a store that records its calls: on
// the way to the first byte neither the service registry, the autoscaler nor the run's worker
// reads the service's run — every write of it is this process's, and reaches them with the row
// written (the store's report of its own write; the writer's wake or the change feed's notice).
// And a write of the autoscaler that conflicts with another server's adding the same replica
// is made again adding only what the run then lacks.
import { Effect, Layer } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { StateStore } from "../../core/src/ports/StateStore.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { applyService } from "../support/services.ts"

const TOKEN = "store-use-e2e-token"
let serving: Serving
let call: ReturnType<typeof httpCall>

/**
 * Reads of runs by name, by id (and those of them from a run worker), the job statuses each write
 * of a run stored, and the claims of instances and their updates (with the options each had).
 */
const recorded = {
  readsByName: new Map<string, number>(),
  readsById: new Map<string, number>(),
  workerReads: new Map<string, number>(),
  writes: new Map<string, Array<string>>(),
  instanceClaims: [] as Array<ReadonlyArray<string> | undefined>,
  instanceUpdates: [] as Array<{ id: string; status: string | undefined; unleased: boolean; lease: boolean }>
}

/** Runs whose next write adding a replica races another server's (see `update` below). */
const raced = new Set<string>()

const recordingStore = Layer.effect(
  StateStore,
  Effect.map(StateStore, (store) => ({
    ...store,
    instances: {
      ...store.instances,
      claim: (...args: Parameters<typeof store.instances.claim>) => {
        recorded.instanceClaims.push(args[0].filter?.ids)
        return store.instances.claim(...args)
      },
      update: (...args: Parameters<typeof store.instances.update>) => {
        recorded.instanceUpdates.push({ id: args[0], status: args[1].status, unleased: args[2]?.unleased === true, lease: args[2]?.lease !== undefined })
        return store.instances.update(...args)
      }
    },
    runs: {
      ...store.runs,
      get: (id: string) => {
        recorded.readsById.set(id, (recorded.readsById.get(id) ?? 0) + 1)
        // A worker's read runs in its step (RunWorker.ts's generator is on the stack when it asks).
        if (new Error().stack?.includes("RunWorker")) recorded.workerReads.set(id, (recorded.workerReads.get(id) ?? 0) + 1)
        return store.runs.get(id)
      },
      getByName: (project: string, name: string) => {
        recorded.readsByName.set(name, (recorded.readsByName.get(name) ?? 0) + 1)
        return store.runs.getByName(project, name)
      },
      update: (...args: Parameters<typeof store.runs.update>) => {
        const doc = args[1].doc as { run?: { jobs?: Array<{ job_submissions: Array<{ status: string }> }> } } | undefined
        if (doc?.run?.jobs !== undefined) {
          const writes = recorded.writes.get(args[0]) ?? []
          writes.push(doc.run.jobs.map((j) => j.job_submissions.at(-1)!.status).join(","))
          recorded.writes.set(args[0], writes)
        }
        // Armed for a run: its next write that adds a replica is made first without a version
        // check (another server scaling the same service), so the write itself conflicts.
        if (raced.has(args[0]) && args[2]?.expectedVersion !== undefined && doc?.run?.jobs?.length === 1) {
          raced.delete(args[0])
          return Effect.zipRight(store.runs.update(args[0], args[1]), store.runs.update(...args))
        }
        return store.runs.update(...args)
      }
    }
  }))
).pipe(Layer.provide(EmbeddedStateStore.layerMemory()))

beforeAll(async () => {
  ;({ serving, call } = await startLocalServer({ token: TOKEN, maxInstances: 4, server: { state: recordingStore } }))
}, 60_000)
afterAll(async () => {
  await call?.("/api/project/main/runs/stop", { runs_names: ["cold", "raced", "warm"], abort: true })
  await serving?.close()
})

describe("a scale from zero, as the store sees it", () => {
  it("reads the service's run for none of the writes on the way to the first byte", async () => {
    await applyService(call, "cold", { replicas: "0..1", scaling: { metric: "rps", target: 100, window: "30s", scale_up_delay: 0, scale_down_delay: 0 } })
    const { id } = (await call("/api/project/main/runs/get", { run_name: "cold" })).body
    expect((await call("/api/project/main/services/get", { run_name: "cold" })).status).toBe(200)
    const readsBefore = recorded.readsByName.get("cold") ?? 0
    const writesBefore = recorded.writes.get(id)?.length ?? 0
    const workerReadsBefore = recorded.workerReads.get(id) ?? 0
    const readsByIdBefore = recorded.readsById.get(id) ?? 0

    const answer = await fetch(`${serving.url}/proxy/services/main/cold/path`, { headers: { authorization: `Bearer ${TOKEN}` } })
    expect(answer.status).toBe(200)

    const writes = (recorded.writes.get(id) ?? []).slice(writesBefore)
    // The autoscaler's new replica, then its instance and its start.
    expect(writes[0]).toBe("submitted")
    expect(writes).toContain("running")
    const reads = (recorded.readsByName.get("cold") ?? 0) - readsBefore
    // Every write on the way was made by this process: each reached the registry with its row.
    expect(reads, `${reads} reads for ${writes.length} writes (${writes.join(" → ")})`).toBe(0)
    // Every write on the way was the autoscaler's or the worker's own: the worker read none of them,
    // and the autoscaler scaled from the registry's copy (nobody read the run by id at all).
    expect(recorded.workerReads.get(id) ?? 0).toBe(workerReadsBefore)
    expect((recorded.readsById.get(id) ?? 0) - readsByIdBefore).toBe(0)
  }, 120_000)

  it("takes an idle instance whose runner it heard from moments ago in one write, without a claim", async () => {
    // A task ends on an instance of its own, which stays idle; its runner was just heard from.
    const task = await call("/api/project/main/runs/apply", {
      plan: { run_spec: { run_name: "before", repo_id: "services", repo_data: { repo_type: "virtual" }, configuration: { type: "task", commands: ["true"], resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." } } } }
    })
    expect(task.status, JSON.stringify(task.body)).toBe(200)
    let before
    for (const start = Date.now(); Date.now() - start < 60_000; await new Promise((r) => setTimeout(r, 50))) {
      before = (await call("/api/project/main/runs/get", { run_name: "before" })).body
      if (before.status === "done") break
    }
    expect(before.status).toBe("done")
    const machine = before.jobs[0].job_submissions.at(-1).job_provisioning_data.instance_id
    // The others' instances serve their replicas: the task's is the one idle.
    const idle = (await call("/api/instances/list", {})).body.filter((i: { status: string }) => i.status === "idle")
    expect(idle.length).toBe(1)
    const instanceId = idle[0].id
    await applyService(call, "warm", { replicas: "0..1", scaling: { metric: "rps", target: 100, window: "30s", scale_up_delay: 0, scale_down_delay: 300 } })
    expect((await call("/api/project/main/services/get", { run_name: "warm" })).status).toBe(200)
    const claimsBefore = recorded.instanceClaims.length
    const updatesBefore = recorded.instanceUpdates.length
    const answer = await fetch(`${serving.url}/proxy/services/main/warm/path`, { headers: { authorization: `Bearer ${TOKEN}` } })
    expect(answer.status).toBe(200)
    const run = (await call("/api/project/main/runs/get", { run_name: "warm" })).body
    expect(run.jobs[0].job_submissions.at(-1).job_provisioning_data.instance_id).toBe(machine)
    // The instance was taken by one write at the version listed, with nobody's lease on it.
    expect(recorded.instanceClaims.slice(claimsBefore).filter((ids) => ids?.includes(instanceId))).toEqual([])
    expect(recorded.instanceUpdates.slice(updatesBefore).filter((u) => u.id === instanceId)[0]).toEqual({ id: instanceId, status: "busy", unleased: true, lease: false })
  }, 120_000)

  it("adds the replica a scale from zero needs once, when another server's write of the same replica comes first", async () => {
    await applyService(call, "raced", { replicas: "0..1", scaling: { metric: "rps", target: 100, window: "30s", scale_up_delay: 0, scale_down_delay: 300 } })
    const { id } = (await call("/api/project/main/runs/get", { run_name: "raced" })).body
    expect((await call("/api/project/main/services/get", { run_name: "raced" })).status).toBe(200)
    raced.add(id)
    const answer = await fetch(`${serving.url}/proxy/services/main/raced/path`, { headers: { authorization: `Bearer ${TOKEN}` } })
    expect(answer.status).toBe(200)
    expect(raced.has(id), "the race was not run").toBe(false)
    // The autoscaler's write conflicted and was made again on the run as the other write left it,
    // which had the replica already: one replica, not two.
    const run = (await call("/api/project/main/runs/get", { run_name: "raced" })).body
    expect(run.jobs.map((j: { job_spec: { replica_num: number } }) => j.job_spec.replica_num)).toEqual([0])
  }, 120_000)
})
