// `dstack secret [list] | get NAME | set NAME VALUE | delete NAME`: the project's secrets, which
// runs read as `${{ secrets.NAME }}` in `env` and `registry_auth`. Needs a project admin.
import { defineCommand } from "citty"
import { globalArgs } from "../context.ts"

export default defineCommand({
  meta: { name: "secret", description: "Manage the project's secrets (`${{ secrets.NAME }}` in env and registry_auth)" },
  args: { ...globalArgs },
  subCommands: {
    list: () => import("./secret/list.ts").then((m) => m.default),
    get: () => import("./secret/get.ts").then((m) => m.default),
    set: () => import("./secret/set.ts").then((m) => m.default),
    delete: () => import("./secret/delete.ts").then((m) => m.default)
  },
  run: async (ctx) => {
    // `dstack secret` alone lists, like upstream.
    if (ctx.rawArgs.some((a) => ["list", "get", "set", "delete"].includes(a))) return
    const list = (await import("./secret/list.ts")).default
    await list.run!(ctx as never)
  }
})
