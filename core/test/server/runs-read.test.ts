// runs/get and runs/list answer from the stored wire JSON (and from the server's run cache):
// the answers must be exactly what decoding, presenting and encoding the run gives, old rows
// (written before the wire-shape stamp) must still answer, and every write must show at once.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Schema } from "effect"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { StateStore, type StoredDocument } from "../../src/ports/StateStore.ts"
import { createServer, runOn } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"
import { Run } from "../../src/domain/Run.ts"
import { JobProvisioningData } from "../../src/domain/Job.ts"
import { encodeRecord, presentRun, runWireOf, RunRecord } from "../../src/engine/RunRecord.ts"
import { withRunMessages } from "../../src/server/RunMessages.ts"
import { HOUR, T0, makeJob, makeRun, provisioningData } from "../engine/fixtures.ts"

const ADMIN = "admin-token-for-run-reads"
let server: Server

const call = async (path: string, body: unknown) => {
  const res = await server.app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}` },
    body: JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

const store = <A, E>(f: (s: StateStore["Type"]) => Effect.Effect<A, E>) => runOn(server, Effect.flatMap(StateStore, f) as Effect.Effect<A, E, any>)

/** What the server answered before it kept wire JSON: decode, present, encode. */
const slowWire = (run: Run, now: number) => Schema.encodeSync(Run)(presentRun(run, now))

const row = (run: Run, doc: unknown): StoredDocument => ({
  kind: "run",
  id: run.id,
  project: run.projectName,
  name: run.runSpec.runName ?? "",
  status: run.status,
  parentId: null,
  userName: run.user,
  repoId: run.runSpec.repoId,
  submittedAt: run.submittedAt,
  updatedAt: run.submittedAt,
  deleted: false,
  version: 1,
  lease: null,
  doc
})

/**
 * A run with a finished paid submission, a paid one still running (or done, for runs stored
 * on a live server: the engine would take up a running one), and an unpaid one.
 */
const variedRun = (id: string, finished = false): Run => {
  const pd = Schema.encodeSync(JobProvisioningData)(provisioningData({ price: 3.7 }))
  const old = {
    id: `${id}-old`,
    submission_num: 0,
    submitted_at: new Date(T0 - 2 * HOUR).toISOString(),
    last_processed_at: new Date(T0 - HOUR).toISOString(),
    finished_at: new Date(T0 - HOUR + 1234).toISOString(),
    status: "failed",
    termination_reason: "instance_unreachable",
    job_provisioning_data: pd
  }
  const run = finished
    ? makeRun([makeJob({ status: "done", history: [old], submittedAt: T0 }), makeJob({ jobNum: 1, status: "terminated", provisioned: false })], { status: "done" })
    : makeRun([makeJob({ status: "running", history: [old], submittedAt: T0 }), makeJob({ jobNum: 1, status: "submitted" })], { status: "running" })
  return new Run({ ...run, id, runSpec: new (run.runSpec.constructor as any)({ ...run.runSpec, runName: id }) }, { disableValidation: true })
}

beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
}, 60_000)
afterAll(() => server?.close())

describe("run wire JSON", () => {
  it("answers exactly what decode → present → encode gives, cost included", async () => {
    const run = variedRun("wire-a")
    const doc = JSON.parse(JSON.stringify(encodeRecord({ run, submittedToRunner: [] })))
    for (const now of [T0, T0 + 1.5 * HOUR, Date.now()]) {
      const fast = await Effect.runPromise(runWireOf(row(run, doc), now))
      expect(fast).toEqual(slowWire(run, now))
    }
    expect((await Effect.runPromise(runWireOf(row(run, doc), T0 + HOUR))).cost).toBeGreaterThan(3.7)
  })

  it("decodes rows stored without this build's wire-shape stamp (older servers) and answers the same", async () => {
    const run = variedRun("wire-b")
    const old = Schema.encodeSync(RunRecord)({ run, submittedToRunner: [] })
    const stale = { ...encodeRecord({ run, submittedToRunner: [] }), run_wire_shape: "some-older-shape" }
    for (const doc of [old, stale]) {
      expect(await Effect.runPromise(runWireOf(row(run, JSON.parse(JSON.stringify(doc))), T0 + HOUR))).toEqual(slowWire(run, T0 + HOUR))
    }
  })
})

describe("runs/get and runs/list over the store", () => {
  const insert = (run: Run, stamped = true) =>
    store((s) =>
      s.runs.insert({
        id: run.id,
        project: "main",
        name: run.runSpec.runName!,
        status: run.status,
        userName: run.user,
        repoId: run.runSpec.repoId,
        submittedAt: run.submittedAt,
        doc: stamped ? encodeRecord({ run, submittedToRunner: [] }) : Schema.encodeSync(RunRecord)({ run, submittedToRunner: [] })
      })
    )

  it("answers get by name and by id, and list, with the same runs, stamped or not", async () => {
    const a = variedRun("read-a", true)
    const b = new Run({ ...variedRun("read-b", true), submittedAt: new Date(T0 + 1000) }, { disableValidation: true })
    await insert(a)
    await insert(b, false)
    const byName = await call("/api/project/main/runs/get", { run_name: "read-b" })
    expect(byName.status).toBe(200)
    const byId = await call("/api/project/main/runs/get", { id: b.id })
    const list = await call("/api/runs/list", { project_name: "main" })
    expect(list.status).toBe(200)
    const listed = list.body.filter((r: any) => r.id === a.id || r.id === b.id)
    expect(listed.map((r: any) => r.id)).toEqual([b.id, a.id])
    // Costs grow with time (a paid submission is running): compare all but the cost.
    const noCost = ({ cost, ...rest }: any) => rest
    // The API adds upstream's derived fields (RunMessages.ts) to the run as stored.
    expect(noCost(byName.body)).toEqual(noCost(withRunMessages(slowWire(b, Date.now()))))
    expect(noCost(byId.body)).toEqual(noCost(byName.body))
    expect(noCost(listed[0])).toEqual(noCost(byName.body))
    expect(noCost(listed[1])).toEqual(noCost(withRunMessages(slowWire(a, Date.now()))))
    expect(byName.body.cost).toBeGreaterThan(0)
  })

  it("shows every write at once, though it answered the run from memory before", async () => {
    const run = variedRun("read-c", true)
    await insert(run)
    for (let i = 0; i < 3; i++) expect((await call("/api/project/main/runs/get", { run_name: "read-c" })).body.status).toBe("done")
    // A write as the engine makes it: new status and document, through the store.
    const current = await store((s) => s.runs.getByName("main", "read-c"))
    const done = new Run({ ...run, status: "terminated", terminationReason: "stopped_by_user" }, { disableValidation: true })
    await store((s) => s.runs.update(run.id, { status: "terminated", doc: encodeRecord({ run: done, submittedToRunner: [] }) }, { expectedVersion: current.version }))
    expect((await call("/api/project/main/runs/get", { run_name: "read-c" })).body).toMatchObject({ status: "terminated", termination_reason: "stopped_by_user" })
    expect((await call("/api/project/main/runs/get", { id: run.id })).body.status).toBe("terminated")
    // The write inside a transaction that rolls back changes nothing; the next read is right.
    await store((s) =>
      s.withTransaction(s.runs.update(run.id, { status: "failed", doc: encodeRecord({ run: new Run({ ...done, status: "failed" }, { disableValidation: true }), submittedToRunner: [] }) }).pipe(Effect.zipRight(Effect.fail("roll back")))).pipe(Effect.ignore)
    )
    expect((await call("/api/project/main/runs/get", { run_name: "read-c" })).body.status).toBe("terminated")
    // Deleted: gone by name at once; a new run of that name is the one answered.
    expect((await call("/api/project/main/runs/delete", { runs_names: ["read-c"] })).status).toBe(200)
    expect((await call("/api/project/main/runs/get", { run_name: "read-c" })).status).toBe(400)
    const again = new Run({ ...run, id: "read-c-2" }, { disableValidation: true })
    await insert(again)
    expect((await call("/api/project/main/runs/get", { run_name: "read-c" })).body.id).toBe("read-c-2")
  })

  it("keeps runs of other projects out of runs/get", async () => {
    await store((s) => s.projects.create({ name: "other", owner: "admin" }))
    const run = new Run({ ...variedRun("read-d", true), projectName: "other" }, { disableValidation: true })
    await store((s) => s.runs.insert({ id: run.id, project: "other", name: "read-d", status: run.status, doc: encodeRecord({ run, submittedToRunner: [] }) }))
    expect((await call("/api/project/other/runs/get", { id: run.id })).status).toBe(200)
    expect((await call("/api/project/main/runs/get", { id: run.id })).status).toBe(400)
  })
})
