/**
 * Commands and shells beside a running process job (`Execution.exec`): on the job's host, in its
 * working directory, with its environment, each in a process group of its own. A terminal comes
 * from python3's `pty` module (Node has no pseudo-terminal of its own): a small program that
 * runs the command on a pty, copies bytes both ways, takes resize and signal requests on fd 3,
 * and ends as its command ended (the same exit code, or killed by the same signal).
 */
import { type ChildProcess, spawn } from "node:child_process"
import { Executor } from "@dstack-ts/core"
import { Effect } from "effect"

/** The pty program (python3 -c): argv is cols, rows, then the command. */
const PTY_PROGRAM = `
import os, sys, pty, fcntl, termios, struct, select, signal
cols, rows, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def size(fd, c, r):
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", r, c, 0, 0))
pid, master = pty.fork()
if pid == 0:
    size(0, cols, rows)
    try:
        os.execvp(argv[0], argv)
    except OSError as e:
        os.write(2, ("cannot run %s: %s\\r\\n" % (argv[0], e)).encode())
        os._exit(127)
size(master, cols, rows)
inputs, control, pending = [0, master, 3], b"", b""
while True:
    try:
        ready = select.select(inputs, [], [])[0]
    except InterruptedError:
        continue
    if master in ready:
        try:
            data = os.read(master, 65536)
        except OSError:
            data = b""
        if not data:
            break
        os.write(1, data)
    # Controls before input: a resize sent before some input is in place when that input is read.
    if 3 in ready:
        data = os.read(3, 4096)
        if not data:
            inputs.remove(3)
        control += data
        while b"\\n" in control:
            line, control = control.split(b"\\n", 1)
            parts = line.decode().split()
            if parts[0] == "R":
                size(master, int(parts[1]), int(parts[2]))
            elif parts[0] == "S":
                try:
                    os.killpg(pid, getattr(signal, "SIG" + parts[1]))
                except (OSError, AttributeError):
                    pass
    if 0 in ready:
        data = os.read(0, 65536)
        if data:
            os.write(master, data)
        else:
            inputs.remove(0)
            os.write(master, b"\\x04")
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
`

const failure = (message: string, cause?: unknown) =>
  new Executor.ExecutorError({ module: "ProcessExecutor", method: "exec", reason: "Executor", message, cause })

/** Where a job runs, as its execs need it. */
export interface ExecContext {
  readonly shell: string
  readonly cwd: string
  readonly env: Readonly<Record<string, string | undefined>>
  /** Told of each exec's process group, so that it dies with the runner as the job does. */
  readonly watchdog?: { readonly add: (pgid: number) => void; readonly remove: (pgid: number) => void }
}

/** Signals a process group; one already gone is not an error. */
const signalGroup = (pgid: number | undefined, signal: NodeJS.Signals): void => {
  if (pgid === undefined) return
  try {
    process.kill(-pgid, signal)
  } catch {
    // ESRCH: nothing left in the group.
  }
}

/**
 * Starts an exec for a job run in `context`; `children` collects the processes so that the
 * job's end can end them too.
 */
export const startExec = (
  context: ExecContext,
  request: Executor.ExecRequest,
  observer: Executor.ExecObserver,
  children: Set<ChildProcess>
): Effect.Effect<Executor.ExecSession, Executor.ExecutorError> =>
  Effect.async<Executor.ExecSession, Executor.ExecutorError>((resume) => {
    const argv = request.command === undefined ? [context.shell, "-l"] : [context.shell, "-c", request.command]
    const env = { ...context.env, ...request.env }
    const tty = request.tty
    let child: ChildProcess
    try {
      child = tty === undefined
        ? spawn(argv[0], argv.slice(1), { cwd: context.cwd, env, detached: true, stdio: ["pipe", "pipe", "pipe"] })
        : spawn("python3", ["-c", PTY_PROGRAM, String(tty.cols), String(tty.rows), ...argv], { cwd: context.cwd, env, detached: true, stdio: ["pipe", "pipe", "pipe", "pipe"] })
    } catch (cause) {
      return resume(Effect.fail(failure(`cannot start ${argv[0]}: ${String(cause)}`, cause)))
    }
    const control = tty === undefined ? undefined : (child.stdio[3] as NodeJS.WritableStream & { on: (e: string, f: () => void) => void })
    control?.on("error", () => {})
    child.stdin!.on("error", () => {})
    child.stdout!.on("data", (chunk: Uint8Array) => observer.output("stdout", chunk))
    child.stderr!.on("data", (chunk: Uint8Array) => observer.output("stderr", chunk))
    child.once("error", (cause) => {
      children.delete(child)
      const what = tty === undefined ? argv[0] : "python3 (it gives the terminal)"
      resume(Effect.fail(failure(`cannot start ${what}: ${cause.message}`, cause)))
    })
    child.once("spawn", () => {
      children.add(child)
      if (child.pid !== undefined) context.watchdog?.add(child.pid)
      resume(
        Effect.succeed({
          write: (bytes) => void child.stdin!.write(bytes),
          endInput: () => void child.stdin!.end(),
          resize: (cols, rows) => void control?.write(`R ${Math.max(1, cols | 0)} ${Math.max(1, rows | 0)}\n`),
          signal: (name) => {
            if (!/^[A-Z0-9]+$/.test(name)) return
            if (control !== undefined) control.write(`S ${name}\n`)
            else signalGroup(child.pid, `SIG${name}` as NodeJS.Signals)
          }
        })
      )
    })
    child.once("close", (code, signal) => {
      children.delete(child)
      // What the command started in the background goes with it.
      signalGroup(child.pid, "SIGHUP")
      if (child.pid !== undefined) context.watchdog?.remove(child.pid)
      observer.exit(signal !== null ? { signal: signal.replace(/^SIG/, "") } : { code: code ?? 1 })
    })
  })

/** Ends the execs of a job that has ended: SIGHUP to each group, as a closing terminal would. */
export const endExecs = (children: Set<ChildProcess>): void => {
  const left = [...children]
  for (const child of left) signalGroup(child.pid, "SIGHUP")
  // A shell that ignores SIGHUP still goes.
  if (left.length > 0) setTimeout(() => left.forEach((child) => signalGroup(child.pid, "SIGKILL")), 2000).unref()
}
