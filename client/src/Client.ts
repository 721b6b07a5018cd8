/**
 * The Promise client for everyone (upstream `dstack.api.Client`):
 *
 * @example
 * const client = await Client.fromConfig()            // ~/.dstack/config.yml, env, options
 * const me = await client.users.getMyUser()
 * const runs = await client.runs.list({ all: true })
 *
 * Each call runs one Effect from the `DstackApi` underneath and rejects with the
 * `ClientError` itself (never a wrapped fiber failure).
 */
import { Cause, Effect, Either, Exit, Option, Schema, Stream } from "effect"
import { ClientConfigError, ClientError } from "./ClientError.ts"
import { resolveProject } from "./ClientConfig.ts"
import type { ClientEnv, ClientOptions, ResolvedProject } from "./ClientConfig.ts"
import * as DstackApi from "./DstackApi.ts"
import type { DstackApiOptions, DstackApiShape } from "./DstackApi.ts"
import { Run, runDataOf } from "./Run.ts"
import type { RunOperations } from "./Run.ts"
import { configFileReader, portForwarder, workflowFilesReader } from "./Platform.ts"
import { runLogs } from "./RunLogs.ts"
import * as Secrets from "./Secrets.ts"
import * as Services from "./Services.ts"
import * as Stacks from "./Stacks.ts"
import * as Workflows from "./Workflows.ts"
import type { Project, ServerInfo, User } from "./Wire.ts"
import type { AnyRunConfiguration } from "@dstack-ts/core/wire"
import { RunSpec } from "@dstack-ts/core/wire"
import type { Run as RunEntity } from "@dstack-ts/core/wire"
import type { RunPlan } from "@dstack-ts/core/wire"
import { RunRepoData } from "@dstack-ts/core/wire"
import type { RepoCode } from "@dstack-ts/core/wire"
import { FleetSpec } from "@dstack-ts/core/wire"
import type { Fleet, FleetConfiguration, FleetPlan } from "@dstack-ts/core/wire"

/** Options of `Client.fromConfig`. */
export interface FromConfigOptions extends ClientOptions {
  /** The config file to read instead of `~/.dstack/config.yml`. */
  readonly configPath?: string | undefined
  /** The environment to read `DSTACK_*` and `HOME` from (default: the process's). */
  readonly env?: (ClientEnv & { readonly HOME?: string | undefined }) | undefined
  /** Transport settings passed to the API (fetch, retries, timeout). */
  readonly transport?: Omit<DstackApiOptions, "url" | "token" | "project"> | undefined
}

/** Options of `runs.list`. */
export interface ListRunsOptions {
  /** Finished runs too, not only active ones (upstream `all`). */
  readonly all?: boolean | undefined
}

/** Options of `runs.getPlan` and `runs.submit` when given a configuration. */
export interface SubmitOptions {
  /** The run name (default: the configuration's `name`, else one the server picks). */
  readonly runName?: string | undefined
  /** The repo id of already initialised and uploaded code; without one the run has no repo. */
  readonly repoId?: string | undefined
  /**
   * Code for the run (`LocalRepo.fromDir(".")`, `RemoteRepo`, `VirtualRepo`): `submit`
   * registers and uploads it (an unchanged repo is not uploaded twice) and the job gets it.
   */
  readonly repo?: RepoCode | undefined
}

/** The run spec of a configuration without a repo (upstream: a virtual repo). */
const toRunSpec = (configuration: AnyRunConfiguration | RunSpec, options: SubmitOptions): RunSpec => {
  if (configuration instanceof RunSpec) return options.runName ? new RunSpec({ ...configuration, runName: options.runName }) : configuration
  const runName = options.runName ?? (configuration as { readonly name?: string }).name
  const repo = options.repo
  return new RunSpec({
    ...(runName ? { runName } : {}),
    repoId: repo?.repoId ?? options.repoId ?? "virtual",
    repoData: repo?.repoData ?? { repoType: "virtual" as const },
    ...(repo ? { repoCodeHash: repo.codeHash } : {}),
    configuration
  })
}

/** Runs an Effect at the edge, rejecting with its typed error. */
const runPromise = async <A, E>(effect: Effect.Effect<A, E>): Promise<A> => {
  const exit = await Effect.runPromiseExit(effect)
  if (Exit.isSuccess(exit)) return exit.value
  const failure = Cause.failureOption(exit.cause)
  if (Option.isSome(failure)) throw failure.value
  throw Cause.squash(exit.cause)
}

const envOfProcess = (): Record<string, string | undefined> =>
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {}

export class Client {
  /** The Effect API underneath, for Effect programs. */
  readonly api: DstackApiShape
  /** The project this client acts on. */
  readonly project: string
  /** The server URL. */
  readonly url: string

  /** The user token (kept for the stacks module, which talks to the server on its own). */
  readonly #token: string

  private constructor(project: ResolvedProject, transport: FromConfigOptions["transport"] = {}) {
    this.api = DstackApi.make({ ...transport, url: project.url, token: project.token, project: project.name })
    this.#token = project.token
    this.project = project.name
    this.url = this.api.url
  }

  /**
   * A client from `~/.dstack/config.yml`, overridden by `DSTACK_SERVER_URL`, `DSTACK_TOKEN`,
   * `DSTACK_PROJECT` and by explicit options. Rejects with a `ClientConfigError` that says
   * what to run when no project is configured.
   */
  static async fromConfig(options: FromConfigOptions = {}): Promise<Client> {
    const env = options.env ?? envOfProcess()
    const url = options.serverUrl ?? env.DSTACK_SERVER_URL
    const token = options.userToken ?? env.DSTACK_TOKEN
    let project: ResolvedProject
    if (url && token) {
      // Everything is at hand: no file access, so this path works in a browser.
      const resolved = resolveProject(undefined, options, env, options.configPath ?? "~/.dstack/config.yml")
      if (Either.isLeft(resolved)) throw resolved.left
      project = resolved.right
    } else {
      project = await runPromise(configFileReader()(options, env))
    }
    return new Client(project, options.transport)
  }

  /** A client for a known server, project and token; never reads a file. */
  static connect(project: ResolvedProject, transport?: FromConfigOptions["transport"]): Client {
    return new Client(project, transport)
  }

  /**
   * Stacks on this client's server and token: `push`, `pull`, `frame` (see Stacks.ts). Pass
   * the installed handler plugins' codecs; named profiles come from the client config.
   */
  stacks(options: Omit<Stacks.StacksOptions, "url" | "token"> = {}): Stacks.Stacks {
    return Stacks.make({ resolveProfile: Stacks.configProfiles(), ...options, url: this.url, token: this.#token })
  }

  readonly server = {
    /** The server's version. */
    getInfo: (): Promise<ServerInfo> => runPromise(this.api.server.getInfo())
  }

  readonly users = {
    /** The user this client's token belongs to. */
    getMyUser: (): Promise<User> => runPromise(this.api.users.getMyUser())
  }

  readonly projects = {
    /** The projects the user is a member of. */
    list: (): Promise<ReadonlyArray<Project>> => runPromise(this.api.projects.list()),
    /** One project; the client's project by default. */
    get: (name?: string): Promise<Project> => runPromise(this.api.projects.get(name))
  }

  readonly runs = {
    /** Plans a run: the offers that fit a configuration (or a full `RunSpec`). */
    getPlan: (configuration: AnyRunConfiguration | RunSpec, options: SubmitOptions = {}): Promise<RunPlan> =>
      runPromise(this.api.runs.getPlan(toRunSpec(configuration, options))),
    /** Submits a plan returned by `getPlan`; `force` re-creates a run that did not change. */
    apply: async (plan: RunPlan, options: { readonly force?: boolean } = {}): Promise<Run> =>
      this.toRun(await runPromise(this.api.runs.apply(plan, options.force === true))),
    /** Plans and applies in one step (upstream `runs.submit`). */
    submit: async (configuration: AnyRunConfiguration | RunSpec, options: SubmitOptions = {}): Promise<Run> => {
      if (options.repo) {
        await this.repos.init(options.repo)
        await this.repos.upload(options.repo)
      }
      const plan = await this.runs.getPlan(configuration, options)
      return this.runs.apply(plan)
    },
    /** The run with this name, or undefined when there is none. */
    get: async (runName: string): Promise<Run | undefined> => {
      const exit = await Effect.runPromiseExit(this.api.runs.get(runName))
      if (Exit.isSuccess(exit)) return this.toRun(exit.value)
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure) && failure.value.reason === "NotFound") return undefined
      throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
    },
    /** Active runs, or all runs with `all: true`, newest first. */
    list: async (options: ListRunsOptions = {}): Promise<ReadonlyArray<Run>> =>
      (await runPromise(this.api.runs.list({ all: options.all === true }))).map((entity) => this.toRun(entity)),
    /** Stops runs by name: gracefully, or at once with `abort`. */
    stop: (runNames: ReadonlyArray<string>, options: { readonly abort?: boolean } = {}): Promise<void> =>
      runPromise(this.api.runs.stop(runNames, options.abort === true)),
    /** Deletes finished runs by name. */
    delete: (runNames: ReadonlyArray<string>): Promise<void> => runPromise(this.api.runs.delete(runNames))
  }

  readonly secrets = {
    /** The project's secrets, names only (values are `null`). Needs a project admin. */
    list: (): Promise<ReadonlyArray<Secrets.Secret>> => runPromise(Secrets.make(this.api).list()),
    /** One secret with its value; throws a ClientError with reason NotFound when there is none. */
    get: (name: string): Promise<Secrets.Secret> => runPromise(Secrets.make(this.api).get(name)),
    /** Sets a secret: `${{ secrets.NAME }}` in a run's `env` or `registry_auth` then reads it. */
    set: (name: string, value: string): Promise<Secrets.Secret> => runPromise(Secrets.make(this.api).set(name, value)),
    /** Deletes secrets by name: all of them, or none when one does not exist. */
    delete: (names: ReadonlyArray<string>): Promise<void> => runPromise(Secrets.make(this.api).delete(names))
  }

  readonly services = {
    /** A live service's replicas, traffic and rolling deployment; undefined when there is none. */
    get: (runName: string): Promise<Services.ServiceInfo | undefined> => runPromise(Services.make(this.api).get(runName)),
    /** The project's live services the server follows. */
    list: (): Promise<ReadonlyArray<Services.ServiceInfo>> => runPromise(Services.make(this.api).list())
  }

  /** The operations the workflow client uses (see Workflows.ts). */
  private readonly workflowOps: Workflows.WorkflowOps = {
    getPlan: (request) => this.api.workflows.getPlan(request),
    submit: (request) => this.api.workflows.submit(request),
    get: (name) => this.api.workflows.get(name),
    run: (runName) => this.runs.get(runName)
  }

  readonly workflows = {
    /**
     * Plans a workflow and its dependencies on the server (its providers make the jobs). Without
     * `files`, reads `.dstack/` of the working directory (Node.js and Deno).
     */
    getPlan: async (
      workflow: string,
      options: Omit<Workflows.WorkflowPlanOptions, "files"> & { readonly files?: Workflows.WorkflowPlanOptions["files"] } = {}
    ): Promise<Workflows.WorkflowPlan> =>
      Workflows.plan(this.workflowOps, workflow, { ...options, files: options.files ?? (await workflowFilesReader()(".")) }),
    /**
     * Submits a workflow (uploading `repo` first): the server runs its DAG, cached
     * dependencies reused. Resolves at once with the workflow run; `follow` waits for it.
     */
    submit: async (
      workflow: string,
      variables: Readonly<Record<string, string>> = {},
      options: Omit<Workflows.WorkflowSubmitOptions, "files" | "variables"> & { readonly files?: Workflows.WorkflowPlanOptions["files"] } = {}
    ): Promise<Workflows.WorkflowRun> => {
      const files = options.files ?? (await workflowFilesReader()("."))
      if (options.repo) {
        await this.repos.init(options.repo)
        await this.repos.upload(options.repo)
      }
      return Workflows.submit(this.workflowOps, workflow, { ...options, files, variables })
    },
    /** Follows a submitted workflow run until it ends: logs and events of each job. */
    follow: (run: Workflows.WorkflowRun, options: Workflows.WorkflowFollowOptions = {}): Promise<Workflows.WorkflowRunResult> =>
      Workflows.follow(this.workflowOps, run, options),
    /**
     * Runs a workflow: submits it and follows it until every job has ended.
     *
     * @example
     * const result = await client.workflows.run("train", { epochs: "3" }, { repo: await LocalRepo.fromDir(".") })
     * result.status // "done"
     */
    run: async (
      workflow: string,
      variables: Readonly<Record<string, string>> = {},
      options: Omit<Workflows.WorkflowRunOptions, "files" | "variables"> & { readonly files?: Workflows.WorkflowPlanOptions["files"] } = {}
    ): Promise<Workflows.WorkflowRunResult> =>
      this.workflows.follow(await this.workflows.submit(workflow, variables, options), options),
    /** A workflow run by name, or undefined when there is none. */
    get: async (name: string): Promise<Workflows.WorkflowRun | undefined> => {
      const exit = await Effect.runPromiseExit(this.api.workflows.get(name))
      if (Exit.isSuccess(exit)) return exit.value
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure) && failure.value.reason === "NotFound") return undefined
      throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
    },
    /** The project's workflow runs, newest first. */
    list: (): Promise<ReadonlyArray<Workflows.WorkflowRun>> => runPromise(this.api.workflows.list()),
    /** Stops a workflow run: its running jobs are stopped (at once with `abort`), the waiting ones never start. */
    stop: (name: string, options: { readonly abort?: boolean } = {}): Promise<void> => runPromise(this.api.workflows.stop(name, options.abort === true))
  }

  readonly artifacts = {
    /** The files each job of a run kept as artifacts, with sizes and SHA-256. */
    list: (runName: string) => runPromise(this.api.artifacts.list(runName)),
    /**
     * One job's artifacts as a tar.gz stream (`jobName` when several jobs of the run kept some).
     * The caller reads the stream to its end or cancels it.
     */
    download: async (runName: string, options: { readonly jobName?: string; readonly signal?: AbortSignal } = {}): Promise<ReadableStream<Uint8Array>> => {
      const response = await runPromise(this.api.artifacts.download(runName, options.jobName, options.signal))
      if (response.body === null) throw new Error(`the server sent no body for the artifacts of ${runName}`)
      return response.body
    }
  }

  readonly fleets = {
    /** Plans a fleet: its hosts as offers, and whether applying creates it or finds one of that name. */
    getPlan: (configuration: FleetConfiguration): Promise<FleetPlan> =>
      runPromise(this.api.fleets.getPlan(new FleetSpec({ configuration }))),
    /**
     * Creates a fleet of your hosts. Private keys go as `ssh_key` (read `identity_file` yourself,
     * as the CLI does); the server never answers them.
     */
    apply: (configuration: FleetConfiguration, options: { readonly force?: boolean } = {}): Promise<Fleet> =>
      runPromise(this.api.fleets.apply(new FleetSpec({ configuration }), options.force === true)),
    /** The fleet with this name, or undefined when there is none. */
    get: async (name: string): Promise<Fleet | undefined> => {
      const exit = await Effect.runPromiseExit(this.api.fleets.get(name))
      if (Exit.isSuccess(exit)) return exit.value
      const failure = Cause.failureOption(exit.cause)
      if (Option.isSome(failure) && failure.value.reason === "NotFound") return undefined
      throw Option.isSome(failure) ? failure.value : Cause.squash(exit.cause)
    },
    /** The project's fleets. */
    list: (): Promise<ReadonlyArray<Fleet>> => runPromise(this.api.fleets.list()),
    /** Deletes fleets: their hosts are cleaned up, then the fleets go (refused while they run jobs). */
    delete: (names: ReadonlyArray<string>): Promise<void> => runPromise(this.api.fleets.delete(names)),
    /** Removes hosts from a fleet by instance number. */
    deleteInstances: (name: string, instanceNums: ReadonlyArray<number>): Promise<void> =>
      runPromise(this.api.fleets.deleteInstances(name, instanceNums))
  }

  readonly repos = {
    /** Registers a repo with the project before runs mount it (upstream `repos.init`). */
    init: (repo: RepoCode, options: { readonly creds?: unknown } = {}): Promise<void> =>
      runPromise(this.api.repos.init(repo.repoId, Schema.encodeSync(RunRepoData)(repo.repoData), options.creds)),
    /**
     * Uploads the repo's code blob keyed by its hash and returns the hash; the server skips a
     * blob it already has, so an unchanged repo costs one small request.
     */
    upload: async (repo: RepoCode): Promise<string> => {
      await runPromise(this.api.repos.uploadCode(repo.repoId, repo.codeHash, Stream.toReadableStream(repo.code)))
      return repo.codeHash
    }
  }

  /** Port forwards of attached runs, by run name. */
  private readonly attachments = new Map<string, { readonly close: () => Promise<void> }>()

  private async detachRun(runName: string): Promise<void> {
    const attachment = this.attachments.get(runName)
    this.attachments.delete(runName)
    await attachment?.close()
  }

  /** Wraps a run entity in a `Run` bound to this client. */
  protected toRun(entity: RunEntity): Run {
    return new Run(runDataOf(entity), this.runOperations)
  }

  private readonly runOperations: RunOperations = {
    get: async (runName) => runDataOf(await runPromise(this.api.runs.get(runName))),
    stop: (runName, abort) => runPromise(this.api.runs.stop([runName], abort)),
    logs: (run, options) => runLogs(this.api, run, options),
    attach: async (run, options) => {
      await this.detachRun(run.runName)
      const server = { url: this.url, token: this.#token, project: this.project }
      const attachment = await Promise.resolve().then(() => portForwarder()(run.entity, server, options)).catch((e: Error) => {
        throw new ClientError({ module: "Client", method: "runs.attach", reason: "NotAvailable", url: this.url, msg: e.message })
      })
      this.attachments.set(run.runName, attachment)
      return { ports: attachment.ports, ssh: attachment.ssh }
    },
    detach: (run) => this.detachRun(run.runName)
  }
}

export { ClientConfigError, ClientError }
