/**
 * A local directory as a run's code (upstream `LocalRepo.from_dir`): packed as a deterministic
 * tar.gz honouring `.gitignore` and `.dstackignore`, keyed by the archive's SHA-256.
 */
import * as path from "node:path"
import { Effect } from "effect"
import type { Stream } from "effect"
import type { RunRepoData } from "../domain/Job.ts"
import { RepoError } from "../ports/Repo.ts"
import { listRepoFiles } from "./IgnoreRules.ts"
import { REPO_ID_PATTERN } from "./RepoCode.ts"
import type { RepoCode } from "./RepoCode.ts"
import { hashStream, packTarball, sha256Hex } from "./Tarball.ts"

export interface LocalRepoOptions {
  /** The repo id; default: the directory's name and a hash of its absolute path. */
  readonly repoId?: string
}

/** A readable id for a directory: its slugged name plus 8 hex digits of its absolute path. */
export const repoIdForPath = (absolute: string): string => {
  const slug = path.basename(absolute).toLowerCase().replace(/[^a-z0-9._-]+/g, "-").replace(/^[-._]+|-+$/g, "").slice(0, 40)
  return `${slug === "" ? "repo" : slug}-${sha256Hex(absolute).slice(0, 8)}`
}

/** The error for a repo id that `REPO_ID_PATTERN` refuses. */
export const badRepoId = (module: string, method: string, repoId: unknown): RepoError =>
  new RepoError({
    module,
    method,
    reason: "Invalid",
    message: `repo_id ${JSON.stringify(repoId)} must be 1–128 characters of letters, digits, '.', '_' or '-', starting with a letter or digit`
  })

export const checkRepoId = (module: string, method: string, repoId: string): Effect.Effect<string, RepoError> =>
  typeof repoId === "string" && REPO_ID_PATTERN.test(repoId) ? Effect.succeed(repoId) : Effect.fail(badRepoId(module, method, repoId))

export class LocalRepo implements RepoCode {
  readonly codeKind = "tarball" as const
  private constructor(
    readonly repoId: string,
    /** The absolute directory packed. */
    readonly repoDir: string,
    /** The packed files, sorted. */
    readonly files: ReadonlyArray<string>,
    readonly codeHash: string,
    readonly codeSize: number
  ) {}

  get repoData(): RunRepoData {
    return { repoType: "local", repoDir: this.repoDir }
  }

  get code(): Stream.Stream<Uint8Array, RepoError> {
    return packTarball("LocalRepo", this.repoDir, this.files)
  }

  /**
   * Packs a directory: lists its files (ignore rules applied), then streams the archive once to
   * hash it. Nothing is kept in memory but the file list.
   *
   * @example
   * const repo = yield* LocalRepo.fromDir(".")
   * repo.codeHash // "3f1c…", the same for the same files
   */
  static fromDir(dir: string, options: LocalRepoOptions = {}): Effect.Effect<LocalRepo, RepoError> {
    return Effect.gen(function*() {
      const absolute = path.resolve(dir)
      const repoId = yield* checkRepoId("LocalRepo", "fromDir", options.repoId ?? repoIdForPath(absolute))
      const files = yield* listRepoFiles(absolute)
      const { hash, size } = yield* hashStream(packTarball("LocalRepo", absolute, files))
      return new LocalRepo(repoId, absolute, files, hash, size)
    })
  }
}

