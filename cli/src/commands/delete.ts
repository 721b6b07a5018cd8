// `dstack delete RUN`: deletes a finished run and its logs.
import { defineCommand } from "citty"
import { clientFor, confirmOrFail, globalArgs } from "../context.ts"
import { success } from "../ui.ts"

export default defineCommand({
  meta: { name: "delete", description: "Delete a finished run" },
  args: {
    run: { type: "positional", description: "The run name", required: true },
    yes: { type: "boolean", alias: "y", description: "Do not ask for confirmation" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    await confirmOrFail(args.yes, `Delete the run ${args.run}?`)
    await client.runs.delete([args.run])
    success(`Run ${args.run} deleted`)
  }
})
