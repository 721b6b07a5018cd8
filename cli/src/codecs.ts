// The codecs `dstack push` and `pull` use: the first-party handler plugins this CLI ships with,
// plus every plugin package installed in the project (found by PluginDiscovery from the current
// folder up), validated together by the plugin host. Installing a codec plugin is enough.
import type { Codec } from "@dstack-ts/core"
import { CliError } from "./context.ts"

/** The installed codecs in priority order; a refused, missing or conflicting plugin is one CliError. */
export const installedCodecs = async (): Promise<ReadonlyArray<Codec.Any>> => {
  const [{ PluginDiscovery }, { Effect, Either }, ...firstParty] = await Promise.all([
    import("@dstack-ts/core"),
    import("effect"),
    import("@dstack-ts/handler-dataframe"),
    import("@dstack-ts/handler-plot"),
    import("@dstack-ts/handler-model")
  ])
  const result = await Effect.runPromise(
    Effect.either(PluginDiscovery.load({ from: process.cwd(), include: firstParty.map((m) => m.default) }))
  )
  if (Either.isLeft(result)) throw new CliError(`The installed plugins cannot be used: ${result.left.message}`)
  return result.right.codecs()
}
