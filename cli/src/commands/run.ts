// `dstack run WORKFLOW [--VAR value …]`: plans a workflow of .dstack/workflows.yaml with its
// dependencies on the server, says what is cached, runs each job as a task run (dependencies
// first) following their logs, and exits with how the workflow ended.
import { defineCommand } from "citty"
import { CliError, clientFor, globalArgs, runEffect, usageError } from "../context.ts"
import { print, table, withSpinner } from "../ui.ts"

/** Options of `dstack run` itself; any other `--NAME value` after the workflow is a variable. */
const OWN_FLAGS = new Set(["-d", "--detach", "--no-cache", "-y", "--yes"])
const OWN_VALUED = new Set(["-n", "--name"])

export interface RunArgs {
  readonly workflow: string
  readonly variables: Record<string, string>
  readonly detach: boolean
  readonly noCache: boolean
  readonly name: string | undefined
}

/** Splits `dstack run`'s arguments: the workflow, its own flags, and `--NAME value` variables. */
export const parseRunArgs = (argv: ReadonlyArray<string>): RunArgs => {
  let workflow: string | undefined
  let detach = false
  let noCache = false
  let name: string | undefined
  const variables: Record<string, string> = {}
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    const [flag, inline] = arg.startsWith("--") && arg.includes("=") ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)] : [arg, undefined]
    if (OWN_FLAGS.has(flag)) {
      if (flag === "-d" || flag === "--detach") detach = true
      if (flag === "--no-cache") noCache = true
    } else if (OWN_VALUED.has(flag)) {
      const value = inline ?? argv[++i]
      if (value === undefined || value.startsWith("-")) throw usageError(`${flag} needs a run name`)
      name = value
    } else if (flag.startsWith("--") && flag.length > 2) {
      const variable = flag.slice(2)
      const value = inline ?? argv[i + 1]
      if (value === undefined || (inline === undefined && value.startsWith("--"))) throw usageError(`${flag} needs a value (variables are given as --NAME value)`)
      if (inline === undefined) i++
      variables[variable] = value
    } else if (flag.startsWith("-") && flag !== "-") {
      throw usageError(`Unknown option ${arg} for \`dstack run\``)
    } else if (workflow === undefined) {
      workflow = arg
    } else {
      throw usageError(`dstack run takes one workflow, got ${workflow} and ${arg}`)
    }
  }
  if (workflow === undefined) throw usageError("dstack run needs a workflow name (one of .dstack/workflows.yaml)")
  return { workflow, variables, detach, noCache, name }
}

/** Prefixes each complete line of a job's output with its id (several jobs share stdout). */
const lineWriter = (prefix: string | undefined) => {
  if (prefix === undefined) return { write: (chunk: Uint8Array) => void process.stdout.write(chunk), end: () => {} }
  const decoder = new TextDecoder()
  let pending = ""
  return {
    write: (chunk: Uint8Array) => {
      pending += decoder.decode(chunk, { stream: true })
      const lines = pending.split("\n")
      pending = lines.pop() ?? ""
      for (const line of lines) process.stdout.write(`${prefix}${line}\n`)
    },
    end: () => {
      if (pending !== "") process.stdout.write(`${prefix}${pending}\n`)
      pending = ""
    }
  }
}

export default defineCommand({
  meta: { name: "run", description: "Run a workflow of .dstack/workflows.yaml with its dependencies; `--NAME value` overrides a variable of .dstack/variables.yaml" },
  args: {
    workflow: { type: "positional", description: "The workflow name", required: true },
    detach: { type: "boolean", alias: "d", description: "Submit and return without following the logs (only when every dependency is cached)" },
    "no-cache": { type: "boolean", description: "Run the dependencies again even when a successful earlier run did the same" },
    name: { type: "string", alias: "n", description: "The run name of the workflow (its dependencies' runs are named after it)", valueHint: "run_name" },
    ...globalArgs
  },
  run: async ({ rawArgs }) => {
    const args = parseRunArgs(rawArgs)
    const client = await clientFor()
    const { LocalRepo } = await import("@dstack-ts/core")
    const { Workflows, readWorkflowFiles } = await import("@dstack-ts/client")
    const files = await readWorkflowFiles(process.cwd())
    const repo = await withSpinner("Packing the code", () => runEffect(LocalRepo.fromDir(process.cwd())))
    await withSpinner("Uploading the code", async () => {
      await client.repos.init(repo)
      await client.repos.upload(repo)
    })
    const plan = await withSpinner("Planning the workflow", () =>
      client.workflows.getPlan(args.workflow, { files, variables: args.variables, repo, runName: args.name }))
    const cached = args.noCache ? new Map<string, string>() : await client.workflows.cached(plan)
    const vars = Object.entries(plan.variables).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(", ")
    print(`Workflow ${plan.workflow}: ${plan.jobs.length} job(s)${vars ? `, variables ${vars}` : ""}`)
    print(table(
      ["JOB", "PROVIDER", "DEPENDS ON", "EXECUTOR", "CACHE"],
      plan.jobs.map((j) => [
        j.id,
        j.provider,
        j.dependsOn.join(", ") || "-",
        j.configuration.image ? `docker (${j.configuration.image})` : "process",
        cached.has(j.id) ? `cached (run ${cached.get(j.id)})` : args.noCache ? "run (--no-cache)" : "run"
      ])
    ))
    const toRun = plan.jobs.filter((j) => !cached.has(j.id))
    if (args.detach && toRun.length !== 1) {
      throw usageError(`-d needs every dependency of ${plan.workflow} cached and one job left to run: the dependencies run first and this client waits for them (run without -d)`)
    }
    const many = toRun.length > 1
    const writers = new Map<string, ReturnType<typeof lineWriter>>()
    const writerOf = (id: string) => {
      let w = writers.get(id)
      if (w === undefined) writers.set(id, (w = lineWriter(many ? `[${id}] ` : undefined)))
      return w
    }
    if (args.detach) {
      // What is left is one job, its dependencies cached: submit it and return.
      const job = toRun[0]
      const runName = Workflows.jobRunName(args.name ?? `${plan.workflow.slice(0, 30)}-${Math.random().toString(36).slice(2, 6)}`, job.id, plan.workflow)
      const run = await client.runs.submit(Workflows.jobConfiguration(job), { runName, repo })
      print(`Run ${run.name} submitted`)
      return
    }
    // Ctrl-C leaves the submitted runs running and submits no more (the graph runs here).
    const submitted: Array<string> = []
    const interrupted = () => {
      process.stderr.write(`\nStopped following ${plan.workflow}; no more jobs are submitted.${submitted.length > 0 ? ` Still running: ${submitted.join(", ")} (\`dstack stop NAME\` stops one).` : ""}\n`)
      process.exit(130)
    }
    process.once("SIGINT", interrupted)
    const result = await client.workflows.runPlan(plan, {
      files,
      variables: args.variables,
      repo,
      runName: args.name,
      noCache: args.noCache,
      cached,
      onEvent: (event) => {
        if (event.type === "submitted") {
          submitted.push(event.run.name)
          process.stderr.write(`Run ${event.run.name} submitted (${event.job.id})\n`)
        }
        else if (event.type === "skipped") process.stderr.write(`${event.job.id} not run: ${event.reason}\n`)
        else if (event.type === "finished") {
          submitted.splice(submitted.indexOf(event.run.name), 1)
          writerOf(event.job.id).end()
        }
      },
      onLog: (job, chunk) => writerOf(job.id).write(chunk)
    }).finally(() => process.removeListener("SIGINT", interrupted))
    if (result.status !== "done") {
      const failed = result.jobs.filter((j) => j.status !== "done" && j.status !== "cached")
      throw new CliError(`Workflow ${plan.workflow} failed: ${failed.map((j) => `${j.id}${j.runName ? ` (run ${j.runName})` : ""} ${j.status}${j.reason ? `: ${j.reason}` : ""}`).join("; ")}`)
    }
    print(`Workflow ${plan.workflow} done${result.runName ? ` (run ${result.runName})` : ""}`)
  }
})
