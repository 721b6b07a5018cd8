// `dstack fleet list|get|delete`: the project's fleets of SSH hosts (created with `dstack apply`).
import { defineCommand } from "citty"
import type * as DstackClient from "@dstack-ts/client"
import { CliError, clientFor, confirmOrFail, globalArgs } from "../context.ts"
import { print, success, table } from "../ui.ts"

type Fleet = NonNullable<Awaited<ReturnType<DstackClient.Client["fleets"]["get"]>>>

const gib = (mib: number) => `${Math.round((mib / 1024) * 10) / 10}GB`

/** One row per instance of each fleet, as upstream's `dstack fleet` prints them. */
export const fleetRows = (fleets: ReadonlyArray<Fleet>): Array<Array<string>> =>
  fleets.flatMap((fleet) =>
    fleet.instances.length === 0
      ? [[fleet.name, "", "", "", "", fleet.status]]
      : fleet.instances.map((i, n) => {
        const r = i.instanceType.resources
        const resources = r.cpus === 0 ? "-" : `${r.cpus}xCPU, ${gib(r.memoryMib)}, ${gib(r.disk.sizeMib)} disk${r.gpus.length > 0 ? `, ${r.gpus.length}x${r.gpus[0].name}` : ""}`
        const status = i.unreachable ? `${i.status} (unreachable)` : i.status
        const why = i.terminationReason !== undefined ? ` ${i.terminationReason}${i.terminationReasonMessage ? `: ${i.terminationReasonMessage}` : ""}` : ""
        return [n === 0 ? fleet.name : "", String(i.instanceNum), i.hostname ?? "", resources, i.backend, `${status}${why}`]
      })
  )

const HEADERS = ["FLEET", "INSTANCE", "HOST", "RESOURCES", "BACKEND", "STATUS"]

const list = defineCommand({
  meta: { name: "list", description: "List the project's fleets and their instances" },
  args: { ...globalArgs },
  run: async () => {
    const client = await clientFor()
    const fleets = await client.fleets.list()
    if (fleets.length === 0) return print("No fleets. Create one with `dstack apply -f fleet.dstack.yml` (type: fleet, ssh_config).")
    print(table(HEADERS, fleetRows(fleets)))
  }
})

const get = defineCommand({
  meta: { name: "get", description: "Show one fleet and its instances" },
  args: {
    name: { type: "positional", description: "The fleet name", required: true },
    json: { type: "boolean", description: "Print the fleet as JSON (no private keys: the server never answers them)" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    const fleet = await client.fleets.get(args.name)
    if (fleet === undefined) throw new CliError(`Fleet ${args.name} does not exist in project ${client.project}`)
    if (args.json) {
      const { FleetsApi } = await import("@dstack-ts/core/wire")
      const { Schema } = await import("effect")
      return print(JSON.stringify(Schema.encodeSync(FleetsApi.Fleet)(fleet), null, 2))
    }
    print(`Fleet ${fleet.name} (${fleet.status}), placement ${fleet.spec.configuration.placement ?? "any"}`)
    print(table(HEADERS, fleetRows([fleet])))
  }
})

const del = defineCommand({
  meta: { name: "delete", description: "Delete a fleet (its hosts' runners are stopped and cleaned up), or some of its instances with -i" },
  args: {
    name: { type: "positional", description: "The fleet name", required: true },
    instance: { type: "string", alias: "i", description: "Only these instance numbers (comma-separated)", valueHint: "nums" },
    yes: { type: "boolean", alias: "y", description: "Do not ask for confirmation" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    if (args.instance !== undefined) {
      const nums = String(args.instance).split(",").map((s) => Number(s.trim()))
      if (nums.some((n) => !Number.isInteger(n) || n < 0)) throw new CliError(`--instance: expected instance numbers like 0,2, got ${args.instance}`)
      await confirmOrFail(args.yes, `Delete instance(s) ${nums.join(", ")} of fleet ${args.name}?`)
      await client.fleets.deleteInstances(args.name, nums)
      return success(`Instance(s) ${nums.join(", ")} of fleet ${args.name} are being deleted`)
    }
    await confirmOrFail(args.yes, `Delete the fleet ${args.name}?`)
    await client.fleets.delete([args.name])
    // The hosts are cleaned up in the background: wait until the fleet is gone.
    const started = Date.now()
    while (Date.now() - started < 120_000) {
      if ((await client.fleets.get(args.name)) === undefined) return success(`Fleet ${args.name} deleted`)
      await new Promise((r) => setTimeout(r, 250))
    }
    throw new CliError(`Fleet ${args.name} is still being deleted after 2 minutes: see \`dstack fleet get ${args.name}\``)
  }
})

export default defineCommand({
  meta: { name: "fleet", description: "List, show and delete fleets (create them with dstack apply)" },
  subCommands: { list, get, delete: del }
})
