/**
 * The document tables of the SQL state store — `runs`, `jobs`, `instances`, `fleets` — one
 * shape for all four: the columns the server filters and sorts on, a version for optimistic
 * concurrency, a lease (Leases.ts), and the document itself as JSON whose schema the store
 * does not know. `make(ctx, kind)` builds a table's reads and writes; SqlStateStore.ts adds
 * its leases.
 */
import { Effect } from "effect"
import type {
  DocumentFilter,
  DocumentKind,
  DocumentPatch,
  Documents,
  Page,
  StoredDocument,
  UpdateOptions
} from "../../ports/StateStore.ts"
import type { Row } from "../SqlDriver.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, toStoreError } from "./Errors.ts"
import { iso, json, Params, toDate, whereSql } from "./Statements.ts"

export const TABLES: Record<DocumentKind, string> = { run: "runs", job: "jobs", instance: "instances", fleet: "fleets" }

export const documentFromRow = (kind: DocumentKind, r: Row): StoredDocument => ({
  kind,
  id: String(r.id),
  project: String(r.project),
  name: String(r.name),
  status: String(r.status),
  parentId: (r.parent_id as string | null) ?? null,
  userName: (r.user_name as string | null) ?? null,
  repoId: (r.repo_id as string | null) ?? null,
  submittedAt: toDate(r.submitted_at),
  updatedAt: toDate(r.updated_at),
  deleted: Boolean(r.deleted),
  version: Number(r.version),
  lease:
    r.lease_token === null || r.lease_token === undefined
      ? null
      : { owner: String(r.lease_owner), token: String(r.lease_token), expiresAt: toDate(r.lease_expires_at) },
  doc: r.doc
})

/** The WHERE clauses of a filter (deleted rows left out unless asked for). */
export const filterClauses = (f: DocumentFilter, p: Params): Array<string> => {
  const where: Array<string> = []
  if (f.ids !== undefined) where.push(`id = ANY(${p.add([...f.ids])}::text[])`)
  // One project (the usual list) as plain equality: the planner then walks the
  // (project, submitted_at, id) index in order instead of filtering the whole table by it.
  if (f.projects !== undefined) {
    where.push(f.projects.length === 1 ? `project = ${p.add(f.projects[0])}` : `project = ANY(${p.add([...f.projects])}::text[])`)
  }
  if (f.parentIds !== undefined) where.push(`parent_id = ANY(${p.add([...f.parentIds])}::text[])`)
  if (f.statuses !== undefined) where.push(`status = ANY(${p.add([...f.statuses])}::text[])`)
  if (f.userName !== undefined) where.push(`user_name = ${p.add(f.userName)}`)
  if (f.repoId !== undefined) where.push(`repo_id = ${p.add(f.repoId)}`)
  if (f.includeDeleted !== true) where.push(`NOT deleted`)
  return where
}

/** The lease methods of a repository, which Leases.ts provides. */
export type LeaseMethods = "claim" | "renew" | "renewMany" | "release"

export const make = ({ sql, invalidate, noteWrites, writing }: SqlContext, kind: DocumentKind): Omit<Documents, LeaseMethods> => {
  const table = TABLES[kind]
  const m = (name: string) => `${kind}s.${name}`
  const notFound = (method: string, id: string) => failWith(m(method), "NotFound", `no ${kind} with id '${id}'`)

  const listQuery = (columns: string, filter: DocumentFilter, page: Page) => {
    const p = new Params()
    const where = filterClauses(filter, p)
    const op = page.ascending === true ? ">" : "<"
    if (page.prevSubmittedAt !== undefined) {
      const at = p.add(page.prevSubmittedAt.toISOString())
      where.push(
        page.prevId !== undefined
          ? `(submitted_at, id) ${op} (${at}::timestamptz, ${p.add(page.prevId)}::text)`
          : `submitted_at ${op} ${at}::timestamptz`
      )
    }
    const dir = page.ascending === true ? "ASC" : "DESC"
    const limit = page.limit !== undefined ? ` LIMIT ${p.add(Math.max(0, Math.floor(page.limit)))}` : ""
    return sql(`SELECT ${columns} FROM ${table} ${whereSql(where)} ORDER BY submitted_at ${dir}, id ${dir}${limit}`, p.values)
  }

  const get = (id: string) =>
    sql(`SELECT * FROM ${table} WHERE id = $1`, [id]).pipe(
      Effect.mapError(toStoreError(m("get"))),
      Effect.flatMap((rows) => (rows.length === 0 ? notFound("get", id) : Effect.succeed(documentFromRow(kind, rows[0]))))
    )

  return {
    kind,
    insert: (d) =>
      d.lease !== undefined && !(d.lease.leaseMs > 0)
        ? failWith(m("insert"), "Invalid", "lease.leaseMs must be positive")
        : sql(
        `INSERT INTO ${table} (id, project, name, status, parent_id, user_name, repo_id, submitted_at, updated_at, doc${d.lease === undefined ? "" : ", lease_owner, lease_token, lease_expires_at"})
         VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8::timestamptz, clock_timestamp()),
                 coalesce($8::timestamptz, clock_timestamp()), $9::text::jsonb${d.lease === undefined ? "" : ", $10, gen_random_uuid()::text, clock_timestamp() + $11::integer * interval '1 millisecond'"})
         RETURNING *`,
        [
          d.id,
          d.project,
          d.name,
          d.status,
          d.parentId ?? null,
          d.userName ?? null,
          d.repoId ?? null,
          iso(d.submittedAt),
          json(d.doc),
          ...(d.lease === undefined ? [] : [d.lease.owner, Math.ceil(d.lease.leaseMs)])
        ]
      ).pipe(
        Effect.mapError((e) =>
          toStoreError(m("insert"), {
            AlreadyExists:
              e.constraint !== undefined && e.constraint.endsWith("_live_name")
                ? `a ${kind} named '${d.name}' already exists in project '${d.project}'`
                : `a ${kind} with id '${d.id}' already exists`
          })(e)
        ),
        Effect.map((rows) => documentFromRow(kind, rows[0])),
        Effect.tap((row) => invalidate({ kind, id: d.id, version: row.version })),
        Effect.tap(() => noteWrites(table, 1))
      ),
    get,
    getByName: (project, name) =>
      sql(`SELECT * FROM ${table} WHERE project = $1 AND name = $2 AND NOT deleted ORDER BY submitted_at DESC LIMIT 1`, [
        project,
        name
      ]).pipe(
        Effect.mapError(toStoreError(m("getByName"))),
        Effect.flatMap((rows) =>
          rows.length === 0
            ? failWith(m("getByName"), "NotFound", `no ${kind} named '${name}' in project '${project}'`)
            : Effect.succeed(documentFromRow(kind, rows[0]))
        )
      ),
    list: (filter: DocumentFilter = {}, page: Page = {}) =>
      listQuery("*", filter, page).pipe(
        Effect.mapError(toStoreError(m("list"))),
        Effect.map((rows) => rows.map((r) => documentFromRow(kind, r)))
      ),
    listDocs: (filter: DocumentFilter = {}, page: Page = {}) =>
      listQuery("id, doc", filter, page).pipe(
        Effect.mapError(toStoreError(m("listDocs"))),
        Effect.map((rows) => rows.map((r) => ({ id: String(r.id), doc: r.doc })))
      ),
    update: (id: string, patch: DocumentPatch, options: UpdateOptions = {}) =>
      Effect.gen(function* () {
        const p = new Params()
        const idParam = p.add(id)
        const sets: Array<string> = ["version = version + 1"]
        if (patch.name !== undefined) sets.push(`name = ${p.add(patch.name)}`)
        if (patch.status !== undefined) sets.push(`status = ${p.add(patch.status)}`)
        if (patch.parentId !== undefined) sets.push(`parent_id = ${p.add(patch.parentId)}`)
        if (patch.deleted !== undefined) sets.push(`deleted = ${p.add(patch.deleted)}`)
        if (patch.doc !== undefined) sets.push(`doc = ${p.add(json(patch.doc))}::text::jsonb`)
        sets.push(`updated_at = coalesce(${p.add(iso(patch.updatedAt))}::timestamptz, clock_timestamp())`)
        const where = [`id = ${idParam}`]
        if (options.lease !== undefined) {
          where.push(`lease_token = ${p.add(options.lease)} AND lease_expires_at > clock_timestamp()`)
          if (options.releaseLease === true) sets.push("lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL")
        }
        else if (options.unleased === true) where.push("(lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())")
        if (options.expectedVersion !== undefined) where.push(`version = ${p.add(options.expectedVersion)}`)
        const written = yield* writing(
          id,
          sql(`UPDATE ${table} SET ${sets.join(", ")} WHERE ${where.join(" AND ")} RETURNING *`, p.values).pipe(
            Effect.mapError(
              toStoreError(m("update"), {
                AlreadyExists: `a live ${kind} named '${patch.name ?? ""}' already exists in its project`
              })
            ),
            Effect.map((rows) => (rows.length > 0 ? documentFromRow(kind, rows[0]) : undefined))
          )
        )
        if (written !== undefined) {
          yield* invalidate({ kind, id, version: written.version, row: written })
          return written
        }
        // Nothing updated: say why, from the row as it is now.
        const current = yield* get(id).pipe(
          Effect.catchIf(
            (e) => e.reason === "NotFound",
            () => notFound("update", id)
          )
        )
        if (options.expectedVersion !== undefined && current.version !== options.expectedVersion) {
          return yield* failWith(
            m("update"),
            "Conflict",
            `${kind} '${id}' is at version ${current.version}, not ${options.expectedVersion}`
          )
        }
        if (options.lease === undefined) {
          return yield* failWith(
            m("update"),
            "LeaseLost",
            `${kind} '${id}' is leased by ${current.lease?.owner ?? "another holder"} until ${current.lease?.expiresAt.toISOString() ?? "now"}`
          )
        }
        return yield* failWith(
          m("update"),
          "LeaseLost",
          current.lease === null || current.lease.token !== options.lease
            ? `the lease on ${kind} '${id}' is no longer this one`
            : `the lease on ${kind} '${id}' expired at ${current.lease.expiresAt.toISOString()}`
        )
      }),
    remove: (ids) =>
      sql(`DELETE FROM ${table} WHERE id = ANY($1::text[])`, [[...ids]]).pipe(
        Effect.mapError(toStoreError(m("remove"))),
        Effect.tap(() => Effect.forEach(ids, (id) => invalidate({ kind, id }), { discard: true })),
        Effect.asVoid
      )
  }
}
