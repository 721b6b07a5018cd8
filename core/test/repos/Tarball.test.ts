// Extraction on the runner refuses archives whose entries would land outside the target.
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Stream } from "effect"
import { afterAll } from "vitest"
import { materializeRepo } from "../../src/repos/index.ts"
import { entryProblem, packTarball } from "../../src/repos/Tarball.ts"
import { tarGzOf } from "../../src/repos/VirtualRepo.ts"
import { RepoError } from "../../src/ports/Repo.ts"
import { cleanup, tempDir, writeTree } from "./support.ts"

afterAll(cleanup)

const bytes = (s: string) => new TextEncoder().encode(s)

describe("tarball extraction", () => {
  it.effect("refuses an entry with '..' and writes nothing outside the target", () =>
    Effect.gen(function*() {
      const root = tempDir()
      const target = path.join(root, "repo")
      const archive = tarGzOf(new Map([["ok.txt", bytes("ok")], ["../evil.txt", bytes("evil")]]))
      const error = yield* Effect.flip(materializeRepo({ repoType: "local" }, archive, target))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toContain("\"../evil.txt\"")
      expect(fs.existsSync(path.join(root, "evil.txt"))).toBe(false)
    }))

  it.effect("refuses a symbolic link pointing outside the repo", () =>
    Effect.gen(function*() {
      const src = tempDir()
      writeTree(src, { "a.txt": "a" })
      fs.symlinkSync("../../etc", path.join(src, "escape"))
      const target = tempDir()
      const error = yield* Effect.flip(materializeRepo({ repoType: "local" }, packTarball("test", src, ["a.txt", "escape"]), target))
      expect(error.message).toContain("\"escape\"")
      expect(error.message).toContain("outside the repo")
      expect(fs.existsSync(path.join(target, "escape"))).toBe(false)
    }))

  it("names each kind of unsafe entry", () => {
    expect(entryProblem("/etc/passwd", "File", undefined)).toContain("absolute")
    expect(entryProblem("a/../../b", "File", undefined)).toContain("'..'")
    expect(entryProblem("dev", "CharacterDevice", undefined)).toContain("CharacterDevice")
    expect(entryProblem("hard", "Link", "a")).toContain("Link")
    expect(entryProblem("l", "SymbolicLink", "/abs")).toContain("absolute")
    expect(entryProblem("d/l", "SymbolicLink", "../x")).toBeUndefined()
    expect(entryProblem("./a/b.txt", "File", undefined)).toBeUndefined()
  })

  it.effect("fails with Invalid on bytes that are not an archive, and passes a failing source's error through", () =>
    Effect.gen(function*() {
      const garbage = yield* Effect.flip(materializeRepo({ repoType: "local" }, bytes("this is not a tarball at all".repeat(40)), tempDir()))
      expect(garbage.reason).toBe("Invalid")
      expect(garbage.message).toContain("cannot extract the code archive")
      const sourceError = new RepoError({ module: "test", method: "read", reason: "Transport", message: "connection reset" })
      const failed = yield* Effect.flip(materializeRepo({ repoType: "local" }, Stream.fail(sourceError), tempDir()))
      expect(failed).toBe(sourceError)
    }))

  it.effect("extracts nothing from an empty upload", () =>
    Effect.gen(function*() {
      const target = tempDir()
      yield* materializeRepo({ repoType: "local" }, new Uint8Array(0), target)
      expect(fs.readdirSync(target)).toEqual([])
    }))
})
