// A server on a shared state store (PostgreSQL) refuses a blob store that only its own machine
// sees (fs, memory) unless told `allowLocalBlobs`: replicas on one database would each keep
// their own code archives and stack files. With the `s3` store (here on the S3 stand-in) it
// starts. The rule itself (localBlobsProblem) is checked without a database too.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import blobUnstorage from "@dstack-ts/blob-unstorage"
import statePostgres from "@dstack-ts/state-postgres"
import { BlobStore, createServer, LocalBlobsError } from "@dstack-ts/core"
import { localBlobsProblem } from "../../core/src/server/SharedBlobs.ts"
import { describeWith } from "../support/components.ts"
import { createTestDatabase, findPostgres, type TestDatabase } from "../support/postgres.ts"
import { type S3Standin, startS3Standin } from "../support/s3-standin.ts"

describe("localBlobsProblem", () => {
  const postgres = { reach: "shared" as const, choice: { driver: "postgres" } }
  it("refuses a shared state store with process or host blobs, naming both stores and the way out", () => {
    for (const [reach, where] of [["process", "memory"], ["host", "disk"]] as const) {
      const problem = localBlobsProblem(postgres, { reach, choice: { driver: "fs" } }, false)
      expect(problem).toBeInstanceOf(LocalBlobsError)
      expect(problem!.message).toContain("The state store `postgres` is shared")
      expect(problem!.message).toContain("the blob store `fs`")
      expect(problem!.message).toContain(where)
      expect(problem!.message).toContain("`allowLocalBlobs`")
      expect(problem!.message).toContain("--allow-local-blobs")
      expect(problem!.message).toContain("DSTACK_SERVER_S3_BUCKET")
    }
  })
  it("accepts shared blobs, a state store that is not shared, stores that do not say, and the opt-out", () => {
    expect(localBlobsProblem(postgres, { reach: "shared", choice: "s3" }, false)).toBeUndefined()
    expect(localBlobsProblem({ reach: "host", choice: "embedded" }, { reach: "host", choice: "fs" }, false)).toBeUndefined()
    expect(localBlobsProblem({ choice: "custom" }, { reach: "process", choice: "memory" }, false)).toBeUndefined()
    expect(localBlobsProblem(postgres, { choice: "third-party" }, false)).toBeUndefined()
    expect(localBlobsProblem(postgres, { reach: "host", choice: "fs" }, true)).toBeUndefined()
  })
})

const pg = await findPostgres()

describeWith("postgresql", pg.available, pg.reason, () => {
  let db: TestDatabase | undefined
  let s3: S3Standin | undefined
  let dir = ""
  beforeAll(async () => {
    db = await createTestDatabase(pg.url, "dstack_shared_blobs")
    s3 = await startS3Standin({ buckets: ["shared"] })
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-shared-blobs-"))
  }, 30_000)
  afterAll(async () => {
    await s3?.close()
    await db?.drop()
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
  })

  const plugins = [statePostgres, blobUnstorage]
  const state = () => ({ driver: "postgres", options: { url: db!.url } })

  it("refuses to start on PostgreSQL with fs or memory blobs", async () => {
    for (const blobs of [{ driver: "fs", options: { base: dir } }, BlobStore.layerMemory] as const) {
      const error = await createServer({ plugins, state: state(), blobs }).then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(LocalBlobsError)
      expect((error as Error).message).toContain("The state store `postgres` is shared")
      expect((error as Error).message).toContain("allowLocalBlobs")
    }
  }, 60_000)

  it("starts on PostgreSQL with local blobs when allowLocalBlobs is set", async () => {
    const server = await createServer({ plugins, state: state(), blobs: { driver: "fs", options: { base: dir } }, allowLocalBlobs: true })
    await server.close()
  }, 60_000)

  it("starts on PostgreSQL with the s3 blob store", async () => {
    const server = await createServer({
      plugins,
      state: state(),
      blobs: {
        driver: "s3",
        options: { bucket: "shared", endpoint: s3!.endpoint, region: s3!.region, access_key_id: s3!.accessKeyId, secret_access_key: s3!.secretAccessKey }
      }
    })
    await server.close()
  }, 60_000)
})
