// `dstack secret delete NAME`: deletes a secret after asking (or with -y).
import { defineCommand } from "citty"
import { clientFor, confirmOrFail, globalArgs } from "../../context.ts"
import { success } from "../../ui.ts"

export default defineCommand({
  meta: { name: "delete", description: "Delete a secret" },
  args: {
    name: { type: "positional", description: "The name of the secret", required: true, valueHint: "name" },
    yes: { type: "boolean", alias: "y", description: "Don't ask for confirmation" },
    ...globalArgs
  },
  run: async ({ args }) => {
    await confirmOrFail(args.yes, `Delete the secret ${args.name}?`)
    const client = await clientFor()
    await client.secrets.delete([args.name])
    success(`Secret ${args.name} deleted from project ${client.project}`)
  }
})
