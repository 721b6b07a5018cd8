// VirtualRepo: files added in code and from an installed package, deterministic hashes, and the
// refusals (paths escaping the repo or the package, missing packages and files).
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { afterAll } from "vitest"
import { RepoError } from "../../src/ports/Repo.ts"
import { VirtualRepo, materializeRepo, virtualRepo } from "../../src/repos/index.ts"
import { cleanup, readTree, tempDir } from "./support.ts"

afterAll(cleanup)

const yamlDir = path.resolve("node_modules/yaml")

describe("VirtualRepo", () => {
  it.effect("adds files in code and from an installed package, and materializes them", () =>
    Effect.gen(function*() {
      const repo = new VirtualRepo({ repoId: "some-unique-repo-id" })
      yield* repo.addFile("train.py", "print('hello')\n")
      yield* repo.addFile("conf/params.json", new TextEncoder().encode("{\"lr\": 0.1}"))
      yield* repo.addFileFromPackage("yaml", "package.json")
      yield* repo.addFileFromPackage("yaml", "dist/index.js")
      expect(repo.repoId).toBe("some-unique-repo-id")
      expect(repo.repoData).toEqual({ repoType: "virtual" })
      expect(repo.paths).toEqual(["conf/params.json", "dist/index.js", "package.json", "train.py"])
      const target = tempDir()
      yield* materializeRepo(repo.repoData, repo.code, target)
      expect(readTree(target)).toEqual({
        "train.py": "print('hello')\n",
        "conf/params.json": "{\"lr\": 0.1}",
        "package.json": fs.readFileSync(path.join(yamlDir, "package.json"), "utf8"),
        "dist/index.js": fs.readFileSync(path.join(yamlDir, "dist/index.js"), "utf8")
      })
    }))

  it.effect("hashes content, not the order files were added in", () =>
    Effect.gen(function*() {
      const a = new VirtualRepo({ repoId: "a" })
      yield* a.addFile("x.txt", "x")
      yield* a.addFile("y/z.txt", "z")
      const b = new VirtualRepo({ repoId: "b" })
      yield* b.addFile("y/z.txt", "z")
      yield* b.addFile("x.txt", "x")
      expect(b.codeHash).toBe(a.codeHash)
      yield* b.addFile("x.txt", "changed")
      expect(b.codeHash).not.toBe(a.codeHash)
    }))

  it.effect("keeps long and non-ASCII paths intact", () =>
    Effect.gen(function*() {
      const repo = new VirtualRepo({ repoId: "long" })
      const long = `${"deep/".repeat(30)}file-with-a-long-name.txt`
      yield* repo.addFile(long, "deep")
      yield* repo.addFile("données/été.txt", "accents")
      const target = tempDir()
      yield* materializeRepo(repo.repoData, repo.code, target)
      expect(readTree(target)).toEqual({ [long]: "deep", "données/été.txt": "accents" })
    }))

  it.effect("refuses paths that leave the repo or the package, and names what is missing", () =>
    Effect.gen(function*() {
      const repo = new VirtualRepo({ repoId: "bad" })
      for (const bad of ["../evil.py", "/etc/passwd", "a//b", "", "a/./b"]) {
        const error = yield* Effect.flip(repo.addFile(bad, "x"))
        expect(error.reason).toBe("Invalid")
        expect(error.message).toContain(JSON.stringify(bad))
      }
      const escape = yield* Effect.flip(repo.addFileFromPackage("yaml", "../vitest/package.json"))
      expect(escape.reason).toBe("Invalid")
      expect(escape.message).toContain("'..'")
      const missingFile = yield* Effect.flip(repo.addFileFromPackage("yaml", "no-such-file.txt"))
      expect(missingFile.reason).toBe("NotFound")
      expect(missingFile.message).toContain("package yaml has no file no-such-file.txt")
      const missingPackage = yield* Effect.flip(repo.addFileFromPackage("surely-not-installed-pkg", "index.js"))
      expect(missingPackage.reason).toBe("NotFound")
      expect(missingPackage.message).toContain("surely-not-installed-pkg is not installed")
      expect(repo.paths).toEqual([])
    }))

  it.effect("refuses a symbolic link inside a package that points outside it", () =>
    Effect.gen(function*() {
      const from = tempDir()
      const pkg = path.join(from, "node_modules", "linky")
      fs.mkdirSync(pkg, { recursive: true })
      fs.writeFileSync(path.join(pkg, "package.json"), JSON.stringify({ name: "linky", version: "1.0.0", main: "index.js" }))
      fs.writeFileSync(path.join(pkg, "index.js"), "")
      fs.writeFileSync(path.join(from, "outside.txt"), "secret")
      fs.symlinkSync(path.join(from, "outside.txt"), path.join(pkg, "leak.txt"))
      const repo = new VirtualRepo({ repoId: "linky" })
      yield* repo.addFileFromPackage("linky", "index.js", { resolveFrom: from })
      const error = yield* Effect.flip(repo.addFileFromPackage("linky", "leak.txt", { resolveFrom: from }))
      expect(error.message).toContain("outside package linky")
    }))

  it("throws a RepoError for a bad repo id", () => {
    expect(() => new VirtualRepo({ repoId: "no spaces allowed" })).toThrow(RepoError)
    expect(() => new VirtualRepo({ repoId: "no spaces allowed" })).toThrow(/repo_id/)
  })

  it.effect("packs through the Repo port too", () =>
    Effect.gen(function*() {
      const packed = yield* virtualRepo.pack({ type: "virtual", repoId: "port", files: { "a.txt": "a" } })
      const direct = new VirtualRepo({ repoId: "port" })
      yield* direct.addFile("a.txt", "a")
      expect(packed.codeHash).toBe(direct.codeHash)
      const target = tempDir()
      yield* virtualRepo.materialize({ repoData: packed.repoData, archive: packed.archive }, target)
      expect(readTree(target)).toEqual({ "a.txt": "a" })
      const bad = yield* Effect.flip(virtualRepo.pack({ type: "virtual" }))
      expect(bad.message).toContain("files")
    }))
})
