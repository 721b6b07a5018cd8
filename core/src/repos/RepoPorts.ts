/**
 * The built-in repo types as implementations of the Repo port (`local`, `remote`, `virtual`),
 * for the plugin host: `pack` from a plain source object, `materialize` on the runner.
 */
import { Chunk, Effect, Stream } from "effect"
import type { PackedCode, Repo, RepoSource } from "../ports/Repo.ts"
import { RepoError } from "../ports/Repo.ts"
import { LocalRepo } from "./LocalRepo.ts"
import { materializeRepo } from "./Materialize.ts"
import { RemoteRepo } from "./RemoteRepo.ts"
import type { RepoCode } from "./RepoCode.ts"
import { VirtualRepo } from "./VirtualRepo.ts"

const invalid = (module: string, message: string) => new RepoError({ module, method: "pack", reason: "Invalid", message })

const str = (source: RepoSource, field: string): string | undefined =>
  typeof source[field] === "string" ? (source[field] as string) : undefined

/** The port's `PackedCode` holds the archive in memory; `RepoCode.code` streams it. */
const toPacked = (repo: RepoCode): Effect.Effect<PackedCode, RepoError> =>
  Effect.map(Stream.runCollect(repo.code), (chunks) => {
    const parts = Chunk.toReadonlyArray(chunks)
    const archive = new Uint8Array(repo.codeSize)
    let at = 0
    for (const p of parts) {
      archive.set(p, at)
      at += p.length
    }
    return { repoData: repo.repoData, codeHash: repo.codeHash, archive }
  })

/** `{ type: "local", dir, repoId? }`. */
export const localRepo: Repo = {
  type: "local",
  pack: (source) => {
    const dir = str(source, "dir")
    if (dir === undefined) return Effect.fail(invalid("LocalRepo", "a local repo source needs { type: \"local\", dir }"))
    const repoId = str(source, "repoId")
    return Effect.flatMap(LocalRepo.fromDir(dir, repoId === undefined ? {} : { repoId }), toPacked)
  },
  materialize: (code, dir) => materializeRepo(code.repoData, code.archive, dir, code.credentials)
}

/** `{ type: "remote", dir }` (a checkout) or `{ type: "remote", repoUrl, repoBranch?, repoHash? }`. */
export const remoteRepo: Repo = {
  type: "remote",
  pack: (source) => {
    const dir = str(source, "dir")
    const repoId = str(source, "repoId")
    if (dir !== undefined) return Effect.flatMap(RemoteRepo.fromDir(dir, repoId === undefined ? {} : { repoId }), toPacked)
    const repoUrl = str(source, "repoUrl")
    if (repoUrl === undefined) {
      return Effect.fail(invalid("RemoteRepo", "a remote repo source needs { type: \"remote\", dir } or { type: \"remote\", repoUrl, repoBranch | repoHash }"))
    }
    return Effect.flatMap(
      RemoteRepo.fromUrl({ repoUrl, repoBranch: str(source, "repoBranch"), repoHash: str(source, "repoHash"), repoId }),
      toPacked
    )
  },
  materialize: (code, dir) => materializeRepo(code.repoData, code.archive, dir, code.credentials)
}

/** `{ type: "virtual", repoId?, files: { path: string | Uint8Array } }`. */
export const virtualRepo: Repo = {
  type: "virtual",
  pack: (source) =>
    Effect.gen(function*() {
      const files = source.files
      if (typeof files !== "object" || files === null) {
        return yield* Effect.fail(invalid("VirtualRepo", "a virtual repo source needs { type: \"virtual\", files: { path: content } }"))
      }
      const repo = yield* Effect.try({
        try: () => new VirtualRepo({ repoId: str(source, "repoId") ?? "virtual" }),
        catch: (e) => (e instanceof RepoError ? e : invalid("VirtualRepo", String(e)))
      })
      for (const [path, content] of Object.entries(files as Record<string, unknown>)) {
        yield* repo.addFile(path, content as string | Uint8Array)
      }
      return yield* toPacked(repo)
    }),
  materialize: (code, dir) => materializeRepo(code.repoData, code.archive, dir, code.credentials)
}

/** The three built-in repo types. */
export const builtinRepos: ReadonlyArray<Repo> = [localRepo, remoteRepo, virtualRepo]

/**
 * The repo types a runner materializes: the built-in `local`, `remote` and `virtual`, and
 * those its plugins contribute (by type). A plugin cannot replace a built-in type.
 *
 * @example
 * const repos = runnerRepos({ "archive-url": archiveUrlRepo })
 * yield* repos.get(repoData.repoType)!.materialize({ repoData, archive }, dir)
 */
export const runnerRepos = (extra: Readonly<Record<string, Repo>>): ReadonlyMap<string, Repo> => {
  const map = new Map<string, Repo>(builtinRepos.map((r) => [r.type, r]))
  for (const [type, repo] of Object.entries(extra)) {
    if (map.has(type)) throw new Error(`repo type ${type} is built into the runner: a plugin cannot contribute it`)
    map.set(type, repo)
  }
  return map
}
