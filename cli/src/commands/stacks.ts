// `dstack stacks [list]`: your stacks and the public ones.
import { defineCommand } from "citty"
import { clientFor, globalArgs } from "../context.ts"
import { print } from "../ui.ts"

const list = defineCommand({
  meta: { name: "list", description: "List your stacks and the public ones" },
  args: { ...globalArgs },
  run: async () => {
    const client = await clientFor()
    const stacks = await client.stacks().list()
    if (stacks.length === 0) {
      print("No stacks yet: push one with `dstack push NAME FILE`")
      return
    }
    const rows = [["STACK", "ACCESS", "HEAD", "UPDATED"], ...stacks.map((s) => [s.stack, s.access, s.head ?? "-", s.updated_at])]
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)))
    for (const r of rows) print(r.map((c, i) => c.padEnd(widths[i])).join("  ").trimEnd())
  }
})

export default defineCommand({
  meta: { name: "stacks", description: "Stacks: versioned pushes of dataframes, plots and models" },
  args: { ...globalArgs },
  subCommands: { list },
  run: async (ctx) => {
    // `dstack stacks` alone lists, like `dstack stacks list`.
    if (ctx.rawArgs.some((a) => a === "list")) return
    await list.run!(ctx as never)
  }
})
