// `dstack stop RUN`: stops a run gracefully, or at once with -x; a running workflow run of that
// name is stopped with all its jobs (the waiting ones never start).
import { defineCommand } from "citty"
import { clientFor, confirmOrFail, globalArgs } from "../context.ts"
import { success } from "../ui.ts"

export default defineCommand({
  meta: { name: "stop", description: "Stop a run" },
  args: {
    run: { type: "positional", description: "The run name", required: true },
    abort: { type: "boolean", alias: "x", description: "Abort at once instead of stopping gracefully" },
    yes: { type: "boolean", alias: "y", description: "Do not ask for confirmation" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    await confirmOrFail(args.yes, `${args.abort ? "Abort" : "Stop"} the run ${args.run}?`)
    const workflow = await client.workflows.get(args.run)
    if (workflow !== undefined && workflow.status === "running") {
      await client.workflows.stop(args.run, { abort: args.abort === true })
      success(`Workflow run ${args.run} ${args.abort ? "aborted" : "stopping"}: its running jobs are stopped, the waiting ones never start`)
      return
    }
    await client.runs.stop([args.run], { abort: args.abort === true })
    success(`Run ${args.run} ${args.abort ? "aborted" : "stopping"}`)
  }
})
