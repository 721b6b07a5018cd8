// The Access service backed by the StateStore: tokens are looked up by their sha256 hash and
// project roles come from the project's member list.
import { Effect, Layer } from "effect"
import { StateStore, hashToken } from "../ports/StateStore.ts"
import { Access } from "./Access.ts"
import { fromStateStore } from "./ApiError.ts"

export const layer: Layer.Layer<Access, never, StateStore> = Layer.effect(
  Access,
  Effect.gen(function* () {
    const store = yield* StateStore
    return {
      authenticate: (token) =>
        hashToken(token).pipe(
          Effect.flatMap((hash) => store.users.getByTokenHash(hash)),
          Effect.map((user) => (user.active ? { username: user.username, globalRole: user.globalRole } : undefined)),
          Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined)),
          Effect.mapError(fromStateStore)
        ),
      projectRole: (principal, projectName) =>
        store.projects.get(projectName).pipe(
          Effect.map((project) => project.members.find((m) => m.user.username === principal.username)?.projectRole),
          Effect.mapError((e) => (e.reason === "NotFound" ? fromStateStore({ reason: "NotFound", message: `Project ${projectName} does not exist` }) : fromStateStore(e)))
        )
    }
  })
)
