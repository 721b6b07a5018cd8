/**
 * The docker executor: runs a job in a container through the Docker Engine API (dockerode):
 * pulls the image only when it is absent, publishes ports on 127.0.0.1, streams the
 * demultiplexed output, and removes the container once the job has ended.
 *
 * Its containers die with the runner: a watchdog process (one per executor, started with its
 * first container) holds a pipe from the runner and, when the pipe closes — however the runner
 * ends, `kill -9` included — removes every container this executor started, through the
 * Engine's socket.
 */
import { Executor } from "@dstack-ts/core"
import type Dockerode from "dockerode"
import { Deferred, Duration, Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { startDockerExec } from "./DockerExec.ts"
import { ContainerLog } from "./ContainerLog.ts"

type Execution = Executor.Execution
type ExecutionExit = Executor.ExecutionExit
type ExecutionObserver = Executor.ExecutionObserver
type ExecutionSpec = Executor.ExecutionSpec
type ExecutorError = Executor.ExecutorError
type ExecutorErrorReason = Executor.ExecutorErrorReason
type PublishedPort = Executor.PublishedPort
type ResourceUsage = Executor.ResourceUsage

/** Options of the docker executor. */
export interface DockerExecutorOptions {
  /** The Engine's unix socket; default DOCKER_HOST (unix://…) or /var/run/docker.sock. */
  readonly socketPath?: string
  /** Where the job's code directory is mounted in the container; default `/workflow`. */
  readonly repoMountPath?: string
  /** A ready client, instead of one made from `socketPath`. */
  readonly client?: Dockerode
}

/** The label every container started by the runner carries. */
export const RUNNER_LABEL = "dstack-ts.runner"

/** The label naming the watchdog that removes the container when its runner dies. */
export const WATCHDOG_LABEL = "dstack-ts.watchdog"

/**
 * The watchdog's program, for `node -e` and `deno eval` alike: it reads its stdin to the end,
 * then lists the containers labelled `WATCHDOG_LABEL=<its token>` and removes each (force),
 * speaking HTTP/1.0 on the Engine's unix socket (no client library, no CLI on the host).
 */
const WATCHDOG_PROGRAM = `(async () => {
  const net = await import("node:net")
  const proc = (await import("node:process")).default
  const socketPath = proc.env.DSTACK_WATCHDOG_SOCKET
  const label = proc.env.DSTACK_WATCHDOG_LABEL
  const request = (method, path) => new Promise((resolve) => {
    const socket = net.connect({ path: socketPath })
    let reply = ""
    socket.on("data", (d) => { reply += d })
    socket.on("error", () => resolve(""))
    socket.on("close", () => resolve(reply.slice(reply.indexOf("\\r\\n\\r\\n") + 4)))
    socket.write(method + " " + path + " HTTP/1.0\\r\\nHost: docker\\r\\n\\r\\n")
  })
  await new Promise((resolve) => {
    proc.stdin.on("data", () => {})
    proc.stdin.on("end", resolve)
    proc.stdin.on("close", resolve)
    proc.stdin.on("error", resolve)
  })
  const filters = encodeURIComponent(JSON.stringify({ label: [label] }))
  let ids = []
  try { ids = JSON.parse(await request("GET", "/containers/json?all=1&filters=" + filters)).map((c) => c.Id) } catch {}
  for (const id of ids) await request("DELETE", "/containers/" + id + "?force=1&v=1")
  proc.exit(0)
})()`

/**
 * Starts the watchdog for containers labelled `WATCHDOG_LABEL=token`, in a process group of its
 * own (a signal to the runner's group leaves it to do its work), with the current runtime
 * (node, or deno).
 */
const startWatchdog = (socketPath: string, token: string): ChildProcess => {
  const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
  const args = isDeno ? ["eval", WATCHDOG_PROGRAM] : ["-e", WATCHDOG_PROGRAM]
  const watchdog = spawn(process.execPath, args, {
    detached: true,
    stdio: ["pipe", "ignore", "ignore"],
    env: { ...process.env, DSTACK_WATCHDOG_SOCKET: socketPath, DSTACK_WATCHDOG_LABEL: `${WATCHDOG_LABEL}=${token}`, NODE_OPTIONS: "" }
  })
  // Neither the watchdog nor its pipe keeps the runner's event loop alive.
  watchdog.unref()
  ;(watchdog.stdin as unknown as { unref?: () => void } | null)?.unref?.()
  watchdog.stdin?.on("error", () => {})
  watchdog.on("error", () => {})
  return watchdog
}

const fail = (method: string, reason: ExecutorErrorReason, message: string, cause?: unknown) =>
  new Executor.ExecutorError({ module: "DockerExecutor", method, reason, message, cause })

/** The Engine's message from a dockerode error (it keeps the JSON body in `json`). */
const engineMessage = (cause: unknown): string => {
  const e = cause as { json?: { message?: string }; message?: string; statusCode?: number }
  return e?.json?.message ?? e?.message ?? String(cause)
}

const statusCode = (cause: unknown): number | undefined => (cause as { statusCode?: number })?.statusCode

const defaultSocketPath = (): string => {
  const host = process.env.DOCKER_HOST
  return host?.startsWith("unix://") ? host.slice("unix://".length) : "/var/run/docker.sock"
}

const imageWithTag = (image: string): string => {
  // A tag follows the last ':' after the last '/' (a registry host may carry a port).
  const lastSlash = image.lastIndexOf("/")
  const hasTag = image.lastIndexOf(":") > lastSlash
  return hasTag || image.includes("@") ? image : `${image}:latest`
}

/**
 * Splits Docker's multiplexed stream (8-byte header: stream type, 3 zero bytes, big-endian
 * size) into stdout and stderr chunks, across arbitrary chunk boundaries, in time linear in
 * the bytes. Not docker-modem's `demuxStream`: it copies the rest of its buffer for every frame
 * and recurses once per frame, so a chunk of many short lines is slow and a large one
 * overflows the stack (see the CHANGELOG).
 */
export class FrameDemuxer {
  private pending: Uint8Array = new Uint8Array(0)
  constructor(private readonly emit: (stream: "stdout" | "stderr", bytes: Uint8Array) => void) {}

  push(chunk: Uint8Array): void {
    const buf = this.pending.length === 0 ? chunk : concat(this.pending, chunk)
    let offset = 0
    while (buf.length - offset >= 8) {
      const size = new DataView(buf.buffer, buf.byteOffset + offset + 4, 4).getUint32(0)
      if (buf.length - offset - 8 < size) break
      const type = buf[offset]
      if (size > 0) this.emit(type === 2 ? "stderr" : "stdout", buf.subarray(offset + 8, offset + 8 + size))
      offset += 8 + size
    }
    this.pending = offset === buf.length ? new Uint8Array(0) : buf.slice(offset)
  }
}

const concat = (a: Uint8Array, b: Uint8Array): Uint8Array => {
  const out = new Uint8Array(a.length + b.length)
  out.set(a, 0)
  out.set(b, a.length)
  return out
}

/**
 * The ended container's log read once more, from a second before the last entry followed: what
 * the followed log missed is delivered (ContainerLog). Bounded in time; a failure is only logged.
 */
const readAgain = (container: Dockerode.Container, log: ContainerLog) =>
  Effect.tryPromise(() => {
    const since = log.since()
    return container.logs({ follow: false, stdout: true, stderr: true, timestamps: true, ...(since !== undefined ? { since } : {}) }) as unknown as Promise<Uint8Array>
  }).pipe(
    Effect.map((all) => {
      new FrameDemuxer((stream, bytes) => log.reread(stream, bytes)).push(all)
      return log.recovered
    }),
    Effect.timeout("10 seconds"),
    Effect.tap((recovered) => recovered > 0 ? Effect.logDebug(`docker executor: ${recovered} log entries the followed log missed were read again`) : Effect.void),
    Effect.catchAll((cause) => Effect.logWarning(`docker executor: cannot read the container's log again at its end: ${engineMessage(cause)}`))
  )

const loadClient = (options: DockerExecutorOptions): Effect.Effect<Dockerode, ExecutorError> =>
  Effect.tryPromise({
    try: async (): Promise<Dockerode> => {
      if (options.client) return options.client
      // Loaded on first use: hosts that only run the process executor never need it.
      // dockerode is CommonJS (`export =`): at run time the class is the default export.
      const mod = (await import("dockerode")) as unknown as { default?: typeof Dockerode }
      const Docker = mod.default ?? (mod as unknown as typeof Dockerode)
      return new Docker({ socketPath: options.socketPath ?? defaultSocketPath() })
    },
    catch: (cause) => fail("start", "Executor", `cannot load the Docker client: ${engineMessage(cause)}`, cause)
  })

const pullIfAbsent = (docker: Dockerode, spec: ExecutionSpec, image: string, observer: ExecutionObserver) =>
  Effect.gen(function* () {
    const present = yield* Effect.tryPromise({
      try: () => docker.getImage(image).inspect().then(() => true),
      catch: (cause) => cause
    }).pipe(
      Effect.catchAll((cause) =>
        statusCode(cause) === 404
          ? Effect.succeed(false)
          : Effect.fail(fail("start", "Executor", `cannot inspect image ${image}: ${engineMessage(cause)}`, cause))
      )
    )
    if (present) return
    observer.pulling?.()
    const auth = spec.registryAuth
    const authconfig = auth
      ? { username: auth.username, password: auth.password, ...(auth.serverAddress ? { serveraddress: auth.serverAddress } : {}) }
      : undefined
    yield* Effect.tryPromise({
      try: async () => {
        const stream = (await docker.pull(imageWithTag(image), authconfig ? { authconfig } : {})) as NodeJS.ReadableStream
        await new Promise<void>((resolve, reject) => {
          docker.modem.followProgress(stream, (err: Error | null, output: Array<{ error?: string }>) => {
            const failed = output?.find((o) => o.error)
            if (err) reject(err)
            else if (failed) reject(new Error(failed.error))
            else resolve()
          })
        })
      },
      catch: (cause) =>
        fail("start", "CreatingContainer", `cannot pull image ${image}: ${engineMessage(cause)}`, cause)
    })
  })

const containerOptions = (
  spec: ExecutionSpec,
  image: string,
  repoMountPath: string,
  gpuRuntime: boolean,
  observer: ExecutionObserver,
  watchToken: string
): Dockerode.ContainerCreateOptions => {
  const script = spec.commands.join(" && ")
  const command = spec.entrypoint
    ? { Entrypoint: [...spec.entrypoint], Cmd: [...spec.commands] }
    : spec.commands.length > 0
      ? { Entrypoint: ["/bin/sh", "-c"], Cmd: [script] }
      : {}
  const workingDir = spec.workingDir
    ? spec.workingDir.startsWith("/")
      ? spec.workingDir
      : `${repoMountPath.replace(/\/$/, "")}/${spec.workingDir}`
    : repoMountPath
  const exposed: Record<string, object> = {}
  const bindings: Record<string, Array<{ HostIp: string; HostPort: string }>> = {}
  for (const port of spec.ports) {
    exposed[`${port.containerPort}/tcp`] = {}
    bindings[`${port.containerPort}/tcp`] = [{ HostIp: "127.0.0.1", HostPort: port.hostPort ? String(port.hostPort) : "" }]
  }
  const binds = [
    `${spec.repoDir}:${repoMountPath}`,
    ...spec.mounts.map((m) => `${m.hostPath}:${m.containerPath}${m.readOnly ? ":ro" : ""}`)
  ]
  const wantsGpus = spec.gpus === "all" || spec.gpus > 0
  if (wantsGpus && !gpuRuntime) observer.note?.("GPUs were requested but Docker has no nvidia runtime: running without GPUs")
  return {
    Image: image,
    ...command,
    Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    WorkingDir: workingDir,
    ...(spec.user ? { User: spec.user } : {}),
    Labels: { [RUNNER_LABEL]: "1", ...spec.labels, [WATCHDOG_LABEL]: watchToken },
    ExposedPorts: exposed,
    HostConfig: {
      Binds: binds,
      PortBindings: bindings,
      Privileged: spec.privileged,
      ...(spec.shmSizeBytes ? { ShmSize: spec.shmSizeBytes } : {}),
      ...(wantsGpus && gpuRuntime
        ? { DeviceRequests: [{ Driver: "nvidia", Count: spec.gpus === "all" ? -1 : spec.gpus, Capabilities: [["gpu"]] }] }
        : {})
    }
  }
}

const isPortBindingFailure = (message: string): boolean =>
  /port is already allocated|address already in use|bind for|ports are not available|cannot assign requested address/i.test(message)

/**
 * Makes the docker executor.
 *
 * @example
 * const execution = yield* DockerExecutor.make().start({ ...spec, image: "busybox" }, observer)
 * const { exitCode } = yield* execution.exit
 */
export const make = (options: DockerExecutorOptions = {}): Executor.Executor => {
  const repoMountPath = options.repoMountPath ?? "/workflow"
  let gpuRuntime: boolean | undefined
  const watchToken = crypto.randomUUID()
  let watchdog: ChildProcess | undefined
  /** Starts the watchdog once, before the first container; a client over TCP has none. */
  const ensureWatchdog = (docker: Dockerode) => {
    if (watchdog !== undefined && watchdog.exitCode === null && watchdog.signalCode === null) return
    const socketPath = options.socketPath ?? (docker.modem as { socketPath?: string }).socketPath
    if (typeof socketPath !== "string" || socketPath === "") return
    watchdog = startWatchdog(socketPath, watchToken)
  }

  const start = (spec: ExecutionSpec, observer: ExecutionObserver): Effect.Effect<Execution, ExecutorError> =>
    Effect.gen(function* () {
      const image = spec.image
      if (!image) return yield* Effect.fail(fail("start", "Executor", "the docker executor needs an image"))
      const docker = yield* loadClient(options)
      yield* pullIfAbsent(docker, spec, image, observer)
      if (gpuRuntime === undefined && (spec.gpus === "all" || spec.gpus > 0)) {
        gpuRuntime = yield* Effect.promise(() =>
          docker.info().then((info: { Runtimes?: Record<string, unknown> }) => "nvidia" in (info.Runtimes ?? {}), () => false)
        )
      }
      ensureWatchdog(docker)
      const container = yield* Effect.tryPromise({
        try: () => docker.createContainer(containerOptions(spec, image, repoMountPath, gpuRuntime ?? false, observer, watchToken)),
        catch: (cause) => fail("start", "CreatingContainer", `cannot create a container from ${image}: ${engineMessage(cause)}`, cause)
      })
      const remove = Effect.promise(() => container.remove({ force: true, v: true }).catch(() => undefined))
      yield* Effect.tryPromise({
        try: () => container.start(),
        catch: (cause) => {
          const message = engineMessage(cause)
          return isPortBindingFailure(message)
            ? fail("start", "PortsBinding", `cannot publish the ports of ${image}: ${message}`, cause)
            : fail("start", "Executor", `cannot start the container from ${image}: ${message}`, cause)
        }
      }).pipe(Effect.tapError(() => remove))

      const ports = yield* Effect.tryPromise({
        try: () => container.inspect(),
        catch: (cause) => fail("start", "Executor", `cannot inspect the container: ${engineMessage(cause)}`, cause)
      }).pipe(
        Effect.map((info): ReadonlyArray<PublishedPort> =>
          spec.ports.map((port) => {
            const bound = info.NetworkSettings.Ports?.[`${port.containerPort}/tcp`]?.[0]
            return { containerPort: port.containerPort, hostPort: Number(bound?.HostPort ?? 0) }
          })
        ),
        Effect.tapError(() => remove)
      )

      // Logs from the start of the container: nothing is lost even if it has already ended. The
      // followed log may end before its last entries, so it is read again at the end (ContainerLog).
      const logsDone = yield* Deferred.make<void>()
      const log = new ContainerLog(observer.log)
      let following = true
      const demuxer = new FrameDemuxer((stream, bytes) => following && log.followed(stream, bytes))
      const followed = yield* Effect.tryPromise({
        try: () => container.logs({ follow: true, stdout: true, stderr: true, timestamps: true }) as Promise<NodeJS.ReadableStream>,
        catch: (cause) => fail("start", "Executor", `cannot follow the container's logs: ${engineMessage(cause)}`, cause)
      }).pipe(
        Effect.tap((stream) =>
          Effect.sync(() => {
            stream.on("data", (chunk: Uint8Array) => demuxer.push(chunk))
            const done = () => Deferred.unsafeDone(logsDone, Effect.void)
            stream.on("end", done)
            stream.on("close", done)
            stream.on("error", done)
          })
        ),
        Effect.tapError(() => remove)
      )

      let endedBy: ExecutionExit["endedBy"]
      const exited = yield* Deferred.make<ExecutionExit>()
      let finished = false
      const waitExit = Effect.promise(() =>
        container.wait().then(
          (r: { StatusCode: number }) => r.StatusCode,
          () => 1
        )
      )
      yield* waitExit.pipe(
        Effect.flatMap((exitCode) =>
          Deferred.await(logsDone).pipe(
            Effect.timeout("5 seconds"),
            Effect.ignore,
            Effect.zipRight(Effect.sync(() => {
              following = false
              ;(followed as unknown as { destroy?: () => void }).destroy?.()
            })),
            Effect.zipRight(readAgain(container, log)),
            Effect.zipRight(remove),
            Effect.zipRight(
              Effect.sync(() => {
                finished = true
                Deferred.unsafeDone(exited, Effect.succeed({ exitCode, ...(endedBy ? { endedBy } : {}) }))
              })
            )
          )
        ),
        Effect.forkDaemon
      )

      const awaitExit = Deferred.await(exited)
      const stop = (grace: Duration.DurationInput) =>
        Effect.suspend(() => {
          if (finished) return awaitExit
          endedBy ??= "stop"
          const t = Math.max(0, Math.ceil(Duration.toSeconds(Duration.decode(grace))))
          return Effect.promise(() => container.stop({ t }).catch(() => undefined)).pipe(Effect.zipRight(awaitExit))
        })
      const abort = Effect.suspend(() => {
        if (finished) return awaitExit
        endedBy = "abort"
        return Effect.promise(() => container.kill({ signal: "SIGKILL" }).catch(() => undefined)).pipe(
          Effect.zipRight(awaitExit)
        )
      })
      const usage: Effect.Effect<ResourceUsage> = Effect.promise(() =>
        container.stats({ stream: false }).then(
          (s: Dockerode.ContainerStats) => ({
            cpuUsageMicro: Math.round((s.cpu_stats?.cpu_usage?.total_usage ?? 0) / 1000),
            memoryUsageBytes: Math.max(0, (s.memory_stats?.usage ?? 0) - (s.memory_stats?.stats?.cache ?? 0))
          }),
          () => ({ cpuUsageMicro: 0, memoryUsageBytes: 0 })
        )
      )
      const exec = (request: Executor.ExecRequest, execObserver: Executor.ExecObserver) =>
        finished ? Effect.fail(fail("exec", "Executor", "the job has ended")) : startDockerExec(container, { env: spec.env, user: spec.user }, request, execObserver)
      return { id: container.id, ports, exit: awaitExit, stop, abort, usage, exec } satisfies Execution
    })
  return { name: "docker", start }
}
