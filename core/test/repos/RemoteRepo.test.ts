// RemoteRepo against a real local bare repository: origin, branch, commit and a diff that
// carries uncommitted and untracked changes, then clone + checkout + apply on the runner side.
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { afterAll } from "vitest"
import { RemoteRepo, materializeRepo, normalizeRepoUrl, remoteRepo } from "../../src/repos/index.ts"
import { cleanup, gitFixture, gitSync, readTree, tempDir, writeTree } from "./support.ts"

afterAll(cleanup)

const committed = {
  ".gitignore": "*.log\n",
  "README.md": "# demo\n",
  "src/train.py": "print('v1')\n",
  "src/obsolete.py": "old\n"
}

describe("RemoteRepo", () => {
  it.effect("reads origin, branch and HEAD, and diffs staged, unstaged and untracked changes", () =>
    Effect.gen(function*() {
      const fx = gitFixture(committed)
      writeTree(fx.work, { "src/train.py": "print('v2')\n", "notes/new.md": "untracked\n", "debug.log": "ignored\n", "staged.txt": "staged\n" })
      fs.rmSync(path.join(fx.work, "src/obsolete.py"))
      gitSync(fx.work, "add", "staged.txt")
      const statusBefore = gitSync(fx.work, "status", "--porcelain")

      const repo = yield* RemoteRepo.fromDir(path.join(fx.work, "src"))
      expect(repo.repoData).toMatchObject({ repoType: "remote", repoUrl: fx.bare, repoBranch: "main", repoHash: fx.head })
      const diff = new TextDecoder().decode(repo.diff)
      expect(diff).toContain("b/notes/new.md")
      expect(diff).toContain("+print('v2')")
      expect(diff).toContain("b/staged.txt")
      expect(diff).toContain("deleted file mode")
      expect(diff).not.toContain("debug.log")
      expect(repo.codeKind).toBe("diff")
      expect(repo.codeHash).toMatch(/^[0-9a-f]{64}$/)
      expect(repo.codeSize).toBe(repo.diff.length)
      // The user's index is untouched.
      expect(gitSync(fx.work, "status", "--porcelain")).toBe(statusBefore)

      // The runner clones the bare repo, checks out the commit and applies the diff.
      const target = path.join(tempDir(), "repo")
      yield* materializeRepo(repo.repoData, repo.code, target)
      const expected = readTree(fx.work)
      delete expected["debug.log"]
      expect(readTree(target)).toEqual(expected)
      expect(gitSync(target, "rev-parse", "HEAD")).toBe(fx.head)
      expect(gitSync(target, "rev-parse", "--abbrev-ref", "HEAD")).toBe("main")
    }))

  it.effect("gives the same hash for the same changes and an empty diff for a clean checkout", () =>
    Effect.gen(function*() {
      const fx = gitFixture(committed)
      const clean = yield* RemoteRepo.fromDir(fx.work)
      expect(clean.codeSize).toBe(0)
      writeTree(fx.work, { "extra.txt": "x\n" })
      const a = yield* RemoteRepo.fromDir(fx.work)
      const b = yield* RemoteRepo.fromDir(fx.work)
      expect(b.codeHash).toBe(a.codeHash)
      expect(a.codeHash).not.toBe(clean.codeHash)
    }))

  it.effect("carries binary files in the diff", () =>
    Effect.gen(function*() {
      const fx = gitFixture(committed)
      const blob = new Uint8Array(2048).map((_, i) => (i * 37) % 256)
      writeTree(fx.work, { "weights.bin": blob })
      const repo = yield* RemoteRepo.fromDir(fx.work)
      const target = tempDir()
      yield* materializeRepo(repo.repoData, repo.code, target)
      expect(new Uint8Array(fs.readFileSync(path.join(target, "weights.bin")))).toEqual(blob)
    }))

  it.effect("fromUrl needs a branch or a commit, and checks out either", () =>
    Effect.gen(function*() {
      const fx = gitFixture(committed)
      const missing = yield* Effect.flip(RemoteRepo.fromUrl({ repoUrl: fx.bare }))
      expect(missing.reason).toBe("Invalid")
      expect(missing.message).toContain("repo_branch or repo_hash")
      const noUrl = yield* Effect.flip(RemoteRepo.fromUrl({ repoUrl: " ", repoBranch: "main" }))
      expect(noUrl.message).toContain("repo_url")
      const badHash = yield* Effect.flip(RemoteRepo.fromUrl({ repoUrl: fx.bare, repoHash: "not-a-sha" }))
      expect(badHash.message).toContain("repo_hash")

      // A second commit on main: the branch gives it, the first hash gives the original tree.
      writeTree(fx.work, { "src/train.py": "print('v3')\n" })
      gitSync(fx.work, "commit", "--quiet", "-am", "v3")
      gitSync(fx.work, "push", "--quiet", "origin", "main")
      const byBranch = yield* RemoteRepo.fromUrl({ repoUrl: fx.bare, repoBranch: "main" })
      expect(byBranch.codeSize).toBe(0)
      const t1 = tempDir()
      yield* materializeRepo(byBranch.repoData, byBranch.code, t1)
      expect(readTree(t1)["src/train.py"]).toBe("print('v3')\n")
      const byHash = yield* RemoteRepo.fromUrl({ repoUrl: fx.bare, repoHash: fx.head })
      const t2 = tempDir()
      yield* materializeRepo(byHash.repoData, byHash.code, t2)
      expect(readTree(t2)["src/train.py"]).toBe("print('v1')\n")
    }))

  it.effect("fails clearly: a directory that is no checkout, an unknown URL, an unpushed commit, a diff that does not apply", () =>
    Effect.gen(function*() {
      const notGit = tempDir()
      const e1 = yield* Effect.flip(RemoteRepo.fromDir(notGit))
      expect(e1.reason).toBe("NotFound")
      expect(e1.message).toContain(`${notGit} is not a git checkout`)

      const fx = gitFixture(committed)
      const nowhere = path.join(fx.root, "missing.git")
      const e2 = yield* Effect.flip(materializeRepo({ repoType: "remote", repoUrl: nowhere, repoBranch: "main" }, new Uint8Array(0), tempDir()))
      expect(e2.reason).toBe("NotFound")
      expect(e2.message).toContain(`cannot clone ${nowhere}`)

      const unpushed = "0123456789abcdef0123456789abcdef01234567"
      const e3 = yield* Effect.flip(materializeRepo({ repoType: "remote", repoUrl: fx.bare, repoHash: unpushed }, new Uint8Array(0), tempDir()))
      expect(e3.reason).toBe("NotFound")
      expect(e3.message).toContain(`commit ${unpushed} of ${fx.bare}`)

      const bogus = new TextEncoder().encode("diff --git a/README.md b/README.md\n--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-not there\n+x\n")
      const e4 = yield* Effect.flip(materializeRepo({ repoType: "remote", repoUrl: fx.bare, repoHash: fx.head }, bogus, tempDir()))
      expect(e4.reason).toBe("Invalid")
      expect(e4.message).toContain(`cannot apply the uncommitted changes`)
      expect(e4.message).toContain(fx.head)

      const noOrigin = tempDir()
      gitSync(noOrigin, "init", "--quiet")
      const e5 = yield* Effect.flip(RemoteRepo.fromDir(noOrigin))
      expect(e5.message).toContain("no remote \"origin\"")
    }))

  it.effect("packs through the Repo port", () =>
    Effect.gen(function*() {
      const fx = gitFixture(committed)
      writeTree(fx.work, { "new.txt": "n\n" })
      const packed = yield* remoteRepo.pack({ type: "remote", dir: fx.work })
      expect(new TextDecoder().decode(packed.archive)).toContain("b/new.txt")
      const target = tempDir()
      yield* remoteRepo.materialize({ repoData: packed.repoData, archive: packed.archive }, target)
      expect(readTree(target)["new.txt"]).toBe("n\n")
    }))

  it("normalises equivalent URLs to one repo identity", () => {
    expect(normalizeRepoUrl("https://GitHub.com/dstackai/dstack.git")).toBe("github.com/dstackai/dstack")
    expect(normalizeRepoUrl("git@github.com:dstackai/dstack.git")).toBe("github.com/dstackai/dstack")
    expect(normalizeRepoUrl("ssh://git@github.com/dstackai/dstack/")).toBe("github.com/dstackai/dstack")
    expect(normalizeRepoUrl("https://user:token@github.com/dstackai/dstack")).toBe("github.com/dstackai/dstack")
  })
})
