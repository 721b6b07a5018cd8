// Who is calling and what they may do: the server's view of users, tokens and project roles.
// Routes never look at tokens themselves; the Access service answers for them.
import { Context, Effect } from "effect"
import type { GlobalRole } from "../domain/User.ts"
import type { ProjectRole } from "../domain/Project.ts"
import type { ApiError } from "./ApiError.ts"

/** The authenticated caller of a request. */
export interface Principal {
  readonly username: string
  readonly globalRole: GlobalRole
}

export class Access extends Context.Tag("@dstack-ts/core/server/Access")<
  Access,
  {
    /** The user that owns this token, or undefined when no active user does. */
    readonly authenticate: (token: string) => Effect.Effect<Principal | undefined, ApiError>
    /** The caller's role in a project; fails with 404 when the project does not exist. */
    readonly projectRole: (principal: Principal, projectName: string) => Effect.Effect<ProjectRole | undefined, ApiError>
    /**
     * What `authenticate` would answer, when the service has it in memory now and no store read
     * is needed: synchronous, for the router's hot path. Undefined when it would have to ask
     * (the router then runs `authenticate`). Optional: a service without memory has none.
     */
    readonly authenticateCached?: (token: string) => Principal | undefined
    /**
     * What `projectRole` would answer, when in memory now: `{ role }` (role undefined for a
     * non-member), or undefined when it would have to ask the store.
     */
    readonly projectRoleCached?: (principal: Principal, projectName: string) => { readonly role: ProjectRole | undefined } | undefined
  }
>() {}

const projectRank: Record<ProjectRole, number> = { user: 0, manager: 1, admin: 2 }

/** True when `role` is at least `required`. Global admins may act on every project. */
export const satisfiesProjectRole = (
  principal: Principal,
  role: ProjectRole | undefined,
  required: ProjectRole
): boolean => principal.globalRole === "admin" || (role !== undefined && projectRank[role] >= projectRank[required])
