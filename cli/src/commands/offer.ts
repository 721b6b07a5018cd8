// `dstack offer`: the offers that fit given resources, from every backend of the project.
import { defineCommand } from "citty"
import { clientFor, globalArgs, notAvailable } from "../context.ts"

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
  run: async () => {
    await clientFor()
    throw notAvailable("`dstack offer` (the offers API has not landed)")
  }
})
