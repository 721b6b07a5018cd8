// Calling the HTTP API from tests: POST a JSON body with a bearer token, get the status and the
// decoded JSON back — either in-process through the server's Hono app or over a real port.
import type { Server } from "../../core/src/server/createServer.ts"

export type Call = (route: string, body?: unknown) => Promise<{ readonly status: number; readonly body: any }>

const init = (token: string, body: unknown): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", authorization: `Bearer ${token}` },
  body: body === undefined ? undefined : JSON.stringify(body)
})

/** Calls through the app without a port; `server` is read at call time (tests create it in beforeAll). */
export const appCall = (server: () => Server, token: string): Call => async (route, body) => {
  const res = await server().app.request(route, init(token, body))
  return { status: res.status, body: await res.json() }
}

/** Calls a server listening at `baseUrl`. */
export const httpCall = (baseUrl: string, token: string): Call => async (route, body) => {
  const res = await fetch(`${baseUrl}${route}`, init(token, body))
  return { status: res.status, body: await res.json() }
}

/** A run and a fleet of the `main` project as `runs/get` and `fleets/get` answer them. */
export const mainProjectReads = (call: Call) => ({
  getRun: async (name: string) => (await call("/api/project/main/runs/get", { run_name: name })).body,
  getFleet: async (name: string) => (await call("/api/project/main/fleets/get", { name })).body
})
