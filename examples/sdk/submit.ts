// Submitting a task from TypeScript with the SDK: the current directory is the run's code.
// Run it next to a running server: `npx tsx examples/sdk/submit.ts`.
import { LocalRepo, TaskConfiguration } from "@dstack-ts/core"
import { Client } from "@dstack-ts/client"
import { Effect, Schema } from "effect"

const client = await Client.fromConfig() // ~/.dstack/config.yml, overridable by DSTACK_* variables
const task = Schema.decodeUnknownSync(TaskConfiguration)({
  type: "task",
  commands: ["ls", "echo hello from the SDK"],
  resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }
})
const repo = await Effect.runPromise(LocalRepo.fromDir("."))
const run = await client.runs.submit(task, { repo })
console.log(`submitted ${run.name}`)
for await (const chunk of run.logs()) process.stdout.write(chunk)
await run.refresh()
console.log(`${run.name} ${run.status}`)
process.exit(run.status === "done" ? 0 : 1)
