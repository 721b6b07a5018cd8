// `dstack run WORKFLOW [--VAR value …]`: submits a workflow of .dstack/workflows.yaml to the
// server, which plans it and runs its DAG (dependencies first, cached ones reused); prints the
// plan, follows each job's log (unless -d) and exits with how the workflow ended.
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
    detach: { type: "boolean", alias: "d", description: "Submit and return: the server runs the workflow" },
    "no-cache": { type: "boolean", description: "Run the dependencies again even when a successful earlier run did the same" },
    name: { type: "string", alias: "n", description: "The name of the workflow run (its jobs' runs are named after it)", valueHint: "run_name" },
    ...globalArgs
  },
  run: async ({ rawArgs }) => {
    const args = parseRunArgs(rawArgs)
    const client = await clientFor()
    const { LocalRepo } = await import("@dstack-ts/core")
    const { readWorkflowFiles } = await import("@dstack-ts/client")
    const files = await readWorkflowFiles(process.cwd())
    const repo = await withSpinner("Packing the code", () => runEffect(LocalRepo.fromDir(process.cwd())))
    await withSpinner("Uploading the code", async () => {
      await client.repos.init(repo)
      await client.repos.upload(repo)
    })
    const submitted = await withSpinner("Planning and submitting the workflow", () =>
      client.workflows.submit(args.workflow, args.variables, { files, repo, runName: args.name, noCache: args.noCache }))
    const vars = Object.entries(submitted.variables).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k}=${v}`).join(", ")
    print(`Workflow ${submitted.workflow}: ${submitted.jobs.length} job(s)${vars ? `, variables ${vars}` : ""}`)
    print(table(
      ["JOB", "PROVIDER", "DEPENDS ON", "EXECUTOR", "ARTIFACTS", "CACHE"],
      submitted.jobs.map((j) => [
        j.id,
        j.provider,
        j.dependsOn.join(", ") || "-",
        `${j.configuration.image ? `docker (${j.configuration.image})` : "process"}${j.configuration.nodes > 1 ? `, ${j.configuration.nodes} nodes` : ""}`,
        j.artifacts.join(", ") || "-",
        j.status === "cached" ? `cached (run ${j.runName})` : args.noCache ? "run (--no-cache)" : "run"
      ])
    ))
    if (args.detach) {
      print(`Workflow run ${submitted.name} submitted; the server runs it (\`dstack run\` follows nothing with -d; \`dstack stop ${submitted.name}\` stops it)`)
      return
    }
    const many = submitted.jobs.filter((j) => j.status !== "cached").length > 1
    const writers = new Map<string, ReturnType<typeof lineWriter>>()
    // The nodes of a multi-node job each have a writer of their own: `[train/1] …`.
    const writerOf = (id: string, node?: number) => {
      const key = node === undefined ? id : `${id}/${node}`
      let w = writers.get(key)
      if (w === undefined) writers.set(key, (w = lineWriter(many || node !== undefined ? `[${key}] ` : undefined)))
      return w
    }
    // Ctrl-C stops following only: the DAG runs on the server.
    const interrupted = () => {
      process.stderr.write(`\nStopped following ${submitted.name}; it goes on on the server (\`dstack stop ${submitted.name}\` stops it).\n`)
      process.exit(130)
    }
    process.once("SIGINT", interrupted)
    const result = await client.workflows.follow(submitted, {
      onEvent: (event) => {
        if (event.type === "submitted") process.stderr.write(`Run ${event.runName} submitted (${event.job.id})\n`)
        else if (event.type === "skipped") process.stderr.write(`${event.job.id} not run: ${event.reason}\n`)
        else if (event.type === "finished") {
          for (const [key, w] of writers) if (key === event.job.id || key.startsWith(`${event.job.id}/`)) w.end()
        }
      },
      onLog: (job, chunk, node) => writerOf(job.id, node).write(chunk)
    }).finally(() => process.removeListener("SIGINT", interrupted))
    if (result.status !== "done") {
      const failed = result.jobs.filter((j) => j.status !== "done" && j.status !== "cached")
      throw new CliError(`Workflow ${result.workflow} ${result.status}: ${failed.map((j) => `${j.id}${j.runName ? ` (run ${j.runName})` : ""} ${j.status}${j.reason ? `: ${j.reason}` : ""}`).join("; ")}`)
    }
    print(`Workflow ${result.workflow} done (workflow run ${result.name}${result.runName ? `, run ${result.runName}` : ""})`)
  }
})
