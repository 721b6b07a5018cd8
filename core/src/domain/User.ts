/**
 * Users of a server: the account a bearer token stands for, with its global role. Wire fields
 * follow upstream (`username`, `global_role`, `created_at`, …); tokens are never part of a
 * `User`, only of `UserWithCreds`, which the server returns once when it issues one.
 */
import { Schema } from "effect"

/** A user's role across the whole server: `admin` manages users and every project. */
export const GlobalRole = Schema.Literal("admin", "user")
export type GlobalRole = typeof GlobalRole.Type

/**
 * A user name: starts with a letter or digit, then letters, digits, `-`, `_` or `.`;
 * at most 60 characters (upstream's limit for names).
 */
export const Username = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,59}$/, {
    message: () => "a user name is 1–60 letters, digits, '-', '_' or '.', starting with a letter or digit"
  })
)

/**
 * What a user may do beyond their roles (upstream's `permissions`): on this server every user
 * may create projects.
 */
export class UserPermissions extends Schema.Class<UserPermissions>("@dstack-ts/core/UserPermissions")({
  canCreateProjects: Schema.propertySignature(Schema.Boolean).pipe(Schema.fromKey("can_create_projects"))
}) {}

const EVERY_USER = new UserPermissions({ canCreateProjects: true })

/** A user as the API shows it. */
export class User extends Schema.Class<User>("@dstack-ts/core/User")({
  id: Schema.String,
  username: Username,
  createdAt: Schema.propertySignature(Schema.Date).pipe(Schema.fromKey("created_at")),
  globalRole: Schema.propertySignature(GlobalRole).pipe(Schema.fromKey("global_role")),
  email: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }),
  active: Schema.optionalWith(Schema.Boolean, { default: () => true }),
  permissions: Schema.optionalWith(UserPermissions, { default: () => EVERY_USER })
}) {}

/** The credentials a user authenticates with (`Authorization: Bearer <token>`). */
export class UserTokenCreds extends Schema.Class<UserTokenCreds>("@dstack-ts/core/UserTokenCreds")({
  token: Schema.String
}) {}

/** A user together with a freshly issued token: returned by create and refresh_token only. */
export class UserWithCreds extends Schema.Class<UserWithCreds>("@dstack-ts/core/UserWithCreds")({
  ...User.fields,
  creds: UserTokenCreds,
  /** The user's SSH key pair (upstream's user key), answered to that user only by `get_my_user` and `refresh_ssh_key`. */
  sshPublicKey: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }).pipe(Schema.fromKey("ssh_public_key")),
  sshPrivateKey: Schema.optionalWith(Schema.NullOr(Schema.String), { default: () => null }).pipe(Schema.fromKey("ssh_private_key"))
}) {}
