// The instance reconcile pass (core/src/engine/Reconcile.ts) on a real state store (the embedded
// one, in memory): which busy and provisioning instances it settles and how, which it leaves to
// a live worker, and that two replicas never settle one instance twice. The runner's answer and
// the pool's release/terminate are given as functions that record what they were asked.
import { Context, Effect, Exit, Layer, Schema, Scope } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { Instance } from "../../src/domain/Instance.ts"
import { Job, JobProvisioningData, JobSubmission } from "../../src/domain/Job.ts"
import { ACTIVE_RUN_STATUSES } from "../../src/engine/Engine.ts"
import * as Reconcile from "../../src/engine/Reconcile.ts"
import { StateStore, type StateStoreService } from "../../src/ports/StateStore.ts"
import { makeJob, makeRun, provisioningData } from "./fixtures.ts"
import { encodeRecord } from "../../src/engine/RunRecord.ts"

let store: StateStoreService
let scope: Scope.CloseableScope
const run = <A, E>(effect: Effect.Effect<A, E>) => Effect.runPromise(effect as Effect.Effect<A, never>)

beforeAll(async () => {
  scope = await Effect.runPromise(Scope.make())
  const context = await Effect.runPromise(Layer.buildWithScope(EmbeddedStateStore.layerMemory(), scope))
  store = Context.get(context, StateStore)
  await run(store.users.create({ username: "admin", globalRole: "admin", tokenHash: "x" }))
}, 60_000)
afterAll(() => Effect.runPromise(Scope.close(scope, Exit.void)))

let projectCount = 0
/** A fresh project per test, so that one test's runs and instances do not meet another's. */
const newProject = async () => {
  const name = `p${projectCount++}`
  await run(store.projects.create({ name, owner: "admin" }))
  return name
}

const encodePd = Schema.encodeSync(JobProvisioningData)

const addInstance = async (project: string, options: { status: "busy" | "provisioning" | "idle"; jobName?: string; pd?: boolean; backend?: string; createdAgoMs?: number }) => {
  const id = crypto.randomUUID()
  const instance = new Instance({
    id,
    projectName: project,
    backend: options.backend ?? "local",
    instanceType: provisioningData().instanceType,
    name: `${options.jobName ?? "host"}-${id.slice(0, 4)}`,
    ...(options.jobName !== undefined ? { jobName: options.jobName } : {}),
    status: options.status,
    created: new Date(Date.now() - (options.createdAgoMs ?? 0)),
    region: "local",
    price: 1,
    idleDuration: 300
  })
  const doc = { ...Schema.encodeSync(Instance)(instance), ...(options.pd === false ? {} : { provisioning_data: encodePd(provisioningData()) }) }
  await run(store.instances.insert({ id, project, name: instance.name, status: options.status, doc }))
  return id
}

/** An active run whose one job (`train-0-0`) is in `status`, on `instanceId` when given. */
const addRun = async (project: string, status: "running" | "submitted" | "done", instanceId?: string) => {
  const job = makeJob({ status, provisioned: instanceId !== undefined })
  const jobs = [instanceId === undefined ? job : new Job({ ...job, jobSubmissions: job.jobSubmissions.map((s) => new JobSubmission({ ...s, instanceId })) })]
  const r = makeRun(jobs, { status: status === "done" ? "done" : status === "submitted" ? "submitted" : "running" })
  const id = crypto.randomUUID()
  await run(store.runs.insert({ id, project, name: `run-${id.slice(0, 6)}`, status: r.status, doc: encodeRecord({ run: r, submittedToRunner: [] }) }))
  return id
}

const statusOf = async (id: string) => (await run(store.instances.get(id))).status

/** A reconcile pass whose runner answers `answers`, recording the pool calls. */
const reconciler = (answers: boolean, options: { graceMs?: number; provisioningTimeoutMs?: number; owner?: string } = {}) => {
  const all: Array<string> = []
  const r = Reconcile.make({
    store,
    owner: options.owner ?? "replica-a",
    activeRunStatuses: ACTIVE_RUN_STATUSES,
    graceMs: options.graceMs ?? 0,
    provisioningTimeoutMs: options.provisioningTimeoutMs ?? 60_000,
    runnerAnswers: () => Effect.succeed(answers),
    release: (id) => Effect.sync(() => all.push(`release ${id}`)).pipe(Effect.zipRight(store.instances.update(id, { status: "idle" })), Effect.orDie, Effect.asVoid),
    terminate: (_project, id, _pd, reason) => Effect.sync(() => all.push(`terminate ${id} ${reason}`)).pipe(Effect.zipRight(store.instances.update(id, { status: "terminated" })), Effect.orDie, Effect.asVoid)
  })
  // The store is shared by the tests: only what a test's own project holds is looked at.
  const calls = {
    own: (ids: ReadonlyArray<string>) => all.filter((c) => ids.some((id) => c.includes(id)))
  }
  return {
    pass: async (project: string) => {
      const outcome = await run(r.pass)
      const own = new Set((await run(store.instances.list({ projects: [project] }))).map((row) => row.id))
      return { settled: outcome.settled.filter((s) => own.has(s.id)) }
    },
    calls
  }
}

describe("instance reconcile pass", () => {
  it("gives a busy instance whose job has finished back to idle when its runner answers", async () => {
    const project = await newProject()
    const id = await addInstance(project, { status: "busy", jobName: "train-0-0" })
    await addRun(project, "done", id)
    const r = reconciler(true)
    const outcome = await r.pass(project)
    expect(outcome.settled).toEqual([{ id, was: "busy", action: "idle" }])
    expect(r.calls.own([id])).toEqual([`release ${id}`])
    expect(await statusOf(id)).toBe("idle")
  })

  it("terminates a busy instance with no job whose runner does not answer, saying why", async () => {
    const project = await newProject()
    const id = await addInstance(project, { status: "busy", jobName: "gone-0-0" })
    const r = reconciler(false)
    await r.pass(project)
    expect(r.calls.own([id])).toEqual([`terminate ${id} unreachable: its runner did not answer once its job had ended`])
    expect(await statusOf(id)).toBe("terminated")
  })

  it("leaves a busy instance an unfinished job is on", async () => {
    const project = await newProject()
    const id = await addInstance(project, { status: "busy", jobName: "train-0-0" })
    await addRun(project, "running", id)
    const r = reconciler(true)
    expect((await r.pass(project)).settled).toEqual([])
    expect(await statusOf(id)).toBe("busy")
  })

  it("leaves an instance whose job is being placed (its worker may be about to write it)", async () => {
    const project = await newProject()
    const busy = await addInstance(project, { status: "busy", jobName: "train-0-0" })
    const making = await addInstance(project, { status: "provisioning", jobName: "train-0-0", pd: false })
    await addRun(project, "submitted")
    const r = reconciler(true)
    expect((await r.pass(project)).settled).toEqual([])
    expect([await statusOf(busy), await statusOf(making)]).toEqual(["busy", "provisioning"])
  })

  it("leaves instances changed within the grace period", async () => {
    const project = await newProject()
    const id = await addInstance(project, { status: "busy", jobName: "x-0-0" })
    const r = reconciler(true, { graceMs: 60_000 })
    expect((await r.pass(project)).settled).toEqual([])
    expect(await statusOf(id)).toBe("busy")
  })

  it("leaves an instance whose creation holds a live lease, and settles it once the lease is gone", async () => {
    const project = await newProject()
    const id = await addInstance(project, { status: "provisioning", jobName: "y-0-0", pd: false })
    const [held] = await run(store.instances.claim({ filter: { ids: [id] }, owner: "creator", leaseMs: 60_000 }))
    const r = reconciler(true)
    expect((await r.pass(project)).settled).toEqual([])
    await run(store.instances.release(id, held.lease!.token))
    expect((await r.pass(project)).settled).toEqual([{ id, was: "provisioning", action: "terminated" }])
    const row = await run(store.instances.get(id))
    expect(row.status).toBe("terminated")
    expect((row.doc as any).termination_reason_message).toMatch(/creation was cut short/)
  })

  it("makes a provisioning instance whose runner answers idle, and terminates one past the provisioning timeout", async () => {
    const project = await newProject()
    const answering = await addInstance(project, { status: "provisioning", jobName: "a-0-0" })
    await reconciler(true).pass(project)
    expect(await statusOf(answering)).toBe("idle")

    const young = await addInstance(project, { status: "provisioning", jobName: "b-0-0" })
    const old = await addInstance(project, { status: "provisioning", jobName: "c-0-0", createdAgoMs: 120_000 })
    const r = reconciler(false, { provisioningTimeoutMs: 60_000 })
    const outcome = await r.pass(project)
    expect(outcome.settled).toEqual([{ id: old, was: "provisioning", action: "terminated" }])
    expect(r.calls.own([old, young])).toEqual([`terminate ${old} provisioning_timeout: its runner did not answer in time`])
    expect(await statusOf(young)).toBe("provisioning")
  })

  it("puts an SSH fleet host left provisioning back to pending", async () => {
    const project = await newProject()
    const id = await addInstance(project, { status: "provisioning", backend: "remote", pd: false })
    await reconciler(true).pass(project)
    expect(await statusOf(id)).toBe("pending")
  })

  it("two replicas passing at once settle each instance once", async () => {
    const project = await newProject()
    const ids = await Promise.all(Array.from({ length: 6 }, (_, i) => addInstance(project, { status: "busy", jobName: `z-${i}-0` })))
    const a = reconciler(true, { owner: "replica-a" })
    const b = reconciler(true, { owner: "replica-b" })
    await Promise.all([a.pass(project), b.pass(project)])
    const released = [...a.calls.own(ids), ...b.calls.own(ids)].filter((c) => c.startsWith("release"))
    expect(released.sort()).toEqual(ids.map((id) => `release ${id}`).sort())
    for (const id of ids) expect(await statusOf(id)).toBe("idle")
  })

  it("holdersOf: an unreadable run document protects its project's instances", () => {
    const holders = Reconcile.holdersOf([{ project: "p", doc: { run: { jobs: "garbage" } } }])
    expect([...holders.unread]).toEqual(["p"])
  })
})
