/**
 * The `secrets` table of the SQL state store: each project's secrets by name. Values arrive
 * encrypted by the server (core/src/secrets) and are stored and answered as they are.
 */
import { Effect } from "effect"
import type { SecretRecord, Secrets } from "../../ports/StateStore.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, toStoreError } from "./Errors.ts"

const COLUMNS = `id, project, name, value, created_at, updated_at`

const toRecord = (r: Record<string, unknown>): SecretRecord => ({
  id: String(r.id),
  project: String(r.project),
  name: String(r.name),
  value: String(r.value),
  createdAt: new Date(r.created_at as string | Date),
  updatedAt: new Date(r.updated_at as string | Date)
})

export const make = ({ sql }: SqlContext): Secrets => ({
  upsert: (s) =>
    sql(
      `INSERT INTO secrets (id, project, name, value) VALUES ($1, $2, $3, $4)
       ON CONFLICT (project, name) DO UPDATE SET value = EXCLUDED.value, updated_at = clock_timestamp()
       RETURNING ${COLUMNS}`,
      [s.id, s.project, s.name, s.value]
    ).pipe(
      Effect.mapError(toStoreError("secrets.upsert", { NotFound: `no project named '${s.project}'` })),
      Effect.map((rows) => toRecord(rows[0]))
    ),
  get: (project, name) =>
    sql(`SELECT ${COLUMNS} FROM secrets WHERE project = $1 AND name = $2`, [project, name]).pipe(
      Effect.mapError(toStoreError("secrets.get")),
      Effect.flatMap((rows) =>
        rows.length === 0
          ? failWith("secrets.get", "NotFound", `no secret '${name}' in project '${project}'`)
          : Effect.succeed(toRecord(rows[0]))
      )
    ),
  list: (project) =>
    sql(`SELECT ${COLUMNS} FROM secrets WHERE project = $1 ORDER BY created_at DESC, name`, [project]).pipe(
      Effect.mapError(toStoreError("secrets.list")),
      Effect.map((rows) => rows.map(toRecord))
    ),
  delete: (project, names) =>
    sql(
      // One statement: every name is deleted or, when one is missing, none is.
      `WITH wanted AS (SELECT unnest($2::text[]) AS name),
            missing AS (SELECT w.name FROM wanted w LEFT JOIN secrets s ON s.project = $1 AND s.name = w.name WHERE s.id IS NULL),
            gone AS (DELETE FROM secrets WHERE project = $1 AND name = ANY($2::text[]) AND NOT EXISTS (SELECT 1 FROM missing) RETURNING name)
       SELECT name, true AS missing FROM missing`,
      [project, [...names]]
    ).pipe(
      Effect.mapError(toStoreError("secrets.delete")),
      Effect.flatMap((rows) =>
        rows.length === 0
          ? Effect.void
          : failWith("secrets.delete", "NotFound", `Secrets not found: ${rows.map((r) => String(r.name)).join(", ")}`)
      )
    )
})
