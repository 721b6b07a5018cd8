// The embedded (PGlite) StateStore: the conformance suite in memory (on disk: Template.test.ts), and its JSON
// columns (PGlite always stored JSON values: migration 9 leaves them as they are).
import { PGlite } from "@electric-sql/pglite"
import { Effect } from "effect"
import { afterAll } from "vitest"
import { EmbeddedStateStore } from "../src/index.ts"
import { testSqlJsonColumns, testStateStore } from "@dstack-ts/core/testing"

testStateStore("embedded, in memory", EmbeddedStateStore.layerMemory())
// On disk: Template.test.ts (a new database on disk starts from the template).

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
