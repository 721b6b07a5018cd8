/**
 * Projects: the unit of isolation for runs, fleets, backends and repos. Every project has an
 * owner and members with a project role. Wire fields follow upstream (`project_name`,
 * `owner`, `members: [{user, project_role}]`).
 */
import { Schema } from "effect"
import { User } from "./User.ts"

/** A member's role in one project: `admin` and `manager` manage members; `user` runs work. */
export const ProjectRole = Schema.Literal("admin", "manager", "user")
export type ProjectRole = typeof ProjectRole.Type

/**
 * A project name: starts with a letter or digit, then letters, digits, `-` or `_`; at most
 * 50 characters. It appears in URLs (`/api/project/{project_name}/…`), hence no dots.
 */
export const ProjectName = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9_-]{0,49}$/, {
    message: () => "a project name is 1–50 letters, digits, '-' or '_', starting with a letter or digit"
  })
)

/** One member of a project. */
export class Member extends Schema.Class<Member>("@dstack-ts/core/Member")({
  user: User,
  projectRole: Schema.propertySignature(ProjectRole).pipe(Schema.fromKey("project_role"))
}) {}

/** A project as the API shows it. */
/**
 * What a member may do in the project (upstream's `permissions`), shown with each member and
 * derived from the roles: SSH fleets for every member, secrets for admins and managers.
 */
export const MemberPermissions = Schema.Struct({
  can_manage_ssh_fleets: Schema.Boolean,
  can_manage_secrets: Schema.Boolean
})

/** A member on the wire: `permissions` is written from the roles and not read back. */
const MemberWire: Schema.Schema<Member, typeof Member.Encoded> = Schema.transform(
  Schema.Struct({ user: Schema.encodedSchema(User), project_role: ProjectRole, permissions: Schema.optional(MemberPermissions) }),
  Member,
  {
    strict: false,
    decode: ({ permissions: _, ...member }) => member,
    encode: (member) => ({
      ...member,
      permissions: {
        can_manage_ssh_fleets: true,
        can_manage_secrets: member.user.global_role === "admin" || member.project_role === "admin" || member.project_role === "manager"
      }
    })
  }
) as never

export class Project extends Schema.Class<Project>("@dstack-ts/core/Project")({
  projectId: Schema.propertySignature(Schema.String).pipe(Schema.fromKey("project_id")),
  projectName: Schema.propertySignature(ProjectName).pipe(Schema.fromKey("project_name")),
  owner: User,
  createdAt: Schema.propertySignature(Schema.Date).pipe(Schema.fromKey("created_at")),
  isPublic: Schema.optionalWith(Schema.Boolean, { default: () => false }).pipe(Schema.fromKey("is_public")),
  members: Schema.Array(MemberWire),
  /**
   * Upstream's list of the project's backend configurations; this server keeps backends apart
   * (`/api/project/{name}/backends/list`) and shows none here.
   */
  backends: Schema.optionalWith(Schema.Array(Schema.Unknown), { default: () => [] })
}) {}
