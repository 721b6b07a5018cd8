/**
 * @kubernetes/client-node, loaded the first time a kubernetes backend is made: the library is
 * large (its API classes take ~27 MB of heap and ~0.4 s to load), and a server whose projects
 * have no kubernetes backend never needs it. Everything else in this package imports its types
 * only.
 */
import type * as K8s from "@kubernetes/client-node"
import { Effect } from "effect"

let library: typeof K8s | undefined
let loading: Promise<typeof K8s> | undefined

/** The library, loaded once per process; fails with why it could not be loaded. */
export const client: Effect.Effect<typeof K8s, Error> = Effect.suspend(() =>
  library !== undefined
    ? Effect.succeed(library)
    : Effect.tryPromise({
      try: () => {
        loading ??= import("@kubernetes/client-node").then((lib) => (library = lib))
        return loading
      },
      catch: (cause) => {
        loading = undefined
        return new Error(`cannot load @kubernetes/client-node: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
      }
    }))

/**
 * An error the Kubernetes API answered (a status code and its body). Only the loaded library
 * makes them, so before it is loaded nothing is one.
 */
export const isApiException = (cause: unknown): cause is K8s.ApiException<unknown> =>
  library !== undefined && cause instanceof library.ApiException
