/**
 * Response shapes of the server, user and project routes as the client reads them (upstream
 * fields, snake_case on the wire). When core/src/api publishes the route schemas, the client
 * switches to those.
 */
import { Schema } from "effect"

const optionalSnake = <S extends Schema.Schema.Any>(schema: S, key: string) =>
  Schema.optional(schema).pipe(Schema.fromKey(key))

/** `POST /api/server/get_info`. */
export const ServerInfo = Schema.Struct({
  serverVersion: optionalSnake(Schema.NullOr(Schema.String), "server_version")
})
export type ServerInfo = typeof ServerInfo.Type

/** Users and projects are the domain entities, decoded from their wire (snake_case) form. */
export { User } from "@dstack-ts/core/wire"
export { Member as ProjectMember, Project } from "@dstack-ts/core/wire"
