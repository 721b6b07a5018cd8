// /api/projects/*: listing, creating and deleting projects, and managing their members.
// Anyone signed in may create a project and becomes its admin; managers manage members but
// only project admins (or global admins) grant the admin role or delete the project.
import { Effect, Schema } from "effect"
import { Project, ProjectName, ProjectRole } from "../../domain/Project.ts"
import { Username } from "../../domain/User.ts"
import { StateStore } from "../../ports/StateStore.ts"
import type { MemberInput, StateStoreError, StateStoreService } from "../../ports/StateStore.ts"
import { Access, authorizeProject, satisfiesProjectRole } from "../Access.ts"
import type { Principal } from "../Access.ts"
import { excerpt, forbidden, fromStateStore } from "../ApiError.ts"
import { jsonRoute } from "../Route.ts"

const key = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(wire))

export const CreateProjectRequest = Schema.Struct({
  projectName: key(ProjectName, "project_name"),
  isPublic: Schema.optional(Schema.Boolean).pipe(Schema.fromKey("is_public"))
})
export const DeleteProjectsRequest = Schema.Struct({ projectsNames: key(Schema.Array(ProjectName), "projects_names") })
export const MemberSetting = Schema.Struct({ username: Username, projectRole: key(ProjectRole, "project_role") })
export const SetMembersRequest = Schema.Struct({ members: Schema.Array(MemberSetting) })
export const RemoveMembersRequest = Schema.Struct({ usernames: Schema.Array(Username) })

const mapProjectError = (name: string) => (e: { reason: string; message?: string }) =>
  e.reason === "NotFound" && !e.message?.toLowerCase().includes("user")
    ? fromStateStore({ reason: "NotFound", message: `Project ${excerpt(name)} does not exist` })
    : e.reason === "AlreadyExists"
      ? fromStateStore({ reason: "AlreadyExists", message: `Project ${excerpt(name)} already exists` })
      : fromStateStore(e)

/** Only project admins may hand out (or take away) the admin role. */
const checkGrants = (principal: Principal, projectName: string, members: ReadonlyArray<MemberInput>, previous: Project) =>
  Effect.gen(function* () {
    const access = yield* Access
    const role = yield* access.projectRole(principal, projectName)
    if (satisfiesProjectRole(principal, role, "admin")) return
    const wasAdmin = new Set(previous.members.filter((m) => m.projectRole === "admin").map((m) => m.user.username))
    const grantsAdmin = members.some((m) => m.projectRole === "admin" && !wasAdmin.has(m.username))
    if (grantsAdmin) return yield* Effect.fail(forbidden("Only project admins can grant the admin role"))
  })

const toInputs = (members: ReadonlyArray<{ username: string; projectRole: ProjectRole }>): ReadonlyArray<MemberInput> =>
  members.map((m) => ({ username: m.username, projectRole: m.projectRole }))

/** Checks who may grant what, then sets or adds members. */
const changeMembers = (
  principal: Principal,
  projectName: string,
  members: ReadonlyArray<MemberInput>,
  apply: (store: StateStoreService, members: ReadonlyArray<MemberInput>) => Effect.Effect<Project, StateStoreError>
) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const previous = yield* store.projects.get(projectName).pipe(Effect.mapError(mapProjectError(projectName)))
    yield* checkGrants(principal, projectName, members, previous)
    return yield* apply(store, members).pipe(Effect.mapError(mapProjectError(projectName)))
  })

export const projectRoutes = [
  jsonRoute({
    method: "POST", path: "/api/projects/list", summary: "Projects you are a member of (all of them for admins)", tag: "projects", access: "user",
    response: Schema.Array(Project),
    handler: (_: void, ctx) =>
      Effect.flatMap(StateStore, (s) => (ctx.principal!.globalRole === "admin" ? s.projects.list() : s.projects.listForUser(ctx.principal!.username))).pipe(
        Effect.mapError(fromStateStore)
      )
  }),
  jsonRoute({
    method: "POST", path: "/api/projects/create", summary: "Create a project owned by you", tag: "projects", access: "user",
    request: CreateProjectRequest, response: Project,
    handler: (input, ctx) =>
      Effect.flatMap(StateStore, (s) =>
        s.projects.create({ name: input.projectName, owner: ctx.principal!.username, isPublic: input.isPublic ?? false })
      ).pipe(Effect.mapError(mapProjectError(input.projectName)))
  }),
  jsonRoute({
    method: "POST", path: "/api/projects/delete", summary: "Delete projects you administer", tag: "projects", access: "user",
    request: DeleteProjectsRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function* () {
        for (const name of input.projectsNames) yield* authorizeProject(ctx.principal!, name, "admin")
        const s = yield* StateStore
        yield* s.projects.delete(input.projectsNames).pipe(Effect.mapError(fromStateStore))
        return {}
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/projects/:project_name/get", summary: "A project with its members", tag: "projects", access: { project: "user" },
    response: Project,
    handler: (_: void, ctx) => Effect.flatMap(StateStore, (s) => s.projects.get(ctx.projectName!)).pipe(Effect.mapError(mapProjectError(ctx.projectName!)))
  }),
  jsonRoute({
    method: "POST", path: "/api/projects/:project_name/set_members", summary: "Replace the member list", tag: "projects", access: { project: "manager" },
    request: SetMembersRequest, response: Project,
    handler: (input, ctx) => changeMembers(ctx.principal!, ctx.projectName!, toInputs(input.members), (store, members) => store.projects.setMembers(ctx.projectName!, members))
  }),
  jsonRoute({
    method: "POST", path: "/api/projects/:project_name/add_members", summary: "Add members or change their roles", tag: "projects", access: { project: "manager" },
    request: SetMembersRequest, response: Project,
    handler: (input, ctx) => changeMembers(ctx.principal!, ctx.projectName!, toInputs(input.members), (store, members) => store.projects.addMembers(ctx.projectName!, members))
  }),
  jsonRoute({
    method: "POST", path: "/api/projects/:project_name/remove_members", summary: "Remove members", tag: "projects", access: { project: "manager" },
    request: RemoveMembersRequest, response: Project,
    handler: (input, ctx) =>
      Effect.flatMap(StateStore, (s) => s.projects.removeMembers(ctx.projectName!, input.usernames)).pipe(
        Effect.mapError(mapProjectError(ctx.projectName!))
      )
  })
]
