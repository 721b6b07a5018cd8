// The server remembers who a token belongs to and each project's roles; every change to users,
// tokens, projects or members must still count from the very next request.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Layer } from "effect"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { createUserWithToken, StateStore } from "../../src/ports/StateStore.ts"
import { Access } from "../../src/server/Access.ts"
import { layer as StateAccessLayer } from "../../src/server/StateAccess.ts"
import { refreshUserSshKey } from "../../src/server/UserSshKeys.ts"
import { createServer, runOn } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"

const ADMIN = "admin-token-for-access-cache"
let server: Server

const call = async (path: string, token: string, body: unknown = {}) => {
  const res = await server.app.request(path, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
    body: JSON.stringify(body)
  })
  return { status: res.status, body: (await res.json()) as any }
}

/** Several calls, so that the answer comes from what the server remembered. */
const warm = async (path: string, token: string, body: unknown = {}) => {
  let last = await call(path, token, body)
  for (let i = 0; i < 3; i++) last = await call(path, token, body)
  return last.status
}

const createUser = async (username: string, role: "admin" | "user" = "user") => {
  const res = await call("/api/users/create", ADMIN, { username, global_role: role })
  expect(res.status).toBe(200)
  return res.body.creds.token as string
}

const store = <A, E>(f: (s: StateStore["Type"]) => Effect.Effect<A, E>) => runOn(server, Effect.flatMap(StateStore, f) as Effect.Effect<A, E, any>)

beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
}, 60_000)
afterAll(() => server?.close())

describe("server: remembered access", () => {
  it("rejects a deleted user's token on the next request", async () => {
    const token = await createUser("del-me")
    expect(await warm("/api/users/get_my_user", token)).toBe(200)
    expect((await call("/api/users/delete", ADMIN, { users: ["del-me"] })).status).toBe(200)
    expect((await call("/api/users/get_my_user", token)).status).toBe(403)
  })

  it("rejects a rotated token and a deactivated user's at once", async () => {
    const token = await createUser("rot-me")
    expect(await warm("/api/users/get_my_user", token)).toBe(200)
    const refreshed = await call("/api/users/refresh_token", token, { username: "rot-me" })
    expect(refreshed.status).toBe(200)
    expect((await call("/api/users/get_my_user", token)).status).toBe(403)
    const fresh = refreshed.body.creds.token as string
    expect(await warm("/api/users/get_my_user", fresh)).toBe(200)
    expect((await call("/api/users/update", ADMIN, { username: "rot-me", global_role: "user", active: false })).status).toBe(200)
    expect((await call("/api/users/get_my_user", fresh)).status).toBe(403)
  })

  it("applies a global role change at once", async () => {
    const token = await createUser("boss", "admin")
    expect(await warm("/api/users/list", token)).toBe(200)
    expect((await call("/api/users/update", ADMIN, { username: "boss", global_role: "user" })).status).toBe(200)
    expect((await call("/api/users/list", token)).status).toBe(200)
    expect((await call("/api/users/create", token, { username: "nope", global_role: "user" })).status).toBe(403)
  })

  it("applies member and role changes, and a deleted project, at once", async () => {
    const token = await createUser("member")
    expect((await call("/api/projects/create", ADMIN, { project_name: "team" })).status).toBe(200)
    expect(await warm("/api/projects/team/get", token)).toBe(403)
    expect((await call("/api/projects/team/add_members", ADMIN, { members: [{ username: "member", project_role: "manager" }] })).status).toBe(200)
    expect((await call("/api/projects/team/get", token)).status).toBe(200)
    // A manager's call that changes nothing, until the manager is lowered to user.
    const same = { members: [{ username: "admin", project_role: "admin" }] }
    expect(await warm("/api/projects/team/add_members", token, same)).toBe(200)
    const members = [{ username: "admin", project_role: "admin" }, { username: "member", project_role: "user" }]
    expect((await call("/api/projects/team/set_members", ADMIN, { members })).status).toBe(200)
    expect((await call("/api/projects/team/add_members", token, same)).status).toBe(403)
    expect(await warm("/api/projects/team/get", token)).toBe(200)
    expect((await call("/api/projects/team/remove_members", ADMIN, { usernames: ["member"] })).status).toBe(200)
    expect((await call("/api/projects/team/get", token)).status).toBe(403)
    expect(await warm("/api/projects/team/get", ADMIN)).toBe(200)
    expect((await call("/api/projects/delete", ADMIN, { projects_names: ["team"] })).status).toBe(200)
    expect((await call("/api/projects/team/get", ADMIN)).status).toBe(400)
  })

  it("sees changes made through the store directly, also inside a transaction", async () => {
    const token = await createUser("direct")
    expect(await warm("/api/users/get_my_user", token)).toBe(200)
    await store((s) => s.withTransaction(s.users.update("direct", { active: false })))
    expect((await call("/api/users/get_my_user", token)).status).toBe(403)
    await store((s) => s.users.update("direct", { active: true }))
    expect(await warm("/api/users/get_my_user", token)).toBe(200)
    await store((s) => s.users.delete(["direct"]))
    expect((await call("/api/users/get_my_user", token)).status).toBe(403)
  })
})

describe("server: remembered access, reads", () => {
  it("concurrent requests that miss the cache read the caller and the project once, and a change in between is seen", async () => {
    const reads = { users: 0, projects: 0 }
    const counted = Layer.effect(
      StateStore,
      Effect.map(StateStore, (s) => ({
        ...s,
        users: { ...s.users, getByTokenHash: (hash: string) => Effect.zipRight(Effect.sync(() => reads.users++), s.users.getByTokenHash(hash)) },
        projects: { ...s.projects, get: (name: string) => Effect.zipRight(Effect.sync(() => reads.projects++), s.projects.get(name)) }
      }))
    ).pipe(Layer.provide(EmbeddedStateStore.layerMemory()))
    const program = Effect.gen(function* () {
      const s = yield* StateStore
      const { token } = yield* createUserWithToken({ username: "many", globalRole: "user" })
      yield* s.projects.create({ name: "lab", owner: "many" })
      const access = yield* Access
      const principals = yield* Effect.all(Array.from({ length: 20 }, () => access.authenticate(token)), { concurrency: "unbounded" })
      expect(principals.every((p) => p?.username === "many")).toBe(true)
      expect(reads.users).toBe(1)
      const roles = yield* Effect.all(Array.from({ length: 20 }, () => access.projectRole(principals[0]!, "lab")), { concurrency: "unbounded" })
      expect(roles.every((r) => r === "admin")).toBe(true)
      expect(reads.projects).toBe(1)
      // A change while a read is in flight: the requests after it read again, and see it.
      const before = reads.users
      const [inFlight] = yield* Effect.all([access.authenticate("no-such-token"), s.users.update("many", { active: false })], { concurrency: "unbounded" })
      expect(inFlight).toBeUndefined()
      expect(yield* access.authenticate(token)).toBeUndefined()
      expect(reads.users).toBeGreaterThan(before)
    })
    await Effect.runPromise(Effect.scoped(program.pipe(Effect.provide(Layer.provideMerge(StateAccessLayer, counted)))))
  })

  it("remembers a user's SSH public key, makes it once when missing, and reads it again after a refresh", async () => {
    const reads = { keys: 0 }
    const counted = Layer.effect(
      StateStore,
      Effect.map(StateStore, (s) => ({
        ...s,
        users: { ...s.users, getSshKey: (username: string) => Effect.zipRight(Effect.sync(() => reads.keys++), s.users.getSshKey(username)) }
      }))
    ).pipe(Layer.provide(EmbeddedStateStore.layerMemory()))
    const program = Effect.gen(function* () {
      const s = yield* StateStore
      yield* createUserWithToken({ username: "keyed", globalRole: "user" })
      const access = yield* Access
      // The first use makes the pair (a write, which counts as an access change): not remembered yet.
      const made = yield* access.sshPublicKey("keyed")
      expect(made).toMatch(/^ssh-rsa AAAA\S+ keyed\n$/)
      expect((yield* s.users.getSshKey("keyed"))?.publicKey).toBe(made)
      const keys = yield* Effect.all(Array.from({ length: 10 }, () => access.sshPublicKey("keyed")), { concurrency: "unbounded" })
      expect(keys.every((k) => k === made)).toBe(true)
      const settled = reads.keys
      for (let i = 0; i < 5; i++) expect(yield* access.sshPublicKey("keyed")).toBe(made)
      expect(reads.keys).toBe(settled)
      // A refreshed pair is what the next call answers.
      const fresh = yield* refreshUserSshKey("keyed")
      expect(fresh.publicKey).not.toBe(made)
      expect(yield* access.sshPublicKey("keyed")).toBe(fresh.publicKey)
      expect(reads.keys).toBeGreaterThan(settled)
      // An unknown user is an error naming it, not a key.
      const missing = yield* Effect.flip(access.sshPublicKey("nobody-here"))
      expect(missing.message).toMatch(/nobody-here/)
    })
    await Effect.runPromise(Effect.scoped(program.pipe(Effect.provide(Layer.provideMerge(StateAccessLayer, counted)))))
  })
})
