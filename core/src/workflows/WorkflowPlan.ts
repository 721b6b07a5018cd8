/**
 * Planning a workflow: the workflow and its dependencies (`depends_on`, a DAG across workflows)
 * with variables interpolated, each turned into jobs by its provider, each job into a task
 * configuration for the engine. Every problem is reported at its file, line and field; cycles
 * are refused here, before anything runs. Pure apart from hashing.
 */
import { Effect, Schema } from "effect"
import { createHash } from "node:crypto"
import type { ConfigurationError, ConfigurationIssue } from "../config/ConfigurationError.ts"
import { formatPath } from "../config/Load.ts"
import { didYouMean } from "../config/DidYouMean.ts"
import { TaskConfiguration } from "../domain/Configuration.ts"
import { ResourcesSpec } from "../domain/Resources.ts"
import type * as Provider from "../ports/Provider.ts"
import { parametersSummary } from "./defineProvider.ts"
import { artifactPathProblem } from "../runner/Artifacts.ts"
import {
  failWith,
  interpolate,
  issueAt,
  issuesOfParseError,
  PROVIDERS_FILE,
  VARIABLES_FILE,
  type ProviderProgram,
  type WorkflowDefinition,
  type WorkflowFiles
} from "./WorkflowFiles.ts"

/** An installed provider and the version of the plugin that brings it (part of cache keys). */
export interface ProviderEntry {
  readonly provider: Provider.Provider
  readonly version: string
}
export type ProviderCatalog = ReadonlyMap<string, ProviderEntry>

/**
 * A provider program (`.dstack/providers.yaml`, here or in another repository) as the planner
 * sees it: its definition, the schema its parameters are checked with, and a version that moves
 * with the program, its schema and (for another repository) the commit it was fetched at.
 */
export interface ProgramEntry {
  readonly name: string
  readonly program: ProviderProgram
  /** A provider whose `parameters` check the workflow (its `createJobs` is never called). */
  readonly provider: Provider.Provider
  readonly version: string
  /** Another repository's provider: the URL and commit its program runs at. */
  readonly code?: ProgramCode
}
export interface ProgramCode {
  readonly repoUrl: string
  readonly commit: string
}
/** Provider programs by name (`curl`) or, from another repository, by `repoProviderKey`. */
export type ProgramCatalog = ReadonlyMap<string, ProgramEntry>

/** The catalog key of a provider from another repository. */
export const repoProviderKey = (repo: string, name: string): string => `${repo}#${name}`

/** The id of the job that runs a workflow's provider program. */
export const programJobId = (workflow: string): string => `${workflow}:provider`

/** The environment variables a provider program is given. */
export const PROGRAM_ENV = {
  /** JSON: `{"name": workflow, "provider": name, "data": parameters, "variables": {…}}`. */
  workflow: "DSTACK_WORKFLOW_DATA",
  provider: "DSTACK_PROVIDER"
} as const

/** What a provider program's job asks for unless its `resources` say otherwise: little. */
const PROGRAM_RESOURCES = { cpu: "1..", memory: "0.5GB..", disk: "1GB.." }

/** One job of the plan: a task run on the engine. */
export interface PlannedJob {
  /** Unique in the plan: the workflow name, with `-N` when its provider made several jobs. */
  readonly id: string
  readonly workflow: string
  readonly provider: string
  readonly job: Provider.ProviderJob
  readonly configuration: TaskConfiguration
  /** Ids of the jobs this one waits for (its own workflow's and its dependencies'). */
  readonly dependsOn: ReadonlyArray<string>
  /** The id of the job whose address this one gets (`DSTACK_MASTER_HOST`), started first. */
  readonly master?: string
  /** Folders kept at the end of the job. */
  readonly artifacts: ReadonlyArray<string>
  /** Ids of the jobs whose artifacts this one gets (its transitive dependencies). */
  readonly inputs: ReadonlyArray<string>
  /** Hash of workflow, parameters, variables used, provider and version, code and dependencies. */
  readonly cacheKey: string
  /**
   * Set on the job that runs a provider program: when it ends done, the jobs it printed take
   * the workflow's place (see `programOutputJobs`).
   */
  readonly program?: { readonly provider: string }
  /** The code of the job when it is not the run's: another repository's provider program. */
  readonly code?: ProgramCode
}

export interface WorkflowPlan {
  readonly workflow: string
  /** Variables after overrides, the ones any planned workflow uses. */
  readonly variables: Readonly<Record<string, string>>
  /** In an order where every job comes after what it depends on. */
  readonly jobs: ReadonlyArray<PlannedJob>
}

export interface PlanOptions {
  /** Variable values given on the command line (`--NAME value`). */
  readonly overrides?: Readonly<Record<string, string>>
  /** The hash of the code the run gets (revision and diff); part of cache keys. */
  readonly codeHash?: string
  /** The name the run will get, shown to providers. */
  readonly runName?: string
  /** Provider programs (`resolvePrograms`); they take precedence over plugin providers of the same name. */
  readonly programs?: ProgramCatalog
}

/** Keys of a workflow entry that are not provider parameters. */
const WORKFLOW_KEYS = new Set(["name", "provider", "depends_on", "help"])


const hash = (value: unknown): string => createHash("sha256").update(JSON.stringify(value)).digest("hex")

/** Options that are not variables: a usage problem in what was typed, not in a file. */
const commandLineIssue = (message: string): ConfigurationIssue => ({ file: "(command line)", line: 1, column: 1, path: "", message })

/**
 * Plans `workflow` with its dependencies.
 *
 * @example
 * const plan = yield* planWorkflow(files, "train", catalog, { overrides: { epochs: "3" } })
 * plan.jobs.map((j) => j.id) // ["prepare", "train"]
 */
export const planWorkflow = (
  files: WorkflowFiles,
  workflow: string,
  catalog: ProviderCatalog,
  options: PlanOptions = {}
): Effect.Effect<WorkflowPlan, ConfigurationError> =>
  Effect.gen(function*() {
    const issues: Array<ConfigurationIssue> = []
    if (!files.workflows.has(workflow)) {
      const hint = didYouMean(workflow, [...files.workflows.keys()])
      return yield* Effect.fail(failWith([commandLineIssue(
        `no workflow named ${workflow}${hint ? `; did you mean ${hint}?` : ""}; defined: ${[...files.workflows.keys()].sort().join(", ")}`
      )]))
    }

    // 1. The DAG: depth-first from the workflow, refusing unknown names and cycles.
    const order: Array<WorkflowDefinition> = []
    const state = new Map<string, "visiting" | "done">()
    const visit = (name: string, trail: ReadonlyArray<string>): void => {
      const def = files.workflows.get(name)!
      state.set(name, "visiting")
      for (const [i, dep] of (def.entry.depends_on ?? []).entries()) {
        const at = [...def.path, "depends_on", i]
        if (!files.workflows.has(dep)) {
          const hint = didYouMean(dep, [...files.workflows.keys()])
          issues.push(issueAt(def.source, at, `depends on workflow ${dep}, which is not defined${hint ? `; did you mean \`${hint}\`?` : ""}`))
        } else if (state.get(dep) === "visiting") {
          const cycle = [...trail.slice(trail.indexOf(dep)), name, dep]
          issues.push(issueAt(def.source, at, `depends_on makes a cycle: ${cycle.join(" → ")}`))
        } else if (state.get(dep) === undefined) {
          visit(dep, [...trail, name])
        }
      }
      state.set(name, "done")
      order.push(def)
    }
    visit(workflow, [])
    if (issues.length > 0) return yield* Effect.fail(failWith(issues))

    // 2. Variables: overrides must name a variable one of the planned workflows can see.
    const overrides = options.overrides ?? {}
    const visible = new Set([...files.variables.keys(), ...order.flatMap((d) => [...(files.workflowVariables.get(d.entry.name)?.keys() ?? [])])])
    for (const name of Object.keys(overrides)) {
      if (!visible.has(name)) {
        const hint = didYouMean(name, [...visible])
        issues.push(commandLineIssue(
          `--${name} is not a variable of ${workflow} or its dependencies${hint ? `; did you mean --${hint}?` : ""}; ${
            visible.size === 0 ? `define variables in ${VARIABLES_FILE}` : `variables: ${[...visible].sort().join(", ")}`
          }`
        ))
      }
    }
    if (issues.length > 0) return yield* Effect.fail(failWith(issues))

    // 3. Each workflow: parameters interpolated and decoded by its provider, then its jobs.
    const planned: Array<PlannedJob> = []
    const idsOf = new Map<string, ReadonlyArray<string>>()
    const usedVariables: Record<string, string> = {}
    for (const def of order) {
      const { entry, source, path } = def
      const scoped = files.workflowVariables.get(entry.name)
      const lookup = (name: string): string | undefined =>
        overrides[name] ?? scoped?.get(name)?.value ?? files.variables.get(name)?.value
      const known = [...new Set([...files.variables.keys(), ...(scoped?.keys() ?? [])])]
      const used = new Set<string>()
      const raw = Object.fromEntries(Object.entries(entry).filter(([k]) => !WORKFLOW_KEYS.has(k)))
      const before = issues.length
      const parameters = interpolate(raw, lookup, known, (p, message) => issues.push(issueAt(source, [...path, ...p], message)), used) as Record<string, unknown>
      const variables = Object.fromEntries([...used].sort().map((n) => [n, lookup(n)!]))
      Object.assign(usedVariables, variables)

      const programs = options.programs ?? new Map<string, ProgramEntry>()
      const ref = entry.provider
      const program = typeof ref === "string" ? programs.get(ref) : programs.get(repoProviderKey(ref.repo, ref.name))
      const providerName = typeof ref === "string" ? ref : ref.name
      if (program === undefined && typeof ref !== "string") {
        issues.push(issueAt(source, [...path, "provider", "repo"], `provider ${ref.name} of ${ref.repo} was not fetched: plan this workflow on the server`))
        continue
      }
      const found: ProviderEntry | undefined = program ?? catalog.get(providerName)
      if (found === undefined) {
        const names = [...new Set([...catalog.keys(), ...[...programs.keys()].filter((k) => !k.includes("#"))])].sort()
        const hint = didYouMean(providerName, names)
        issues.push(issueAt(source, [...path, "provider"], `no provider named ${providerName}${hint ? `; did you mean \`${hint}\`?` : ""}; installed: ${names.join(", ") || "none"}${files.providers.size === 0 ? ` (or define it in ${PROVIDERS_FILE})` : ""}`))
        continue
      }
      const decoded = Schema.decodeUnknownEither(found.provider.parameters, { errors: "all", onExcessProperty: "error" })(parameters)
      if (decoded._tag === "Left") {
        issues.push(...issuesOfParseError(source, path, decoded.left))
        const summary = parametersSummary(found.provider)
        if (summary !== "") issues.push(issueAt(source, [...path, "provider"], `provider ${providerName} takes: ${summary}`))
      }
      if (issues.length > before) continue
      if (program !== undefined) {
        const id = programJobId(entry.name)
        const upstream = (entry.depends_on ?? []).flatMap((d) => idsOf.get(d) ?? [])
        const encoded = {
          type: "task",
          ...(program.program.image === undefined ? {} : { image: program.program.image }),
          commands: program.program.commands,
          env: {
            [PROGRAM_ENV.provider]: providerName,
            [PROGRAM_ENV.workflow]: JSON.stringify({ name: entry.name, provider: providerName, data: parameters, variables })
          },
          resources: program.program.resources === undefined ? PROGRAM_RESOURCES : Schema.encodeSync(ResourcesSpec)(program.program.resources)
        }
        const configuration = Schema.decodeUnknownSync(TaskConfiguration)(encoded)
        planned.push({
          id,
          workflow: entry.name,
          provider: providerName,
          job: { commands: [...program.program.commands] },
          configuration,
          dependsOn: upstream,
          artifacts: [],
          inputs: inputsOfPlanned(planned, upstream),
          cacheKey: hash({
            workflow: entry.name,
            parameters,
            variables,
            provider: providerName,
            version: program.version,
            code: options.codeHash ?? null,
            dependencies: upstream.map((d) => planned.find((j) => j.id === d)?.cacheKey ?? d)
          }),
          program: { provider: providerName },
          ...(program.code === undefined ? {} : { code: program.code })
        })
        idsOf.set(entry.name, [id])
        continue
      }
      const made = yield* Effect.either(found.provider.createJobs(parameters, {
        workflowName: entry.name,
        ...(options.runName === undefined ? {} : { runName: options.runName }),
        variables
      }))
      if (made._tag === "Left") {
        issues.push(issueAt(source, [...path, "provider"], made.left.message ?? `provider ${providerName} refused the workflow (${made.left.reason})`))
        continue
      }
      const jobs = made.right
      if (jobs.length === 0) {
        issues.push(issueAt(source, [...path, "provider"], `provider ${providerName} made no jobs for this workflow`))
        continue
      }
      // Artifacts are folders inside the working directory: anything else is refused at its line.
      for (const [i, job] of jobs.entries()) {
        for (const [k, artifact] of (job.artifacts ?? []).entries()) {
          const problem = artifactPathProblem(artifact)
          if (problem === undefined) continue
          const at = "artifacts" in entry && jobs.length === 1 ? [...path, "artifacts", k] : [...path, "provider"]
          issues.push(issueAt(source, at, `artifact ${JSON.stringify(artifact)}${jobs.length > 1 ? ` of job ${i}` : ""} ${problem}`))
        }
      }
      if (issues.length > before) continue
      const ids = jobs.map((_, i) => (jobs.length === 1 ? entry.name : `${entry.name}-${i}`))
      const upstream = (entry.depends_on ?? []).flatMap((d) => idsOf.get(d) ?? [])
      const inputsOf = (ids: ReadonlyArray<string>) => inputsOfPlanned(planned, ids)
      for (const [i, job] of jobs.entries()) {
        const configuration = taskConfigurationOf(job)
        if (configuration._tag === "Left") {
          // The field is the job's, not the file's: reported at the workflow, named in the message.
          const at = issueAt(source, path, "")
          issues.push(...issuesOfParseError(source, [], configuration.left).map((issue) => ({
            ...at,
            message: `provider ${providerName} made job ${i} invalid: ${issue.path} ${issue.message}`
          })))
          continue
        }
        const dependsOn = [...upstream, ...(job.dependsOn ?? []).map((d) => ids[d])]
        const master = job.master === undefined ? undefined : ids[job.master]
        const dependencyKeys = dependsOn.map((d) => planned.find((j) => j.id === d)?.cacheKey ?? d)
        planned.push({
          id: ids[i],
          workflow: entry.name,
          provider: providerName,
          job,
          configuration: configuration.right,
          dependsOn,
          ...(master === undefined ? {} : { master }),
          artifacts: job.artifacts ?? [],
          inputs: inputsOf(dependsOn),
          cacheKey: hash({
            workflow: entry.name,
            job: i,
            parameters,
            variables,
            provider: providerName,
            version: found.version,
            code: options.codeHash ?? null,
            dependencies: dependencyKeys
          })
        })
      }
      idsOf.set(entry.name, ids)
    }
    if (issues.length > 0) return yield* Effect.fail(failWith(issues))
    return { workflow, variables: { ...usedVariables }, jobs: planned }
  })

/** The ids of the jobs `ids` wait for, transitively, themselves included: the jobs whose artifacts they get. */
const inputsOfPlanned = (planned: ReadonlyArray<{ readonly id: string; readonly dependsOn: ReadonlyArray<string> }>, ids: ReadonlyArray<string>): Array<string> => {
  const seen = new Set<string>()
  const walk = (id: string) => {
    const p = planned.find((j) => j.id === id)
    if (p === undefined || seen.has(id)) return
    seen.add(id)
    p.dependsOn.forEach(walk)
  }
  ids.forEach(walk)
  return [...seen]
}

/** A provider's job as the task configuration the engine runs. */
export const taskConfigurationOf = (job: Provider.ProviderJob) =>
  Schema.decodeUnknownEither(TaskConfiguration)({
    type: "task",
    ...(job.image === undefined ? {} : { image: job.image }),
    ...(job.python === undefined || job.image !== undefined ? {} : { python: job.python }),
    commands: job.commands,
    ...(job.env === undefined ? {} : { env: job.env }),
    ...(job.ports === undefined ? {} : { ports: job.ports }),
    ...(job.workingDir === undefined ? {} : { working_dir: job.workingDir }),
    ...(job.resources === undefined ? {} : { resources: Schema.encodeSync(ResourcesSpec)(job.resources) }),
    ...(job.nodes === undefined ? {} : { nodes: job.nodes })
  })

/** The catalog of providers a plugin host offers, with each plugin's version. */
export const catalogOf = (
  contributions: ReadonlyArray<{ readonly key: string; readonly value: unknown; readonly plugin: { readonly version: string } }>
): ProviderCatalog =>
  new Map(contributions.map((c) => [c.key, { provider: c.value as Provider.Provider, version: c.plugin.version }]))
