/**
 * The `users` table of the SQL state store: accounts, their global role, and the hash of each
 * one's API token (the token itself is never stored). Projects read users through the row
 * reader exported here, since a project's owner and members are users.
 */
import { Effect } from "effect"
import { GlobalRole, User, Username } from "../../domain/User.ts"
import { StateStoreError, type UserSshKeyPair, type Users } from "../../ports/StateStore.ts"
import type { Row } from "../SqlDriver.ts"
import type { SqlContext } from "./Context.ts"
import { failWith, MODULE, toStoreError, validate } from "./Errors.ts"
import { Params, toDate } from "./Statements.ts"

/** The columns `userFromRow` reads. */
export const USER_COLUMNS = "id, username, global_role, email, created_at, active"

/** A user from a row holding `USER_COLUMNS`, each named with `prefix` when a join needs one. */
export const userFromRow = (r: Row, prefix = ""): User =>
  new User(
    {
      id: String(r[`${prefix}id`]),
      username: String(r[`${prefix}username`]),
      createdAt: toDate(r[`${prefix}created_at`]),
      // The column's CHECK constraint admits only the roles GlobalRole has.
      globalRole: r[`${prefix}global_role`] as GlobalRole,
      email: (r[`${prefix}email`] as string | null) ?? null,
      active: Boolean(r[`${prefix}active`])
    },
    true
  )

export const make = ({ sql, accessWrite }: SqlContext): Users => {
  const getUser = (method: string, column: "username" | "token_hash", value: string) =>
    sql(`SELECT ${USER_COLUMNS} FROM users WHERE ${column} = $1`, [value]).pipe(
      Effect.mapError(toStoreError(method)),
      Effect.flatMap((rows) =>
        rows.length === 0
          ? failWith(method, "NotFound", column === "username" ? `no user named '${value}'` : "no user has this token")
          : Effect.succeed(userFromRow(rows[0]))
      )
    )

  return {
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
      )),
    getSshKey: (username) =>
      sql(`SELECT ssh_public_key, ssh_private_key FROM users WHERE username = $1`, [username]).pipe(
        Effect.mapError(toStoreError("users.getSshKey")),
        Effect.flatMap((rows) =>
          rows.length === 0 ? failWith("users.getSshKey", "NotFound", `no user named '${username}'`) : Effect.succeed(keyFromRow(rows[0]))
        )
      ),
    setSshKey: (username, key, options) =>
      accessWrite(Effect.gen(function* () {
        const guard = options?.onlyIfMissing === true ? " AND ssh_private_key IS NULL" : ""
        const rows = yield* sql(
          `UPDATE users SET ssh_public_key = $1, ssh_private_key = $2 WHERE username = $3${guard} RETURNING ssh_public_key, ssh_private_key`,
          [key.publicKey, key.privateKey, username]
        ).pipe(Effect.mapError(toStoreError("users.setSshKey")))
        if (rows.length > 0) return keyFromRow(rows[0])!
        // No row updated: the user is unknown, or (onlyIfMissing) already has a pair.
        const existing = yield* sql(`SELECT ssh_public_key, ssh_private_key FROM users WHERE username = $1`, [username]).pipe(
          Effect.mapError(toStoreError("users.setSshKey"))
        )
        const pair = existing.length === 0 ? null : keyFromRow(existing[0])
        return pair ?? (yield* failWith("users.setSshKey", "NotFound", `no user named '${username}'`))
      }))
  }
}

const keyFromRow = (r: Row): UserSshKeyPair | null =>
  typeof r.ssh_public_key === "string" && typeof r.ssh_private_key === "string"
    ? { publicKey: r.ssh_public_key, privateKey: r.ssh_private_key }
    : null
