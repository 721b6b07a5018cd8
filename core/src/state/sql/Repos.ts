/**
 * The `repos` and `codes` tables of the SQL state store: the repos a project's runs take their
 * code from (type, info, credentials as JSON), and the uploaded code blobs of each repo, keyed
 * by content hash (the bytes live in the blob store; a row holds its key and size).
 */
import { Effect } from "effect"
import type { Codes, Repos } from "../../ports/StateStore.ts"
import type { Row } from "../SqlDriver.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, toStoreError } from "./Errors.ts"
import { json } from "./Statements.ts"

const repoFromRow = (r: Row) => ({
  project: String(r.project),
  repoId: String(r.repo_id),
  type: String(r.type),
  info: r.info,
  creds: r.creds ?? null
})

export const makeRepos = ({ sql }: SqlContext): Repos => ({
  upsert: (r) =>
    sql(
      `INSERT INTO repos (project, repo_id, type, info, creds) VALUES ($1, $2, $3, $4::text::jsonb, $5::text::jsonb)
       ON CONFLICT (project, repo_id) DO UPDATE SET type = EXCLUDED.type, info = EXCLUDED.info, creds = EXCLUDED.creds`,
      [r.project, r.repoId, r.type, json(r.info), r.creds === null || r.creds === undefined ? null : json(r.creds)]
    ).pipe(Effect.mapError(toStoreError("repos.upsert", { NotFound: `no project named '${r.project}'` })), Effect.asVoid),
  get: (project, repoId) =>
    sql(`SELECT * FROM repos WHERE project = $1 AND repo_id = $2`, [project, repoId]).pipe(
      Effect.mapError(toStoreError("repos.get")),
      Effect.flatMap((rows) =>
        rows.length === 0
          ? failWith("repos.get", "NotFound", `no repo '${repoId}' in project '${project}'`)
          : Effect.succeed(repoFromRow(rows[0]))
      )
    ),
  list: (project) =>
    sql(`SELECT * FROM repos WHERE project = $1 ORDER BY repo_id`, [project]).pipe(
      Effect.mapError(toStoreError("repos.list")),
      Effect.map((rows) => rows.map(repoFromRow))
    ),
  delete: (project, ids) =>
    sql(`DELETE FROM repos WHERE project = $1 AND repo_id = ANY($2::text[])`, [project, [...ids]]).pipe(
      Effect.mapError(toStoreError("repos.delete")),
      Effect.asVoid
    )
})

export const makeCodes = ({ sql }: SqlContext): Codes => ({
  put: (c) =>
    sql(
      `INSERT INTO codes (project, repo_id, hash, blob_key, size) VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (project, repo_id, hash) DO NOTHING`,
      [c.project, c.repoId, c.hash, c.blobKey, c.size]
    ).pipe(
      Effect.mapError(toStoreError("codes.put", { NotFound: `no repo '${c.repoId}' in project '${c.project}'` })),
      Effect.asVoid
    ),
  get: (project, repoId, hash) =>
    sql(`SELECT blob_key, size::float8 AS size FROM codes WHERE project = $1 AND repo_id = $2 AND hash = $3`, [
      project,
      repoId,
      hash
    ]).pipe(
      Effect.mapError(toStoreError("codes.get")),
      Effect.flatMap((rows) =>
        rows.length === 0
          ? failWith("codes.get", "NotFound", `no code '${hash}' for repo '${repoId}' in project '${project}'`)
          : Effect.succeed({ project, repoId, hash, blobKey: String(rows[0].blob_key), size: Number(rows[0].size) })
      )
    )
})
