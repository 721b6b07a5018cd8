// Who is calling and what they may do: the server's view of users, tokens and project roles.
// Routes never look at tokens themselves; the Access service answers for them, and
// `authorizeProject` is the one check of a caller's project role (the router's for every
// project route, and a route's own where a body field names the project).
import { Context, Effect } from "effect"
import type { GlobalRole } from "../domain/User.ts"
import type { ProjectRole } from "../domain/Project.ts"
import { excerpt, forbidden } from "./ApiError.ts"
import type { ApiError } from "./ApiError.ts"
import * as Eager from "./Eager.ts"

/** The authenticated caller of a request. */
export interface Principal {
  readonly username: string
  readonly globalRole: GlobalRole
}

export class Access extends Context.Tag("@dstack-ts/core/server/Access")<
  Access,
  {
    /**
     * The user that owns this token, or undefined when no active user does. A service that
     * remembers callers answers a remembered one with an Effect already resolved (as of the
     * call), so that a request with everything it needs in memory completes without a fiber.
     */
    readonly authenticate: (token: string) => Effect.Effect<Principal | undefined, ApiError>
    /** The caller's role in a project; fails with 400 `resource_not_exists` when the project does not exist. */
    readonly projectRole: (principal: Principal, projectName: string) => Effect.Effect<ProjectRole | undefined, ApiError>
    /**
     * The user's SSH public key (made on first need): what a run submitted without
     * `ssh_key_pub` carries, as upstream. Remembered like callers and roles, and forgotten when
     * users change (a refreshed key included).
     */
    readonly sshPublicKey: (username: string) => Effect.Effect<string, ApiError>
  }
>() {}

const projectRank: Record<ProjectRole, number> = { user: 0, manager: 1, admin: 2 }

/** True when `role` is at least `required`. Global admins may act on every project. */
export const satisfiesProjectRole = (
  principal: Principal,
  role: ProjectRole | undefined,
  required: ProjectRole
): boolean => principal.globalRole === "admin" || (role !== undefined && projectRank[role] >= projectRank[required])

/**
 * Succeeds with the caller's role in the project when it is at least `required` (a global
 * admin's may be undefined); fails with 403 otherwise, and with 400 `resource_not_exists` when there is no such
 * project. With the role in memory the answer is an Effect already resolved.
 */
export const authorizeProjectWith = (
  access: Access["Type"],
  principal: Principal,
  projectName: string,
  required: ProjectRole
): Effect.Effect<ProjectRole | undefined, ApiError> =>
  Eager.flatMap(access.projectRole(principal, projectName), (role) =>
    satisfiesProjectRole(principal, role, required)
      ? Effect.succeed(role)
      : Effect.fail(
          forbidden(
            role === undefined
              ? `You are not a member of project ${excerpt(projectName)}`
              : `This action needs the project role ${required} or higher; you are ${role} in ${excerpt(projectName)}`
          )
        )
  )

/** `authorizeProjectWith` the Access service of the context. */
export const authorizeProject = (
  principal: Principal,
  projectName: string,
  required: ProjectRole
): Effect.Effect<ProjectRole | undefined, ApiError, Access> =>
  Effect.flatMap(Access, (access) => authorizeProjectWith(access, principal, projectName, required))
