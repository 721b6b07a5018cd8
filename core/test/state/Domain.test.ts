// User and Project schemas: upstream wire fields in snake_case, camelCase in TypeScript.
import { expect, it } from "@effect/vitest"
import { Effect, Either, Schema } from "effect"
import { Project, User, UserWithCreds } from "../../src/domain/index.ts"

const wireUser = { id: "u1", username: "alice", created_at: "2026-01-01T00:00:00.000Z", global_role: "admin", email: null, active: true }

it.effect("decodes and encodes users with upstream field names", () =>
  Effect.gen(function* () {
    const user = yield* Schema.decodeUnknown(User)(wireUser)
    expect(user.globalRole).toBe("admin")
    expect(user.createdAt.toISOString()).toBe("2026-01-01T00:00:00.000Z")
    // Answers carry upstream's permissions, derived from the role.
    expect(yield* Schema.encode(User)(user)).toEqual({ ...wireUser, permissions: { can_create_projects: true } })
    // email and active are optional on the wire.
    const minimal = yield* Schema.decodeUnknown(User)({ id: "u2", username: "bob", created_at: "2026-01-01T00:00:00Z", global_role: "user" })
    expect(minimal.email).toBeNull()
    expect(minimal.active).toBe(true)
    const withCreds = yield* Schema.decodeUnknown(UserWithCreds)({ ...wireUser, creds: { token: "t" } })
    expect(withCreds.creds.token).toBe("t")
  }))

it.effect("rejects bad roles and names, naming the field", () =>
  Effect.gen(function* () {
    const role = yield* Effect.either(Schema.decodeUnknown(User)({ ...wireUser, global_role: "root" }))
    expect(Either.isLeft(role) && role.left.message).toContain("global_role")
    const name = yield* Effect.either(Schema.decodeUnknown(User)({ ...wireUser, username: "has space" }))
    expect(Either.isLeft(name) && name.left.message).toContain("user name")
  }))

it.effect("decodes projects with members and project roles", () =>
  Effect.gen(function* () {
    const wire = {
      project_id: "p1",
      project_name: "main",
      owner: wireUser,
      created_at: "2026-01-01T00:00:00.000Z",
      is_public: false,
      members: [{ user: wireUser, project_role: "manager" }]
    }
    const project = yield* Schema.decodeUnknown(Project)(wire)
    expect(project.projectName).toBe("main")
    expect(project.members[0].projectRole).toBe("manager")
    // Answers carry upstream's `backends` and each member's permissions, derived from the roles.
    const answerUser = { ...wireUser, permissions: { can_create_projects: true } }
    expect(yield* Schema.encode(Project)(project)).toEqual({
      ...wire,
      owner: answerUser,
      backends: [],
      members: [{ user: answerUser, project_role: "manager", permissions: { can_manage_secrets: true, can_manage_ssh_fleets: true } }]
    })
    const bad = yield* Effect.either(Schema.decodeUnknown(Project)({ ...wire, members: [{ user: wireUser, project_role: "owner" }] }))
    expect(Either.isLeft(bad) && bad.left.message).toContain("project_role")
    const badName = yield* Effect.either(Schema.decodeUnknown(Project)({ ...wire, project_name: "a/b" }))
    expect(Either.isLeft(badName)).toBe(true)
  }))
