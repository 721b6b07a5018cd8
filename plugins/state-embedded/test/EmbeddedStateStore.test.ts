// The embedded (PGlite) StateStore: the conformance suite in memory and on disk, and its JSON
// columns (PGlite always stored JSON values: migration 9 leaves them as they are).
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PGlite } from "@electric-sql/pglite"
import { Effect } from "effect"
import { afterAll } from "vitest"
import { EmbeddedStateStore } from "../src/index.ts"
import { testSqlJsonColumns, testStateStore } from "@dstack-ts/core/testing"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-state-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

testStateStore("embedded, in memory", EmbeddedStateStore.layerMemory())
testStateStore("embedded, on disk", EmbeddedStateStore.layer({ dataDir: path.join(dir, "data") }))

// One PGlite for both tests (a new one costs seconds), each in an empty schema of its own.
let pglite: Promise<PGlite> | undefined
afterAll(async () => {
  await (await pglite)?.close()
})
let schemas = 0
testSqlJsonColumns(
  "embedded",
  "object",
  Effect.gen(function* () {
    const driver = yield* EmbeddedStateStore.makeDriver(yield* Effect.promise(() => (pglite ??= PGlite.create())))
    const schema = `json_${++schemas}`
    yield* driver.query(`CREATE SCHEMA ${schema}`).pipe(Effect.orDie)
    yield* driver.query(`SET search_path TO ${schema}`).pipe(Effect.orDie)
    return driver
  })
)
