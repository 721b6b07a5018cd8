/**
 * Shells and commands through the SSH proxy (`ssh RUN`, `ssh RUN cmd`): an SSH `session`
 * channel's `shell` or `exec` is run where the job runs through the runner's exec WebSocket
 * (runner/ExecProtocol.ts), reached over the runner transport's forward to the runner. `pty-req`,
 * `window-change`, `env` and `signal` are carried over; output, the exit status (or the signal
 * that ended the command) and stdin's end travel as SSH sends them.
 */
import type { ServerChannel, Session } from "ssh2"
import WebSocket from "ws"
import { EXEC_PATH, type ExecReply, PRESENCE_PATH, STDERR } from "../runner/ExecProtocol.ts"

/** Where the runner's HTTP API is reachable from the server (a forward's local end). */
export interface RunnerEndpoint {
  readonly host: string
  readonly port: number
}

/** What a session needs from its connection. */
export interface SessionContext {
  /** Opens (or reuses) the forward to the job's runner. */
  readonly runner: () => Promise<RunnerEndpoint>
  /** Each open session registers here, so that the job's end can close it with a message. */
  readonly open: Set<OpenSession>
  /** Whether the job still runs, asked when a command ends by a hang-up. */
  readonly jobEnded: () => Promise<string | undefined>
  readonly runName: string
}

/** An open shell or command: `close` ends it with a message on its stderr. */
export interface OpenSession {
  readonly close: (message: string) => void
}

/** Variables an SSH client may set (`SendEnv`), as OpenSSH's sshd accepts by default: LANG, LC_*. */
const ACCEPTED_ENV = /^(LANG|LANGUAGE|LC_[A-Z_]+|TERM|COLORTERM|TZ)$/

/** Handles one `session` channel's requests. */
export const handleSession = (session: Session, context: SessionContext): void => {
  const env: Record<string, string> = {}
  let tty: { cols: number; rows: number } | undefined
  let started: { resize: (cols: number, rows: number) => void; signal: (name: string) => void } | undefined

  session.on("pty", (accept, _reject, info) => {
    tty = { cols: Math.max(1, info.cols || 80), rows: Math.max(1, info.rows || 24) }
    if (info.term) env.TERM = info.term
    accept?.()
  })
  session.on("window-change", (accept, _reject, info) => {
    if (tty !== undefined) tty = { cols: Math.max(1, info.cols), rows: Math.max(1, info.rows) }
    started?.resize(Math.max(1, info.cols), Math.max(1, info.rows))
    accept?.()
  })
  session.on("env", (accept, reject, info) => {
    if (!ACCEPTED_ENV.test(info.key)) return reject?.()
    env[info.key] = info.val
    accept?.()
  })
  session.on("signal", (accept, _reject, info) => {
    started?.signal(info.name)
    accept?.()
  })
  session.on("subsystem", (_accept, reject) => reject?.())
  session.on("sftp", (_accept, reject) => reject?.())
  const run = (channel: ServerChannel, command: string | undefined) => {
    started = runThroughRunner(channel, command, { env, ...(tty !== undefined ? { tty } : {}) }, context)
  }
  session.on("shell", (accept) => run(accept(), undefined))
  session.on("exec", (accept, _reject, info) => run(accept(), info.command))
}

const runThroughRunner = (
  channel: ServerChannel,
  command: string | undefined,
  request: { readonly env: Record<string, string>; readonly tty?: { cols: number; rows: number } },
  context: SessionContext
): { resize: (cols: number, rows: number) => void; signal: (name: string) => void } => {
  let socket: WebSocket | undefined
  let over = false
  const pending: Array<string | Uint8Array> = []
  const send = (data: string | Uint8Array) => {
    if (socket?.readyState === WebSocket.OPEN) socket.send(data, { binary: typeof data !== "string" })
    else if (!over) pending.push(data)
  }
  const open: OpenSession = { close: (message) => finish({ code: 255 }, message) }
  context.open.add(open)
  /** Ends the channel once: an optional message on stderr, then the exit status or signal. */
  const finish = (result: { code: number } | { signal: string }, message?: string) => {
    if (over) return
    over = true
    context.open.delete(open)
    if (message !== undefined) channel.stderr.write(`${request.tty !== undefined ? "\r\n" : ""}${message}${request.tty !== undefined ? "\r\n" : "\n"}`)
    if ("code" in result) channel.exit(result.code)
    else channel.exit(result.signal, false, "")
    channel.end()
    if (socket !== undefined && socket.readyState <= WebSocket.OPEN) socket.close(1000)
  }
  channel.on("data", (chunk: Buffer) => send(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength)))
  channel.on("end", () => send(JSON.stringify({ eof: true })))
  channel.on("error", () => {})
  // The client went away: the runner hangs the command up when its socket closes.
  channel.on("close", () => {
    over = true
    context.open.delete(open)
    if (socket !== undefined && socket.readyState <= WebSocket.OPEN) socket.close(1000)
  })
  context.runner().then(
    (runner) => {
      if (over) return
      const ws = new WebSocket(`ws://${runner.host.includes(":") ? `[${runner.host}]` : runner.host}:${runner.port}${EXEC_PATH}`, { perMessageDeflate: false })
      socket = ws
      let exited = false
      ws.on("open", () => {
        ws.send(JSON.stringify({ ...(command !== undefined ? { command } : {}), env: request.env, ...(request.tty !== undefined ? { tty: request.tty } : {}) }))
        for (const m of pending.splice(0)) ws.send(m, { binary: typeof m !== "string" })
      })
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        if (isBinary) {
          if (data.length < 1) return
          const bytes = data.subarray(1)
          if (data[0] === STDERR) channel.stderr.write(bytes)
          else channel.write(bytes)
          return
        }
        let reply: ExecReply
        try {
          reply = JSON.parse(data.toString("utf8")) as ExecReply
        } catch {
          return
        }
        if ("error" in reply) return finish({ code: 255 }, `dstack: cannot run in run ${context.runName}: ${reply.error}`)
        if ("exit" in reply) {
          exited = true
          const result = reply.exit
          // A hang-up is how the runner ends what runs beside a job that has ended: say so.
          if ("signal" in result && result.signal === "HUP") {
            context.jobEnded().then(
              (why) => finish(result, why),
              () => finish(result)
            )
            return
          }
          finish(result)
        }
      })
      ws.on("error", (error) => {
        if (!exited) finish({ code: 255 }, `dstack: lost the connection to the runner of run ${context.runName}: ${error.message}`)
      })
      ws.on("close", () => {
        if (exited) return
        context.jobEnded().then(
          (why) => finish({ code: 255 }, why ?? `dstack: lost the connection to the runner of run ${context.runName}`),
          () => finish({ code: 255 }, `dstack: lost the connection to the runner of run ${context.runName}`)
        )
      })
    },
    (error: unknown) => finish({ code: 255 }, `dstack: cannot reach the runner of run ${context.runName}: ${error instanceof Error ? error.message : String(error)}`)
  )
  return {
    resize: (cols, rows) => send(JSON.stringify({ resize: { cols, rows } })),
    signal: (name) => {
      if (/^[A-Z0-9]+$/.test(name)) send(JSON.stringify({ signal: name }))
    }
  }
}

/**
 * Holds the runner's presence socket open while an SSH connection is (a dev environment's
 * `inactivity_duration` counts from the last one closing); answers the function that closes it.
 * A runner that cannot be reached is let be: the connection's own channels say so.
 */
export const holdPresence = (runner: () => Promise<RunnerEndpoint>): (() => void) => {
  let closed = false
  let socket: WebSocket | undefined
  runner().then(
    (endpoint) => {
      if (closed) return
      socket = new WebSocket(`ws://${endpoint.host.includes(":") ? `[${endpoint.host}]` : endpoint.host}:${endpoint.port}${PRESENCE_PATH}`, { perMessageDeflate: false })
      socket.on("error", () => {})
    },
    () => undefined
  )
  return () => {
    closed = true
    if (socket !== undefined && socket.readyState <= WebSocket.OPEN) socket.terminate()
  }
}
