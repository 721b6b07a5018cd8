/**
 * The Executor port: how a runner runs one job on its host. What an executor is given (the
 * runtime-neutral `ExecutionSpec`; the runner maps a job spec onto it in one place), the
 * observer that receives logs and progress, a started `Execution`, and the `ExecutorError`
 * for a job that could not start. Implementations are plugins (`executors: { process: … }`):
 * `@dstack-ts/executor-process`, `@dstack-ts/executor-docker`.
 */
import type { Duration, Effect } from "effect"
import { Schema } from "effect"

/** A host directory mounted into a container. */
export interface ExecutionMount {
  readonly hostPath: string
  readonly containerPath: string
  readonly readOnly?: boolean
}

/** A container port to publish, optionally on a fixed host port. */
export interface ExecutionPort {
  readonly containerPort: number
  readonly hostPort?: number
}

/** Credentials for pulling a private image (sent as X-Registry-Auth). */
export interface ExecutionRegistryAuth {
  readonly username: string
  readonly password: string
  readonly serverAddress?: string
}

/** Everything an executor needs to start one job. */
export interface ExecutionSpec {
  /** Shell commands, joined with ` && ` and run under bash (or /bin/sh) `-c`. */
  readonly commands: ReadonlyArray<string>
  /** Container entrypoint; when given, `commands` become its arguments. Docker only. */
  readonly entrypoint?: ReadonlyArray<string>
  /** Job environment, on top of the host environment (process) or the image's (docker). */
  readonly env: Readonly<Record<string, string>>
  /** Working directory: absolute, or relative to `repoDir` (process) / `/workflow` (docker). */
  readonly workingDir?: string
  /** The host directory holding the job's code. */
  readonly repoDir: string
  /** Container image; absent means the process executor. */
  readonly image?: string
  readonly registryAuth?: ExecutionRegistryAuth
  readonly user?: string
  readonly privileged: boolean
  /** Container ports to publish on 127.0.0.1 (on `hostPort`, or a free port when absent). */
  readonly ports: ReadonlyArray<ExecutionPort>
  readonly shmSizeBytes?: number
  readonly mounts: ReadonlyArray<ExecutionMount>
  /** GPUs requested: a count, or "all". 0 means none. */
  readonly gpus: number | "all"
  /** Labels put on the container, so a crashed runner's containers can be found. */
  readonly labels?: Readonly<Record<string, string>>
}

/** Where an executor reports while a job runs. Calls are synchronous and cheap. */
export interface ExecutionObserver {
  /** A chunk of the job's output, in the order it was read from that stream. */
  readonly log: (stream: "stdout" | "stderr", bytes: Uint8Array) => void
  /** The image is being pulled (docker only). */
  readonly pulling?: () => void
  /** A message from the executor itself (not the job), e.g. "no nvidia runtime, GPUs skipped". */
  readonly note?: (message: string) => void
}

/** A container port and the 127.0.0.1 port it is published on. */
export interface PublishedPort {
  readonly containerPort: number
  readonly hostPort: number
}

/** How a job ended. */
export interface ExecutionExit {
  /** The exit code; 128 + signal number when a signal ended the process. */
  readonly exitCode: number
  /** Set when the runner ended the job: "stop" (graceful) or "abort" (killed at once). */
  readonly endedBy?: "stop" | "abort"
}

/** A started job. */
export interface Execution {
  /** The process id (process executor) or container id (docker executor). */
  readonly id: string
  readonly ports: ReadonlyArray<PublishedPort>
  /** Completes when the job has ended and all its output has been delivered to the observer. */
  readonly exit: Effect.Effect<ExecutionExit>
  /** Asks the job to end (SIGTERM), killing it after `grace`; completes when it has ended. */
  readonly stop: (grace: Duration.DurationInput) => Effect.Effect<ExecutionExit>
  /** Kills the job at once; completes when it has ended. */
  readonly abort: Effect.Effect<ExecutionExit>
  /** Cumulative CPU time and current memory of the job, for metrics. */
  readonly usage: Effect.Effect<ResourceUsage>
  /**
   * Runs a command (or an interactive shell) where the job runs, while it runs: on its host in
   * its working directory with its environment (process), inside its container (docker). The
   * SSH proxy's `ssh RUN` goes through it. Absent: this executor cannot.
   */
  readonly exec?: (request: ExecRequest, observer: ExecObserver) => Effect.Effect<ExecSession, ExecutorError>
}

/** What to run beside a job: a command, or a login shell, optionally on a terminal. */
export interface ExecRequest {
  /** A shell command line (run with `sh -c`); absent: an interactive login shell. */
  readonly command?: string
  /** Variables on top of the job's (`TERM`, those an SSH client sent). */
  readonly env: Readonly<Record<string, string>>
  /** A pseudo-terminal of this size; absent: plain pipes. */
  readonly tty?: { readonly cols: number; readonly rows: number }
}

/** Where an exec reports its output and its end. */
export interface ExecObserver {
  readonly output: (stream: "stdout" | "stderr", bytes: Uint8Array) => void
  /** Called once, after all output: the exit code, or the signal (`TERM`, no `SIG`) that ended it. */
  readonly exit: (result: ExecExit) => void
}

/** How an exec ended. */
export type ExecExit = { readonly code: number } | { readonly signal: string }

/** A started exec. */
export interface ExecSession {
  readonly write: (bytes: Uint8Array) => void
  /** No more input (stdin end-of-file). */
  readonly endInput: () => void
  readonly resize: (cols: number, rows: number) => void
  /** Sends a signal (`INT`, `TERM`, `KILL`, … without `SIG`) to the command. */
  readonly signal: (name: string) => void
}

/** Resource usage of a job at one instant. */
export interface ResourceUsage {
  /** CPU time used so far by all of the job's processes, in microseconds. */
  readonly cpuUsageMicro: number
  /** Resident memory of the job's processes (or the container's cgroup), in bytes. */
  readonly memoryUsageBytes: number
}

/** Why a job could not start. The reasons map one to one to runner termination reasons. */
export const ExecutorErrorReason = Schema.Literal("CreatingContainer", "PortsBinding", "Executor")
export type ExecutorErrorReason = typeof ExecutorErrorReason.Type

/** A job could not start; `module` names the implementation (`ProcessExecutor`, `DockerExecutor` …). */
export class ExecutorError extends Schema.TaggedError<ExecutorError>("@dstack-ts/core/ExecutorError")("ExecutorError", {
  module: Schema.String,
  method: Schema.String,
  reason: ExecutorErrorReason,
  message: Schema.String,
  cause: Schema.optional(Schema.Defect)
}) {}

/**
 * Starts jobs. One implementation per way of running a job. The runner runs a job with an
 * `image` on the executor named `docker` (`CONTAINER_EXECUTOR`) and one without on the
 * executor named `process` (`PROCESS_EXECUTOR`): a podman or containerd plugin contributes
 * itself under `docker` to take container jobs.
 */
export interface Executor {
  /** The executor's name, as its plugin contributes it (`process`, `docker`, or its own). */
  readonly name: string
  readonly start: (spec: ExecutionSpec, observer: ExecutionObserver) => Effect.Effect<Execution, ExecutorError>
}

/** The executor name that runs jobs with an image. */
export const CONTAINER_EXECUTOR = "docker"
/** The executor name that runs jobs without an image, on the host. */
export const PROCESS_EXECUTOR = "process"

/** The executor a job runs on: `docker` with an image, `process` without. */
export const executorNameFor = (spec: Pick<ExecutionSpec, "image">): string =>
  spec.image ? CONTAINER_EXECUTOR : PROCESS_EXECUTOR
