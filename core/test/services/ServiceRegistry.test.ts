// The registry's view of a service follows its stored run: a read of the run that was made
// before a newer write and returns after the newer version was applied (a request's lookup of a
// stale entry, the autoscaler's refresh) must not put the older replicas back — nothing would
// ever correct it, as the run is not written again while its replicas run (CI saw a roll wait
// forever for a new replica the registry had forgotten) — nor bring back the run a name had
// before the service was applied again under it. Requests that find the entry being read wait
// for that read rather than each reading the run.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Exit, Layer, ManagedRuntime, Schema, Scope } from "effect"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { Job } from "../../src/domain/Job.ts"
import { Run, RunSpec } from "../../src/domain/Run.ts"
import { Compute } from "../../src/engine/Compute.ts"
import { encodeRecord } from "../../src/engine/RunRecord.ts"
import { StateStore } from "../../src/ports/StateStore.ts"
import * as ServiceRegistry from "../../src/services/ServiceRegistry.ts"
import { makeJob, makeRun } from "../engine/fixtures.ts"

let runtime: ManagedRuntime.ManagedRuntime<StateStore, unknown>
let store: StateStore["Type"]
/** Reads of the run by name wait for this, when set, after they have read. */
let held: Promise<void> | undefined
/** Reads of the run by name made so far. */
let reads = 0

/** The memory store; a read by name made while `held` is set answers what it read once `held` resolves. */
const holding = (inner: StateStore["Type"]): StateStore["Type"] => ({
  ...inner,
  runs: {
    ...inner.runs,
    getByName: (project, name) =>
      Effect.flatMap(Effect.zipRight(Effect.sync(() => reads++), inner.runs.getByName(project, name)), (row) => {
        const gate = held
        return gate === undefined ? Effect.succeed(row) : Effect.as(Effect.promise(() => gate), row)
      })
  }
})

const spec = Schema.decodeUnknownSync(RunSpec)({
  run_name: "web",
  repo_id: "repo-1",
  repo_data: { repo_type: "virtual" },
  configuration: { type: "service", port: 8000, commands: ["serve"], replicas: 2 }
})
const service = (jobs: ReadonlyArray<Job>, id = "run-1", submittedAt?: number): Run =>
  new Run({ ...makeRun(jobs, { status: "running", ...(submittedAt !== undefined ? { submittedAt } : {}) }), id, runSpec: spec })
const write = (run: Run, insert = false, name = "web") =>
  runtime.runPromise(
    insert
      ? store.runs.insert({ id: run.id, project: "main", name, status: run.status, userName: run.user, doc: encodeRecord({ run, submittedToRunner: [] }) })
      : store.runs.update(run.id, { status: run.status, doc: encodeRecord({ run, submittedToRunner: [] }) })
  )

beforeAll(async () => {
  runtime = ManagedRuntime.make(EmbeddedStateStore.layerMemory() as Layer.Layer<StateStore, unknown>)
  store = await runtime.runPromise(StateStore)
})
afterAll(() => runtime?.dispose())

describe("ServiceRegistry", () => {
  const withRegistry = async (f: (registry: ServiceRegistry.ServiceRegistryService) => Promise<void>) => {
    const scope = await runtime.runPromise(Scope.make())
    // Nothing here reaches a replica: the registry asks Compute only for a replica's address.
    const registry = await runtime.runPromise(
      ServiceRegistry.make.pipe(Effect.provideService(StateStore, holding(store)), Effect.provideService(Compute, {} as Compute["Type"]), Scope.extend(scope))
    )
    try {
      await f(registry)
    } finally {
      await runtime.runPromise(Scope.close(scope, Exit.void))
    }
  }

  it("stays with a service applied again under its name when a read of the run before returns after it", async () => {
    const first = service([makeJob({ status: "running", replicaNum: 0 })], "run-a", Date.parse("2026-12-07T10:00:00Z"))
    await write(first, true, "again")
    await withRegistry(async (registry) => {
      const entry = (await runtime.runPromise(registry.lookup("main", "again")))!
      expect(entry.runId).toBe("run-a")
      let release!: () => void
      held = new Promise<void>((resolve) => (release = resolve))
      const refreshed = runtime.runPromise(registry.refresh(entry))
      await new Promise((resolve) => setTimeout(resolve, 20))
      held = undefined
      // The first run is deleted and the name applied again: a new run, two replicas.
      await runtime.runPromise(store.runs.update("run-a", { deleted: true }))
      const second = service([makeJob({ status: "running", replicaNum: 0 }), makeJob({ status: "running", replicaNum: 1 })], "run-b", Date.parse("2026-12-07T11:00:00Z"))
      await write(second, true, "again")
      await expect.poll(async () => (await runtime.runPromise(registry.lookup("main", "again")))?.runId, { timeout: 5_000, interval: 10 }).toBe("run-b")
      release()
      await refreshed
      expect([entry.runId, entry.finished, entry.replicas.length]).toEqual(["run-b", false, 2])
    })
  })

  it("requests that find the service being read again wait for that read instead of reading it each", async () => {
    const one = [makeJob({ status: "running", replicaNum: 0 })]
    await write(service(one, "run-w"), true, "waits")
    await withRegistry(async (registry) => {
      const entry = (await runtime.runPromise(registry.lookup("main", "waits")))!
      expect(entry.replicas.length).toBe(1)
      // A second replica starts: the registry follows the write, and eight requests arrive meanwhile.
      const before = reads
      await write(service([...one, makeJob({ status: "running", replicaNum: 1 })], "run-w"), false, "waits")
      expect(entry.stale).toBe(true)
      const found = await Promise.all(Array.from({ length: 8 }, () => runtime.runPromise(registry.lookup("main", "waits"))))
      expect(found.map((e) => e?.replicas.length)).toEqual(Array(8).fill(2))
      // At most the registry's own read of the write: none of the requests read the run again.
      expect(reads - before).toBeLessThanOrEqual(1)
    })
  })

  it("keeps the newest version of the run when an older read returns after it", async () => {
    const two = [makeJob({ status: "running", replicaNum: 0 }), makeJob({ status: "running", replicaNum: 1 })]
    await write(service(two), true)
    await withRegistry(async (registry) => {
      const entry = (await runtime.runPromise(registry.lookup("main", "web")))!
      expect(entry.replicas.map((r) => r.replicaNum)).toEqual([0, 1])

      // A refresh reads the run (two replicas) and is held before it applies what it read ...
      let release!: () => void
      held = new Promise<void>((resolve) => (release = resolve))
      const refreshed = runtime.runPromise(registry.refresh(entry))
      await new Promise((resolve) => setTimeout(resolve, 20))
      held = undefined
      // ... while a third replica starts running and the registry follows that write.
      await write(service([...two, makeJob({ status: "running", replicaNum: 2 })]))
      await expect.poll(() => entry.replicas.map((r) => r.replicaNum), { timeout: 5_000, interval: 10 }).toEqual([0, 1, 2])

      release()
      await refreshed
      expect(entry.replicas.map((r) => r.replicaNum)).toEqual([0, 1, 2])
      // And a lookup answers the entry as it is, not stale.
      expect((await runtime.runPromise(registry.lookup("main", "web")))?.replicas.length).toBe(3)
    })
  })
})
