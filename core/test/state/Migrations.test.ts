// Versioned migrations: applied in order, once, recorded; a failing one leaves nothing behind.
import { expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { PGlite } from "@electric-sql/pglite"
import { StateMigrations } from "../../src/state/index.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"

const withDriver = <A, E>(use: (driver: Effect.Effect.Success<ReturnType<typeof EmbeddedStateStore.makeDriver>>) => Effect.Effect<A, E>) =>
  Effect.acquireUseRelease(
    Effect.promise(() => PGlite.create()),
    (db) => Effect.flatMap(EmbeddedStateStore.makeDriver(db), use),
    (db) => Effect.promise(() => db.close())
  )

it.live("applies pending migrations in order, once", () =>
  withDriver((driver) =>
    Effect.gen(function* () {
      const list: Array<StateMigrations.Migration> = [
        { version: 2, name: "second", statements: ["ALTER TABLE t ADD COLUMN b int"] },
        { version: 1, name: "first", statements: ["CREATE TABLE t (a int)"] }
      ]
      expect(yield* StateMigrations.migrate(driver, list)).toEqual([1, 2])
      expect(yield* StateMigrations.migrate(driver, list)).toEqual([])
      const more = [...list, { version: 3, name: "third", statements: ["ALTER TABLE t ADD COLUMN c int"] }]
      expect(yield* StateMigrations.migrate(driver, more)).toEqual([3])
      const rows = yield* driver.query("SELECT version, name FROM dstack_migrations ORDER BY version")
      expect(rows).toEqual([
        { version: 1, name: "first" },
        { version: 2, name: "second" },
        { version: 3, name: "third" }
      ])
      yield* driver.query("INSERT INTO t (a, b, c) VALUES (1, 2, 3)")
    })
  ), 60_000)

it.live("rolls back every pending migration when one fails", () =>
  withDriver((driver) =>
    Effect.gen(function* () {
      const bad: Array<StateMigrations.Migration> = [
        { version: 1, name: "ok", statements: ["CREATE TABLE u (a int)"] },
        { version: 2, name: "broken", statements: ["ALTER TABLE missing ADD COLUMN x int"] }
      ]
      const result = yield* Effect.either(StateMigrations.migrate(driver, bad))
      expect(Either.isLeft(result)).toBe(true)
      expect(yield* driver.query("SELECT to_regclass('u') IS NULL AS gone")).toEqual([{ gone: true }])
      // The shipped migrations apply cleanly on an empty database.
      expect(yield* StateMigrations.migrate(driver)).toEqual(StateMigrations.migrations.map((m) => m.version))
    })
  ), 60_000)
