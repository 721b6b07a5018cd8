/**
 * Attaching to a run: the ports of its first job become reachable on 127.0.0.1 (`map_to_port`,
 * else the same port, else a free one when that is taken), as upstream's `Run.attach()`. Every
 * connection made to a local port is carried to the job through the server
 * (`GET /api/project/{project}/runs/attach`, a WebSocket per connection; Tunnel.ts), so the
 * same path serves every backend and the user needs no key to the job's host. A dropped server
 * connection ends the local connections it carried; the next one opens a new tunnel, retrying
 * while the server is away. Node.js and Deno only (node:net, ws); the client loads this module
 * only when `attach` is called, so browsers never do.
 */
import * as net from "node:net"
import type { Run as RunEntity } from "@dstack-ts/core/wire"
import { fetchSshAccess, removeRunSshHost, type RunSshHost, writeRunSshHost } from "./SshConfig.ts"
import { attachUrl, bridge, errorMessage, openTunnel, TunnelRefused, type TunnelEndpoint } from "./Tunnel.ts"

export interface Attachment {
  /** Job port → the local port it is reachable on. */
  readonly ports: Readonly<Record<number, number>>
  /** The run's `ssh RUN` alias, when the server runs an SSH proxy (SshConfig.ts); removed on close. */
  readonly ssh?: RunSshHost | undefined
  readonly close: () => Promise<void>
}

/** The server and user an attachment goes through. */
export interface AttachServer {
  readonly url: string
  readonly token: string
  readonly project: string
}

export interface AttachOptions {
  /** Told of each local connection that could not be carried (default: a line on stderr). */
  readonly onError?: ((error: Error) => void) | undefined
  /** How long a new connection waits for the server to take its tunnel (default 30 s). */
  readonly retryMs?: number | undefined
}

/** Opens a tunnel, retrying while the server is unreachable, restarting, or the job not yet up. */
const openWithRetry = async (endpoint: TunnelEndpoint, retryMs: number, closed: () => boolean) => {
  const deadline = Date.now() + retryMs
  for (let wait = 100; ; wait = Math.min(wait * 2, 2_000)) {
    try {
      return await openTunnel(endpoint)
    } catch (error) {
      const retryable = !(error instanceof TunnelRefused) || error.retryable
      if (!retryable || closed() || Date.now() + wait > deadline) throw error
      await new Promise((r) => setTimeout(r, wait))
    }
  }
}

/**
 * Checks with the server that a tunnel to the port may be opened (a GET without Upgrade); a job
 * not running yet (409: the run runs, this job's submission not yet) is waited for.
 */
const preflight = async (endpoint: TunnelEndpoint, retryMs: number): Promise<void> => {
  const deadline = Date.now() + retryMs
  for (;;) {
    const res = await fetch(attachUrl(endpoint, "http"), { headers: { authorization: `Bearer ${endpoint.token}` } })
    if (res.ok) return void (await res.body?.cancel())
    const message = errorMessage(res.status, await res.text())
    if (res.status !== 409 || Date.now() + 500 > deadline) throw new Error(message)
    await new Promise((r) => setTimeout(r, 500))
  }
}

interface Listener {
  readonly server: net.Server
  readonly port: number
  readonly sockets: Set<net.Socket>
}

const listenOn = (port: number, onConnection: (socket: net.Socket) => void) =>
  new Promise<Listener>((resolve, reject) => {
    const sockets = new Set<net.Socket>()
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => {
      sockets.add(socket)
      socket.once("close", () => sockets.delete(socket))
      onConnection(socket)
    })
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => resolve({ server, port: (server.address() as net.AddressInfo).port, sockets }))
  })

/** Forwards the ports of the run's first job to localhost, each connection through the server. */
export const attach = async (run: RunEntity, server: AttachServer, options: AttachOptions = {}): Promise<Attachment> => {
  const job = run.jobs[0]
  const runName = run.runSpec.runName ?? run.id
  if (job === undefined) throw new Error(`run ${runName} has no job to attach to`)
  const onError = options.onError ?? ((error: Error) => console.error(`dstack attach: ${error.message}`))
  const retryMs = options.retryMs ?? 30_000
  let closed = false
  const listeners: Array<Listener> = []
  const ports: Record<number, number> = {}
  const closeAll = async () => {
    closed = true
    for (const l of listeners) for (const s of l.sockets) s.destroy()
    await Promise.all(listeners.map((l) => new Promise((r) => l.server.close(r))))
  }
  try {
    for (const app of job.jobSpec.appSpecs) {
      const endpoint: TunnelEndpoint = {
        ...server,
        runName,
        port: app.port,
        jobNum: job.jobSpec.jobNum,
        replicaNum: job.jobSpec.replicaNum
      }
      await preflight(endpoint, retryMs)
      const carry = (socket: net.Socket) => {
        openWithRetry(endpoint, retryMs, () => closed).then(
          (ws) => {
            if (closed || socket.destroyed) return ws.close()
            bridge(ws, socket, () => undefined)
            socket.resume()
          },
          (error: unknown) => {
            socket.destroy()
            if (!closed) onError(new Error(`port ${app.port} of ${runName}: ${error instanceof Error ? error.message : String(error)}`))
          }
        )
      }
      const wanted = app.mapToPort ?? app.port
      const listener = await listenOn(wanted, carry).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== "EADDRINUSE") throw e
        // The job's own port is taken here (the job may run on this machine): any free one will do.
        if (app.mapToPort === undefined) return listenOn(0, carry)
        throw new Error(`local port ${wanted} is in use: pick another map_to_port ("LOCAL:${app.port}")`)
      })
      listeners.push(listener)
      ports[app.port] = listener.port
    }
  } catch (error) {
    await closeAll()
    throw error
  }
  // `ssh RUN`: an alias through the server's SSH proxy, when it runs one.
  const access = await fetchSshAccess(server, runName).catch((error: unknown) => {
    onError(new Error(`no \`ssh ${runName}\` alias: ${error instanceof Error ? error.message : String(error)}`))
    return undefined
  })
  let ssh: RunSshHost | undefined
  if (access !== undefined) {
    try {
      ssh = writeRunSshHost(runName, access.proxy, access.privateKey)
    } catch (error) {
      onError(new Error(`cannot write the \`ssh ${runName}\` alias: ${error instanceof Error ? error.message : String(error)}`))
    }
  }
  const close = async () => {
    await closeAll()
    if (ssh !== undefined) {
      try {
        removeRunSshHost(runName)
      } catch {
        // The alias stays behind; the next attach replaces it.
      }
    }
  }
  return { ports, ...(ssh !== undefined ? { ssh } : {}), close }
}
