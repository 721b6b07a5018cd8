// What the examples' tests share: a configuration file read as `dstack apply -f` reads it, a run
// spec for it, waiting for a run to finish, and its logs — all over the HTTP API (`Call`).
import * as path from "node:path"
import { Effect, Schema } from "effect"
import { AnyConfiguration, loadConfiguration } from "@dstack-ts/core"
import type { Call } from "./api.ts"

/** A configuration file as `dstack apply -f` reads it, encoded for the wire (`patch` over it; undefined drops a key). */
export const wireConfiguration = async (file: string, patch: Record<string, unknown> = {}) => {
  const configuration = await Effect.runPromise(loadConfiguration(path.resolve(file)))
  const wire: Record<string, unknown> = { ...(Schema.encodeSync(AnyConfiguration)(configuration) as Record<string, unknown>), ...patch }
  for (const key of Object.keys(wire)) if (wire[key] === undefined) delete wire[key]
  return wire
}

export const runSpec = (configuration: unknown, runName?: string) => ({
  ...(runName === undefined ? {} : { run_name: runName }),
  repo_id: "examples",
  repo_data: { repo_type: "virtual" },
  configuration
})

/** Polls runs/get until the run is done, failed or terminated; its answer then. */
export const waitFinished = async (call: Call, name: string, timeoutMs = 90_000) => {
  const start = Date.now()
  let run: any
  while (Date.now() - start < timeoutMs) {
    run = (await call("/api/project/main/runs/get", { run_name: name })).body
    if (["done", "failed", "terminated"].includes(run.status)) return run
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`run ${name} did not finish within ${timeoutMs} ms: ${JSON.stringify(run)}`)
}

/** The run's whole log, as one string. */
export const logsOf = async (call: Call, name: string): Promise<string> =>
  (await call("/api/project/main/logs/poll", { run_name: name })).body.logs.map((l: any) => l.message).join("")
