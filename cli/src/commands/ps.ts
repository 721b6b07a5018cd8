// `dstack ps`: the runs of the project, active ones by default.
import { defineCommand } from "citty"
import { Schema } from "effect"
import type { Client, Services } from "@dstack-ts/client"
import { clientFor, globalArgs } from "../context.ts"
import { isTTY, print, table } from "../ui.ts"

/** "5s ago", "3m ago", "2h ago", "4d ago". */
export const ago = (date: Date, now: number = Date.now()): string => {
  const s = Math.max(0, Math.round((now - date.getTime()) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : s < 86_400 ? `${Math.floor(s / 3600)}h ago` : `${Math.floor(s / 86_400)}d ago`
}

/**
 * A job's status in words: why it ended, or its status message while it says more than its
 * status (a queue's reason; the server answers upstream's message, often the status itself).
 */
const jobMessage = (sub: { readonly status: string; readonly statusMessage?: string | undefined; readonly terminationReason?: string | undefined; readonly terminationReasonMessage?: string | undefined } | undefined): string =>
  sub === undefined
    ? ""
    : sub.terminationReason !== undefined
    ? [sub.terminationReason, sub.terminationReasonMessage].filter((x) => x !== undefined && x !== "").join(": ")
    : sub.statusMessage !== undefined && sub.statusMessage !== sub.status
    ? sub.statusMessage
    : ""

/** The runs as `dstack ps` prints them; `verbose` adds a row per job with its status message. */
export const render = async (client: Client, all: boolean, json: boolean, verbose = false): Promise<string> => {
  const runs = await client.runs.list({ all })
  if (json) {
    // The wire (snake_case) form, as the API returns it.
    const { Run } = await import("@dstack-ts/core")
    return JSON.stringify(Schema.encodeSync(Schema.Array(Run))(runs.map((r) => r.entity)), null, 2)
  }
  if (runs.length === 0) return all ? "No runs" : "No active runs (use -a to show finished runs too)"
  // Why a run failed, from its failed job (an ERROR column only when some run has one).
  const errors = runs.map((r) => {
    if (r.status !== "failed" && r.status !== "terminated") return ""
    const sub = r.entity.jobs.map((j) => j.jobSubmissions.at(-1)).find((s) => s?.status === "failed") ?? r.entity.jobs[0]?.jobSubmissions.at(-1)
    if (sub?.terminationReason === undefined) return ""
    const message = sub.terminationReasonMessage ?? ""
    return `${sub.terminationReason.replaceAll("_", " ")}${message === "" ? "" : `: ${message.length > 120 ? `${message.slice(0, 119)}…` : message}`}`
  })
  if (!verbose) {
    if (errors.every((e) => e === "")) return table(["NAME", "STATUS", "SUBMITTED"], runs.map((r) => [r.name, r.status, ago(r.entity.submittedAt)]))
    return table(["NAME", "STATUS", "SUBMITTED", "ERROR"], runs.map((r, i) => [r.name, r.status, ago(r.entity.submittedAt), errors[i]]))
  }
  // Verbose: a row per job, whose message says why it waits or how it ended; a service's row
  // says how the server's proxy sees it (and what a rolling deployment waits for), and names
  // each submission's deployment as upstream's `ps -v` does.
  const services = await Promise.all(runs.map((r) =>
    r.entity.runSpec.configuration.type !== "service" || isFinished(r.status)
      ? Promise.resolve("")
      : client.services.get(r.name).then(
        (info) => (info === undefined ? "" : serviceMessage(info)),
        (error: unknown) => `service details unavailable: ${error instanceof Error ? error.message : String(error)}`
      )))
  return table(["NAME", "STATUS", "SUBMITTED", "MESSAGE"], runs.flatMap((r, i) => {
    const service = r.entity.runSpec.configuration.type === "service"
    return [
      [service ? `${r.name} deployment=${r.entity.deploymentNum}` : r.name, r.status, ago(r.entity.submittedAt), services[i] || errors[i]],
      ...r.entity.jobs.map((job) => {
        const sub = job.jobSubmissions.at(-1)
        const name = `  ${job.jobSpec.jobName}${service && sub !== undefined ? ` deployment=${sub.deploymentNum}` : ""}`
        return [name, sub?.status ?? "", sub === undefined ? "" : ago(sub.submittedAt), jobMessage(sub)]
      })
    ]
  }))
}

const isFinished = (status: string): boolean => ["terminated", "failed", "done"].includes(status)

/** A service in a line: its replicas in rotation, traffic, and a rolling deployment's progress. */
export const serviceMessage = (info: Services.ServiceInfo): string => {
  const inRotation = info.replicas.filter((r) => r.inRotation).length
  const parts = [
    `${inRotation}/${info.desiredReplicas} replicas in rotation`,
    `${info.requests} requests (${info.errors} errors)`,
    `${info.rps.toFixed(1)} req/s`,
    ...(info.latencyP99Ms !== undefined ? [`p99 ${Math.round(info.latencyP99Ms)} ms`] : [])
  ]
  return info.deployment !== undefined ? `${info.deployment.message}; ${parts.join(", ")}` : parts.join(", ")
}

export default defineCommand({
  meta: { name: "ps", description: "List the runs of the project" },
  args: {
    all: { type: "boolean", alias: "a", description: "Show finished runs too" },
    watch: { type: "boolean", alias: "w", description: "Refresh the list every 2 seconds until interrupted" },
    json: { type: "boolean", description: "Print the runs as JSON" },
    verbose: { type: "boolean", alias: "v", description: "Show each job with its status message (why it waits, why it ended)" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const client = await clientFor()
    const all = args.all === true
    const json = args.json === true
    const verbose = args.verbose === true
    if (!args.watch) return print(await render(client, all, json, verbose))
    for (;;) {
      const out = await render(client, all, json, verbose)
      if (isTTY()) process.stdout.write("\u001B[2J\u001B[H")
      print(out)
      await new Promise((r) => setTimeout(r, 2000))
    }
  }
})
