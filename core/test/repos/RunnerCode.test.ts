// The runner agent's upload_code materializes by the submitted job's repo data: a remote repo
// is cloned at its commit with the diff applied, a local one is extracted.
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema, Stream, Chunk } from "effect"
import { afterAll } from "vitest"
import { LocalRepo, RemoteRepo } from "../../src/repos/index.ts"
import type { RepoCode } from "../../src/repos/index.ts"
import * as RunnerAgent from "../../src/runner/RunnerAgent.ts"
import { SubmitBody } from "../../src/runner/RunnerProtocol.ts"
import { RunRepoData } from "../../src/domain/Job.ts"
import { cleanup, gitFixture, gitSync, readTree, tempDir, writeTree } from "./support.ts"

afterAll(cleanup)

const bytesOf = (repo: RepoCode) =>
  Effect.map(Stream.runCollect(repo.code), (c) => {
    const parts = Chunk.toReadonlyArray(c)
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0))
    let at = 0
    for (const p of parts) {
      out.set(p, at)
      at += p.length
    }
    return out
  })

const deliver = (repo: RepoCode) =>
  Effect.scoped(Effect.gen(function*() {
    const workDir = tempDir()
    const agent = yield* RunnerAgent.make({ workDir })
    const body = yield* Schema.decodeUnknown(SubmitBody)({
      job_spec: {
        job_name: "code-0-0",
        commands: ["true"],
        requirements: { resources: {} },
        repo_code_hash: repo.codeHash,
        repo_data: Schema.encodeSync(RunRepoData)(repo.repoData)
      }
    })
    yield* agent.submit(body)
    yield* agent.uploadCode(yield* bytesOf(repo))
    return path.join(workDir, "repo")
  }))

describe("runner upload_code with repo data", () => {
  it.effect("clones a remote repo at its commit and applies the diff, even an empty one", () =>
    Effect.gen(function*() {
      const fx = gitFixture({ "a.txt": "committed\n" })
      writeTree(fx.work, { "a.txt": "changed\n", "b.txt": "untracked\n" })
      const dirty = yield* RemoteRepo.fromDir(fx.work)
      const repoDir = yield* deliver(dirty)
      expect(readTree(repoDir)).toEqual({ "a.txt": "changed\n", "b.txt": "untracked\n" })
      expect(gitSync(repoDir, "rev-parse", "HEAD")).toBe(fx.head)

      const clean = yield* RemoteRepo.fromUrl({ repoUrl: fx.bare, repoBranch: "main" })
      expect(clean.codeSize).toBe(0)
      expect(readTree(yield* deliver(clean))).toEqual({ "a.txt": "committed\n" })
    }))

  it.effect("extracts a local repo's tarball and reports a failing clone as the runner's error", () =>
    Effect.gen(function*() {
      const dir = tempDir()
      writeTree(dir, { "main.py": "print(1)\n" })
      const local = yield* LocalRepo.fromDir(dir)
      expect(readTree(yield* deliver(local))).toEqual({ "main.py": "print(1)\n" })

      const missing = yield* RemoteRepo.fromUrl({ repoUrl: path.join(dir, "nowhere.git"), repoBranch: "main" })
      const error = yield* Effect.flip(deliver(missing))
      expect(error._tag).toBe("RunnerError")
      expect(error.message).toContain("cannot clone")
    }))
})
