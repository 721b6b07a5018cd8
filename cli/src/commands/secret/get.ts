// `dstack secret get NAME`: one secret with its value (as upstream prints it).
import { defineCommand } from "citty"
import { clientFor, globalArgs } from "../../context.ts"
import { print, table } from "../../ui.ts"

export default defineCommand({
  meta: { name: "get", description: "Show a secret with its value" },
  args: {
    name: { type: "positional", description: "The name of the secret", required: true, valueHint: "name" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    const secret = await client.secrets.get(args.name)
    print(table(["NAME", "VALUE"], [[secret.name, secret.value ?? "*".repeat(6)]]))
  }
})
