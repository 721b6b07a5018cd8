/**
 * The process executor: runs a job's commands on the host, without a container, under bash
 * (or /bin/sh) in its own process group, so that stop and abort reach the whole process tree.
 * The group dies with the runner: one watchdog process per executor holds a pipe from the
 * runner and kills the groups of running jobs when the pipe closes, which happens however the
 * runner ends (`kill -9` included).
 */
import { spawn } from "node:child_process"
import type { ChildProcess } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Executor } from "@dstack-ts/core"
import { Deferred, Duration, Effect } from "effect"
import { endExecs, startExec } from "./ProcessExec.ts"
import { processGroupUsage } from "./ProcessUsage.ts"

type Execution = Executor.Execution
type ExecutionExit = Executor.ExecutionExit
type ExecutionObserver = Executor.ExecutionObserver
type ExecutionSpec = Executor.ExecutionSpec
type ExecutorError = Executor.ExecutorError
type ResourceUsage = Executor.ResourceUsage

/** Options of the process executor. */
export interface ProcessExecutorOptions {
  /** The shell that runs the commands; default: bash when it exists, else /bin/sh. */
  readonly shell?: string
  /** Pass the runner's own environment to the job (under the job's env); default true. */
  readonly inheritEnv?: boolean
  /**
   * How long to wait for the job's output pipes to close once its main process has exited
   * and the rest of its process group has been killed; default 2 s. A process that left the
   * group (setsid) can hold them open: after this its output is no longer read.
   */
  readonly drainTimeout?: Duration.DurationInput
}

const SHELL_CANDIDATES = ["/bin/bash", "/usr/bin/bash", "/usr/local/bin/bash"]

const isExecutable = (file: string): boolean => {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return true
  } catch {
    return false
  }
}

/** bash when it exists (as upstream), else the POSIX shell. */
export const defaultShell = (): string => SHELL_CANDIDATES.find(isExecutable) ?? "/bin/sh"

const error = (method: string, message: string, cause?: unknown) =>
  new Executor.ExecutorError({ module: "ProcessExecutor", method, reason: "Executor", message, cause })

const exitCodeOf = (code: number | null, signal: NodeJS.Signals | null): number => {
  if (code !== null) return code
  const number = signal ? os.constants.signals[signal] : undefined
  return number ? 128 + number : 1
}

/**
 * The shell program of the watchdog: it keeps the set of process groups it is told of
 * (`add PGID` / `del PGID`, a line each, on its stdin) and, at end-of-file, kills each group
 * left in it. Only builtins, so a `del` costs no process.
 */
const WATCHDOG_SCRIPT = [
  'g=" "',
  'while read -r op id; do',
  '  case "$op" in',
  '    add) g="$g$id " ;;',
  '    del) n=" "; for x in $g; do [ "$x" = "$id" ] || n="$n$x "; done; g="$n" ;;',
  '  esac',
  'done',
  'for x in $g; do kill -9 -"$x" 2>/dev/null; done'
].join("\n")

/**
 * One watchdog per executor for the process groups of its jobs, in a group of its own: its
 * stdin is a pipe whose only writer is this process (the runner), so it reads end-of-file when
 * the runner ends, whatever ends it (`kill -9` included), and then kills the groups still
 * registered. A job that ends is unregistered first, so a later group with a reused id is
 * never hit. One long-lived process instead of one per job keeps a fork off each job's start.
 */
export interface GroupWatchdog {
  readonly add: (pgid: number) => void
  readonly remove: (pgid: number) => void
}

export const makeGroupWatchdog = (): GroupWatchdog => {
  const groups = new Set<number>()
  let watchdog: ChildProcess | undefined
  const send = (line: string) => {
    watchdog ??= start()
    watchdog.stdin?.write(line)
  }
  const start = (): ChildProcess => {
    const child = spawn("/bin/sh", ["-c", WATCHDOG_SCRIPT], { detached: true, stdio: ["pipe", "ignore", "ignore"] })
    // Neither the watchdog nor its pipe keeps the runner's event loop alive.
    child.unref()
    ;(child.stdin as unknown as { unref?: () => void } | null)?.unref?.()
    child.on("error", () => {})
    child.stdin?.on("error", () => {})
    // A watchdog that died (killed by hand) is replaced on the next use, told of every live group.
    child.once("exit", () => {
      if (watchdog !== child) return
      watchdog = undefined
      if (groups.size > 0) send([...groups].map((g) => `add ${g}\n`).join(""))
    })
    return child
  }
  return {
    add: (pgid) => {
      groups.add(pgid)
      send(`add ${pgid}\n`)
    },
    remove: (pgid) => {
      if (!groups.delete(pgid)) return
      send(`del ${pgid}\n`)
    }
  }
}

/** Signals every process of a group; a group that is already gone is not an error. */
const signalGroup = (pgid: number, signal: NodeJS.Signals): void => {
  try {
    process.kill(-pgid, signal)
  } catch {
    // ESRCH: nothing left in the group.
  }
}

const awaitSpawn = (child: ChildProcess, command: string) =>
  Effect.async<void, ExecutorError>((resume) => {
    const onSpawn = () => {
      child.off("error", onError)
      resume(Effect.void)
    }
    const onError = (cause: Error) => {
      child.off("spawn", onSpawn)
      resume(Effect.fail(error("start", `cannot start ${command}: ${cause.message}`, cause)))
    }
    child.once("spawn", onSpawn)
    child.once("error", onError)
  })

/**
 * Variables that describe the SSH session the runner was started from (a fleet host's or a
 * Slurm login node's), not the job: with them, bash takes the job's non-interactive shell for
 * one started by sshd and reads the user's ~/.bashrc (Debian builds bash so), which can be
 * slow or block (a pyenv init waiting on a stale lock held the first line of a job back for
 * a minute).
 */
const SESSION_VARIABLES = ["SSH_CLIENT", "SSH2_CLIENT", "SSH_CONNECTION", "SSH_TTY"]

/** The runner's environment as a job inherits it: without the runner's SSH session. */
const inheritedEnv = (): Record<string, string | undefined> => {
  const env = { ...process.env }
  for (const name of SESSION_VARIABLES) delete env[name]
  return env
}

/**
 * Makes the process executor.
 *
 * @example
 * const execution = yield* ProcessExecutor.make().start(spec, { log: (stream, bytes) => ... })
 * const { exitCode } = yield* execution.exit
 */
export const make = (options: ProcessExecutorOptions = {}): Executor.Executor => {
  const drainTimeout = Duration.decode(options.drainTimeout ?? "2 seconds")
  const watchdog = makeGroupWatchdog()
  const start = (spec: ExecutionSpec, observer: ExecutionObserver): Effect.Effect<Execution, ExecutorError> =>
    Effect.gen(function* () {
      const cwd = path.resolve(spec.repoDir, spec.workingDir ?? ".")
      const stat = yield* Effect.sync(() => fs.statSync(cwd, { throwIfNoEntry: false }))
      if (!stat?.isDirectory()) {
        return yield* Effect.fail(error("start", `working_dir ${cwd} does not exist or is not a directory`))
      }
      const shell = options.shell ?? defaultShell()
      const script = spec.commands.join(" && ")
      const env = { ...(options.inheritEnv === false ? {} : inheritedEnv()), ...spec.env }
      const child = yield* Effect.try({
        try: () => spawn(shell, ["-c", script], { cwd, env, detached: true, stdio: ["ignore", "pipe", "pipe"] }),
        catch: (cause) => error("start", `cannot start ${shell}: ${String(cause)}`, cause)
      })
      yield* awaitSpawn(child, shell)
      const pid = child.pid as number
      watchdog.add(pid)

      const exited = yield* Deferred.make<ExecutionExit>()
      let endedBy: ExecutionExit["endedBy"]
      let leaderExit: { code: number | null; signal: NodeJS.Signals | null } | undefined
      let finished = false

      child.stdout!.on("data", (chunk: Uint8Array) => observer.log("stdout", chunk))
      child.stderr!.on("data", (chunk: Uint8Array) => observer.log("stderr", chunk))

      const finish = () => {
        if (finished) return
        finished = true
        const exit = leaderExit ?? { code: null, signal: null }
        const result: ExecutionExit = { exitCode: exitCodeOf(exit.code, exit.signal), ...(endedBy ? { endedBy } : {}) }
        Deferred.unsafeDone(exited, Effect.succeed(result))
      }
      const execs = new Set<ChildProcess>()
      child.on("exit", (code, signal) => {
        leaderExit = { code, signal }
        endExecs(execs)
        watchdog.remove(pid)
        // The job is over when its main process is: what it left behind in its group goes too,
        // which also closes the pipes those processes held.
        signalGroup(pid, "SIGKILL")
        setTimeout(() => {
          if (finished) return
          child.stdout!.destroy()
          child.stderr!.destroy()
          finish()
        }, Duration.toMillis(drainTimeout)).unref()
      })
      child.on("close", finish)

      const awaitExit = Deferred.await(exited)
      const stop = (grace: Duration.DurationInput) =>
        Effect.suspend(() => {
          if (finished) return awaitExit
          endedBy ??= "stop"
          signalGroup(pid, "SIGTERM")
          return awaitExit.pipe(
            Effect.timeoutTo({
              duration: grace,
              onSuccess: Effect.succeed,
              onTimeout: () =>
                Effect.sync(() => signalGroup(pid, "SIGKILL")).pipe(Effect.zipRight(awaitExit))
            }),
            Effect.flatten
          )
        })
      const abort = Effect.suspend(() => {
        if (finished) return awaitExit
        endedBy = "abort"
        signalGroup(pid, "SIGKILL")
        return awaitExit
      })
      const usage: Effect.Effect<ResourceUsage> = Effect.sync(() => processGroupUsage(pid))
      const exec = (request: Executor.ExecRequest, execObserver: Executor.ExecObserver) =>
        finished || leaderExit !== undefined
          ? Effect.fail(error("exec", "the job has ended"))
          : startExec({ shell, cwd, env, watchdog }, request, execObserver, execs)
      return { id: String(pid), ports: [], exit: awaitExit, stop, abort, usage, exec } satisfies Execution
    })
  return { name: "process", start }
}
