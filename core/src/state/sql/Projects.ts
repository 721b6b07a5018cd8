/**
 * The `projects` and `members` tables of the SQL state store: a project, its owner, and its
 * members with their project roles, always read together (a project is answered with its
 * member list).
 */
import { Effect } from "effect"
import { Member, Project, ProjectName, ProjectRole } from "../../domain/Project.ts"
import type { MemberInput, Projects } from "../../ports/StateStore.ts"
import type { Row } from "../SqlDriver.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, toStoreError, validate } from "./Errors.ts"
import { toDate } from "./Statements.ts"
import { userFromRow } from "./Users.ts"

// The owner's columns unprefixed (userFromRow reads them), the project's with `p_`.
const PROJECT_SELECT = `SELECT p.id AS p_id, p.name AS p_name, p.created_at AS p_created_at, p.is_public AS p_is_public,
    u.id, u.username, u.global_role, u.email, u.created_at, u.active
  FROM projects p JOIN users u ON u.username = p.owner`

export const make = ({ sql, withTransaction, accessWrite }: SqlContext): Projects => {
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
        // The column's CHECK constraint admits only the roles ProjectRole has.
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

  return {
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
}
