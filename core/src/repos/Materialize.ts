/**
 * Runner side of code delivery: rebuilds a job's working tree in a directory from the run repo
 * data and the code blob. Local and virtual repos extract their tarball; remote repos clone the
 * URL, check out the branch and commit, and apply the diff of uncommitted changes. Any other
 * repo type is a plugin's: `runnerRepos` (RepoPorts.ts) puts its Repo beside the built-in ones.
 */
import { collectBytes } from "../internal/bytes.ts"
import * as fs from "node:fs/promises"
import { Effect, Stream } from "effect"
import type { LocalRunRepoData, RemoteRunRepoData, RunRepoData, VirtualRunRepoData } from "../domain/Job.ts"
import { RepoError } from "../ports/Repo.ts"
import { git } from "./Git.ts"
import type { GitFailure } from "./Git.ts"
import { extractTarball } from "./Tarball.ts"

type RemoteData = typeof RemoteRunRepoData.Type
type BuiltinData = typeof LocalRunRepoData.Type | RemoteData | typeof VirtualRunRepoData.Type

const isRemote = (data: RunRepoData): data is RemoteData => data.repoType === "remote"

const collect = collectBytes

const cloneFailureReason = (message: string): RepoError["reason"] =>
  /not found|does not exist|does not appear to be a git repository|repository .* not found/i.test(message)
    ? "NotFound"
    : /authentication|permission denied|could not read username/i.test(message)
      ? "PermissionDenied"
      : "Transport"

/**
 * Clones `repoUrl` into `dir` (which exists and is empty), checks out the branch and/or commit,
 * sets the commit identity when given, and applies `diff` (a binary git diff) when not empty.
 */
export const materializeRemote = (data: RemoteData, diff: Uint8Array, dir: string): Effect.Effect<void, RepoError> =>
  Effect.gen(function*() {
    const url = data.repoUrl
    const at = (what: string, reason?: RepoError["reason"]): GitFailure => ({ module: "RemoteRepo", method: "materialize", what, ...(reason ? { reason } : {}) })
    if (data.repoBranch === undefined && data.repoHash === undefined) {
      return yield* Effect.fail(
        new RepoError({ module: "RemoteRepo", method: "materialize", reason: "Invalid", message: `the repo data of ${url} names neither a branch nor a commit` })
      )
    }
    // `ext::` URLs run commands and a URL starting with `-` would be read as an option.
    yield* git(["-c", "protocol.ext.allow=never", "clone", "--quiet", "--no-checkout", "--", url, "."], { cwd: dir }, at(`cannot clone ${url}`)).pipe(
      Effect.mapError((e) =>
        e.reason === "Unknown"
          ? new RepoError({ module: e.module, method: e.method, reason: cloneFailureReason(e.message), message: e.message })
          : e
      )
    )
    const ref = data.repoHash ?? data.repoBranch!
    const checkout = data.repoHash !== undefined
      ? data.repoBranch !== undefined
        ? ["checkout", "--quiet", "-B", data.repoBranch, data.repoHash]
        : ["checkout", "--quiet", "--detach", data.repoHash]
      : ["checkout", "--quiet", data.repoBranch!]
    const what = data.repoHash !== undefined
      ? `cannot check out commit ${data.repoHash} of ${url} (has it been pushed?)`
      : `cannot check out branch ${data.repoBranch} of ${url}`
    yield* git(checkout, { cwd: dir }, at(what, "NotFound"))
    if (data.repoConfigName !== undefined) yield* git(["config", "user.name", data.repoConfigName], { cwd: dir }, at(`cannot configure ${dir}`))
    if (data.repoConfigEmail !== undefined) yield* git(["config", "user.email", data.repoConfigEmail], { cwd: dir }, at(`cannot configure ${dir}`))
    if (diff.length > 0) {
      yield* git(
        ["apply", "--whitespace=nowarn", "--binary", "-"],
        { cwd: dir, input: diff },
        at(`cannot apply the uncommitted changes (${diff.length} bytes) on top of ${ref} of ${url}`, "Invalid")
      )
    }
  })

/**
 * Writes a job's code into `dir` (created when missing; it should be empty).
 *
 * @example
 * yield* materializeRepo(jobSpec.repoData, blobStore.stream(codeKey), "/workflow")
 */
export const materializeRepo = <E = never>(
  repoData: RunRepoData,
  code: Uint8Array | Stream.Stream<Uint8Array, E>,
  dir: string
): Effect.Effect<void, RepoError | E> =>
  Effect.gen(function*() {
    yield* Effect.tryPromise({
      try: () => fs.mkdir(dir, { recursive: true }),
      catch: (cause) =>
        new RepoError({ module: "Repo", method: "materialize", reason: "PermissionDenied", message: `cannot create ${dir}: ${String(cause)}`, cause })
    })
    if (isRemote(repoData)) return yield* materializeRemote(repoData, yield* collect(code), dir)
    if (repoData.repoType === "local") return yield* extractTarball("LocalRepo", code, dir)
    if (repoData.repoType === "virtual") return yield* extractTarball("VirtualRepo", code, dir)
    return yield* Effect.fail(
      new RepoError({
        module: "Repo",
        method: "materialize",
        reason: "Invalid",
        message: `repo type ${JSON.stringify(repoData.repoType)} is not built in: materialize it with the Repo its plugin contributes (runnerRepos)`
      })
    )
  })

/** True for the repo data of a type core packs and materializes itself. */
export const isBuiltinRepoData = (data: RunRepoData): data is BuiltinData =>
  data.repoType === "local" || data.repoType === "remote" || data.repoType === "virtual"
