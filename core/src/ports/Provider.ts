/**
 * The Provider port: a workflow provider turns a workflow's parameters (the keys of its entry in
 * `.dstack/workflows.yaml` besides `name` and `provider`) into the jobs that carry it out.
 * Each provider declares a parameter schema; `make` decodes with it and names bad fields.
 */
import { Context, Effect, Layer, ParseResult, Schema } from "effect"
import { ResourcesSpec } from "../domain/Resources.ts"
import { issuesLine, issuesOf } from "../config/Issues.ts"

// ---------------------------------------------------------------------------------------------
// Errors

export const ProviderErrorReason = Schema.Literal("NotFound", "Invalid", "Unknown")
export type ProviderErrorReason = typeof ProviderErrorReason.Type

/**
 * The one error of the Provider port.
 * - `NotFound`: no provider of that name is installed.
 * - `Invalid`: the workflow's parameters do not fit the provider's schema (the message names
 *   the field path).
 */
export class ProviderError extends Schema.TaggedError<ProviderError>("@dstack-ts/core/Provider/ProviderError")(
  "ProviderError",
  {
    module: Schema.String,
    method: Schema.String,
    reason: ProviderErrorReason,
    message: Schema.optional(Schema.String),
    cause: Schema.optional(Schema.Defect)
  }
) {
  get isRetryable(): boolean {
    return isRetryable(this)
  }
}

/** Nothing a provider refuses gets better on a second try. */
export const isRetryable = (_error: ProviderError): boolean => false

// ---------------------------------------------------------------------------------------------
// Data

const wire = <S extends Schema.Schema.Any>(schema: S, key: string) =>
  Schema.optional(schema).pipe(Schema.fromKey(key))

/**
 * One job a provider asks for, with the upstream fields of a provider's `Job`. `dependsOn` and
 * `master` name other jobs of the same list by index. `nodes` (more than 1) makes the job one
 * multi-node task: N nodes placed together on a `placement: cluster` fleet (or by a backend that
 * creates a group of instances at once), each with the `DSTACK_NODE_RANK`… variables.
 */
export const ProviderJob = Schema.Struct({
  image: Schema.optional(Schema.String),
  /** Without `image`: the Python version the host must have (`3.11`). */
  python: Schema.optional(Schema.String),
  commands: Schema.Array(Schema.String),
  env: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.String })),
  ports: Schema.optional(Schema.Array(Schema.Int)),
  workingDir: wire(Schema.String, "working_dir"),
  artifacts: Schema.optional(Schema.Array(Schema.String)),
  resources: Schema.optional(ResourcesSpec),
  dependsOn: wire(Schema.Array(Schema.NonNegativeInt), "depends_on"),
  master: Schema.optional(Schema.NonNegativeInt),
  nodes: Schema.optional(Schema.Int.pipe(Schema.positive()))
})
export type ProviderJob = typeof ProviderJob.Type

/** What a provider knows about the run it creates jobs for. */
export interface ProviderContext {
  readonly workflowName: string
  readonly runName?: string
  /** Variables from `.dstack/variables.yaml`, with the user's overrides applied. */
  readonly variables?: Readonly<Record<string, string>>
}

// ---------------------------------------------------------------------------------------------
// The port

export interface Provider {
  readonly name: string
  readonly description?: string
  /** The schema of the workflow parameters; its JSON Schema can be shown to users. */
  readonly parameters: Schema.Schema<any, any>
  /** Decodes the raw parameters and creates the jobs. */
  createJobs(parameters: unknown, context: ProviderContext): Effect.Effect<ReadonlyArray<ProviderJob>, ProviderError>
}

/** The installed providers by name (the plugin host provides them). */
export class Providers extends Context.Tag("@dstack-ts/core/Provider")<
  Providers,
  ReadonlyMap<string, Provider>
>() {}

export interface MakeOptions<P, I> {
  readonly name: string
  readonly description?: string
  readonly parameters: Schema.Schema<P, I>
  readonly createJobs: (parameters: P, context: ProviderContext) => Effect.Effect<ReadonlyArray<ProviderJob>, ProviderError>
}

/**
 * Builds a provider: parameters are decoded with the schema (unknown keys refused, as upstream's
 * `additionalProperties: false`), a decode failure is `Invalid` with the field path, and the
 * jobs' `dependsOn`/`master` indexes are checked.
 *
 * @example
 * const curl = Provider.make({
 *   name: "curl",
 *   parameters: Schema.Struct({ url: Schema.String, output: Schema.String, artifacts: Schema.optional(Schema.Array(Schema.String)) }),
 *   createJobs: (p) => Effect.succeed([{ image: "python:3.9", commands: [`curl ${p.url} -o ${p.output}`], artifacts: p.artifacts }])
 * })
 */
export const make = <P, I>(options: MakeOptions<P, I>): Provider => {
  const decode = Schema.decodeUnknown(options.parameters, { onExcessProperty: "error", errors: "all" })
  return {
    name: options.name,
    ...(options.description === undefined ? {} : { description: options.description }),
    parameters: options.parameters,
    createJobs: (parameters, context) =>
      decode(parameters).pipe(
        Effect.mapError((error) =>
          new ProviderError({
            module: options.name,
            method: "createJobs",
            reason: "Invalid",
            message: `workflow ${JSON.stringify(context.workflowName)}: the parameters of provider ${options.name} are invalid: ${issuesLine(issuesOf(error))}`,
            cause: error
          })
        ),
        Effect.flatMap((p) => options.createJobs(p, context)),
        Effect.flatMap((jobs) => {
          for (const [i, job] of jobs.entries()) {
            for (const d of [...(job.dependsOn ?? []), ...(job.master === undefined ? [] : [job.master])]) {
              if (d >= jobs.length || d === i) {
                return Effect.fail(
                  new ProviderError({
                    module: options.name,
                    method: "createJobs",
                    reason: "Invalid",
                    message: `provider ${options.name} made job ${i} refer to job ${d}, which ${d === i ? "is itself" : `does not exist (${jobs.length} jobs)`}`
                  })
                )
              }
            }
          }
          return Effect.succeed(jobs)
        })
      )
  }
}

/** Looks a provider up; `NotFound` names the installed ones. */
export const lookup = (name: string): Effect.Effect<Provider, ProviderError, Providers> =>
  Effect.flatMap(Providers, (providers) => {
    const found = providers.get(name)
    return found
      ? Effect.succeed(found)
      : Effect.fail(
        new ProviderError({
          module: "Provider",
          method: "lookup",
          reason: "NotFound",
          message: `no provider named ${JSON.stringify(name)}; installed: ${[...providers.keys()].sort().join(", ") || "none"}`
        })
      )
  })

/** Provides a fixed set of providers (tests, custom builds without the plugin host). */
export const layer = (providers: ReadonlyArray<Provider>): Layer.Layer<Providers> =>
  Layer.succeed(Providers, new Map(providers.map((p) => [p.name, p])))
