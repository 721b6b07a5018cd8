/**
 * A git repository as a run's code (upstream `RemoteRepo`): the runner clones the remote URL at
 * a branch and commit, then applies a diff of the uncommitted changes (untracked files
 * included), which is the code blob keyed by its SHA-256. Built from a checkout (`fromDir`) or
 * from a URL alone (`fromUrl`, no diff).
 */
import * as fs from "node:fs/promises"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Stream } from "effect"
import type { RunRepoData } from "../domain/Job.ts"
import { RepoError } from "../ports/Repo.ts"
import { git, gitText } from "./Git.ts"
import { checkRepoId } from "./LocalRepo.ts"
import type { RepoCode } from "./RepoCode.ts"
import { sha256Hex } from "./Tarball.ts"

export interface RemoteRepoFromUrl {
  /** The URL to clone (https, ssh, `git@host:path`, or a local path in tests). */
  readonly repoUrl: string
  /** The branch to check out. Required when `repoHash` is absent. */
  readonly repoBranch?: string | undefined
  /** The commit to check out. Required when `repoBranch` is absent. */
  readonly repoHash?: string | undefined
  /** The repo id; default: the repository's name and a hash of its normalised URL. */
  readonly repoId?: string | undefined
}

export interface RemoteRepoFromDir {
  /** The repo id; default: derived from the origin URL, as `fromUrl` does. */
  readonly repoId?: string
  /** The git remote whose URL the runner clones; default `origin`. */
  readonly remote?: string
}

/**
 * The URL without scheme, credentials, port-less `git@host:` syntax, trailing `/` or `.git`,
 * host lowercased: `https://github.com/a/b.git` and `git@github.com:a/b` both become
 * `github.com/a/b`, so both name the same repo.
 */
export const normalizeRepoUrl = (url: string): string => {
  let u = url.trim()
  const scp = /^([^@/:]+@)?([^/:]+):(?!\/)(.*)$/.exec(u)
  if (scp && !/^[a-z][a-z0-9+.-]*:\/\//i.test(u)) u = `${scp[2]}/${scp[3]}`
  u = u.replace(/^[a-z][a-z0-9+.-]*:\/\//i, "").replace(/^[^@/]+@/, "")
  u = u.replace(/\/+$/, "").replace(/\.git$/, "").replace(/\/+$/, "")
  const slash = u.indexOf("/")
  return slash === -1 ? u.toLowerCase() : u.slice(0, slash).toLowerCase() + u.slice(slash)
}

/** A readable id for a remote: the repository's name plus 8 hex digits of its normalised URL. */
export const repoIdForUrl = (url: string): string => {
  const normalized = normalizeRepoUrl(url)
  const name = normalized.split("/").pop() ?? ""
  const slug = name.toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[-._]+|-+$/g, "").slice(0, 40)
  return `${slug === "" ? "repo" : slug}-${sha256Hex(normalized).slice(0, 8)}`
}

const invalid = (method: string, message: string) => new RepoError({ module: "RemoteRepo", method, reason: "Invalid", message })

export class RemoteRepo implements RepoCode {
  readonly codeKind = "diff" as const
  readonly codeHash: string
  readonly codeSize: number
  private constructor(
    readonly repoId: string,
    readonly repoUrl: string,
    readonly repoBranch: string | undefined,
    readonly repoHash: string | undefined,
    /** The uncommitted changes as a binary git diff against `repoHash`; empty for `fromUrl`. */
    readonly diff: Uint8Array,
    readonly repoConfigName?: string,
    readonly repoConfigEmail?: string
  ) {
    this.codeHash = sha256Hex(diff)
    this.codeSize = diff.length
  }

  get repoData(): RunRepoData {
    return {
      repoType: "remote",
      repoUrl: this.repoUrl,
      ...(this.repoBranch === undefined ? {} : { repoBranch: this.repoBranch }),
      ...(this.repoHash === undefined ? {} : { repoHash: this.repoHash }),
      ...(this.repoConfigName === undefined ? {} : { repoConfigName: this.repoConfigName }),
      ...(this.repoConfigEmail === undefined ? {} : { repoConfigEmail: this.repoConfigEmail })
    }
  }

  get code(): Stream.Stream<Uint8Array, RepoError> {
    return this.diff.length === 0 ? Stream.empty : Stream.succeed(this.diff)
  }

  /**
   * A remote repository by URL, at a branch or a commit (one of them is required), without
   * local changes.
   *
   * @example
   * const repo = yield* RemoteRepo.fromUrl({ repoUrl: "https://github.com/dstackai/dstack-examples", repoBranch: "main" })
   */
  static fromUrl(options: RemoteRepoFromUrl): Effect.Effect<RemoteRepo, RepoError> {
    return Effect.gen(function*() {
      const url = typeof options.repoUrl === "string" ? options.repoUrl.trim() : ""
      if (url === "") return yield* Effect.fail(invalid("fromUrl", "repo_url is required: the URL of a git repository"))
      const branch = options.repoBranch?.trim() || undefined
      const hash = options.repoHash?.trim() || undefined
      if (branch === undefined && hash === undefined) {
        return yield* Effect.fail(invalid("fromUrl", `repo_branch or repo_hash is required for ${url}: name the branch or the commit to check out`))
      }
      if (hash !== undefined && !/^[0-9a-f]{4,64}$/i.test(hash)) {
        return yield* Effect.fail(invalid("fromUrl", `repo_hash ${JSON.stringify(hash)} is not a commit hash (hex digits)`))
      }
      const repoId = yield* checkRepoId("RemoteRepo", "fromUrl", options.repoId ?? repoIdForUrl(url))
      return new RemoteRepo(repoId, url, branch, hash, new Uint8Array(0))
    })
  }

  /**
   * A git checkout: the URL of its `origin`, the current branch, the HEAD commit, and a binary
   * diff of everything not committed (staged, unstaged and untracked files not ignored by
   * `.gitignore`). The user's own index is left untouched. The runner clones the URL, so the
   * HEAD commit must have been pushed.
   *
   * @example
   * const repo = yield* RemoteRepo.fromDir(".")
   * repo.repoData // { repoType: "remote", repoUrl: "git@github.com:me/project.git", repoBranch: "main", repoHash: "…" }
   */
  static fromDir(dir: string, options: RemoteRepoFromDir = {}): Effect.Effect<RemoteRepo, RepoError> {
    return Effect.gen(function*() {
      const absolute = path.resolve(dir)
      const remote = options.remote ?? "origin"
      const root = yield* gitText(["rev-parse", "--show-toplevel"], { cwd: absolute }, {
        module: "RemoteRepo",
        method: "fromDir",
        what: `${absolute} is not a git checkout`,
        reason: "NotFound"
      })
      const at = { cwd: root }
      const where = (what: string, reason?: RepoError["reason"]) => ({
        module: "RemoteRepo",
        method: "fromDir",
        what: `${what} (${root})`,
        ...(reason ? { reason } : {})
      })
      const url = yield* gitText(["remote", "get-url", remote], at, where(`the checkout has no remote ${JSON.stringify(remote)}`, "Invalid"))
      const branch = yield* gitText(["symbolic-ref", "--short", "-q", "HEAD"], { ...at, okCodes: [1] }, where("cannot read the current branch"))
      const head = yield* gitText(["rev-parse", "--verify", "-q", "HEAD"], { ...at, okCodes: [1] }, where("cannot read HEAD"))
      if (head === "") return yield* Effect.fail(invalid("fromDir", `the checkout ${root} has no commit yet: commit and push before running`))
      const name = yield* gitText(["config", "user.name"], { ...at, okCodes: [1] }, where("cannot read git config"))
      const email = yield* gitText(["config", "user.email"], { ...at, okCodes: [1] }, where("cannot read git config"))
      const diff = yield* uncommittedDiff(root, head)
      const repoId = yield* checkRepoId("RemoteRepo", "fromDir", options.repoId ?? repoIdForUrl(url))
      return new RemoteRepo(repoId, url, branch === "" ? undefined : branch, head, diff, name || undefined, email || undefined)
    })
  }
}

/**
 * The binary diff from `head` to the working tree, untracked files included: staged into a
 * throwaway copy of the index (`GIT_INDEX_FILE`), so the user's index never changes.
 */
const uncommittedDiff = (root: string, head: string): Effect.Effect<Uint8Array, RepoError> =>
  Effect.acquireUseRelease(
    Effect.tryPromise({
      try: () => fs.mkdtemp(path.join(os.tmpdir(), "dstack-diff-")),
      catch: (cause) => new RepoError({ module: "RemoteRepo", method: "fromDir", reason: "Unknown", message: `cannot create a temporary directory: ${String(cause)}`, cause })
    }),
    (tmp) =>
      Effect.gen(function*() {
        const failure = { module: "RemoteRepo", method: "fromDir", what: `cannot compute the uncommitted changes of ${root}` }
        const index = path.join(tmp, "index")
        const realIndex = path.resolve(root, yield* gitText(["rev-parse", "--git-path", "index"], { cwd: root }, failure))
        // Starting from the real index keeps git's stat cache: only changed files are re-read.
        const copied = yield* Effect.promise(() => fs.copyFile(realIndex, index).then(() => true, () => false))
        const env = { GIT_INDEX_FILE: index }
        if (!copied) yield* git(["read-tree", head], { cwd: root, env }, failure)
        yield* git(["add", "-A", "--", "."], { cwd: root, env }, failure)
        const diff = yield* git(
          ["diff", "--cached", "--binary", "--no-renames", "--no-color", "--no-ext-diff", "--src-prefix=a/", "--dst-prefix=b/", head, "--"],
          { cwd: root, env },
          failure
        )
        return diff.stdout
      }),
    (tmp) => Effect.promise(() => fs.rm(tmp, { recursive: true, force: true }))
  )
