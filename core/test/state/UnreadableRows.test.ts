// A stored row that cannot be read is an error naming its table and row, never a row quietly
// left out: documents whose JSON does not decode (fleets, instances through the API) and log
// rows of the SQL store with a source it does not know.
import { PGlite } from "@electric-sql/pglite"
import { Effect, Either, Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Fleet } from "../../src/domain/Fleet.ts"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { decodeDocument, StateStore } from "../../src/ports/StateStore.ts"
import { createServer, runOn } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"
import { SqlStateStore } from "../../src/state/index.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"

describe("decodeDocument", () => {
  it("fails with Invalid naming the table, the row and the field", async () => {
    const decode = decodeDocument("fleet", Fleet)
    const result = await Effect.runPromise(Effect.either(decode({ id: "f-bad", doc: { name: 42 } })))
    expect(Either.isLeft(result)).toBe(true)
    const error = Either.isLeft(result) ? result.left : undefined
    expect(error?.reason).toBe("Invalid")
    expect(error?.method).toBe("fleets.decode")
    expect(error?.message).toContain("fleets row 'f-bad' does not decode as a fleet")
    expect(error?.message).toContain(`["id"]`)
    expect(error?.message).toContain("is missing")
  })

  it("returns the decoded document", async () => {
    const decode = decodeDocument("run", Schema.Struct({ n: Schema.Number }))
    expect(await Effect.runPromise(decode({ id: "r-1", doc: { n: 1 } }))).toEqual({ n: 1 })
  })
})

describe("the API on an undecodable stored row", () => {
  let server: Server
  const ADMIN = "admin-token-for-unreadable-rows"
  const call = async (p: string, body: unknown = {}) => {
    const res = await server.app.request(p, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}` },
      body: JSON.stringify(body)
    })
    return { status: res.status, body: (await res.json()) as any }
  }
  const insert = (kind: "fleet" | "instance", id: string, status: string) =>
    runOn(
      server,
      Effect.flatMap(StateStore, (store) =>
        (kind === "fleet" ? store.fleets : store.instances).insert({ id, project: "main", name: id, status, doc: { not: "a " + kind } })
      )
    )

  beforeAll(async () => {
    server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
  }, 120_000)
  afterAll(async () => {
    await server?.close()
  })

  it("answers fleets/list and fleets/get with a server error naming the row", async () => {
    await insert("fleet", "fleet-broken", "active")
    const list = await call("/api/project/main/fleets/list")
    expect(list.status).toBe(500)
    expect(list.body.detail[0].msg).toContain("fleets row 'fleet-broken' does not decode as a fleet")
    const got = await call("/api/project/main/fleets/get", { name: "fleet-broken" })
    expect(got.status).toBe(500)
    expect(got.body.detail[0].msg).toContain("fleets row 'fleet-broken'")
  })

  it("answers instances/list and instances/get with a server error naming the row", async () => {
    await insert("instance", "instance-broken", "terminated")
    const list = await call("/api/instances/list", { project_names: ["main"] })
    expect(list.status).toBe(500)
    expect(list.body.detail[0].msg).toContain("instances row 'instance-broken' does not decode as an instance")
    const got = await call("/api/project/main/instances/get", { id: "instance-broken" })
    expect(got.status).toBe(500)
    expect(got.body.detail[0].msg).toContain("instances row 'instance-broken'")
  })
})

describe("SQL logs on a row with an unknown source", () => {
  let db: PGlite
  beforeAll(async () => {
    db = await PGlite.create()
  }, 120_000)
  afterAll(async () => {
    await db?.close()
  })

  it("fails the poll with Invalid naming the logs row", async () => {
    const result = await Effect.runPromise(
      Effect.scoped(
        Effect.gen(function* () {
          const driver = yield* EmbeddedStateStore.makeDriver(db)
          const store = yield* SqlStateStore.make(driver)
          const message = new TextEncoder().encode("fine\n")
          yield* store.logs.append([{ project: "p", jobSubmissionId: "s", timestamp: new Date(1_000), source: "stdout", message }])
          // Only a hand edit (or a bug) could store this: sources are 1..3.
          yield* driver.query(
            `INSERT INTO logs (project, job_submission_id, diagnose, ts_ms, source, message) VALUES ('p', 's', false, 2000, 9, '\\x00')`
          )
          const seq = (yield* driver.query(`SELECT seq::text AS seq FROM logs WHERE source = 9`))[0].seq
          const error = yield* Effect.flip(store.logs.poll({ project: "p", jobSubmissionId: "s" }))
          return { error, seq }
        })
      )
    )
    expect(result.error.reason).toBe("Invalid")
    expect(result.error.message).toBe(`logs row '${String(result.seq)}' cannot be read: unknown source 9`)
  }, 120_000)
})
