// `dstack project add|list|set-default`: the projects in ~/.dstack/config.yml. `add` checks
// the server (the token's user, then the project) before it saves anything.
import { defineCommand } from "citty"
import { Either } from "effect"
import * as DstackClient from "@dstack-ts/client"
import { Client, ClientConfigFile, ClientError } from "@dstack-ts/client"
import { CliError, confirmOrFail, globalArgs, runEffect, usageError } from "../context.ts"
import { dim, isTTY, print, success, table, withSpinner } from "../ui.ts"

const configPath = () => ClientConfigFile.defaultConfigPath()
const load = async (): Promise<DstackClient.ClientConfig> => (await runEffect(ClientConfigFile.loadConfigFile(configPath()))) ?? { projects: [] }
const save = (config: DstackClient.ClientConfig) => runEffect(ClientConfigFile.saveConfigFile(configPath(), config))

const add = defineCommand({
  meta: { name: "add", description: "Add a project to ~/.dstack/config.yml (or replace it), after checking it on the server" },
  args: {
    name: { type: "string", description: "The project name", required: true, valueHint: "name" },
    url: { type: "string", description: "The server URL, e.g. http://localhost:3000", required: true, valueHint: "url" },
    token: { type: "string", description: "The user token", required: true, valueHint: "token" },
    yes: { type: "boolean", alias: "y", description: "Replace a configured project of the same name without asking" },
    default: { type: "boolean", default: true, description: "Make it the default project", negativeDescription: "Keep the current default project" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const url = Either.getOrElse(DstackClient.validateServerUrl(args.url), (message) => {
      throw usageError(`--url: ${message}`)
    })
    const client = Client.connect({ name: args.name, url, token: args.token })
    const user = await withSpinner(`Checking project ${args.name} on ${url}`, async () => {
      const me = await client.users.getMyUser()
      await client.projects.get(args.name).catch((e: unknown) => {
        if (e instanceof ClientError && e.reason === "NotFound") throw new CliError(`Project ${args.name} not found on ${url}`)
        if (e instanceof ClientError && e.reason === "Forbidden") throw new CliError(`User ${me.username} is not a member of project ${args.name} on ${url}`)
        throw e
      })
      return me
    })
    const config = await load()
    const existing = config.projects.find((p) => p.name === args.name)
    if (existing && (existing.url !== url || existing.token !== args.token)) {
      await confirmOrFail(args.yes, `Project ${args.name} is already configured (${existing.url}). Replace it?`)
    }
    await save(DstackClient.upsertProject(config, { name: args.name, url, token: args.token }, args.default !== false))
    success(`Project ${args.name} on ${url} (user ${user.username}) saved to ${configPath()}`)
  }
})

const list = defineCommand({
  meta: { name: "list", description: "List the projects in ~/.dstack/config.yml" },
  args: { ...globalArgs },
  run: async () => {
    const config = await load()
    if (config.projects.length === 0) {
      print(`No projects in ${configPath()}. Add one with \`dstack project add --name NAME --url URL --token TOKEN\``)
      return
    }
    const mask = (token: string) => (token.length <= 8 ? "****" : `${token.slice(0, 4)}…${token.slice(-2)}`)
    const rows = config.projects.map((p) => [p.name, p.url, mask(p.token), p.default ? (isTTY() ? "✓" : "yes") : ""])
    print(table(["PROJECT", "URL", "TOKEN", "DEFAULT"], rows))
    if (isTTY()) print(dim(configPath()))
  }
})

const setDefault = defineCommand({
  meta: { name: "set-default", description: "Make a configured project the default" },
  args: {
    name: { type: "positional", description: "The project name", required: true },
    ...globalArgs
  },
  run: async ({ args }) => {
    const config = await load()
    const updated = DstackClient.setDefaultProject(config, args.name)
    if (updated === undefined) {
      const names = config.projects.map((p) => p.name)
      throw new CliError(`Project ${args.name} is not configured in ${configPath()}${names.length > 0 ? ` (configured: ${names.join(", ")})` : ""}`)
    }
    await save(updated)
    success(`Default project: ${args.name}`)
  }
})

export default defineCommand({
  meta: { name: "project", description: "Manage the projects this CLI talks to (~/.dstack/config.yml)" },
  subCommands: { add, list, "set-default": setDefault }
})
