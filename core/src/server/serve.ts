/**
 * Serving a server build over HTTP on whichever runtime runs it (Node through @hono/node-server,
 * Deno through Deno.serve: the runtime adapters the runner uses too), and shutting it down on
 * SIGINT/SIGTERM: stop listening, then close the engine and the stores, leaving running jobs
 * running (a restart or an upgrade does not end them; the server started again follows them).
 */
import type { Server } from "./createServer.ts"
import type { RunnersOnClose } from "./Shutdown.ts"
import type { ListeningServer, ServeFunction } from "../runner/adapter/types.ts"

export interface ServeOptions {
  /** The port to listen on; 0 picks a free one (default 3000). */
  readonly port?: number | undefined
  /** The address to bind (default `127.0.0.1`; `0.0.0.0` or `::` for every interface). */
  readonly hostname?: string | undefined
  /**
   * On SIGINT or SIGTERM: close (listener, engine, stores), then exit the process, with 0 when
   * the close succeeded and 1 (the error on stderr) when it failed. Default true; false leaves
   * signals to the caller, who then calls `close()`.
   */
  readonly handleSignals?: boolean | undefined
  /**
   * What closing on a signal does with runners the backends started on this machine: `leave`
   * them running (default: a restart does not end jobs) or `stop` them.
   */
  readonly runnersOnSignal?: RunnersOnClose | undefined
}

export interface Serving {
  /** `http://host:port`, with the port actually bound. */
  readonly url: string
  readonly hostname: string
  readonly port: number
  /**
   * Stops listening (open connections, live log streams included, are closed) and closes the
   * server (`Server.close`: runners stopped unless `runners: "leave"`). Idempotent.
   */
  readonly close: (options?: { readonly runners?: RunnersOnClose }) => Promise<void>
}

/** Listening failed; `code` is `EADDRINUSE` when the port is taken, on either runtime. */
export class ServeError extends Error {
  readonly code: string | undefined
  constructor(message: string, code: string | undefined, cause: unknown) {
    super(message, { cause })
    this.name = "ServeError"
    this.code = code
  }
}

type Signal = "SIGINT" | "SIGTERM"

interface DenoSignals {
  addSignalListener(signal: Signal, handler: () => void): void
  removeSignalListener(signal: Signal, handler: () => void): void
}

/** The runtime-specific parts, chosen once at the edge. */
interface Runtime {
  readonly listen: () => Promise<ServeFunction>
  readonly onSignal: (signal: Signal, handler: () => void) => () => void
}

const nodeRuntime: Runtime = {
  listen: async () => (await import("../runner/adapter/node.ts")).serve,
  onSignal: (signal, handler) => {
    process.once(signal, handler)
    return () => process.off(signal, handler)
  }
}

const denoRuntime = (deno: DenoSignals): Runtime => ({
  listen: async () => (await import("../runner/adapter/deno.ts")).serve,
  onSignal: (signal, handler) => {
    deno.addSignalListener(signal, handler)
    return () => deno.removeSignalListener(signal, handler)
  }
})

const currentRuntime = (): Runtime => {
  const deno = (globalThis as { Deno?: DenoSignals }).Deno
  return deno === undefined ? nodeRuntime : denoRuntime(deno)
}

const errorCode = (error: unknown): string | undefined => {
  const e = error as { code?: unknown; name?: unknown } | undefined
  if (typeof e?.code === "string") return e.code
  return e?.name === "AddrInUse" ? "EADDRINUSE" : undefined
}

/**
 * Serves `server` (from `createServer`) over HTTP on Node or Deno and answers where it listens.
 * When listening fails the server is closed and a `ServeError` names the address.
 *
 * @example
 * const server = await createServer({ state, blobs, plugins })
 * const { url } = await serve(server, { port: 3000 })
 * console.log(`listening on ${url}`) // Ctrl-C closes the server and exits
 */
export const serve = async (server: Server, options: ServeOptions = {}): Promise<Serving> => {
  const hostname = options.hostname ?? "127.0.0.1"
  const port = options.port ?? 3000
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    await server.close()
    throw new ServeError(`serve: port ${port} is not a port number (0–65535)`, undefined, undefined)
  }
  const runtime = currentRuntime()
  let listening: ListeningServer
  try {
    listening = await (await runtime.listen())(server.app.fetch, { hostname, port, upgrade: server.upgrade })
  } catch (error) {
    await server.close()
    const code = errorCode(error)
    const reason = code === "EADDRINUSE" ? "is already in use" : `cannot be listened on: ${error instanceof Error ? error.message : String(error)}`
    throw new ServeError(`serve: port ${port} on ${hostname} ${reason}`, code, error)
  }

  let closing: Promise<void> | undefined
  const stopListening: Array<() => void> = []
  const close = (closeOptions?: { readonly runners?: RunnersOnClose }) => {
    closing ??= (async () => {
      for (const off of stopListening) off()
      // Both, even when the first fails; the first failure is the one reported.
      const results = await Promise.allSettled([listening.close(), server.close(closeOptions)])
      const failed = results.find((r) => r.status === "rejected")
      if (failed !== undefined) throw failed.reason
    })()
    return closing
  }
  if (options.handleSignals ?? true) {
    const onSignal = () => {
      close({ runners: options.runnersOnSignal ?? "leave" }).then(
        () => process.exit(0),
        (error: unknown) => {
          console.error("closing the server failed:", error)
          process.exit(1)
        }
      )
    }
    for (const signal of ["SIGINT", "SIGTERM"] as const) stopListening.push(runtime.onSignal(signal, onSignal))
  }
  const host = hostname.includes(":") ? `[${hostname}]` : hostname
  return { url: `http://${host}:${listening.port}`, hostname, port: listening.port, close }
}
