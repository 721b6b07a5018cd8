// Helpers for this package's tests: a store layer on a fresh database, and child processes
// that run a fixture under the same runtime as the tests (Node through tsx, or Deno).
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Effect, Layer } from "effect"
import type { StateStore } from "@dstack-ts/core"
import { createTestDatabase, type TestDatabase } from "../../../test/support/postgres.ts"
import { spawnScript, type Child } from "../../../test/support/children.ts"
import { PostgresStateStore } from "../src/index.ts"

const here = path.dirname(fileURLToPath(import.meta.url))

/** A fresh database for the layer's lifetime, dropped after. */
export const freshDatabase = (serverUrl: string): Effect.Effect<TestDatabase, never, import("effect").Scope.Scope> =>
  Effect.acquireRelease(
    Effect.promise(() => createTestDatabase(serverUrl)),
    (db) => Effect.promise(() => db.drop())
  )

/** The PostgreSQL store on a fresh database. */
export const storeOnFreshDatabase = (serverUrl: string): Layer.Layer<StateStore.StateStore, StateStore.StateStoreError> =>
  Layer.unwrapScoped(Effect.map(freshDatabase(serverUrl), (db) => PostgresStateStore.layer({ url: db.url })))

export type { Child }

/** Runs fixtures/<name>.ts in a new process of the current runtime. */
export const spawnFixture = (name: string, env: Record<string, string>): Child =>
  spawnScript(path.join(here, "fixtures", `${name}.ts`), env)
