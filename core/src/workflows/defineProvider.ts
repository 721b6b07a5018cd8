/**
 * `defineProvider`: a workflow provider written in TypeScript — a parameter schema and a
 * `createJobs(workflow)` that returns the jobs (plainly, as a Promise or as an Effect), with the
 * upstream Job fields. Resources are written as in YAML (`{ cpu: "2..", memory: "8GB.." }`).
 */
import { Effect, JSONSchema, Schema } from "effect"
import { ResourcesSpec } from "../domain/Resources.ts"
import * as Provider from "../ports/Provider.ts"

/** What `createJobs` is given: the workflow's name, its decoded parameters and variables. */
export interface ProviderWorkflow<P> {
  readonly name: string
  /** The workflow's parameters (its keys besides `name`, `provider`, `depends_on`), decoded. */
  readonly data: P
  readonly variables: Readonly<Record<string, string>>
  readonly runName?: string
}

/** One job as a provider writes it (the seed's `Job`). */
export interface ProviderJobInput {
  readonly image?: string
  readonly commands: ReadonlyArray<string>
  readonly env?: Readonly<Record<string, string>>
  readonly ports?: ReadonlyArray<number>
  readonly workingDir?: string
  /** Folders kept at the end of the job and given to the jobs that depend on it. */
  readonly artifacts?: ReadonlyArray<string>
  /** As in YAML: `{ cpu: "2..", memory: "8GB..", gpu: "A100:1" }`. */
  readonly resources?: typeof ResourcesSpec.Encoded
  /** Indexes of jobs of the same list this one waits for. */
  readonly dependsOn?: ReadonlyArray<number>
  /** The index of the job whose address this one gets. */
  readonly master?: number
  /** Nodes of one multi-node task (`DSTACK_NODE_RANK` 0 … N-1); 1 when absent. */
  readonly nodes?: number
}

export interface ProviderDefinition<P, I> {
  readonly name: string
  readonly description?: string
  readonly parameters: Schema.Schema<P, I>
  readonly createJobs: (
    workflow: ProviderWorkflow<P>
  ) => ReadonlyArray<ProviderJobInput> | Promise<ReadonlyArray<ProviderJobInput>> | Effect.Effect<ReadonlyArray<ProviderJobInput>, Provider.ProviderError>
}

const failure = (name: string, message: string, cause?: unknown) =>
  new Provider.ProviderError({ module: name, method: "createJobs", reason: "Invalid", message, ...(cause === undefined ? {} : { cause }) })

/**
 * @example
 * export const curl = defineProvider({
 *   name: "curl",
 *   parameters: Schema.Struct({ url: Schema.String, output: Schema.String, artifacts: Schema.optional(Schema.Array(Schema.String)) }),
 *   createJobs: ({ data }) => [{ commands: [`curl -fsSL ${data.url} -o ${data.output}`], artifacts: data.artifacts }]
 * })
 */
export const defineProvider = <P, I>(definition: ProviderDefinition<P, I>): Provider.Provider =>
  Provider.make({
    name: definition.name,
    ...(definition.description === undefined ? {} : { description: definition.description }),
    parameters: definition.parameters,
    createJobs: (data, context) =>
      Effect.gen(function*() {
        const workflow: ProviderWorkflow<P> = {
          name: context.workflowName,
          data,
          variables: context.variables ?? {},
          ...(context.runName === undefined ? {} : { runName: context.runName })
        }
        const made = yield* Effect.suspend(() => {
          const out = definition.createJobs(workflow)
          if (Effect.isEffect(out)) return out
          if (out instanceof Promise) {
            return Effect.tryPromise({ try: () => out, catch: (e) => failure(definition.name, `provider ${definition.name} failed: ${(e as Error)?.message ?? String(e)}`, e) })
          }
          return Effect.succeed(out)
        }).pipe(
          Effect.catchAllDefect((e) => Effect.fail(failure(definition.name, `provider ${definition.name} failed: ${(e as Error)?.message ?? String(e)}`, e)))
        )
        const jobs: Array<Provider.ProviderJob> = []
        for (const [i, job] of made.entries()) {
          const resources = job.resources === undefined
            ? undefined
            : yield* Schema.decodeUnknown(ResourcesSpec)(job.resources).pipe(
              Effect.mapError((e) => failure(definition.name, `provider ${definition.name} gave job ${i} invalid resources: ${e.message}`, e))
            )
          jobs.push({
            commands: [...job.commands],
            ...(job.image === undefined ? {} : { image: job.image }),
            ...(job.env === undefined ? {} : { env: { ...job.env } }),
            ...(job.ports === undefined ? {} : { ports: [...job.ports] }),
            ...(job.workingDir === undefined ? {} : { workingDir: job.workingDir }),
            ...(job.artifacts === undefined ? {} : { artifacts: [...job.artifacts] }),
            ...(resources === undefined ? {} : { resources }),
            ...(job.dependsOn === undefined ? {} : { dependsOn: [...job.dependsOn] }),
            ...(job.master === undefined ? {} : { master: job.master }),
            ...(job.nodes === undefined ? {} : { nodes: job.nodes })
          })
        }
        return jobs
      })
  })

/** The JSON Schema of a provider's parameters, for errors and docs. */
export const parametersJsonSchema = (provider: Provider.Provider): unknown => {
  try {
    return JSONSchema.make(provider.parameters)
  } catch {
    // Schemas with transformations JSON Schema cannot express are shown by their encoded side.
    return JSONSchema.make(Schema.encodedSchema(provider.parameters))
  }
}

/**
 * A provider's parameters in one line, from their JSON Schema: `script (required), args, …`.
 * Shown with a workflow's parameter errors.
 */
export const parametersSummary = (provider: Provider.Provider): string => {
  const schema = parametersJsonSchema(provider) as { properties?: Record<string, unknown>; required?: ReadonlyArray<string> }
  const required = new Set(schema.properties === undefined ? [] : schema.required ?? [])
  return Object.keys(schema.properties ?? {})
    .sort((a, b) => Number(required.has(b)) - Number(required.has(a)))
    .map((name) => (required.has(name) ? `${name} (required)` : name))
    .join(", ")
}
