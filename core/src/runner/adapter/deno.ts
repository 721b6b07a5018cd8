/** Serving the runner on Deno, through Deno.serve. */
import type { ServeFunction } from "./types.ts"

interface DenoHttpServer {
  readonly finished: Promise<void>
  shutdown(): Promise<void>
}
interface DenoServe {
  serve(
    options: { hostname: string; port: number; onListen?: (addr: { hostname: string; port: number }) => void; signal?: AbortSignal },
    handler: (request: Request) => Response | Promise<Response>
  ): DenoHttpServer
}

export const serve: ServeFunction = (fetch, options) => {
  const deno = (globalThis as unknown as { Deno: DenoServe }).Deno
  return new Promise((resolve, reject) => {
    const controller = new AbortController()
    try {
      const server = deno.serve(
        {
          hostname: options.hostname,
          port: options.port,
          signal: controller.signal,
          onListen: (addr) =>
            resolve({
              hostname: options.hostname,
              port: addr.port,
              close: async () => {
                // Aborting closes open connections too, live log streams included.
                controller.abort()
                await server.finished
              }
            })
        },
        (request) => fetch(request)
      )
    } catch (error) {
      reject(error)
    }
  })
}
