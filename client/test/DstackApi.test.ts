import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Exit, Schema } from "effect"
import { Client } from "../src/node.ts"
import { ClientError } from "../src/ClientError.ts"
import * as DstackApi from "../src/DstackApi.ts"
import { EchoRequest, startTestServer, TOKENS, unreachableUrl } from "./support.ts"
import type { TestServer } from "./support.ts"

let server: TestServer
beforeAll(async () => {
  server = await startTestServer()
})
afterAll(async () => {
  await server?.close()
})

const connect = (token: string, project = "main", url = server.url) =>
  Client.connect({ name: project, url, token }, { retries: 2, retryDelay: "5 millis" })

const failure = async (p: Promise<unknown>): Promise<ClientError> => {
  const e = await p.then(
    (v) => {
      throw new Error(`expected a failure, got ${JSON.stringify(v)}`)
    },
    (e) => e
  )
  expect(e).toBeInstanceOf(ClientError)
  return e as ClientError
}

describe("Client against a real server", () => {
  it("gets server info, the current user and projects, decoded to camelCase", async () => {
    const client = connect(TOKENS.alice)
    expect(await client.server.getInfo()).toEqual({ serverVersion: "0.1.0-test" })
    const me = await client.users.getMyUser()
    expect(me.username).toBe("alice")
    expect(me.globalRole).toBe("user")
    expect((await client.projects.list()).map((p) => p.projectName)).toEqual(["main", "research"])
    const main = await client.projects.get()
    expect(main.projectName).toBe("main")
    expect(main.members!.map((m) => [m.user.username, m.projectRole])).toContainEqual(["alice", "user"])
  })

  it("maps a bad token (403 not_authenticated) to Unauthenticated with the server's code and message", async () => {
    const e = await failure(connect("wrong").users.getMyUser())
    expect(e).toMatchObject({ reason: "Unauthenticated", status: 403, code: "not_authenticated", method: "users.getMyUser", url: server.url })
    expect(e.msg).toBe("Invalid token")
  })

  it("maps 403 and a missing resource (400 resource_not_exists) from project routes", async () => {
    const forbidden = await failure(connect(TOKENS.bob).projects.get("main"))
    expect(forbidden).toMatchObject({ reason: "Forbidden", status: 403, code: "forbidden" })
    expect(forbidden.message).toContain("not a member of project main")
    const missing = await failure(connect(TOKENS.alice).projects.get("ghost"))
    expect(missing).toMatchObject({ reason: "NotFound", status: 400, code: "resource_not_exists", msg: "Project ghost does not exist" })
  })

  it("maps a 422 with every field path in loc and details", async () => {
    const api = DstackApi.make({ url: server.url, token: TOKENS.alice, project: "main" })
    const spec = { method: "test.echo", path: api.projectPath("echo"), response: EchoRequest, idempotent: false }
    expect(await Effect.runPromise(api.callWith(spec, EchoRequest, { runName: "r", limit: 3 }))).toEqual({ runName: "r", limit: 3 })
    const exit = await Effect.runPromiseExit(api.call(spec, { limit: 500 }))
    expect(Exit.isFailure(exit)).toBe(true)
    const e = (exit as any).cause.error as ClientError
    expect(e).toMatchObject({ reason: "Invalid", status: 422, code: "invalid_request" })
    expect(e.details!.map((d) => d.loc!.join("."))).toEqual(expect.arrayContaining(["body.run_name", "body.limit"]))
    expect(e.message).toContain("body.limit:")
  })

  it("rejects input that does not encode, naming the field, before sending", async () => {
    const api = DstackApi.make({ url: server.url, token: TOKENS.alice, project: "main" })
    const before = server.hits["/api/project/main/echo"] ?? 0
    const spec = { method: "test.echo", path: api.projectPath("echo"), response: EchoRequest, idempotent: false }
    const exit = await Effect.runPromiseExit(api.callWith(spec, EchoRequest, { runName: "r", limit: 0 }))
    const e = (exit as any).cause.error as ClientError
    expect(e.reason).toBe("Invalid")
    expect(e.loc).toEqual(["limit"])
    expect(server.hits["/api/project/main/echo"] ?? 0).toBe(before)
  })

  it("reports a response of the wrong shape as BadResponse", async () => {
    const api = DstackApi.make({ url: server.url, token: TOKENS.alice, project: "main" })
    const exit = await Effect.runPromiseExit(api.call({ method: "test.badShape", path: "/api/test/bad_shape", response: Schema.Struct({ username: Schema.String }), idempotent: true }))
    const e = (exit as any).cause.error as ClientError
    expect(e.reason).toBe("BadResponse")
    expect(e.msg).toContain("test.badShape")
    expect(e.msg).toContain("username")
  })

  it("reports a non-JSON error page by its status", async () => {
    const api = DstackApi.make({ url: server.url, token: TOKENS.alice, project: "main" })
    const exit = await Effect.runPromiseExit(api.call({ method: "test.missing", path: "/api/no/such/route", response: Schema.Unknown, idempotent: true }))
    const e = (exit as any).cause.error as ClientError
    expect(e).toMatchObject({ reason: "NotFound", status: 404 })
    expect(e.msg).toContain("HTTP 404")
  })

  it("retries reads on network errors, then says the server cannot be reached", async () => {
    const url = await unreachableUrl()
    let calls = 0
    const counting: typeof fetch = (input, init) => {
      calls++
      return fetch(input, init)
    }
    const client = Client.connect({ name: "main", url, token: "t" }, { retries: 2, retryDelay: "5 millis", fetch: counting })
    const e = await failure(client.users.getMyUser())
    expect(e.reason).toBe("Unreachable")
    expect(e.status).toBeUndefined()
    expect(e.message).toMatch(new RegExp(`^cannot reach the dstack server at ${url.replace(/\./g, "\\.")}: `))
    expect(calls).toBe(3)
  })

  it("never retries a write", async () => {
    const url = await unreachableUrl()
    let calls = 0
    const api = DstackApi.make({ url, token: "t", project: "main", retries: 3, retryDelay: "5 millis", fetch: (i, init) => (calls++, fetch(i, init)) })
    const exit = await Effect.runPromiseExit(api.call({ method: "runs.apply", path: api.projectPath("runs/apply"), response: Schema.Unknown, idempotent: false }, {}))
    expect((exit as any).cause.error.reason).toBe("Unreachable")
    expect(calls).toBe(1)
  })

  it("recovers when the server answers on a retry", async () => {
    let calls = 0
    const flaky: typeof fetch = (input, init) => (++calls === 1 ? Promise.reject(new TypeError("fetch failed")) : fetch(input, init))
    const client = Client.connect({ name: "main", url: server.url, token: TOKENS.alice }, { retryDelay: "5 millis", fetch: flaky })
    expect((await client.users.getMyUser()).username).toBe("alice")
    expect(calls).toBe(2)
  })

  it("times out a request that gets no answer", async () => {
    const hanging: typeof fetch = (_i, init) => new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(new Error("aborted"))))
    const client = Client.connect({ name: "main", url: server.url, token: TOKENS.alice }, { retries: 0, timeout: "50 millis", fetch: hanging })
    const e = await failure(client.server.getInfo())
    expect(e.reason).toBe("Unreachable")
    expect(e.msg).toContain("no answer within")
  })
})
