/**
 * What every client-side repo (LocalRepo, RemoteRepo, VirtualRepo) hands to a run: the repo's id
 * and info for `repos/init`, the run repo data for the job spec, and its code blob (a tar.gz or
 * a git diff) with the SHA-256 that keys it in `repos/upload_code` and `repo_code_hash`.
 */
import type { Stream } from "effect"
import type { RunRepoData } from "../domain/Job.ts"
import type { RepoError } from "../ports/Repo.ts"

/** The kinds of code blob: a deterministic tar.gz of files, or a git diff over a commit. */
export type CodeBlobKind = "tarball" | "diff"

export interface RepoCode {
  /** The repo's id in the project (`repo_id` of `repos/init` and `upload_code`). */
  readonly repoId: string
  /** What the job spec records (`repo_data`); also the `repo_info` sent to `repos/init`. */
  readonly repoData: RunRepoData
  readonly codeKind: CodeBlobKind
  /** SHA-256 of the code blob, lowercase hex: the `repo_code_hash` of the run. */
  readonly codeHash: string
  /** Size of the code blob in bytes. */
  readonly codeSize: number
  /**
   * The code blob. Each run of the stream produces the bytes anew (a local tarball is packed
   * again from disk), so a large tree is never held in memory; if the files changed in between,
   * the server refuses the upload because its hash no longer matches.
   */
  readonly code: Stream.Stream<Uint8Array, RepoError>
}

/** Validates a repo id: it becomes part of storage keys, so it is kept to a safe alphabet. */
export const REPO_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/
