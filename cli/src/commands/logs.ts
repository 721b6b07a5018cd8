// `dstack logs RUN`: the log of a run (of one job: `--job N` is a node's rank of a multi-node
// task, `--replica N` a service's replica); with -f, follows it until the run finishes.
import { defineCommand } from "citty"
import { CliError, clientFor, globalArgs, usageError } from "../context.ts"

/** Parses --since: a duration back from now (`30s`, `15m`, `2h`, `1d`) or a date/time. */
export const parseSince = (value: string, now: Date = new Date()): Date => {
  const m = /^(\d+)\s*([smhd])$/.exec(value.trim())
  if (m) {
    const unit = { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as "s" | "m" | "h" | "d"]
    return new Date(now.getTime() - Number(m[1]) * unit)
  }
  const date = new Date(value)
  if (Number.isNaN(date.getTime())) throw usageError(`--since: "${value}" is neither a duration (30s, 15m, 2h, 1d) nor a date`)
  return date
}

/** A non-negative whole number option (`--job 1`); undefined when not given. */
export const parseNumber = (flag: string, value: string | undefined): number | undefined => {
  if (value === undefined) return undefined
  if (!/^\d+$/.test(value.trim())) throw usageError(`${flag}: "${value}" is not a number (0, 1, …)`)
  return Number(value)
}

export default defineCommand({
  meta: { name: "logs", description: "Print the log of a run" },
  args: {
    run: { type: "positional", description: "The run name", required: true },
    follow: { type: "boolean", alias: "f", description: "Follow the log until the run finishes" },
    since: { type: "string", description: "Only lines since a duration ago (30s, 15m, 2h, 1d) or a date", valueHint: "since" },
    diagnose: { type: "boolean", alias: "d", description: "Print the runner's diagnostic log instead" },
    replica: { type: "string", description: "The replica number (default 0)", valueHint: "N" },
    job: { type: "string", description: "The job number inside the replica: a node's rank of a multi-node task (default 0)", valueHint: "N" },
    ...globalArgs
  },
  run: async ({ args }) => {
    const since = args.since === undefined ? undefined : parseSince(args.since)
    const replicaNum = parseNumber("--replica", args.replica)
    const jobNum = parseNumber("--job", args.job)
    const client = await clientFor()
    const run = await client.runs.get(args.run)
    if (run === undefined) throw new CliError(`Run ${args.run} not found in project ${client.project}`)
    if (jobNum !== undefined || replicaNum !== undefined) {
      const jobs = run.entity.jobs.map((j) => j.jobSpec)
      if (!jobs.some((j) => j.jobNum === (jobNum ?? 0) && (j.replicaNum ?? 0) === (replicaNum ?? 0))) {
        throw new CliError(`Run ${args.run} has no job ${jobNum ?? 0} of replica ${replicaNum ?? 0}; it has: ${jobs.map((j) => `job ${j.jobNum} of replica ${j.replicaNum ?? 0}`).join(", ")}`)
      }
    }
    for await (const chunk of run.logs({ since, follow: args.follow === true, diagnose: args.diagnose === true, jobNum, replicaNum })) process.stdout.write(chunk)
  }
})
