// The runner agent's upload_code materializes by the submitted job's repo data: a remote repo
// is cloned at its commit with the diff applied, a local one is extracted, a plugin's repo type
// is materialized by the Repo its plugin contributes, and an unknown one is refused by name.
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Schema, Stream, Chunk } from "effect"
import { afterAll } from "vitest"
import { LocalRepo, RemoteRepo } from "../../src/repos/index.ts"
import type { RepoCode } from "../../src/repos/index.ts"
import * as RunnerAgent from "../../src/runner/RunnerAgent.ts"
import { SubmitBody } from "../../src/runner/RunnerProtocol.ts"
import { RunRepoData } from "../../src/domain/Job.ts"
import type { Repo } from "../../src/ports/Repo.ts"
import { definePlugin } from "../../src/plugin/Plugin.ts"
import { runnerContributions } from "../../src/runner/RunnerPlugins.ts"
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

const deliver = (repo: RepoCode, repos: Readonly<Record<string, Repo>> = {}) =>
  Effect.scoped(Effect.gen(function*() {
    const workDir = tempDir()
    const agent = yield* RunnerAgent.make({ workDir, repos })
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

/** A repo type of a plugin: the archive is the text of one file, `note.txt`, upper-cased on the runner. */
const shoutRepo: Repo = {
  type: "shout",
  pack: (source) =>
    Effect.succeed({ repoData: { repoType: "shout", file: String(source.file) }, codeHash: "0".repeat(64), archive: new TextEncoder().encode(String(source.text)) }),
  materialize: (code, dir) =>
    Effect.sync(() => {
      const bytes = code.archive as Uint8Array
      fs.writeFileSync(path.join(dir, String((code.repoData as { file?: unknown }).file)), new TextDecoder().decode(bytes).toUpperCase())
    })
}

const shoutCode = (text: string): RepoCode => {
  const archive = new TextEncoder().encode(text)
  return { repoId: "shout", repoData: Schema.decodeUnknownSync(RunRepoData)({ repo_type: "shout", file: "note.txt" }), codeKind: "tarball", codeHash: "0".repeat(64), codeSize: archive.length, code: Stream.make(archive) }
}

describe("runner upload_code with a plugin's repo type", () => {
  it.effect("materializes it with the Repo of that type, its own repo data fields included", () =>
    Effect.gen(function*() {
      const repoDir = yield* deliver(shoutCode("hello"), { shout: shoutRepo })
      expect(readTree(repoDir)).toEqual({ "note.txt": "HELLO" })
    }))

  it.effect("refuses a repo type the runner has no plugin for, naming the type and what it knows", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(deliver(shoutCode("hello")))
      expect(error._tag === "RunnerError" && error.reason).toBe("Invalid")
      expect(error.message).toContain(`repo type "shout", which this runner cannot materialize (it knows: local, remote, virtual)`)
      expect(error.message).toContain("add the plugin that contributes the shout repo")
    }))

  it.effect("a runner build's plugins contribute repo types, but not a built-in one", () =>
    Effect.gen(function*() {
      const good = definePlugin({ name: "@acme/repo-shout", version: "1.0.0", core: "^0.1.0", repos: { shout: shoutRepo } })
      const { repos } = yield* runnerContributions([good])
      expect(Object.keys(repos)).toEqual(["shout"])
      const bad = definePlugin({ name: "@acme/repo-local", version: "2.0.0", core: "^0.1.0", repos: { local: { ...shoutRepo, type: "local" } } })
      const error = yield* Effect.flip(runnerContributions([bad]))
      expect(error.message).toContain(`@acme/repo-local@2.0.0 contributes the repo type "local", which is built into the runner`)
    }))
})
