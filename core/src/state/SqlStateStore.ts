/**
 * The StateStore on PostgreSQL SQL, shared by the embedded store (PGlite) and the
 * `@dstack-ts/state-postgres` plugin: one schema, one set of statements, two drivers.
 */
import { Buffer } from "node:buffer"
import { Effect, FiberRef, PubSub, Schema, Stream } from "effect"
import type { Scope } from "effect"
import { Member, Project, ProjectName } from "../domain/Project.ts"
import { GlobalRole, User, Username } from "../domain/User.ts"
import { ProjectRole } from "../domain/Project.ts"
import {
  type Backends,
  type Change,
  type ClaimRequest,
  type Codes,
  type DocumentFilter,
  type DocumentKind,
  type DocumentPatch,
  type Documents,
  type Invalidation,
  type Lease,
  type LogEvent,
  type LogQuery,
  type Logs,
  type LogSource,
  MAX_LOG_LIMIT,
  type MemberInput,
  type NewLogEvent,
  type Page,
  type Projects,
  type Repos,
  StateStoreError,
  type StateStoreErrorReason,
  type StateStoreService,
  type StoredDocument,
  type UpdateOptions,
  type Users
} from "../ports/StateStore.ts"
import { migrate } from "./migrations.ts"
import * as SqlStacks from "./SqlStacks.ts"
import type { Row, SqlConnection, SqlDriver } from "./SqlDriver.ts"
import { SqlError } from "./SqlDriver.ts"

export interface SqlStateStoreOptions {
  /** Apply pending migrations on start (default true). */
  readonly migrate?: boolean
  /**
   * Keeps job logs elsewhere than in the database (the embedded store uses files); gets the
   * function that puts a change on this store's feed.
   */
  readonly logs?: (announce: (change: Change) => void) => Logs
}

/** The NOTIFY channel the change triggers publish on. */
export const CHANGES_CHANNEL = "dstack_changes"

const MODULE = "StateStore"

// ---------------------------------------------------------------------------------------------
// Error mapping, once, at the boundary

const reasonOf = (e: SqlError): StateStoreErrorReason => {
  const code = e.code ?? ""
  if (code === "23505") return "AlreadyExists"
  if (code === "23503") return "NotFound"
  if (code === "40001" || code === "40P01" || code === "55P03") return "Conflict"
  if (code.startsWith("22") || code.startsWith("23")) return "Invalid"
  if (code.startsWith("08") || code.startsWith("53") || code.startsWith("57")) return "Unavailable"
  if (/ECONNREFUSED|ECONNRESET|CONNECTION_|closed|terminat/i.test(e.message)) return "Unavailable"
  return "Unknown"
}

const toStoreError =
  (method: string, messages: Partial<Record<StateStoreErrorReason, string>> = {}) =>
  (e: SqlError): StateStoreError => {
    const reason = reasonOf(e)
    return new StateStoreError({ module: MODULE, method, reason, message: messages[reason] ?? e.message, cause: e })
  }

const failWith = (method: string, reason: StateStoreErrorReason, message: string) =>
  Effect.fail(new StateStoreError({ module: MODULE, method, reason, message }))

// ---------------------------------------------------------------------------------------------
// Row mapping

const toDate = (v: unknown): Date => (v instanceof Date ? v : new Date(String(v)))
const iso = (d: Date | undefined): string | null => (d === undefined ? null : d.toISOString())
const json = (v: unknown): string => JSON.stringify(v === undefined ? null : v)
const parseJson = (v: unknown): unknown => (typeof v === "string" ? JSON.parse(v) : v)

const userFromRow = (r: Row, prefix = ""): User =>
  new User(
    {
      id: String(r[`${prefix}id`]),
      username: String(r[`${prefix}username`]),
      createdAt: toDate(r[`${prefix}created_at`]),
      globalRole: r[`${prefix}global_role`] as GlobalRole,
      email: (r[`${prefix}email`] as string | null) ?? null,
      active: Boolean(r[`${prefix}active`])
    },
    true
  )

const USER_COLUMNS = "id, username, global_role, email, created_at, active"

const documentFromRow = (kind: DocumentKind, r: Row): StoredDocument => ({
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
  doc: parseJson(r.doc)
})

const LOG_SOURCES: ReadonlyArray<LogSource> = ["stdout", "stderr", "runner"]
const sourceCode = (s: LogSource): number => LOG_SOURCES.indexOf(s) + 1

// ---------------------------------------------------------------------------------------------
// Statement building: parameters numbered as they are added

class Params {
  readonly values: Array<unknown> = []
  add(v: unknown): string {
    this.values.push(v)
    return `$${this.values.length}`
  }
}

const filterClauses = (f: DocumentFilter, p: Params): Array<string> => {
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

const whereSql = (clauses: ReadonlyArray<string>): string => (clauses.length === 0 ? "" : `WHERE ${clauses.join(" AND ")}`)

const TABLES: Record<DocumentKind, string> = { run: "runs", job: "jobs", instance: "instances", fleet: "fleets" }

const validate = <A, I>(method: string, schema: Schema.Schema<A, I>, value: unknown, what: string) =>
  Schema.decodeUnknown(schema)(value).pipe(
    Effect.mapError(
      (e) => new StateStoreError({ module: MODULE, method, reason: "Invalid", message: `invalid ${what}: ${e.message}` })
    )
  )

// ---------------------------------------------------------------------------------------------

/**
 * Builds the store on a driver: applies pending migrations, starts listening for changes
 * (until the scope closes) and returns the service.
 */
export const make = (
  driver: SqlDriver,
  options: SqlStateStoreOptions = {}
): Effect.Effect<StateStoreService, StateStoreError, Scope.Scope> =>
  Effect.gen(function* () {
    if (options.migrate !== false) {
      yield* migrate(driver).pipe(Effect.mapError(toStoreError("migrate")))
    }

    // The connection of the transaction the current fiber is in, if any.
    const currentTx = yield* FiberRef.make<SqlConnection | null>(null)
    const sql = (text: string, params: ReadonlyArray<unknown> = []): Effect.Effect<ReadonlyArray<Row>, SqlError> =>
      Effect.flatMap(FiberRef.get(currentTx), (tx) => (tx ?? driver).query(text, params))

    // `watch`: its listeners, told synchronously after each write through this store, again
    // when the transaction around it ends (a reader between the write and the commit saw the
    // old rows), and on the notifications of other replicas' writes (their triggers).
    const watchers = new Set<(change: Invalidation) => void>()
    const report = (change: Invalidation): void => {
      for (const listener of watchers) listener(change)
    }
    // The changes made inside the transaction the current fiber is in, if any.
    const txChanges = yield* FiberRef.make<Array<Invalidation> | null>(null)
    const invalidate = (change: Invalidation): Effect.Effect<void> =>
      Effect.flatMap(FiberRef.get(txChanges), (pending) =>
        Effect.sync(() => {
          pending?.push(change)
          report(change)
        })
      )
    const accessChanged = invalidate({ kind: "access" })
    /** A write to users, projects, members or backends: whatever was cached about access (and a project's backends) is stale after it. */
    const accessWrite = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> => Effect.ensuring(effect, accessChanged)

    const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<Change>(), PubSub.shutdown)
    yield* driver
      .listen(CHANGES_CHANNEL, (payload) => {
        const change = decodeNotification(payload)
        if (change === undefined) return
        if (change === "access") return report({ kind: "access" })
        if (change.kind !== "log") report({ kind: change.kind, id: change.id })
        pubsub.unsafeOffer(change)
      })
      .pipe(Effect.mapError(toStoreError("changes")))

    const withTransaction = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E | StateStoreError, R> =>
      Effect.flatMap(FiberRef.get(currentTx), (tx) => {
        if (tx !== null) return effect
        const pending: Array<Invalidation> = []
        return driver
          .transaction((connection) => Effect.locally(Effect.locally(effect, currentTx, connection), txChanges, pending))
          .pipe(
            Effect.mapError((e): E | StateStoreError =>
              e instanceof SqlError ? toStoreError("withTransaction")(e) : (e as E)
            ),
            Effect.ensuring(Effect.sync(() => pending.forEach(report)))
          )
      })

    // Planner statistics. PGlite has no autovacuum, so without this a table never gets any and
    // the planner, believing it tiny, sorts a whole job's logs instead of walking the index.
    // Each process analyzes a table when its own writes to it reach 1k, 10k, 100k, … rows:
    // a few cheap ANALYZEs over a server's life (PostgreSQL's autovacuum does the rest there).
    const writes = new Map<string, { count: number; next: number }>()
    const noteWrites = (table: string, n: number): Effect.Effect<void> =>
      Effect.flatMap(FiberRef.get(currentTx), (tx) => {
        const w = writes.get(table) ?? { count: 0, next: 1000 }
        w.count += n
        writes.set(table, w)
        // Not inside a caller's transaction: a failure there would abort it.
        if (w.count < w.next || tx !== null) return Effect.void
        while (w.next <= w.count) w.next *= 10
        return driver.query(`ANALYZE ${table}`).pipe(Effect.ignore)
      })

    // -------------------------------------------------------------------------------------------
    // Users

    const getUser = (method: string, column: "username" | "token_hash", value: string) =>
      sql(`SELECT ${USER_COLUMNS} FROM users WHERE ${column} = $1`, [value]).pipe(
        Effect.mapError(toStoreError(method)),
        Effect.flatMap((rows) =>
          rows.length === 0
            ? failWith(method, "NotFound", column === "username" ? `no user named '${value}'` : "no user has this token")
            : Effect.succeed(userFromRow(rows[0]))
        )
      )

    const users: Users = {
      create: (u) =>
        accessWrite(Effect.gen(function* () {
          yield* validate("users.create", Username, u.username, "user name")
          yield* validate("users.create", GlobalRole, u.globalRole, "global role")
          const rows = yield* sql(
            `INSERT INTO users (id, username, global_role, email, token_hash, active)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${USER_COLUMNS}`,
            [globalThis.crypto.randomUUID(), u.username, u.globalRole, u.email ?? null, u.tokenHash, u.active ?? true]
          ).pipe(Effect.mapError(toStoreError("users.create", { AlreadyExists: `user '${u.username}' already exists` })))
          return userFromRow(rows[0])
        })),
      get: (username) => getUser("users.get", "username", username),
      getByTokenHash: (hash) => getUser("users.getByTokenHash", "token_hash", hash),
      list: () =>
        sql(`SELECT ${USER_COLUMNS} FROM users ORDER BY username`).pipe(
          Effect.map((rows) => rows.map((r) => userFromRow(r))),
          Effect.mapError(toStoreError("users.list"))
        ),
      update: (username, patch) =>
        accessWrite(Effect.gen(function* () {
          if (patch.globalRole !== undefined) yield* validate("users.update", GlobalRole, patch.globalRole, "global role")
          const p = new Params()
          const sets: Array<string> = []
          if (patch.globalRole !== undefined) sets.push(`global_role = ${p.add(patch.globalRole)}`)
          if (patch.email !== undefined) sets.push(`email = ${p.add(patch.email)}`)
          if (patch.active !== undefined) sets.push(`active = ${p.add(patch.active)}`)
          if (sets.length === 0) return yield* getUser("users.update", "username", username)
          const rows = yield* sql(
            `UPDATE users SET ${sets.join(", ")} WHERE username = ${p.add(username)} RETURNING ${USER_COLUMNS}`,
            p.values
          ).pipe(Effect.mapError(toStoreError("users.update")))
          if (rows.length === 0) return yield* failWith("users.update", "NotFound", `no user named '${username}'`)
          return userFromRow(rows[0])
        })),
      setTokenHash: (username, hash) =>
        accessWrite(sql(`UPDATE users SET token_hash = $1 WHERE username = $2 RETURNING id`, [hash, username]).pipe(
          Effect.mapError(toStoreError("users.setTokenHash", { AlreadyExists: "this token is already in use" })),
          Effect.flatMap((rows) =>
            rows.length === 0 ? failWith("users.setTokenHash", "NotFound", `no user named '${username}'`) : Effect.void
          )
        )),
      delete: (usernames) =>
        accessWrite(sql(`DELETE FROM users WHERE username = ANY($1::text[])`, [[...usernames]]).pipe(
          // The only foreign key that can stop it: a project's owner.
          Effect.mapError((e) =>
            e.code === "23503"
              ? new StateStoreError({
                  module: MODULE,
                  method: "users.delete",
                  reason: "Conflict",
                  message: "a user that owns a project cannot be deleted",
                  cause: e
                })
              : toStoreError("users.delete")(e)
          ),
          Effect.asVoid
        ))
    }

    // -------------------------------------------------------------------------------------------
    // Projects

    const PROJECT_SELECT = `SELECT p.id AS p_id, p.name AS p_name, p.created_at AS p_created_at, p.is_public AS p_is_public,
        u.id, u.username, u.global_role, u.email, u.created_at, u.active
      FROM projects p JOIN users u ON u.username = p.owner`

    const loadProjects = (method: string, projectRows: ReadonlyArray<Row>) =>
      Effect.gen(function* () {
        if (projectRows.length === 0) return []
        const names = projectRows.map((r) => String(r.p_name))
        const memberRows = yield* sql(
          `SELECT m.project AS m_project, m.project_role AS m_role, u.id, u.username, u.global_role, u.email, u.created_at, u.active
           FROM members m JOIN users u ON u.username = m.username
           WHERE m.project = ANY($1::text[]) ORDER BY m.member_num`,
          [names]
        ).pipe(Effect.mapError(toStoreError(method)))
        const byProject = new Map<string, Array<Member>>()
        for (const r of memberRows) {
          const list = byProject.get(String(r.m_project)) ?? []
          list.push(new Member({ user: userFromRow(r), projectRole: r.m_role as ProjectRole }, true))
          byProject.set(String(r.m_project), list)
        }
        return projectRows.map(
          (r) =>
            new Project(
              {
                projectId: String(r.p_id),
                projectName: String(r.p_name),
                owner: userFromRow(r),
                createdAt: toDate(r.p_created_at),
                isPublic: Boolean(r.p_is_public),
                members: byProject.get(String(r.p_name)) ?? []
              },
              true
            )
        )
      })

    const getProject = (method: string, name: string) =>
      sql(`${PROJECT_SELECT} WHERE p.name = $1`, [name]).pipe(
        Effect.mapError(toStoreError(method)),
        Effect.flatMap((rows) => loadProjects(method, rows)),
        Effect.flatMap((ps) =>
          ps.length === 0 ? failWith(method, "NotFound", `no project named '${name}'`) : Effect.succeed(ps[0])
        )
      )

    const upsertMembers = (method: string, name: string, members: ReadonlyArray<MemberInput>) =>
      Effect.gen(function* () {
        for (const m of members) yield* validate(method, ProjectRole, m.projectRole, "project role")
        if (members.length === 0) return
        yield* sql(
          `INSERT INTO members (project, username, project_role)
           SELECT $1, u.username, u.role FROM unnest($2::text[], $3::text[]) WITH ORDINALITY AS u(username, role, n) ORDER BY n
           ON CONFLICT (project, username) DO UPDATE SET project_role = EXCLUDED.project_role`,
          [name, members.map((m) => m.username), members.map((m) => m.projectRole)]
        ).pipe(
          Effect.mapError(
            toStoreError(method, {
              NotFound: `unknown user among ${members.map((m) => `'${m.username}'`).join(", ")}`
            })
          )
        )
      })

    const requireProject = (method: string, name: string) =>
      sql(`SELECT name FROM projects WHERE name = $1 FOR UPDATE`, [name]).pipe(
        Effect.mapError(toStoreError(method)),
        Effect.flatMap((rows) => (rows.length === 0 ? failWith(method, "NotFound", `no project named '${name}'`) : Effect.void))
      )

    const projects: Projects = {
      create: (np) =>
        accessWrite(withTransaction(
          Effect.gen(function* () {
            yield* validate("projects.create", ProjectName, np.name, "project name")
            yield* sql(`INSERT INTO projects (id, name, owner, is_public) VALUES ($1, $2, $3, $4)`, [
              globalThis.crypto.randomUUID(),
              np.name,
              np.owner,
              np.isPublic ?? false
            ]).pipe(
              Effect.mapError(
                toStoreError("projects.create", {
                  AlreadyExists: `project '${np.name}' already exists`,
                  NotFound: `no user named '${np.owner}'`
                })
              )
            )
            yield* upsertMembers("projects.create", np.name, [{ username: np.owner, projectRole: "admin" }])
            return yield* getProject("projects.create", np.name)
          })
        )),
      get: (name) => getProject("projects.get", name),
      list: () =>
        sql(`${PROJECT_SELECT} ORDER BY p.name`).pipe(
          Effect.mapError(toStoreError("projects.list")),
          Effect.flatMap((rows) => loadProjects("projects.list", rows))
        ),
      listForUser: (username) =>
        sql(
          `${PROJECT_SELECT} WHERE p.is_public OR EXISTS (SELECT 1 FROM members m WHERE m.project = p.name AND m.username = $1)
           ORDER BY p.name`,
          [username]
        ).pipe(
          Effect.mapError(toStoreError("projects.listForUser")),
          Effect.flatMap((rows) => loadProjects("projects.listForUser", rows))
        ),
      delete: (names) =>
        accessWrite(sql(`DELETE FROM projects WHERE name = ANY($1::text[])`, [[...names]]).pipe(
          Effect.mapError(toStoreError("projects.delete")),
          Effect.asVoid
        )),
      setMembers: (name, members) =>
        accessWrite(withTransaction(
          Effect.gen(function* () {
            yield* requireProject("projects.setMembers", name)
            yield* sql(`DELETE FROM members WHERE project = $1`, [name]).pipe(Effect.mapError(toStoreError("projects.setMembers")))
            yield* upsertMembers("projects.setMembers", name, members)
            return yield* getProject("projects.setMembers", name)
          })
        )),
      addMembers: (name, members) =>
        accessWrite(withTransaction(
          Effect.gen(function* () {
            yield* requireProject("projects.addMembers", name)
            yield* upsertMembers("projects.addMembers", name, members)
            return yield* getProject("projects.addMembers", name)
          })
        )),
      removeMembers: (name, usernames) =>
        accessWrite(withTransaction(
          Effect.gen(function* () {
            yield* requireProject("projects.removeMembers", name)
            yield* sql(`DELETE FROM members WHERE project = $1 AND username = ANY($2::text[])`, [name, [...usernames]]).pipe(
              Effect.mapError(toStoreError("projects.removeMembers"))
            )
            return yield* getProject("projects.removeMembers", name)
          })
        ))
    }

    // -------------------------------------------------------------------------------------------
    // Backends, repos, code

    const backends: Backends = {
      upsert: (b) =>
        sql(
          `INSERT INTO backends (project, type, config) VALUES ($1, $2, $3::jsonb)
           ON CONFLICT (project, type) DO UPDATE SET config = EXCLUDED.config`,
          [b.project, b.type, json(b.config)]
        ).pipe(Effect.mapError(toStoreError("backends.upsert", { NotFound: `no project named '${b.project}'` })), Effect.asVoid, accessWrite),
      get: (project, type) =>
        sql(`SELECT project, type, config FROM backends WHERE project = $1 AND type = $2`, [project, type]).pipe(
          Effect.mapError(toStoreError("backends.get")),
          Effect.flatMap((rows) =>
            rows.length === 0
              ? failWith("backends.get", "NotFound", `no backend '${type}' in project '${project}'`)
              : Effect.succeed({ project, type, config: parseJson(rows[0].config) })
          )
        ),
      list: (project) =>
        sql(`SELECT project, type, config FROM backends WHERE project = $1 ORDER BY type`, [project]).pipe(
          Effect.mapError(toStoreError("backends.list")),
          Effect.map((rows) => rows.map((r) => ({ project, type: String(r.type), config: parseJson(r.config) })))
        ),
      delete: (project, types) =>
        sql(`DELETE FROM backends WHERE project = $1 AND type = ANY($2::text[])`, [project, [...types]]).pipe(
          Effect.mapError(toStoreError("backends.delete")),
          Effect.asVoid,
          accessWrite
        )
    }

    const repoFromRow = (r: Row) => ({
      project: String(r.project),
      repoId: String(r.repo_id),
      type: String(r.type),
      info: parseJson(r.info),
      creds: r.creds === null || r.creds === undefined ? null : parseJson(r.creds)
    })

    const repos: Repos = {
      upsert: (r) =>
        sql(
          `INSERT INTO repos (project, repo_id, type, info, creds) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb)
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
    }

    const codes: Codes = {
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
    }

    // -------------------------------------------------------------------------------------------
    // Documents

    const documentsOf = (kind: DocumentKind): Documents => {
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
          sql(
            `INSERT INTO ${table} (id, project, name, status, parent_id, user_name, repo_id, submitted_at, updated_at, doc)
             VALUES ($1, $2, $3, $4, $5, $6, $7, coalesce($8::timestamptz, clock_timestamp()),
                     coalesce($8::timestamptz, clock_timestamp()), $9::jsonb)
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
              json(d.doc)
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
            Effect.tap(() => invalidate({ kind, id: d.id })),
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
            Effect.map((rows) => rows.map((r) => ({ id: String(r.id), doc: parseJson(r.doc) })))
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
            if (patch.doc !== undefined) sets.push(`doc = ${p.add(json(patch.doc))}::jsonb`)
            sets.push(`updated_at = coalesce(${p.add(iso(patch.updatedAt))}::timestamptz, clock_timestamp())`)
            const where = [`id = ${idParam}`]
            if (options.lease !== undefined) {
              where.push(`lease_token = ${p.add(options.lease)} AND lease_expires_at > clock_timestamp()`)
            }
            if (options.expectedVersion !== undefined) where.push(`version = ${p.add(options.expectedVersion)}`)
            const rows = yield* sql(`UPDATE ${table} SET ${sets.join(", ")} WHERE ${where.join(" AND ")} RETURNING *`, p.values).pipe(
              Effect.mapError(
                toStoreError(m("update"), {
                  AlreadyExists: `a live ${kind} named '${patch.name ?? ""}' already exists in its project`
                })
              )
            )
            if (rows.length > 0) {
              yield* invalidate({ kind, id })
              return documentFromRow(kind, rows[0])
            }
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
          ),
        claim: (req: ClaimRequest) => {
          if (!(req.leaseMs > 0)) return failWith(m("claim"), "Invalid", "leaseMs must be positive")
          const p = new Params()
          const where = filterClauses(req.filter, p)
          where.push(`(lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())`)
          const limit = p.add(Math.max(1, Math.floor(req.limit ?? 1)))
          const owner = p.add(req.owner)
          const ms = p.add(Math.ceil(req.leaseMs))
          // SKIP LOCKED: a row another claimer is taking right now is simply not ours; the
          // lease condition is re-checked on the locked row, so a row claimed and committed
          // meanwhile is skipped too.
          return sql(
            `WITH picked AS (
               SELECT id FROM ${table} ${whereSql(where)}
               ORDER BY submitted_at, id LIMIT ${limit}
               FOR UPDATE SKIP LOCKED
             )
             UPDATE ${table} t SET lease_owner = ${owner}, lease_token = gen_random_uuid()::text,
               lease_expires_at = clock_timestamp() + ${ms}::integer * interval '1 millisecond'
             FROM picked WHERE t.id = picked.id
             RETURNING t.*`,
            p.values
          ).pipe(
            Effect.mapError(toStoreError(m("claim"))),
            Effect.map((rows) =>
              rows.map((r) => documentFromRow(kind, r)).sort((a, b) => a.submittedAt.getTime() - b.submittedAt.getTime() || (a.id < b.id ? -1 : 1))
            )
          )
        },
        renew: (id, token, leaseMs) =>
          sql(
            `UPDATE ${table} SET lease_expires_at = clock_timestamp() + $3::integer * interval '1 millisecond'
             WHERE id = $1 AND lease_token = $2 AND lease_expires_at > clock_timestamp()
             RETURNING lease_owner, lease_token, lease_expires_at`,
            [id, token, Math.ceil(leaseMs)]
          ).pipe(
            Effect.mapError(toStoreError(m("renew"))),
            Effect.flatMap((rows) =>
              rows.length === 0
                ? failWith(m("renew"), "LeaseLost", `the lease on ${kind} '${id}' is lost or expired`)
                : Effect.succeed<Lease>({
                    owner: String(rows[0].lease_owner),
                    token: String(rows[0].lease_token),
                    expiresAt: toDate(rows[0].lease_expires_at)
                  })
            )
          ),
        renewMany: (leases, leaseMs) => {
          if (!(leaseMs > 0)) return failWith(m("renewMany"), "Invalid", "leaseMs must be positive")
          if (leases.length === 0) return Effect.succeed([])
          return sql(
            `UPDATE ${table} t SET lease_expires_at = clock_timestamp() + $3::integer * interval '1 millisecond'
             FROM unnest($1::text[], $2::text[]) AS l(id, token)
             WHERE t.id = l.id AND t.lease_token = l.token AND t.lease_expires_at > clock_timestamp()
             RETURNING t.id, t.lease_owner, t.lease_token, t.lease_expires_at`,
            [leases.map((l) => l.id), leases.map((l) => l.token), Math.ceil(leaseMs)]
          ).pipe(
            Effect.mapError(toStoreError(m("renewMany"))),
            Effect.map((rows) =>
              rows.map((r) => ({
                id: String(r.id),
                lease: { owner: String(r.lease_owner), token: String(r.lease_token), expiresAt: toDate(r.lease_expires_at) }
              }))
            )
          )
        },
        release: (id, token) =>
          sql(
            `UPDATE ${table} SET lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL
             WHERE id = $1 AND lease_token = $2 RETURNING id`,
            [id, token]
          ).pipe(
            Effect.mapError(toStoreError(m("release"))),
            Effect.flatMap((rows) =>
              rows.length === 0 ? failWith(m("release"), "LeaseLost", `the lease on ${kind} '${id}' is not held`) : Effect.void
            )
          )
      }
    }

    // -------------------------------------------------------------------------------------------
    // Logs

    // One statement per chunk of events; the messages travel as one base64 blob sliced by
    // offsets on the server, about twice as fast as an array of per-event values.
    const APPEND_CHUNK_EVENTS = 5000
    const APPEND_CHUNK_BYTES = 8 * 1024 * 1024

    const appendChunk = (chunk: ReadonlyArray<NewLogEvent>) => {
      const offsets: Array<number> = []
      const lengths: Array<number> = []
      let at = 1
      for (const e of chunk) {
        offsets.push(at)
        lengths.push(e.message.byteLength)
        at += e.message.byteLength
      }
      const blob = Buffer.concat(chunk.map((e) => e.message)).toString("base64")
      return sql(
        `WITH b AS (SELECT decode($6::text, 'base64') AS blob)
         INSERT INTO logs (project, job_submission_id, diagnose, ts_ms, source, message)
         SELECT u.p, u.j, u.s = 3, u.t, u.s, substring(b.blob FROM u.o FOR u.l)
         FROM b, unnest($1::text[], $2::text[], $3::bigint[], $4::smallint[], $5::integer[], $7::integer[]) AS u(p, j, t, s, o, l)`,
        [
          chunk.map((e) => e.project),
          chunk.map((e) => e.jobSubmissionId),
          chunk.map((e) => e.timestamp.getTime()),
          chunk.map((e) => sourceCode(e.source)),
          offsets,
          blob,
          lengths
        ]
      ).pipe(Effect.mapError(toStoreError("logs.append")))
    }

    const sqlLogs: Logs = {
      append: (events: ReadonlyArray<NewLogEvent>) =>
        Effect.gen(function* () {
          let start = 0
          while (start < events.length) {
            let end = start
            let bytes = 0
            while (end < events.length && end - start < APPEND_CHUNK_EVENTS && (end === start || bytes + events[end].message.byteLength <= APPEND_CHUNK_BYTES)) {
              bytes += events[end].message.byteLength
              end++
            }
            yield* appendChunk(events.slice(start, end))
            start = end
          }
          yield* noteWrites("logs", events.length)
        }),
      poll: (q: LogQuery) =>
        Effect.gen(function* () {
          const limit = q.limit ?? MAX_LOG_LIMIT
          if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LOG_LIMIT) {
            return yield* failWith("logs.poll", "Invalid", `limit must be an integer in 1..${MAX_LOG_LIMIT}, got ${limit}`)
          }
          const p = new Params()
          const where = [
            `project = ${p.add(q.project)}`,
            `job_submission_id = ${p.add(q.jobSubmissionId)}`,
            `diagnose = ${q.diagnose === true ? "true" : "false"}`
          ]
          if (q.startTime !== undefined) where.push(`ts_ms >= ${p.add(q.startTime.getTime())}::bigint`)
          if (q.endTime !== undefined) where.push(`ts_ms < ${p.add(q.endTime.getTime())}::bigint`)
          const op = q.descending === true ? "<" : ">"
          if (q.nextToken !== undefined && q.nextToken !== "") {
            const match = /^(\d+)_(\d+)$/.exec(q.nextToken)
            if (match === null) return yield* failWith("logs.poll", "Invalid", `malformed next_token '${q.nextToken}'`)
            where.push(`(ts_ms, seq) ${op} (${p.add(match[1])}::bigint, ${p.add(match[2])}::bigint)`)
          }
          const dir = q.descending === true ? "DESC" : "ASC"
          const rows = yield* sql(
            `SELECT ts_ms::float8 AS ts, seq::text AS seq_text, source, message FROM logs ${whereSql(where)}
             ORDER BY ts_ms ${dir}, seq ${dir} LIMIT ${p.add(limit + 1)}`,
            p.values
          ).pipe(Effect.mapError(toStoreError("logs.poll")))
          const page = rows.slice(0, limit)
          const events: Array<LogEvent> = page.map((r) => ({
            timestamp: new Date(Number(r.ts)),
            source: LOG_SOURCES[Number(r.source) - 1],
            message: r.message as Uint8Array
          }))
          const last = page[page.length - 1]
          if (last === undefined) return { events }
          const token = `${Number(last.ts)}_${String(last.seq_text)}`
          return rows.length > limit ? { events, nextToken: token, cursor: token } : { events, cursor: token }
        }),
      delete: (project: string, ids: ReadonlyArray<string>) =>
        sql(`DELETE FROM logs WHERE project = $1 AND job_submission_id = ANY($2::text[])`, [project, [...ids]]).pipe(
          Effect.mapError(toStoreError("logs.delete")),
          Effect.asVoid
        )
    }

    return {
      users,
      projects,
      backends,
      repos,
      codes,
      runs: documentsOf("run"),
      jobs: documentsOf("job"),
      instances: documentsOf("instance"),
      fleets: documentsOf("fleet"),
      logs: options.logs !== undefined ? options.logs((change) => pubsub.unsafeOffer(change)) : sqlLogs,
      stacks: SqlStacks.make(sql, withTransaction),
      withTransaction,
      changes: Stream.fromPubSub(pubsub),
      subscribe: PubSub.subscribe(pubsub),
      watch: (listener) =>
        Effect.acquireRelease(
          Effect.sync(() => watchers.add(listener)),
          () => Effect.sync(() => watchers.delete(listener))
        ).pipe(Effect.asVoid)
    } satisfies StateStoreService
  })

/**
 * A NOTIFY payload: a `Change`, or `"access"` from the triggers on users, projects and members
 * (migration 3: nothing to re-read; caches of who may do what are stale), or undefined when not ours.
 */
const decodeNotification = (payload: string): Change | "access" | undefined => {
  try {
    const v = JSON.parse(payload) as { kind?: unknown; id?: unknown; project?: unknown; version?: unknown }
    if (v.kind === "access") return "access"
    if (typeof v.kind === "string" && typeof v.id === "string" && typeof v.project === "string") {
      return { kind: v.kind as Change["kind"], id: v.id, project: v.project, ...(typeof v.version === "number" ? { version: v.version } : {}) }
    }
  } catch {
    // Not ours: someone else NOTIFYing on the channel.
  }
  return undefined
}
