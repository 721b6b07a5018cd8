// The embedded (PGlite) StateStore: the conformance suite in memory and on disk.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll } from "vitest"
import { EmbeddedStateStore } from "../src/index.ts"
import { testStateStore } from "@dstack-ts/core/testing"

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-state-"))
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))

testStateStore("embedded, in memory", EmbeddedStateStore.layerMemory())
testStateStore("embedded, on disk", EmbeddedStateStore.layer({ dataDir: path.join(dir, "data") }))
