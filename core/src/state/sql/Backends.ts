/**
 * The `backends` table of the SQL state store: each project's backend configurations, one per
 * backend type, as JSON the backend plugin checks. A write here counts as an access change:
 * servers cache a project's backends for planning.
 */
import { Effect } from "effect"
import type { Backends } from "../../ports/StateStore.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, toStoreError } from "./Errors.ts"
import { json } from "./Statements.ts"

export const make = ({ sql, accessWrite }: SqlContext): Backends => ({
  upsert: (b) =>
    sql(
      `INSERT INTO backends (project, type, config) VALUES ($1, $2, $3::text::jsonb)
       ON CONFLICT (project, type) DO UPDATE SET config = EXCLUDED.config`,
      [b.project, b.type, json(b.config)]
    ).pipe(Effect.mapError(toStoreError("backends.upsert", { NotFound: `no project named '${b.project}'` })), Effect.asVoid, accessWrite),
  get: (project, type) =>
    sql(`SELECT project, type, config FROM backends WHERE project = $1 AND type = $2`, [project, type]).pipe(
      Effect.mapError(toStoreError("backends.get")),
      Effect.flatMap((rows) =>
        rows.length === 0
          ? failWith("backends.get", "NotFound", `no backend '${type}' in project '${project}'`)
          : Effect.succeed({ project, type, config: rows[0].config })
      )
    ),
  list: (project) =>
    sql(`SELECT project, type, config FROM backends WHERE project = $1 ORDER BY type`, [project]).pipe(
      Effect.mapError(toStoreError("backends.list")),
      Effect.map((rows) => rows.map((r) => ({ project, type: String(r.type), config: r.config })))
    ),
  delete: (project, types) =>
    sql(`DELETE FROM backends WHERE project = $1 AND type = ANY($2::text[])`, [project, [...types]]).pipe(
      Effect.mapError(toStoreError("backends.delete")),
      Effect.asVoid,
      accessWrite
    )
})
