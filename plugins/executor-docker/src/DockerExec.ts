/**
 * Commands and shells inside a running job's container (`Execution.exec`), as `docker exec`:
 * through the Engine API (dockerode), a terminal with `Tty` where asked (resized with the
 * exec's resize call), otherwise stdout and stderr demultiplexed; the exit code from the exec's
 * inspection once its stream ends.
 */
import { Executor } from "@dstack-ts/core"
import type Dockerode from "dockerode"
import { Effect } from "effect"
import { FrameDemuxer } from "./DockerExecutor.ts"

/** A login shell: bash where the image has it, else sh. */
const LOGIN_SHELL_SCRIPT = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi"

/**
 * The exec's command line. On a terminal it first gives the terminal its size with the image's
 * `stty` (quietly skipped where the image has none): the Engine's resize call can only come
 * once the command has started, and a command that reads its size at once would find none.
 */
const execCommand = (command: string | undefined, tty: { readonly cols: number; readonly rows: number } | undefined): Array<string> => {
  const script = command ?? LOGIN_SHELL_SCRIPT
  if (tty === undefined) return ["/bin/sh", "-c", script]
  return ["/bin/sh", "-c", 'stty rows "$1" cols "$2" 2>/dev/null; exec /bin/sh -c "$3"', "sh", String(Math.max(1, tty.rows | 0)), String(Math.max(1, tty.cols | 0)), script]
}

const failure = (message: string, cause?: unknown) =>
  new Executor.ExecutorError({ module: "DockerExecutor", method: "exec", reason: "Executor", message, cause })

const engineMessage = (cause: unknown): string => {
  const e = cause as { json?: { message?: string }; message?: string }
  return e?.json?.message ?? e?.message ?? String(cause)
}

/** Starts an exec in `container` with the job's environment `env` and user `user`. */
export const startDockerExec = (
  container: Dockerode.Container,
  job: { readonly env: Readonly<Record<string, string>>; readonly user?: string | undefined },
  request: Executor.ExecRequest,
  observer: Executor.ExecObserver
): Effect.Effect<Executor.ExecSession, Executor.ExecutorError> =>
  Effect.tryPromise({
    try: async () => {
      const tty = request.tty !== undefined
      const exec = await container.exec({
        Cmd: execCommand(request.command, request.tty),
        Env: Object.entries({ ...job.env, ...request.env }).map(([k, v]) => `${k}=${v}`),
        ...(job.user ? { User: job.user } : {}),
        AttachStdin: true,
        AttachStdout: true,
        AttachStderr: true,
        Tty: tty
      })
      const stream = (await exec.start({ hijack: true, stdin: true, Tty: tty })) as NodeJS.ReadWriteStream & { end: () => void; destroy?: () => void }
      // The Engine's resize call and the attached stream are separate connections: input sent
      // after a resize waits for the call's answer (the terminal has its new size by then), so
      // the command reads it in the order the client sent them.
      let queue: Promise<void> | undefined
      let queued = 0
      const enqueue = (task: () => unknown) => {
        queued++
        queue = (queue ?? Promise.resolve()).then(task).then(() => undefined, () => undefined).finally(() => {
          if (--queued === 0) queue = undefined
        })
      }
      const afterResizes = (action: () => void) => (queue === undefined ? action() : enqueue(action))
      const resize = (cols: number, rows: number) => enqueue(() => exec.resize({ h: Math.max(1, rows | 0), w: Math.max(1, cols | 0) }))
      if (request.tty !== undefined) resize(request.tty.cols, request.tty.rows)
      const demuxer = tty ? undefined : new FrameDemuxer(observer.output)
      stream.on("data", (chunk: Uint8Array) => (demuxer ? demuxer.push(chunk) : observer.output("stdout", chunk)))
      stream.on("error", () => {})
      let ended = false
      const end = () => {
        if (ended) return
        ended = true
        exec.inspect().then(
          (info: { ExitCode?: number | null }) => observer.exit({ code: info.ExitCode ?? 1 }),
          () => observer.exit({ code: 1 })
        )
      }
      stream.on("end", end)
      stream.on("close", end)
      let pid: number | undefined
      exec.inspect().then((info: { Pid?: number }) => (pid = info.Pid), () => undefined)
      return {
        write: (bytes: Uint8Array) => afterResizes(() => void stream.write(bytes)),
        // On a terminal the end of input is the terminal's EOF character, as for the process
        // executor's pty; closing the Engine's stream there would end the exec before its output.
        endInput: () => afterResizes(() => (tty ? void stream.write(new Uint8Array([4])) : stream.end())),
        resize,
        // The Engine has no signal call for an exec: its process is signalled on the host by
        // its host pid, where the runner may (same user, or root).
        signal: (name: string) => {
          if (pid === undefined || !/^[A-Z0-9]+$/.test(name)) return
          try {
            process.kill(pid, `SIG${name}` as NodeJS.Signals)
          } catch {
            // Gone, or not ours to signal.
          }
        }
      } satisfies Executor.ExecSession
    },
    catch: (cause) => failure(`cannot exec in the job's container: ${engineMessage(cause)}`, cause)
  })
