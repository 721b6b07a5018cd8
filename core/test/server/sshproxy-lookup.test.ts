// How the SSH proxy finds a connection's job (SshProxy.ts findJob): the first lookup of an
// upstream id scans the unfinished runs and remembers the run; later lookups (each open
// connection's check every 2 s) read that run by id, and still see the job end, its run end or
// be deleted, and a newer submission replace it.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { JobSubmission, latestSubmission } from "../../src/domain/Job.ts"
import { Run } from "../../src/domain/Run.ts"
import { encodeRecord } from "../../src/engine/RunRecord.ts"
import { StateStore } from "../../src/ports/StateStore.ts"
import { findJob, type RunIndex } from "../../src/server/SshProxy.ts"
import { upstreamIdOf } from "../../src/server/SshProxyInfo.ts"
import { makeJob, makeRun } from "../engine/fixtures.ts"

let runtime: ManagedRuntime.ManagedRuntime<StateStore, unknown>
let store: StateStore["Type"]
const calls = { list: 0, get: 0 }

/** The memory store, its `runs.list` and `runs.get` counted. */
const counted = (inner: StateStore["Type"]): StateStore["Type"] => ({
  ...inner,
  runs: {
    ...inner.runs,
    list: (...args) => (calls.list++, inner.runs.list(...args)),
    get: (id) => (calls.get++, inner.runs.get(id))
  }
})

beforeAll(async () => {
  runtime = ManagedRuntime.make(EmbeddedStateStore.layerMemory() as Layer.Layer<StateStore, unknown>)
  store = await runtime.runPromise(StateStore)
  await runtime.runPromise(store.users.create({ username: "admin", globalRole: "admin", tokenHash: "lookup-test" }))
})
afterAll(() => runtime?.dispose())

const lookup = (upstreamId: string, index: RunIndex) => runtime.runPromise(Effect.provideService(findJob(upstreamId, index), StateStore, counted(store)))

const named = (run: Run, id: string): Run => new Run({ ...run, id, runSpec: new (run.runSpec.constructor as any)({ ...run.runSpec, runName: id }) }, { disableValidation: true })

const put = (run: Run, insert: boolean) =>
  runtime.runPromise(
    Effect.flatMap(StateStore, (s) =>
      insert
        ? s.runs.insert({ id: run.id, project: "main", name: run.runSpec.runName!, status: run.status, userName: run.user, doc: encodeRecord({ run, submittedToRunner: [] }) })
        : s.runs.update(run.id, { status: run.status, doc: encodeRecord({ run, submittedToRunner: [] }) })
    )
  )

const upstreamOf = (run: Run) => upstreamIdOf(latestSubmission(run.jobs[0]!)!.id)

describe("the SSH proxy's job lookup", () => {
  it("scans once for an upstream id, then reads its run by id", async () => {
    await put(named(makeRun([makeJob({ status: "running" })], { status: "running" }), "lookup-other"), true)
    const run = named(makeRun([makeJob({ status: "running", jobNum: 0, replicaNum: 3 })], { status: "running" }), "lookup-a")
    await put(run, true)
    const index: RunIndex = new Map()
    const before = { ...calls }
    const first = await lookup(upstreamOf(run), index)
    expect(first?.runName).toBe("lookup-a")
    expect(index.get(upstreamOf(run))).toBe("lookup-a")
    expect(calls.list - before.list).toBe(1)
    for (let i = 0; i < 3; i++) expect((await lookup(upstreamOf(run), index))?.runName).toBe("lookup-a")
    expect(calls.list - before.list).toBe(1)
    expect(calls.get - before.get).toBe(3)
    // An id no run holds: a scan each time, nothing remembered.
    expect(await lookup("0".repeat(32), index)).toBeUndefined()
    expect(index.has("0".repeat(32))).toBe(false)
  })

  it("sees the job end, the run finish or be deleted, and a retry replace the submission, through the keyed read", async () => {
    const run = named(makeRun([makeJob({ status: "running", replicaNum: 5 })], { status: "running" }), "lookup-b")
    await put(run, true)
    const id = upstreamOf(run)
    const index: RunIndex = new Map()
    expect(await lookup(id, index)).toBeDefined()

    // The job terminating while its run still runs: no job, the run still remembered.
    const terminating = new Run({ ...run, jobs: [makeJob({ status: "terminating", replicaNum: 5 })] }, { disableValidation: true })
    await put(terminating, false)
    const listed = calls.list
    expect(await lookup(id, index)).toBeUndefined()
    expect(calls.list).toBe(listed)
    expect(index.get(id)).toBe("lookup-b")

    // A retry: a newer submission of the job; the old id is forgotten.
    const previous = { ...Schema.encodeSync(JobSubmission)(latestSubmission(run.jobs[0]!)!), status: "terminated", termination_reason: "terminated_by_server" }
    const retried = named(makeRun([makeJob({ status: "running", replicaNum: 5, history: [previous] })], { status: "running" }), "lookup-b")
    expect(upstreamOf(retried)).not.toBe(id)
    await put(retried, false)
    expect(await lookup(id, index)).toBeUndefined()
    expect(index.has(id)).toBe(false)
    expect((await lookup(upstreamOf(retried), index))?.runName).toBe("lookup-b")

    // The run finished, then deleted.
    await put(new Run({ ...retried, status: "terminated" }, { disableValidation: true }), false)
    expect(await lookup(upstreamOf(retried), index)).toBeUndefined()
    expect(index.has(upstreamOf(retried))).toBe(false)
    await put(retried, false)
    expect(await lookup(upstreamOf(retried), index)).toBeDefined()
    await runtime.runPromise(Effect.flatMap(StateStore, (s) => s.runs.update("lookup-b", { deleted: true })))
    expect(await lookup(upstreamOf(retried), index)).toBeUndefined()
    expect(index.has(upstreamOf(retried))).toBe(false)
  })
})
