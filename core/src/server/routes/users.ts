// /api/users/*: the signed-in user, and user administration for global admins. A token is
// returned only when it is issued (create, refresh_token): the store keeps only its hash.
import { Effect, Schema } from "effect"
import { GlobalRole, User, UserTokenCreds, UserWithCreds, Username } from "../../domain/User.ts"
import { StateStore, createUserWithToken, refreshToken } from "../../ports/StateStore.ts"
import { badRequest, excerpt, forbidden, fromStateStore } from "../ApiError.ts"
import { jsonRoute } from "../Route.ts"
import { refreshUserSshKey, userSshKey } from "../UserSshKeys.ts"
import type { RouteContext } from "../Route.ts"

const key = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(wire))

export const GetUserRequest = Schema.Struct({ username: Username })
export const CreateUserRequest = Schema.Struct({
  username: Username,
  globalRole: key(GlobalRole, "global_role"),
  email: Schema.optional(Schema.NullOr(Schema.String)),
  active: Schema.optional(Schema.Boolean)
})
export const UpdateUserRequest = CreateUserRequest
export const RefreshTokenRequest = Schema.Struct({ username: Username })
export const DeleteUsersRequest = Schema.Struct({ users: Schema.Array(Username) })

const store = StateStore

const bearerToken = (c: RouteContext["hono"]): string | undefined => /^Bearer\s+(.+)$/i.exec(c.req.header("authorization")?.trim() ?? "")?.[1]?.trim()
const userNotFound = (username: string) => fromStateStore({ reason: "NotFound", message: `User ${excerpt(username)} does not exist` })

export const userRoutes = [
  jsonRoute({
    // With the token the caller signed in with, as upstream answers (its CLI reads it back).
    method: "POST", path: "/api/users/get_my_user", summary: "The user this token belongs to, with that token", tag: "users", access: "user",
    response: UserWithCreds,
    // With the user's SSH key pair too (made on first ask), which upstream's CLI attaches with.
    handler: (_: void, ctx) =>
      Effect.gen(function* () {
        const user = yield* Effect.flatMap(store, (s) => s.users.get(ctx.principal!.username))
        const key = yield* userSshKey(user.username)
        return new UserWithCreds({ ...user, creds: new UserTokenCreds({ token: bearerToken(ctx.hono) ?? "" }), sshPublicKey: key.publicKey, sshPrivateKey: key.privateKey })
      }).pipe(Effect.mapError(fromStateStore))
  }),
  jsonRoute({
    method: "POST", path: "/api/users/list", summary: "All users", tag: "users", access: "user",
    response: Schema.Array(User),
    handler: (_: void, ctx) =>
      Effect.flatMap(store, (s) => s.users.list()).pipe(
        // Everyone may see the user list upstream (to add members); only admins see inactive users.
        Effect.map((users) => (ctx.principal!.globalRole === "admin" ? users : users.filter((u) => u.active))),
        Effect.mapError(fromStateStore)
      )
  }),
  jsonRoute({
    // Tokens are stored only as hashes, so unlike upstream this never returns one: use
    // refresh_token to issue a new token.
    method: "POST", path: "/api/users/get_user", summary: "A user (admins, or the user themself)", tag: "users", access: "user",
    request: GetUserRequest, response: User,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        if (ctx.principal!.globalRole !== "admin" && ctx.principal!.username !== input.username) {
          return yield* Effect.fail(forbidden("Only admins can look up other users"))
        }
        const s = yield* store
        return yield* s.users.get(input.username).pipe(Effect.mapError((e) => (e.reason === "NotFound" ? userNotFound(input.username) : fromStateStore(e))))
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/users/create", summary: "Create a user; the answer carries their token, shown once", tag: "users", access: "admin",
    request: CreateUserRequest, response: UserWithCreds,
    handler: (input) =>
      createUserWithToken({ username: input.username, globalRole: input.globalRole, email: input.email ?? null, active: input.active ?? true }).pipe(
        Effect.map(({ user, token }) => new UserWithCreds({ ...user, creds: new UserTokenCreds({ token }) })),
        Effect.mapError((e) => (e.reason === "AlreadyExists" ? fromStateStore({ reason: "AlreadyExists", message: `User ${excerpt(input.username)} already exists` }) : fromStateStore(e)))
      )
  }),
  jsonRoute({
    method: "POST", path: "/api/users/update", summary: "Change a user's role, email or active flag", tag: "users", access: "admin",
    request: UpdateUserRequest, response: User,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        if (input.username === ctx.principal!.username && (input.globalRole !== "admin" || input.active === false)) {
          return yield* Effect.fail(badRequest("You cannot demote or deactivate yourself", ["body", "username"]))
        }
        const s = yield* store
        return yield* s.users
          .update(input.username, { globalRole: input.globalRole, ...(input.email !== undefined ? { email: input.email } : {}), ...(input.active !== undefined ? { active: input.active } : {}) })
          .pipe(Effect.mapError((e) => (e.reason === "NotFound" ? userNotFound(input.username) : fromStateStore(e))))
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/users/refresh_token", summary: "Issue a new token; the old one stops working", tag: "users", access: "user",
    request: RefreshTokenRequest, response: UserWithCreds,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        if (ctx.principal!.globalRole !== "admin" && ctx.principal!.username !== input.username) {
          return yield* Effect.fail(forbidden("Only admins can refresh other users' tokens"))
        }
        const s = yield* store
        const notFoundAs = (e: { reason: string; message?: string }) => (e.reason === "NotFound" ? userNotFound(input.username) : fromStateStore(e))
        const token = yield* refreshToken(input.username).pipe(Effect.mapError(notFoundAs))
        const user = yield* s.users.get(input.username).pipe(Effect.mapError(notFoundAs))
        return new UserWithCreds({ ...user, creds: new UserTokenCreds({ token }) })
      })
  }),
  jsonRoute({
    // Upstream answers the user with the token the caller signed in with; only a user's own
    // token is at hand here (the store keeps hashes), so an admin refreshing another user's key
    // gets it without a token.
    method: "POST", path: "/api/users/refresh_ssh_key", summary: "Make a new SSH key pair for a user (admins, or the user themself); the old one stops working", tag: "users", access: "user",
    request: RefreshTokenRequest, response: UserWithCreds,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        if (ctx.principal!.globalRole !== "admin" && ctx.principal!.username !== input.username) {
          return yield* Effect.fail(forbidden("Only admins can refresh other users' SSH keys"))
        }
        const s = yield* store
        const notFoundAs = (e: { reason: string; message?: string }) => (e.reason === "NotFound" ? userNotFound(input.username) : fromStateStore(e))
        const key = yield* refreshUserSshKey(input.username).pipe(Effect.mapError(notFoundAs))
        const user = yield* s.users.get(input.username).pipe(Effect.mapError(notFoundAs))
        const token = ctx.principal!.username === input.username ? bearerToken(ctx.hono) ?? "" : ""
        return new UserWithCreds({ ...user, creds: new UserTokenCreds({ token }), sshPublicKey: key.publicKey, sshPrivateKey: key.privateKey })
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/users/delete", summary: "Delete users", tag: "users", access: "admin",
    request: DeleteUsersRequest, response: Schema.Struct({}),
    handler: (input, ctx) =>
      Effect.gen(function* () {
        if (input.users.includes(ctx.principal!.username)) {
          return yield* Effect.fail(badRequest("You cannot delete yourself", ["body", "users"]))
        }
        const s = yield* store
        yield* s.users.delete(input.users).pipe(Effect.mapError(fromStateStore))
        return {}
      })
  })
]
