/**
 * A TypeScript workflow provider: seed-003's `curl` example written with `defineProvider`, in a
 * plugin a custom server build lists (`createServer({ plugins: [..., tsCurlPlugin] })`). A
 * workflow uses it as `provider: ts-curl` with `url` and `output`.
 */
import { Schema } from "effect"
import { definePlugin, defineProvider, type Provider } from "@dstack-ts/core"

export const tsCurl: Provider.Provider = defineProvider({
  name: "ts-curl",
  description: "Downloads url to output with curl, then prints it",
  parameters: Schema.Struct({ url: Schema.String, output: Schema.String }),
  createJobs: ({ data }) => [{
    commands: [`curl -fsS '${data.url}' -o '${data.output}'`, `cat '${data.output}'`],
    resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }
  }]
})

export default definePlugin({
  name: "@example/provider-ts-curl",
  version: "1.0.0",
  core: "^0.1.0",
  providers: { "ts-curl": tsCurl }
})
