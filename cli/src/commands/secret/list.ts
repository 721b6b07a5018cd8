// `dstack secret list`: the project's secret names; values are never shown here.
import { defineCommand } from "citty"
import { clientFor, globalArgs } from "../../context.ts"
import { print, table } from "../../ui.ts"

export default defineCommand({
  meta: { name: "list", description: "List the project's secrets (names only)" },
  args: { ...globalArgs },
  run: async () => {
    const client = await clientFor()
    const secrets = await client.secrets.list()
    if (secrets.length === 0) {
      print(`No secrets in project ${client.project}: set one with \`dstack secret set NAME VALUE\``)
      return
    }
    print(table(["NAME", "VALUE"], secrets.map((s) => [s.name, "*".repeat(6)])))
  }
})
