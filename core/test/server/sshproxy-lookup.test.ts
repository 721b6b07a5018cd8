// How the SSH proxy finds a connection's job (SshProxy.ts findJob): one indexed read of the run
// that holds the submission (`runs.getBySubmissionId`), never a scan of the runs nor a read of
// the owner's key (each open connection's job is checked every 2 s; keys are read when a
// connection authenticates). It sees the job end, its run finish or be deleted, and a newer
// submission replace it.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { Job, JobSubmission, latestSubmission } from "../../src/domain/Job.ts"
import { Run } from "../../src/domain/Run.ts"
import { encodeRecord } from "../../src/engine/RunRecord.ts"
import { StateStore } from "../../src/ports/StateStore.ts"
import { findJob } from "../../src/server/SshProxy.ts"
import { upstreamIdOf } from "../../src/server/SshProxyInfo.ts"
import { makeJob, makeRun } from "../engine/fixtures.ts"

let runtime: ManagedRuntime.ManagedRuntime<StateStore, unknown>
let store: StateStore["Type"]
const calls = { list: 0, get: 0, bySubmission: 0, sshKey: 0 }

/** The memory store, its reads of runs and of users' keys counted. */
const counted = (inner: StateStore["Type"]): StateStore["Type"] => ({
  ...inner,
  runs: {
    ...inner.runs,
    list: (...args) => (calls.list++, inner.runs.list(...args)),
    get: (id) => (calls.get++, inner.runs.get(id)),
    getBySubmissionId: (id) => (calls.bySubmission++, inner.runs.getBySubmissionId(id))
  },
  users: { ...inner.users, getSshKey: (name) => (calls.sshKey++, inner.users.getSshKey(name)) }
})

beforeAll(async () => {
  runtime = ManagedRuntime.make(EmbeddedStateStore.layerMemory() as Layer.Layer<StateStore, unknown>)
  store = await runtime.runPromise(StateStore)
  await runtime.runPromise(store.users.create({ username: "admin", globalRole: "admin", tokenHash: "lookup-test" }))
})
afterAll(() => runtime?.dispose())

const lookup = (upstreamId: string) => runtime.runPromise(Effect.provideService(findJob(upstreamId), StateStore, counted(store)))

/** The run named `id`, its submissions given UUIDs as the server gives them (upstream ids are their hex digits). */
const named = (run: Run, id: string): Run =>
  new Run(
    {
      ...run,
      id,
      runSpec: new (run.runSpec.constructor as any)({ ...run.runSpec, runName: id }),
      jobs: run.jobs.map((job) => new Job({ ...job, jobSubmissions: job.jobSubmissions.map((s) => new JobSubmission({ ...s, id: crypto.randomUUID() }, { disableValidation: true })) }, { disableValidation: true }))
    },
    { disableValidation: true }
  )

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
  it("reads the run holding the submission by its id: no scan, no key read", async () => {
    await put(named(makeRun([makeJob({ status: "running" })], { status: "running" }), "lookup-other"), true)
    const run = named(makeRun([makeJob({ status: "running", jobNum: 0, replicaNum: 3 })], { status: "running" }), "lookup-a")
    await put(run, true)
    const before = { ...calls }
    for (let i = 0; i < 3; i++) {
      const found = await lookup(upstreamOf(run))
      expect(found?.runName).toBe("lookup-a")
      expect(found?.owner).toBe(run.user)
    }
    expect(calls.bySubmission - before.bySubmission).toBe(3)
    expect(calls.list - before.list).toBe(0)
    expect(calls.sshKey - before.sshKey).toBe(0)
    // An id no run holds.
    expect(await lookup("0".repeat(32))).toBeUndefined()
    expect(calls.list - before.list).toBe(0)
  })

  it("sees the job end, a retry replace the submission, the run finish or be deleted", async () => {
    const run = named(makeRun([makeJob({ status: "running", replicaNum: 5 })], { status: "running" }), "lookup-b")
    await put(run, true)
    const id = upstreamOf(run)
    expect(await lookup(id)).toBeDefined()

    // The job terminating while its run still runs: no job.
    const terminating = new Run({ ...run, jobs: [new Job({ ...run.jobs[0]!, jobSubmissions: run.jobs[0]!.jobSubmissions.map((s) => new JobSubmission({ ...s, status: "terminating" }, { disableValidation: true })) })] }, { disableValidation: true })
    await put(terminating, false)
    expect(await lookup(id)).toBeUndefined()

    // A retry: a newer submission of the job; the old id names no running job, the new one does.
    const previous = { ...Schema.encodeSync(JobSubmission)(latestSubmission(run.jobs[0]!)!), status: "terminated", termination_reason: "terminated_by_server" }
    const retried = new Run({ ...run, jobs: [new Job({ ...makeJob({ status: "running", replicaNum: 5, history: [previous] }), jobSubmissions: [] })] }, { disableValidation: true })
    const fresh = new JobSubmission({ ...latestSubmission(makeJob({ status: "running", replicaNum: 5, history: [previous] }))!, id: crypto.randomUUID() }, { disableValidation: true })
    const withRetry = new Run({ ...retried, jobs: [new Job({ ...retried.jobs[0]!, jobSubmissions: [latestSubmission(run.jobs[0]!)!, fresh] })] }, { disableValidation: true })
    expect(upstreamOf(withRetry)).not.toBe(id)
    await put(withRetry, false)
    expect(await lookup(id)).toBeUndefined()
    expect((await lookup(upstreamOf(withRetry)))?.runName).toBe("lookup-b")

    // The run finished, then deleted.
    await put(new Run({ ...withRetry, status: "terminated" }, { disableValidation: true }), false)
    expect(await lookup(upstreamOf(withRetry))).toBeUndefined()
    await put(withRetry, false)
    expect(await lookup(upstreamOf(withRetry))).toBeDefined()
    await runtime.runPromise(Effect.flatMap(StateStore, (s) => s.runs.update("lookup-b", { deleted: true })))
    expect(await lookup(upstreamOf(withRetry))).toBeUndefined()
  })
})
