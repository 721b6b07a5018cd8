/**
 * Response shapes of the server, user and project routes as the client reads them. They
 * follow the upstream fields (snake_case on the wire) and are lenient: only what the client
 * needs is required, unknown fields are ignored. When core/src/api publishes the route
 * schemas for these routes, the client switches to those.
 */
import { Schema } from "effect"

const snake = <S extends Schema.Schema.Any>(schema: S, key: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(key))
const optionalSnake = <S extends Schema.Schema.Any>(schema: S, key: string) =>
  Schema.optional(schema).pipe(Schema.fromKey(key))

/** `POST /api/server/get_info`. */
export const ServerInfo = Schema.Struct({
  serverVersion: optionalSnake(Schema.NullOr(Schema.String), "server_version")
})
export type ServerInfo = typeof ServerInfo.Type

/** A user as the users routes return it. */
export const User = Schema.Struct({
  id: Schema.optional(Schema.String),
  username: Schema.String,
  globalRole: snake(Schema.String, "global_role"),
  email: Schema.optional(Schema.NullOr(Schema.String)),
  active: Schema.optional(Schema.Boolean),
  createdAt: optionalSnake(Schema.NullOr(Schema.String), "created_at")
})
export type User = typeof User.Type

/** A member of a project and their project role. */
export const ProjectMember = Schema.Struct({
  user: User,
  projectRole: snake(Schema.String, "project_role")
})
export type ProjectMember = typeof ProjectMember.Type

/** A project as the projects routes return it. */
export const Project = Schema.Struct({
  projectId: optionalSnake(Schema.String, "project_id"),
  projectName: snake(Schema.String, "project_name"),
  owner: Schema.optional(User),
  createdAt: optionalSnake(Schema.NullOr(Schema.String), "created_at"),
  members: Schema.optional(Schema.Array(ProjectMember)),
  isPublic: optionalSnake(Schema.Boolean, "is_public")
})
export type Project = typeof Project.Type
