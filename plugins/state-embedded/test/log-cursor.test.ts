// Tailing a log: a page's `cursor` passed back as `next_token` yields only what was appended
// since — what live log followers rely on — for both log stores of the embedded default.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { StateStore as StateStorePort } from "@dstack-ts/core"

const { StateStore } = StateStorePort
type StateStore = StateStorePort.StateStore
import { EmbeddedStateStore } from "../src/index.ts"

const text = (s: string) => new TextEncoder().encode(s)
const tail = (layer: Layer.Layer<StateStore, any>) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const ev = (i: number) => ({ project: "main", jobSubmissionId: "sub-1", timestamp: new Date(1_000 + i), source: "stdout" as const, message: text(`line ${i}\n`) })
    yield* store.logs.append([ev(1), ev(2), ev(3)])
    const first = yield* store.logs.poll({ project: "main", jobSubmissionId: "sub-1" })
    expect(first.events).toHaveLength(3)
    expect(first.nextToken).toBeUndefined()
    expect(first.cursor).toBeDefined()
    const empty = yield* store.logs.poll({ project: "main", jobSubmissionId: "sub-1", nextToken: first.cursor! })
    expect(empty.events).toHaveLength(0)
    // a line in the same millisecond as the last one read must not be lost
    yield* store.logs.append([{ ...ev(3), message: text("same ms\n") }, ev(4)])
    const next = yield* store.logs.poll({ project: "main", jobSubmissionId: "sub-1", nextToken: first.cursor! })
    expect(next.events.map((e) => new TextDecoder().decode(e.message))).toEqual(["same ms\n", "line 4\n"])
  }).pipe(Effect.provide(layer))

describe("log cursor", () => {
  it.effect("in memory (SQL logs)", () => tail(EmbeddedStateStore.layerMemory()), 60_000)
  it.effect("on disk (file logs)", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-logcursor-"))
    return tail(EmbeddedStateStore.layer({ dataDir: path.join(dir, "state") })).pipe(
      Effect.ensuring(Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
    )
  }, 120_000)
})
