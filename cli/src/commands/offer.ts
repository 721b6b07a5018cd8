// `dstack offer`: the offers that fit given resources, from every backend of the project — the
// plan of a run without running it. When nothing fits it says which requirement excluded what.
import { defineCommand } from "citty"
import { CliError, clientFor, globalArgs, usageError } from "../context.ts"
import { print, table, withSpinner } from "../ui.ts"

const gib = (mib: number) => `${Math.round((mib / 1024) * 10) / 10}GB`

export default defineCommand({
  meta: { name: "offer", description: "List the offers that fit the given resources" },
  args: {
    gpu: { type: "string", description: "GPU requirements, e.g. A100:80GB:2", valueHint: "spec" },
    cpu: { type: "string", description: "CPU cores, e.g. 4.. (default 2..)", valueHint: "spec" },
    memory: { type: "string", description: "Memory, e.g. 16GB.. (default 8GB..)", valueHint: "size" },
    disk: { type: "string", description: "Disk, e.g. 200GB.. (default 100GB..)", valueHint: "size" },
    backend: { type: "string", alias: "b", description: "Only this backend", valueHint: "backend" },
    region: { type: "string", alias: "r", description: "Only this region", valueHint: "region" },
    "spot-policy": { type: "enum", options: ["spot", "on-demand", "auto"], description: "Spot or on-demand instances" },
    "max-price": { type: "string", description: "The maximum price per hour, in dollars", valueHint: "price" },
    json: { type: "boolean", description: "Print the offers as JSON" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const { Schema } = await import("effect")
    const { TaskConfiguration } = await import("@dstack-ts/core")
    const maxPrice = args["max-price"] === undefined ? undefined : Number(args["max-price"])
    if (maxPrice !== undefined && !(maxPrice >= 0)) throw usageError(`--max-price: "${args["max-price"]}" is not a price in dollars`)
    const resources = Object.fromEntries(
      Object.entries({ gpu: args.gpu, cpu: args.cpu, memory: args.memory, disk: args.disk }).filter(([, v]) => v !== undefined)
    )
    const decoded = Schema.decodeUnknownEither(TaskConfiguration)({
      type: "task",
      commands: [":"],
      resources,
      ...(args.backend ? { backends: [args.backend] } : {}),
      ...(args.region ? { regions: [args.region] } : {}),
      ...(args["spot-policy"] ? { spot_policy: args["spot-policy"] } : {}),
      ...(maxPrice !== undefined ? { max_price: maxPrice } : {})
    })
    if (decoded._tag === "Left") throw usageError(`Invalid requirements: ${decoded.left.message}`)
    const client = await clientFor()
    const plan = await withSpinner("Getting offers", () => client.runs.getPlan(decoded.right))
    const job = plan.jobPlans[0]
    if (args.json) {
      print(JSON.stringify({ total_offers: job?.totalOffers ?? 0, offers: job?.offers ?? [], no_offers_reason: job?.noOffersReason ?? null }, null, 2))
      return
    }
    if (job === undefined || job.offers.length === 0) throw new CliError(`No offers: ${job?.noOffersReason ?? "nothing fits"}`)
    print(
      table(
        ["#", "BACKEND", "REGION", "INSTANCE", "RESOURCES", "SPOT", "PRICE", "AVAILABILITY"],
        job.offers.map((o, i) => {
          const r = o.instance.resources
          const gpus = r.gpus.length === 0 ? "" : `, ${r.gpus.length}x${r.gpus[0].name} (${gib(r.gpus[0].memoryMib)})`
          return [String(i + 1), o.backend, o.region, o.instance.name, `${r.cpus}xCPU, ${gib(r.memoryMib)}, ${gib(r.disk.sizeMib)} disk${gpus}`, r.spot ? "yes" : "no", `$${o.price}`, o.availability]
        })
      )
    )
    if (job.totalOffers > job.offers.length) print(`… ${job.totalOffers - job.offers.length} more`)
  }
})
