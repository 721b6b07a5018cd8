// `dstack server`: starts the dstack server from @dstack-ts/core's createServer. Until core
// ships createServer, it says so instead of pretending to start.
import { defineCommand } from "citty"
import { globalArgs, notAvailable, usageError } from "../context.ts"

export default defineCommand({
  meta: { name: "server", description: "Start the dstack server" },
  args: {
    host: { type: "string", description: "The address to bind", default: "127.0.0.1", valueHint: "host" },
    port: { type: "string", description: "The port to listen on", default: "3000", valueHint: "port" },
    token: { type: "string", description: "The admin token (default: DSTACK_SERVER_ADMIN_TOKEN, else a random one printed once)", valueHint: "token" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const port = Number(args.port)
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw usageError(`--port: "${args.port}" is not a port number (0–65535)`)
    const core = (await import("@dstack-ts/core")) as Record<string, unknown>
    const createServer = core.createServer
    // TODO(server): call createServer({ host, port, adminToken }) once core exports it.
    if (typeof createServer !== "function") throw notAvailable("`dstack server` (@dstack-ts/core has no createServer)")
    throw notAvailable("`dstack server` (the CLI does not wire createServer yet)")
  }
})
