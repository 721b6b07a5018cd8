/**
 * A run as the Promise client shows it (upstream `dstack.api.Run`): its name and status, and
 * `refresh`, `stop`, `logs`, `attach`, `detach`. The operations come from the client through
 * `RunOperations`, so this class does not depend on how routes are called.
 */
import type { Run as RunEntity } from "@dstack-ts/core/wire"
import type { RunStatus } from "@dstack-ts/core/wire"
import { isRunStatusFinished } from "@dstack-ts/core/wire"

/** What the client knows about a run: its name and the run entity as the server returned it. */
export interface RunData {
  readonly runName: string
  readonly entity: RunEntity
}

/** The run data of an entity: its name is the spec's run name (the server always sets one). */
export const runDataOf = (entity: RunEntity): RunData => ({ runName: entity.runSpec.runName ?? entity.id, entity })

/** Options of `Run.logs`. */
export interface RunLogsOptions {
  /** Keep reading until an active run finishes (default true); false stops at the log so far. */
  readonly follow?: boolean | undefined
  /** Only lines logged at or after this time. */
  readonly since?: Date | undefined
  /** Runner diagnostics instead of the job's output (upstream `diagnose`). */
  readonly diagnose?: boolean | undefined
  /** Which job of a multi-job run (default 0). */
  readonly jobNum?: number | undefined
  readonly replicaNum?: number | undefined
  /** Stops following when aborted. */
  readonly signal?: AbortSignal | undefined
}

/** The `ssh RUN` alias an attached run has in `~/.dstack/ssh/config` (a server with an SSH proxy). */
export interface RunSshAlias {
  readonly host: string
  readonly configPath: string
  /** Set when `~/.ssh/config` could not be given the Include: what to add by hand. */
  readonly includeHint?: string
}

/** The calls a `Run` makes; the client supplies them. */
export interface RunOperations {
  readonly get: (runName: string) => Promise<RunData | undefined>
  readonly stop: (runName: string, abort: boolean) => Promise<void>
  /** Log bytes of the run: the full log of a finished run, or a live follow of an active one. */
  readonly logs: (run: RunData, options: RunLogsOptions) => AsyncIterable<Uint8Array>
  /** Forwards the run's ports to localhost; answers job port → local port. */
  readonly attach: (run: RunData, options: { readonly onError?: (error: Error) => void }) => Promise<{ readonly ports: Readonly<Record<number, number>>; readonly ssh?: RunSshAlias | undefined }>
  readonly detach: (run: RunData) => Promise<void>
}

/**
 * A submitted run.
 *
 * @example
 * const run = await client.runs.get("my-run")
 * for await (const chunk of run.logs()) process.stdout.write(chunk)
 */
export class Run {
  #data: RunData
  readonly #ops: RunOperations

  constructor(data: RunData, ops: RunOperations) {
    this.#data = data
    this.#ops = ops
  }

  /** The run name. */
  get name(): string {
    return this.#data.runName
  }

  /** The status as of the last fetch; `refresh()` updates it. */
  get status(): RunStatus {
    return this.#data.entity.status
  }

  /** True once the run is terminated, failed or done. */
  get finished(): boolean {
    return isRunStatusFinished(this.#data.entity.status)
  }

  /** The decoded run entity as the server last returned it. */
  get entity(): RunEntity {
    return this.#data.entity
  }

  /** Fetches the run again. Throws a `ClientError` with reason NotFound if it was deleted. */
  async refresh(): Promise<this> {
    const data = await this.#ops.get(this.name)
    if (data !== undefined) this.#data = data
    return this
  }

  /** Stops the run: gracefully, or at once with `abort: true`. */
  async stop(options: { readonly abort?: boolean } = {}): Promise<void> {
    await this.#ops.stop(this.name, options.abort === true)
  }

  /** Log bytes: follows an active run until it finishes; returns the whole log of a finished one. */
  logs(options: RunLogsOptions = {}): AsyncIterable<Uint8Array> {
    return this.#ops.logs(this.#data, options)
  }

  /** The forwarded ports (job port → local port) while attached, else undefined (upstream `Run.ports`). */
  ports: Readonly<Record<number, number>> | undefined = undefined

  /**
   * Waits for the run to start and forwards its ports to localhost (`map_to_port`, else the
   * same port, else a free one), each connection through the server, whatever the backend.
   * Rejects when the run ends before it runs or the server refuses; `onError` hears of a later
   * connection that could not be carried (default: a line on stderr).
   */
  async attach(options: { readonly timeoutMs?: number; readonly onError?: (error: Error) => void } = {}): Promise<Readonly<Record<number, number>>> {
    const deadline = Date.now() + (options.timeoutMs ?? 10 * 60_000)
    while (this.status !== "running") {
      if (this.finished) throw new Error(`run ${this.name} is ${this.status}; there is nothing to attach to`)
      if (Date.now() > deadline) throw new Error(`run ${this.name} did not start running in time (it is ${this.status})`)
      await new Promise((r) => setTimeout(r, 250))
      await this.refresh()
    }
    const attached = await this.#ops.attach(this.#data, options.onError !== undefined ? { onError: options.onError } : {})
    this.ports = attached.ports
    this.ssh = attached.ssh
    return attached.ports
  }

  /**
   * While attached, the run's `ssh RUN` alias (`ssh RUN`, `ssh RUN cmd`, the IDE links), when the
   * server runs an SSH proxy; else undefined.
   */
  ssh: RunSshAlias | undefined = undefined

  /** Stops forwarding the run's ports (and removes its `ssh` alias). */
  async detach(): Promise<void> {
    await this.#ops.detach(this.#data)
    this.ports = undefined
    this.ssh = undefined
  }
}
