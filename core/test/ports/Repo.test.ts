// The Repo port's virtual repo: deterministic hash, materialize into a directory, path checks.
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import * as Repo from "../../src/ports/Repo.ts"
import { testRepo } from "../../src/testing/index.ts"

const base = mkdtempSync(join(tmpdir(), "dstack-repo-"))
afterAll(() => rmSync(base, { recursive: true, force: true }))

describe("Repo.virtual", () => {
  it.effect("packs files into an archive whose hash does not depend on key order", () =>
    Effect.gen(function*() {
      const a = yield* Repo.virtual.pack({ type: "virtual", files: { "train.py": "print(1)", "data/x.bin": new Uint8Array([0, 255]) } })
      const b = yield* Repo.virtual.pack({ type: "virtual", files: { "data/x.bin": new Uint8Array([0, 255]), "train.py": "print(1)" } })
      const c = yield* Repo.virtual.pack({ type: "virtual", files: { "train.py": "print(2)" } })
      expect(a.repoData).toEqual({ repoType: "virtual" })
      expect(a.codeHash).toMatch(/^[0-9a-f]{64}$/)
      expect(b.codeHash).toBe(a.codeHash)
      expect(c.codeHash).not.toBe(a.codeHash)
    }))

  it.effect("materializes the files, from bytes or from a stream", () =>
    Effect.gen(function*() {
      const packed = yield* Repo.virtual.pack({ type: "virtual", files: { "train.py": "print(1)", "data/x.bin": new Uint8Array([0, 255]) } })
      const dir = join(base, "one")
      yield* Repo.virtual.materialize({ repoData: packed.repoData, archive: Stream.make(packed.archive.subarray(0, 5), packed.archive.subarray(5)) }, dir)
      expect(readFileSync(join(dir, "train.py"), "utf8")).toBe("print(1)")
      expect([...readFileSync(join(dir, "data", "x.bin"))]).toEqual([0, 255])
    }))

  it.effect("refuses paths that escape the tree and archives that are not virtual ones", () =>
    Effect.gen(function*() {
      for (const path of ["../evil", "/etc/passwd", "a//b", "C:/x", "a\\b"]) {
        const error = yield* Effect.flip(Repo.virtual.pack({ type: "virtual", files: { [path]: "x" } }))
        expect([error.reason, error.method]).toEqual(["Invalid", "pack"])
        expect(error.message).toContain(JSON.stringify(path))
      }
      const notFiles = yield* Effect.flip(Repo.virtual.pack({ type: "virtual", files: { "a.txt": 5 } }))
      expect(notFiles.message).toBe("file \"a.txt\" must be a string or a Uint8Array")
      const forged = new TextEncoder().encode(JSON.stringify({ files: { "../../x": "eA==" } }))
      const escaped = yield* Effect.flip(Repo.virtual.materialize({ repoData: { repoType: "virtual" }, archive: forged }, join(base, "two")))
      expect(escaped.reason).toBe("Invalid")
      const garbage = yield* Effect.flip(Repo.virtual.materialize({ repoData: { repoType: "virtual" }, archive: new Uint8Array([1, 2]) }, join(base, "three")))
      expect(garbage.message).toBe("the archive is not a virtual repo archive")
    }))
})

let dirs = 0
testRepo(Repo.virtual, { type: "virtual", files: { "train.py": "print(1)", "conf/a.yml": "x: 1" } }, () =>
  join(base, `suite-${dirs++}`))
