/**
 * Runner side of code delivery: rebuilds a job's working tree in a directory from the run repo
 * data and the code blob. Local and virtual repos extract their tarball; remote repos clone the
 * URL, check out the branch and commit, and apply the diff of uncommitted changes. Any other
 * repo type is a plugin's: `runnerRepos` (RepoPorts.ts) puts its Repo beside the built-in ones.
 */
import { collectBytes } from "../internal/bytes.ts"
import { Buffer } from "node:buffer"
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Stream } from "effect"
import type { LocalRunRepoData, RemoteRunRepoData, RunRepoData, VirtualRunRepoData } from "../domain/Job.ts"
import { RepoError } from "../ports/Repo.ts"
import type { RepoCredentials } from "../ports/Repo.ts"
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
 * Clones `repoUrl` (or the credentials' `cloneUrl`) into `dir` (which exists and is empty) with
 * the credentials when given, checks out the branch and/or commit,
 * sets the commit identity when given, and applies `diff` (a binary git diff) when not empty.
 */
export const materializeRemote = (
  data: RemoteData,
  diff: Uint8Array,
  dir: string,
  credentials?: RepoCredentials
): Effect.Effect<void, RepoError> =>
  Effect.scoped(Effect.gen(function*() {
    const url = credentials?.cloneUrl || data.repoUrl
    const auth = yield* gitAuth(credentials, url)
    const at = (what: string, reason?: RepoError["reason"]): GitFailure => ({ module: "RemoteRepo", method: "materialize", what, ...(reason ? { reason } : {}) })
    if (data.repoBranch === undefined && data.repoHash === undefined) {
      return yield* Effect.fail(
        new RepoError({ module: "RemoteRepo", method: "materialize", reason: "Invalid", message: `the repo data of ${url} names neither a branch nor a commit` })
      )
    }
    // `ext::` URLs run commands and a URL starting with `-` would be read as an option.
    // The credentials reach git only through its environment (not its arguments, which `ps`
    // shows, nor .git/config, which the job can read), and never an error message.
    yield* git(["-c", "protocol.ext.allow=never", "clone", "--quiet", "--no-checkout", "--", url, "."], { cwd: dir, env: auth }, at(`cannot clone ${redacted(url, credentials)}`)).pipe(
      Effect.mapError((e) =>
        new RepoError({
          module: e.module,
          method: e.method,
          reason: e.reason === "Unknown" ? cloneFailureReason(e.message) : e.reason,
          message: redacted(e.message, credentials)
        })
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
  }))

/** `text` with each credential value replaced by `***`. */
const redacted = (text: string, credentials: RepoCredentials | undefined): string => {
  let out = text
  for (const secret of [credentials?.oauthToken, credentials?.privateKey]) {
    if (secret !== undefined && secret.length > 0) out = out.split(secret).join("***")
  }
  return out
}

/**
 * The environment that lets git authenticate with the credentials: an OAuth or personal token
 * as HTTP Basic auth (user `oauth2`, which GitHub and GitLab accept) for an http(s) URL, an SSH
 * key written to a file of mode 0600 (removed with the scope) for any other. Empty without.
 */
const gitAuth = (credentials: RepoCredentials | undefined, url: string) =>
  Effect.gen(function*() {
    const env: Record<string, string> = {}
    if (credentials?.oauthToken && /^https?:\/\//i.test(url)) {
      env.GIT_CONFIG_COUNT = "1"
      env.GIT_CONFIG_KEY_0 = "http.extraHeader"
      env.GIT_CONFIG_VALUE_0 = `Authorization: Basic ${Buffer.from(`oauth2:${credentials.oauthToken}`).toString("base64")}`
    }
    if (credentials?.privateKey && !/^https?:\/\//i.test(url)) {
      const keyDir = yield* Effect.acquireRelease(
        Effect.tryPromise({
          try: () => fs.mkdtemp(path.join(os.tmpdir(), "dstack-repo-key-")),
          catch: (cause) => new RepoError({ module: "RemoteRepo", method: "materialize", reason: "Unknown", message: `cannot write the repo's SSH key: ${String(cause)}`, cause })
        }),
        (made) => Effect.promise(() => fs.rm(made, { recursive: true, force: true }))
      )
      const keyFile = path.join(keyDir, "id")
      const key = credentials.privateKey.endsWith("\n") ? credentials.privateKey : `${credentials.privateKey}\n`
      yield* Effect.tryPromise({
        try: () => fs.writeFile(keyFile, key, { mode: 0o600 }),
        catch: (cause) => new RepoError({ module: "RemoteRepo", method: "materialize", reason: "Unknown", message: `cannot write the repo's SSH key: ${String(cause)}`, cause })
      })
      env.GIT_SSH_COMMAND = `ssh -i '${keyFile}' -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null`
    }
    return env
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
  dir: string,
  credentials?: RepoCredentials
): Effect.Effect<void, RepoError | E> =>
  Effect.gen(function*() {
    yield* Effect.tryPromise({
      try: () => fs.mkdir(dir, { recursive: true }),
      catch: (cause) =>
        new RepoError({ module: "Repo", method: "materialize", reason: "PermissionDenied", message: `cannot create ${dir}: ${String(cause)}`, cause })
    })
    if (isRemote(repoData)) return yield* materializeRemote(repoData, yield* collect(code), dir, credentials)
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
