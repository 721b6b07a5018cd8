/**
 * What a runtime adapter provides to serve the runner: listen on a host and port (0 picks a
 * free one) and report the port it bound. Each runtime has a module with the same export.
 */

/** A fetch handler, as Hono's `app.fetch`. */
export type FetchHandler = (request: Request) => Response | Promise<Response>

/** A listening HTTP server. */
export interface ListeningServer {
  readonly hostname: string
  /** The port actually bound (the chosen one when 0 was asked for). */
  readonly port: number
  /** Stops accepting connections and closes the open ones (live streams included). */
  readonly close: () => Promise<void>
}

/** Starts an HTTP server for `fetch` on one runtime. */
export type ServeFunction = (fetch: FetchHandler, options: { readonly hostname: string; readonly port: number }) => Promise<ListeningServer>
