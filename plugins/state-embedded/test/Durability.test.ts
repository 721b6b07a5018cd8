// The embedded store keeps every acknowledged write (rows and log lines) when its process is
// killed with SIGKILL,
// refuses a second process on the same data directory while the first lives, and reopens
// without applying migrations again.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { StateStore } from "@dstack-ts/core"
import { SqlStateStore } from "@dstack-ts/core"
import { EmbeddedStateStore } from "../src/index.ts"
import { type Child, spawnFixture } from "./children.ts"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-durability-"))
const children: Array<Child> = []
afterAll(() => {
  for (const c of children) if (c.process.exitCode === null) c.process.kill("SIGKILL")
  fs.rmSync(dir, { recursive: true, force: true })
})

it.live(
  "keeps every acknowledged write after kill -9, and locks the directory while the writer lives",
  () =>
    Effect.gen(function* () {
      const dataDir = path.join(dir, "killed")
      const writer = spawnFixture("writer", { DATA_DIR: dataDir })
      children.push(writer)
      yield* Effect.promise(() => writer.waitFor((l) => l.startsWith("ready "), 90_000))
      // A first start initialises the directory in a child process: in-process initdb would
      // leave this process at ~900 MB (with tsx loaded), instead of ~350.
      const rssMb = Number(writer.lines.find((l) => l.startsWith("ready "))!.slice(6))
      expect(rssMb).toBeLessThan(500)

      // A second opener is refused while the writer lives.
      const second = yield* Effect.either(Effect.scoped(EmbeddedStateStore.make({ dataDir })))
      expect(Either.isLeft(second) && second.left.reason).toBe("Unavailable")
      expect(Either.isLeft(second) && second.left.message).toContain(`in use by process ${writer.process.pid}`)

      yield* Effect.promise(() => writer.waitFor((l) => l === "ack 300", 90_000))
      writer.process.kill("SIGKILL")
      const exit = yield* Effect.promise(() => writer.exited)
      expect(exit.signal).toBe("SIGKILL")
      const acked = writer.lines.filter((l) => l.startsWith("ack ")).map((l) => Number(l.slice(4)))
      expect(acked.length).toBeGreaterThanOrEqual(301)

      // Reopen (the stale lock of the dead process is taken over) and find every acked row.
      const { found, lines } = yield* Effect.scoped(
        Effect.gen(function* () {
          const store = yield* EmbeddedStateStore.make({ dataDir })
          const lines: Array<string> = []
          let nextToken: string | undefined
          do {
            const page = yield* store.logs.poll({ project: "p", jobSubmissionId: "sub-1", ...(nextToken === undefined ? {} : { nextToken }) })
            lines.push(...page.events.map((e) => new TextDecoder().decode(e.message)))
            nextToken = page.nextToken
          } while (nextToken !== undefined)
          return { found: yield* store.runs.list({ projects: ["p"] }), lines }
        })
      )
      // Every acknowledged log line is there, in order.
      expect(lines.slice(0, acked.length)).toEqual(acked.map((i) => `line ${i}\n`))
      expect(lines.length - acked.length).toBeLessThanOrEqual(1)
      const ids = new Set(found.map((d) => d.id))
      const missing = acked.filter((i) => !ids.has(`run-${i}`))
      expect(missing).toEqual([])
      // At most the one insert in flight when the signal came may be there unacknowledged.
      expect(found.length - acked.length).toBeLessThanOrEqual(1)
      const last = found.find((d) => d.id === `run-${acked[acked.length - 1]}`)
      expect(last?.doc).toEqual({ i: acked[acked.length - 1], pad: "x".repeat(200) })
    }),
  180_000
)

it.live("reopens a data directory without migrating again and keeps its data", () =>
  Effect.gen(function* () {
    const dataDir = path.join(dir, "reopen")
    yield* Effect.scoped(
      Effect.gen(function* () {
        const store = yield* EmbeddedStateStore.make({ dataDir })
        yield* StateStore.bootstrap({ adminToken: "durable-token-123" }).pipe(Effect.provideService(StateStore.StateStore, store))
      })
    )
    expect(fs.existsSync(path.join(dataDir, "lock"))).toBe(false)
    expect(fs.existsSync(path.join(dataDir, "pgdata", "PG_VERSION"))).toBe(true)
    const again = yield* Effect.scoped(
      Effect.gen(function* () {
        const store = yield* EmbeddedStateStore.make({ dataDir })
        const result = yield* StateStore.bootstrap().pipe(Effect.provideService(StateStore.StateStore, store))
        const user = yield* StateStore.authenticate("durable-token-123").pipe(Effect.provideService(StateStore.StateStore, store))
        return { result, user }
      })
    )
    expect(again.result.createdAdmin).toBe(false)
    expect(again.result.createdProject).toBe(false)
    expect(again.result.project.projectName).toBe("main")
    expect(again.user.username).toBe("admin")
    expect(SqlStateStore.CHANGES_CHANNEL).toBe("dstack_changes")
  }), 120_000)
