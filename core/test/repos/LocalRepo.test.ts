// LocalRepo: which files are packed (.gitignore, nested rules, .dstackignore, .git), hashes that
// depend on content only, and a round trip through the runner-side extraction.
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Chunk, Effect, Stream } from "effect"
import { afterAll } from "vitest"
import { LocalRepo, listRepoFiles, materializeRepo } from "../../src/repos/index.ts"
import { cleanup, readTree, tempDir, writeTree } from "./support.ts"

afterAll(cleanup)

const project = (): string => {
  const dir = tempDir()
  writeTree(dir, {
    ".gitignore": "*.log\nbuild/\n!keep.log\n",
    ".dstackignore": "data/\n",
    "README.md": "# project\n",
    "train.py": "print('train')\n",
    "run.log": "noise\n",
    "keep.log": "kept\n",
    "build/out.bin": "artifact",
    "data/big.csv": "1,2,3\n",
    "src/.gitignore": "*.tmp\n!important.tmp\n",
    "src/model.py": "class Model: ...\n",
    "src/scratch.tmp": "scratch",
    "src/important.tmp": "important",
    "src/nested/.dstackignore": "secret.txt\n",
    "src/nested/secret.txt": "s3cr3t",
    "src/nested/ok.txt": "ok",
    ".git/HEAD": "ref: refs/heads/main\n",
    ".git/config": "[core]\n"
  })
  return dir
}

describe("LocalRepo", () => {
  it.effect("packs what .gitignore (nested ones too) and .dstackignore leave, never .git", () =>
    Effect.gen(function*() {
      const files = yield* listRepoFiles(project())
      expect(files).toEqual([
        ".dstackignore",
        ".gitignore",
        "README.md",
        "keep.log",
        "src/.gitignore",
        "src/important.tmp",
        "src/model.py",
        "src/nested/.dstackignore",
        "src/nested/ok.txt",
        "train.py"
      ])
    }))

  it.effect("gives the same hash for the same content wherever and whenever it lies", () =>
    Effect.gen(function*() {
      const a = project()
      const b = project()
      // Different mtimes, different directories: only content counts.
      fs.utimesSync(path.join(b, "train.py"), new Date(2001, 1, 1), new Date(2001, 1, 1))
      const ra = yield* LocalRepo.fromDir(a)
      const rb = yield* LocalRepo.fromDir(b)
      expect(ra.codeHash).toMatch(/^[0-9a-f]{64}$/)
      expect(rb.codeHash).toBe(ra.codeHash)
      expect(rb.codeSize).toBe(ra.codeSize)
      expect(rb.repoId).not.toBe(ra.repoId)
      expect(ra.repoData).toEqual({ repoType: "local", repoDir: a })
      // Packing twice gives the same bytes as the hash announced.
      const again = yield* LocalRepo.fromDir(a)
      expect(again.codeHash).toBe(ra.codeHash)
    }))

  it.effect("ignores changes to ignored files and notices changes to packed ones", () =>
    Effect.gen(function*() {
      const dir = project()
      const before = (yield* LocalRepo.fromDir(dir)).codeHash
      writeTree(dir, { "run.log": "other noise\n", "data/big.csv": "4,5,6\n", "src/scratch.tmp": "x", "build/new.bin": "y", ".git/HEAD": "changed" })
      expect((yield* LocalRepo.fromDir(dir)).codeHash).toBe(before)
      writeTree(dir, { "train.py": "print('train v2')\n" })
      const changed = (yield* LocalRepo.fromDir(dir)).codeHash
      expect(changed).not.toBe(before)
      writeTree(dir, { "train.py": "print('train')\n" })
      fs.chmodSync(path.join(dir, "train.py"), 0o755)
      expect((yield* LocalRepo.fromDir(dir)).codeHash).not.toBe(before)
    }))

  it.effect("round-trips through materialize: contents, executable bits and symbolic links", () =>
    Effect.gen(function*() {
      const dir = project()
      fs.chmodSync(path.join(dir, "train.py"), 0o755)
      fs.symlinkSync("model.py", path.join(dir, "src", "link.py"))
      const repo = yield* LocalRepo.fromDir(dir)
      expect(repo.files).toContain("src/link.py")
      const target = tempDir()
      yield* materializeRepo(repo.repoData, repo.code, target)
      const expected = readTree(dir)
      for (const ignored of ["run.log", "build/out.bin", "data/big.csv", "src/scratch.tmp", "src/nested/secret.txt", ".git/HEAD"]) {
        delete expected[ignored]
      }
      const got = readTree(target)
      expect(got).toEqual(expected)
      expect(fs.statSync(path.join(target, "train.py")).mode & 0o111).not.toBe(0)
      expect(fs.readlinkSync(path.join(target, "src", "link.py"))).toBe("model.py")
      expect(fs.existsSync(path.join(target, ".git"))).toBe(false)
    }))

  it.effect("streams a large tree in chunks rather than one buffer", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const random = new Uint8Array(4 * 1024 * 1024)
      for (let i = 0; i < random.length; i += 65536) globalThis.crypto.getRandomValues(random.subarray(i, i + 65536))
      writeTree(dir, { "weights.bin": random })
      const repo = yield* LocalRepo.fromDir(dir)
      const chunks = yield* Stream.runCollect(repo.code)
      expect(Chunk.size(chunks)).toBeGreaterThan(1)
      expect(Chunk.reduce(chunks, 0, (n, c) => n + c.length)).toBe(repo.codeSize)
    }))

  it.effect("fails with NotFound naming a missing directory and Invalid for a file", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      const missing = yield* Effect.flip(LocalRepo.fromDir(path.join(dir, "nope")))
      expect(missing.reason).toBe("NotFound")
      expect(missing.message).toContain(path.join(dir, "nope"))
      writeTree(dir, { "file.txt": "x" })
      const notDir = yield* Effect.flip(LocalRepo.fromDir(path.join(dir, "file.txt")))
      expect(notDir.reason).toBe("Invalid")
      expect(notDir.message).toContain("is not a directory")
      const badId = yield* Effect.flip(LocalRepo.fromDir(dir, { repoId: "../escape" }))
      expect(badId.message).toContain("repo_id")
    }))
})
