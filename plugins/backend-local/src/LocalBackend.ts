/**
 * The `local` backend: one offer describing this machine (CPUs, memory, the work directory's
 * disk, NVIDIA GPUs), and instances that are runner builds started as child processes on
 * 127.0.0.1 with a free port (core's RunnerLaunch). Closing the backend's scope terminates
 * every runner it started.
 */
import { execFileSync } from "node:child_process"
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  Backend,
  type BackendFactory,
  InstanceDisk,
  InstanceGpu,
  InstanceOffer,
  InstanceResources,
  InstanceType,
  JobProvisioningData,
  Runner,
  RunnerLaunch,
  ServerShutdown,
  configDecoder
} from "@dstack-ts/core"
import { Effect, Schema, type Scope } from "effect"

const { bundleRunner, StartFailure, startRunner } = RunnerLaunch
type RunnerProcess = RunnerLaunch.RunnerProcess
type StartingRunner = RunnerLaunch.StartingRunner

const TYPE = "local"
const MODULE = "LocalBackend"

/** Options of the local backend (camelCase; the plugin's configuration uses snake_case keys). */
export interface LocalBackendOptions {
  /**
   * Where runners keep their files: each instance gets `<workDir>/<instanceId>`, removed when
   * it is terminated. Its filesystem is the disk the offer reports.
   * Default: `<os.tmpdir()>/dstack-ts-local`.
   */
  readonly workDir?: string
  /**
   * The runner build to start: its entry file, a TypeScript source (run through tsx on Node)
   * or a bundled `.js`/`.mjs` file. Default: the server build's (`createServer({ runner:
   * { entry } })`; `dstack server` uses @dstack-ts/cli's runner build, with the process and
   * docker executors).
   */
  readonly runnerEntry?: string
  /**
   * How many runners may run at once. A runner takes one job at a time, so this caps the jobs
   * running on this machine. Default: the number of CPUs (at least 1).
   */
  readonly maxInstances?: number
  /** How long a runner may take to report its address. Default 60 s (a cold tsx start on a busy machine). */
  readonly startTimeoutSeconds?: number
  /** How long a runner gets to stop after SIGTERM before SIGKILL. Default 10 s. */
  readonly terminateGraceSeconds?: number
  /**
   * Bundle a TypeScript runner entry with esbuild (once per backend) and start the bundle:
   * a runner is up in well under a second instead of seconds through tsx. Default: true on
   * Node, false on Deno (which runs TypeScript directly). Falls back to the source on failure.
   */
  readonly bundleRunner?: boolean
  /** The `nvidia-smi` binary GPUs are detected with. Default `nvidia-smi` from PATH. */
  readonly nvidiaSmi?: string
  /** How to spawn the runner on this runtime (default: the runtime this runs on). For tests and embedders. */
  readonly runnerCommand?: RunnerLaunch.RunnerCommand.RunnerCommand
}

/** The plugin's configuration section: the options above with the upstream snake_case keys. */
export const LocalBackendConfig = Schema.Struct({
  type: Schema.optional(Schema.Literal(TYPE)),
  workDir: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("work_dir")),
  runnerEntry: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("runner_entry")),
  maxInstances: Schema.optional(Schema.Int.pipe(Schema.positive())).pipe(Schema.fromKey("max_instances")),
  startTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("start_timeout_seconds")),
  terminateGraceSeconds: Schema.optional(Schema.Number.pipe(Schema.nonNegative())).pipe(
    Schema.fromKey("terminate_grace_seconds")
  ),
  bundleRunner: Schema.optional(Schema.Boolean).pipe(Schema.fromKey("bundle_runner")),
  nvidiaSmi: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("nvidia_smi"))
})
export type LocalBackendConfig = typeof LocalBackendConfig.Type

/** A runner this backend started, by instance id. */
export interface LocalInstance {
  readonly instanceId: string
  readonly pid: number
  readonly port: number
  readonly dir: string
}

/** The local backend, with what it has started (for tests and diagnostics). */
export interface LocalBackend extends Backend.Backend {
  readonly instances: Effect.Effect<ReadonlyArray<LocalInstance>>
  /** What the offer describes. */
  readonly host: Runner.HostProbe.HostResources
}

const fail = (method: string, reason: Backend.BackendErrorReason, message: string, cause?: unknown) =>
  Backend.fail(MODULE, method, reason, message, cause)

const makeOffer = (host: Runner.HostProbe.HostResources, availability: "available" | "not_available") =>
  new InstanceOffer({
    backend: TYPE,
    region: TYPE,
    price: 0,
    availability,
    instance: new InstanceType({
      name: TYPE,
      resources: new InstanceResources({
        cpus: host.cpus,
        memoryMib: host.memoryMib,
        gpus: host.gpus.map((g) => new InstanceGpu({ name: g.name, memoryMib: g.memoryMib, vendor: "nvidia" })),
        spot: false,
        disk: new InstanceDisk({ sizeMib: host.diskMib }),
        cpuArch: host.cpuArch,
        description: `this machine (${host.hostname})`
      })
    })
  })

/** Creates `dir` (and parents); answers the error instead of throwing it. */
const mkdirp = (dir: string): unknown => {
  try {
    fs.mkdirSync(dir, { recursive: true })
    return undefined
  } catch (error) {
    return error ?? new Error("mkdir failed")
  }
}

interface Entry {
  readonly instanceId: string
  readonly dir: string
  readonly starting: StartingRunner
  runner?: RunnerProcess
}

/** A runner an earlier server process started and this one follows (`Backend.reached`). */
interface Adopted {
  readonly pid: number
  readonly dir: string
  /** Where its health check answers (from the provisioning data; no port: it cannot be asked). */
  readonly host: string
  readonly port: number | undefined
}

/**
 * The runners held by the local backends open in this process (each backend's, by instance id):
 * a backend does not adopt a runner another one here still holds (two servers in one process on
 * one store).
 */
const openBackends = new Set<ReadonlyMap<string, Entry>>()

/** What a local instance's provisioning data keeps: the runner's pid and directory, and the server process that started it. */
const runnerData = (backendData: string | undefined): { pid?: unknown; dir?: unknown; server?: unknown } => {
  try {
    const data = JSON.parse(backendData ?? "") as unknown
    return typeof data === "object" && data !== null ? data : {}
  } catch {
    return {}
  }
}

/** Whether process `pid` lives. */
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as { code?: string }).code === "EPERM"
  }
}

/**
 * Makes the local backend. The scope owns the runners: closing it terminates them (but runners
 * with a running job when the server closes for a restart, ServerShutdown `leave`). So it does
 * with the runners of earlier server processes that this one went on to follow (`reached`).
 *
 * @example
 * const backend = yield* LocalBackend.make({ maxInstances: 2 })
 * const { offers } = yield* backend.getOffers(requirements)
 * const data = yield* backend.createInstance(offers[0], config) // data.runnerPort answers the runner API
 */
export const make = (options: LocalBackendOptions = {}): Effect.Effect<LocalBackend, Backend.BackendError, Scope.Scope> =>
  Effect.gen(function*() {
    const workDir = path.resolve(options.workDir ?? path.join(os.tmpdir(), "dstack-ts-local"))
    const maxInstances = options.maxInstances ?? Math.max(1, os.cpus().length)
    const startTimeoutMs = (options.startTimeoutSeconds ?? 60) * 1000
    const graceMs = (options.terminateGraceSeconds ?? 10) * 1000
    const command = options.runnerCommand ?? RunnerLaunch.RunnerCommand.forRuntime()

    const configured = yield* RunnerLaunch.runnerEntry(options.runnerEntry)
    if (configured === undefined) {
      return yield* fail(
        "make",
        "Invalid",
        "no runner build to start: set runner_entry in the local backend's configuration, or the server build's runner (createServer({ runner: { entry } }); `dstack server` sets it)"
      )
    }
    const entry = path.resolve(configured)
    if (!fs.existsSync(entry)) return yield* fail("make", "Invalid", `the runner entry ${entry} does not exist`)

    yield* Effect.try({
      try: () => fs.mkdirSync(workDir, { recursive: true }),
      catch: (cause) => new Backend.BackendError({ module: MODULE, method: "make", reason: "Invalid", message: `cannot create the work directory ${workDir}: ${String(cause)}`, cause })
    })
    const host = yield* Effect.tryPromise({
      try: () => Runner.HostProbe.probeHost(workDir, options.nvidiaSmi ?? "nvidia-smi"),
      catch: (cause) => new Backend.BackendError({ module: MODULE, method: "make", reason: "Unknown", message: `cannot measure this machine (work directory ${workDir}): ${String(cause)}`, cause })
    })

    const entries = new Map<string, Entry>()
    openBackends.add(entries)
    yield* Effect.addFinalizer(() => Effect.sync(() => void openBackends.delete(entries)))
    // Runners of earlier server processes that this one follows, and the instances settled
    // either way (adopted, or not a runner this backend could ever adopt).
    const adopted = new Map<string, Adopted>()
    const considered = new Set<string>()

    const bundleDir = path.join(workDir, ".runner")
    const wantsBundle = (options.bundleRunner ?? !("Deno" in globalThis)) && /\.[cm]?tsx?$/.test(entry)
    // Built on the first createInstance, then reused; a failed build falls back to the source.
    // Only this backend's own file is removed at the end: another backend may share the dir.
    let bundled: string | undefined
    const runnable = yield* Effect.cached(
      wantsBundle
        ? Effect.tryPromise(() => bundleRunner(entry, bundleDir)).pipe(
          Effect.map(({ file }) => file),
          Effect.tap((file) => Effect.sync(() => void (bundled = file))),
          Effect.orElseSucceed(() => entry),
          Effect.uninterruptible
        )
        : Effect.succeed(entry)
    )
    yield* Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (bundled !== undefined) fs.rmSync(bundled, { force: true })
      })
    )

    // Whether the runner says a job was handed to it and has not ended; an older runner that
    // does not say is taken to have one (leaving a runner is the safe mistake for a job).
    const hasLiveJob = (e: Entry) => {
      const runner = e.runner
      return runner === undefined || runner.hasExited() ? Effect.succeed(false) : runnerHasLiveJob(runner.host, runner.port)
    }
    const runnerHasLiveJob = (host: string, port: number) =>
      Effect.promise(async () => {
        try {
          const res = await fetch(`http://${host.includes(":") ? `[${host}]` : host}:${port}/api/healthcheck`, { signal: AbortSignal.timeout(2_000) })
          const body = (await res.json()) as { job?: string }
          return body.job === undefined || body.job === "running"
        } catch {
          return false
        }
      })

    const stop = (e: Entry) =>
      Effect.promise(async () => {
        await e.starting.terminate(graceMs)
        fs.rmSync(e.dir, { recursive: true, force: true })
      })

    // No orphans: whatever is still running (or starting) when the backend goes away is
    // stopped — unless the server closes for a restart (ServerShutdown `leave`): then its
    // runners go on with their jobs, as after a SIGKILL, and the next server follows them.
    // Left that way are only runners with a job that has not ended; idle ones are stopped.
    // Runners of earlier server processes that this one followed (adopted) are treated alike.
    const shutdown = yield* ServerShutdown
    yield* Effect.addFinalizer(() => {
      const leave = shutdown.runners() === "leave"
      return Effect.all([
        Effect.forEach(
          [...entries.values()],
          (e) => Effect.flatMap(leave ? hasLiveJob(e) : Effect.succeed(false), (live) => (live ? Effect.void : stop(e))),
          { concurrency: "unbounded", discard: true }
        ),
        Effect.forEach(
          [...adopted],
          ([instanceId, a]) =>
            // A runner that cannot be asked is taken to have a job (the safe mistake, as above).
            Effect.flatMap(!leave ? Effect.succeed(false) : a.port === undefined ? Effect.succeed(true) : runnerHasLiveJob(a.host, a.port), (live) =>
              live ? Effect.void : stopPrevious(instanceId, a.pid, a.dir)),
          { concurrency: "unbounded", discard: true }
        )
      ], { concurrency: "unbounded", discard: true }).pipe(Effect.ensuring(Effect.sync(() => {
        entries.clear()
        adopted.clear()
      })))
    })

    // A runner that died on its own frees its slot; its entry (and directory, for a post-mortem)
    // stays until terminateInstance or the scope removes it. An adopted runner takes a slot too
    // while its process lives.
    const live = () => {
      let n = 0
      for (const e of entries.values()) if (!e.runner?.hasExited()) n++
      for (const a of adopted.values()) if (alive(a.pid)) n++
      return n
    }

    // The machine does not change: its two offers are built once (each is a tree of validated
    // Schema classes, and the engine asks for offers on every placement).
    const available = [makeOffer(host, "available")]
    const notAvailable = [makeOffer(host, "not_available")]
    const catalog = () => Effect.sync(() => (live() < maxInstances ? available : notAvailable))

    const createInstance = (offer: InstanceOffer) =>
      Effect.gen(function*() {
        const program = yield* runnable
        // Check the capacity and take the slot in one step, with no yield in between.
        const e = yield* Effect.suspend((): Effect.Effect<Entry, Backend.BackendError> => {
          const running = live()
          if (running >= maxInstances) {
            return fail(
              "createInstance",
              "NoCapacity",
              `this machine already runs ${running} of at most ${maxInstances} local runners (max_instances)`
            )
          }
          const instanceId = `local-${randomUUID()}`
          const dir = path.join(workDir, instanceId)
          const mkdirError = mkdirp(dir)
          if (mkdirError !== undefined) {
            return fail("createInstance", "Unknown", `cannot create ${dir}: ${String(mkdirError)}`, mkdirError)
          }
          const starting = startRunner(command(program, RunnerLaunch.runnerArgs({ host: "127.0.0.1", port: 0, workDir: dir })), startTimeoutMs)
          const created: Entry = { instanceId, dir, starting }
          // Registered before it is ready, so that closing the scope mid-start stops it too.
          entries.set(instanceId, created)
          return Effect.succeed(created)
        })
        const { instanceId, dir, starting } = e
        const runner = yield* Effect.tryPromise({
          try: () => starting.ready,
          catch: (cause) => {
            const failure = cause instanceof StartFailure ? cause : new StartFailure("exited", String(cause), cause)
            return new Backend.BackendError({
              module: MODULE,
              method: "createInstance",
              reason: failure.kind === "timeout" ? "Timeout" : failure.kind === "spawn" ? "Invalid" : "Unknown",
              message: `cannot start the local runner ${entry}: ${failure.message}`,
              cause
            })
          }
        }).pipe(
          Effect.tapError(() =>
            Effect.sync(() => {
              entries.delete(instanceId)
              fs.rmSync(dir, { recursive: true, force: true })
            })
          )
        )
        e.runner = runner
        return new JobProvisioningData({
          backend: TYPE,
          instanceType: offer.instance,
          instanceId,
          hostname: "127.0.0.1",
          region: TYPE,
          price: 0,
          username: os.userInfo().username,
          dockerized: false,
          runnerPort: runner.port,
          backendData: JSON.stringify({ pid: runner.pid, dir, server: process.pid })
        })
      })

    /**
     * The runner of an instance this backend did not start (a server killed and started again):
     * found by the pid and directory its provisioning data kept, it is stopped (SIGTERM, SIGKILL
     * after the grace period) if that process is still a runner of that directory, and the
     * directory removed. A directory outside the work directory is never touched.
     */
    const reapPrevious = (instanceId: string, backendData: string) =>
      Effect.gen(function*() {
        const data = runnerData(backendData)
        const dir = path.join(workDir, instanceId)
        if (data.dir !== dir || typeof data.pid !== "number") {
          return yield* fail("terminateInstance", "NotFound", `no local runner ${instanceId} (its provisioning data names no runner under ${workDir})`)
        }
        adopted.delete(instanceId)
        considered.delete(instanceId)
        yield* stopPrevious(instanceId, data.pid, dir)
      })

    /** Stops the runner `pid` of `dir` that an earlier server process started (if it still is one), then removes `dir`. */
    const stopPrevious = (instanceId: string, pid: number, dir: string) =>
      Effect.gen(function*() {
        if (runnerOf(pid, dir)) {
          yield* Effect.logInfo(`local backend: stopping runner ${instanceId} (pid ${pid}), left by an earlier server process`)
          signal(pid, "SIGTERM")
          const until = Date.now() + graceMs
          while (Date.now() < until && runnerOf(pid, dir)) yield* Effect.sleep("100 millis")
          if (runnerOf(pid, dir)) signal(pid, "SIGKILL")
        }
        fs.rmSync(dir, { recursive: true, force: true })
      })

    /**
     * The engine is about to reach the runner of `pd`: one this backend did not start, under its
     * work directory and still running, whose server process is gone (or is this one: a backend
     * of this process closed before), and that no other open backend of this process holds,
     * becomes this backend's — stopped when it closes, as its own runners are.
     */
    const reached = (pd: JobProvisioningData): void => {
      const instanceId = pd.instanceId
      if (entries.has(instanceId) || considered.has(instanceId)) return
      const data = runnerData(pd.backendData)
      const dir = path.join(workDir, instanceId)
      if (data.dir !== dir || typeof data.pid !== "number" || typeof data.server !== "number") {
        considered.add(instanceId)
        return
      }
      // Its server, or another backend here, may still hold it: asked again on the next reach.
      if (data.server !== process.pid && alive(data.server)) return
      for (const other of openBackends) if (other !== entries && other.has(instanceId)) return
      considered.add(instanceId)
      if (runnerOf(data.pid, dir)) adopted.set(instanceId, { pid: data.pid, dir, host: pd.hostname ?? "127.0.0.1", port: pd.runnerPort })
    }

    const terminateInstance = (instanceId: string, _region?: string, backendData?: string) =>
      Effect.gen(function*() {
        const e = entries.get(instanceId)
        if (e === undefined) {
          if (backendData !== undefined) return yield* reapPrevious(instanceId, backendData)
          return yield* fail("terminateInstance", "NotFound", `no local runner ${instanceId}`)
        }
        yield* stop(e)
        entries.delete(instanceId)
      })

    const backend = Backend.make({ type: TYPE, catalog, createInstance, terminateInstance, reached })
    return {
      ...backend,
      host,
      instances: Effect.sync(() =>
        [...entries.values()].flatMap((e) =>
          e.runner ? [{ instanceId: e.instanceId, pid: e.runner.pid, port: e.runner.port, dir: e.dir }] : []
        )
      )
    }
  })

/** Whether process `pid` lives and is a runner started for `dir` (its arguments name it): a reused pid is not. */
const runnerOf = (pid: number, dir: string): boolean => {
  if (!alive(pid)) return false
  let args: ReadonlyArray<string>
  try {
    args = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")
  } catch {
    try {
      args = execFileSync("ps", ["-p", String(pid), "-o", "command="], { encoding: "utf8" }).trim().split(/\s+/)
    } catch {
      return false
    }
  }
  const at = args.indexOf("--work-dir")
  return at >= 0 && args[at + 1] === dir
}

const signal = (pid: number, name: NodeJS.Signals): void => {
  try {
    process.kill(pid, name)
  } catch {
    // gone already
  }
}

const decodeConfig = configDecoder(LocalBackendConfig, "local backend configuration")

/**
 * The plugin's factory: decodes the configuration section (`work_dir`, `runner_entry`,
 * `max_instances`, `start_timeout_seconds`, `terminate_grace_seconds`, `nvidia_smi`) and makes
 * the backend. A bad section fails with `Invalid`, naming every wrong field.
 */
export const fromConfig: BackendFactory = (config) =>
  decodeConfig(config).pipe(
    Effect.mapError((error) =>
      new Backend.BackendError({
        module: MODULE,
        method: "fromConfig",
        reason: "Invalid",
        message: error.message,
        cause: error.cause
      })
    ),
    Effect.flatMap((decoded) => make(decoded))
  )
