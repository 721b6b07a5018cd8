// `dstack ps`: the runs of the project, active ones by default.
import { defineCommand } from "citty"
import type { Client } from "@dstack-ts/core"
import { clientFor, globalArgs } from "../context.ts"
import { isTTY, print, table } from "../ui.ts"

const render = async (client: Client, all: boolean, json: boolean): Promise<string> => {
  const runs = await client.runs.list({ all })
  if (json) return JSON.stringify(runs.map((r) => r.entity), null, 2)
  if (runs.length === 0) return all ? "No runs" : "No active runs (use -a to show finished runs too)"
  return table(["NAME", "STATUS"], runs.map((r) => [r.name, r.status]))
}

export default defineCommand({
  meta: { name: "ps", description: "List the runs of the project" },
  args: {
    all: { type: "boolean", alias: "a", description: "Show finished runs too" },
    watch: { type: "boolean", alias: "w", description: "Refresh the list every 2 seconds until interrupted" },
    json: { type: "boolean", description: "Print the runs as JSON" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    const all = args.all === true
    const json = args.json === true
    if (!args.watch) return print(await render(client, all, json))
    for (;;) {
      const out = await render(client, all, json)
      if (isTTY()) process.stdout.write("\u001B[2J\u001B[H")
      print(out)
      await new Promise((r) => setTimeout(r, 2000))
    }
  }
})
