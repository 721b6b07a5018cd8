// `dstack ps`: the runs of the project, active ones by default.
import { defineCommand } from "citty"
import { Schema } from "effect"
import type { Client } from "@dstack-ts/client"
import { clientFor, globalArgs } from "../context.ts"
import { isTTY, print, table } from "../ui.ts"

/** "5s ago", "3m ago", "2h ago", "4d ago". */
export const ago = (date: Date, now: number = Date.now()): string => {
  const s = Math.max(0, Math.round((now - date.getTime()) / 1000))
  return s < 60 ? `${s}s ago` : s < 3600 ? `${Math.floor(s / 60)}m ago` : s < 86_400 ? `${Math.floor(s / 3600)}h ago` : `${Math.floor(s / 86_400)}d ago`
}

/** A job's status in words: its status message (a queue's reason) or why it ended, when there is one. */
const jobMessage = (sub: { readonly statusMessage?: string | undefined; readonly terminationReason?: string | undefined; readonly terminationReasonMessage?: string | undefined } | undefined): string =>
  sub === undefined ? "" : sub.statusMessage ?? [sub.terminationReason, sub.terminationReasonMessage].filter((x) => x !== undefined && x !== "").join(": ")

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
  // Verbose: a row per job, whose message says why it waits or how it ended.
  return table(["NAME", "STATUS", "SUBMITTED", "MESSAGE"], runs.flatMap((r) => [
    [r.name, r.status, ago(r.entity.submittedAt), ""],
    ...r.entity.jobs.map((job) => {
      const sub = job.jobSubmissions.at(-1)
      return [`  ${job.jobSpec.jobName}`, sub?.status ?? "", sub === undefined ? "" : ago(sub.submittedAt), jobMessage(sub)]
    })
  ]))
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
