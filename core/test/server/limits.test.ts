// What the server takes in and repeats back: JSON request bodies have a size limit (413 in the
// API's error shape, naming the limit, whether the body's length is declared or it comes
// chunked), and an error message repeats at most a short excerpt of the input it refuses.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Effect, Layer, ManagedRuntime, Schema } from "effect"
import { Hono } from "hono"
import { serve } from "@hono/node-server"
import type { AddressInfo } from "node:net"
import { Access } from "../../src/server/Access.ts"
import { excerpt } from "../../src/server/ApiError.ts"
import { jsonExcerpt } from "../../src/domain/Grammar.ts"
import { jsonRoute } from "../../src/server/Route.ts"
import { mountRoutes } from "../../src/server/Router.ts"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../src/ports/BlobStore.ts"
import { createServer } from "../../src/server/createServer.ts"
import type { Server } from "../../src/server/createServer.ts"

// ---------------------------------------------------------------------------------------------
// The router over a real socket, with a limit of 1 KiB

const LIMIT = 1024
const AccessTest = Layer.succeed(Access, {
  authenticate: () => Effect.succeed({ username: "alice", globalRole: "user" as const }),
  projectRole: () => Effect.succeed("user" as const),
  sshPublicKey: () => Effect.die("no route here reads an SSH key")
})
const Echo = Schema.Struct({ text: Schema.String })
const app = new Hono()
mountRoutes(
  app,
  [jsonRoute({ method: "POST", path: "/api/echo", summary: "echo", tag: "t", access: "public", request: Echo, response: Echo, handler: (input) => Effect.succeed(input) })],
  ManagedRuntime.make(AccessTest),
  { headers: () => ({ "access-control-allow-origin": "*" }), maxBodyBytes: LIMIT }
)
let url = ""
let close = () => {}

beforeAll(async () => {
  const listening = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" })
  await new Promise<void>((resolve) => listening.once("listening", () => resolve()))
  url = `http://127.0.0.1:${(listening.address() as AddressInfo).port}`
  close = () => listening.close()
})
afterAll(() => close())

/** A body of exactly `size` bytes: `{"text":"xxx…"}`. */
const bodyOf = (size: number) => JSON.stringify({ text: "x".repeat(size - 11) })

/** The same bytes sent in pieces, with no declared length (chunked). */
const chunked = (text: string): ReadableStream<Uint8Array> => {
  const bytes = new TextEncoder().encode(text)
  let at = 0
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) return controller.close()
      controller.enqueue(bytes.subarray(at, (at += 300)))
    }
  })
}

const send = (body: string | ReadableStream<Uint8Array>) =>
  fetch(`${url}/api/echo`, { method: "POST", headers: { "content-type": "application/json" }, body, ...(typeof body === "string" ? {} : { duplex: "half" }) } as RequestInit)

const expectTooLarge = async (res: Response, limit: string) => {
  expect(res.status).toBe(413)
  expect(res.headers.get("content-type")).toBe("application/json")
  expect(res.headers.get("access-control-allow-origin")).toBe("*")
  const body = (await res.json()) as { detail: Array<{ msg: string; code: string }> }
  expect(body.detail).toHaveLength(1)
  expect(body.detail[0]!.code).toBe("payload_too_large")
  expect(body.detail[0]!.msg).toBe(`The request body is larger than the limit of ${limit}`)
}

describe("router: the JSON body limit", () => {
  it("takes a body of exactly the limit, declared or chunked", async () => {
    expect(bodyOf(LIMIT).length).toBe(LIMIT)
    const declared = await send(bodyOf(LIMIT))
    expect(declared.status).toBe(200)
    expect(((await declared.json()) as { text: string }).text).toHaveLength(LIMIT - 11)
    const pieces = await send(chunked(bodyOf(LIMIT)))
    expect(pieces.status).toBe(200)
    expect(((await pieces.json()) as { text: string }).text).toHaveLength(LIMIT - 11)
  })

  it("refuses one byte more with a 413 naming the limit, declared or chunked", async () => {
    await expectTooLarge(await send(bodyOf(LIMIT + 1)), "1 KiB (1,024 bytes)")
    await expectTooLarge(await send(chunked(bodyOf(LIMIT + 1))), "1 KiB (1,024 bytes)")
    // far past it, before reading it: the declared length says enough
    await expectTooLarge(await send(bodyOf(5 * 1024 * 1024)), "1 KiB (1,024 bytes)")
    await expectTooLarge(await send(chunked(bodyOf(64 * 1024))), "1 KiB (1,024 bytes)")
  })

  it("refuses a limit that is not a whole number of bytes", () => {
    for (const maxBodyBytes of [-1, 1.5, Number.NaN]) {
      expect(() => mountRoutes(new Hono(), [], ManagedRuntime.make(AccessTest), { maxBodyBytes })).toThrow(/maxBodyBytes/)
    }
  })
})

describe("excerpt", () => {
  it("keeps short input whole and cuts long input to its start and length", () => {
    expect(excerpt("main")).toBe("main")
    expect(excerpt("a".repeat(64))).toBe("a".repeat(64))
    expect(excerpt("a".repeat(100_000))).toBe(`${"a".repeat(64)}… (100,000 characters)`)
    // never half of a surrogate pair
    expect(excerpt(`${"a".repeat(63)}😀${"b".repeat(10)}`)).toBe(`${"a".repeat(63)}… (75 characters)`)
  })

  it("jsonExcerpt: JSON text of a value, cut; a value nested 200,000 deep too (JSON.stringify overflows Node's stack there)", () => {
    expect(jsonExcerpt({ a: [1, "x", null, true], b: { c: 2 } }, 64)).toBe(JSON.stringify({ a: [1, "x", null, true], b: { c: 2 } }))
    expect(jsonExcerpt({ a: undefined, b: 1 }, 64)).toBe(`{"b":1}`)
    expect(jsonExcerpt("s".repeat(1_000_000), 10)).toBe(`"ssssss...`)
    let deep: unknown = 1
    for (let i = 0; i < 200_000; i++) deep = { a: deep }
    expect(jsonExcerpt(deep, 20)).toBe(`{"a":{"a":{"a":{"...`)
  })
})

// ---------------------------------------------------------------------------------------------
// The server

const ADMIN = "admin-token-for-limits"
let server: Server
let small: Server

beforeAll(async () => {
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN })
  small = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN, maxBodyBytes: 2048 })
}, 60_000)
afterAll(async () => {
  await server?.close()
  await small?.close()
})

const call = async (s: Server, path: string, body: string) => {
  const res = await s.app.request(path, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${ADMIN}` }, body })
  return { status: res.status, body: (await res.json()) as { detail: Array<{ msg: string; code: string; loc?: Array<string | number> }> } }
}

describe("server: limits on what comes in and what goes back", () => {
  it("limits JSON bodies to 4 MiB by default, and to what createServer is told", async () => {
    const big = JSON.stringify({ run_name: "x".repeat(4 * 1024 * 1024) })
    const refused = await call(server, "/api/project/main/runs/get", big)
    expect(refused.status).toBe(413)
    expect(refused.body.detail[0]!.msg).toContain("4 MiB (4,194,304 bytes)")
    const refusedSmall = await call(small, "/api/project/main/runs/get", JSON.stringify({ run_name: "x".repeat(3000) }))
    expect(refusedSmall.status).toBe(413)
    expect(refusedSmall.body.detail[0]!.msg).toContain("limit of 2 KiB (2,048 bytes)")
    expect((await call(small, "/api/project/main/runs/get", JSON.stringify({ run_name: "x".repeat(1000) }))).status).toBe(400)
  })

  it("says a missing run for a 2 MB run name with an excerpt of it", async () => {
    const name = "n".repeat(2_000_000)
    for (const body of [{ run_name: name }, { id: name }]) {
      const res = await call(server, "/api/project/main/runs/get", JSON.stringify(body))
      expect(res.status).toBe(400)
      const msg = res.body.detail[0]!.msg
      expect(msg).toBe(`Run ${"n".repeat(64)}… (2,000,000 characters) does not exist in project main`)
    }
  })

  it("cuts a schema's message that quotes the input whole", async () => {
    const res = await call(server, "/api/runs/list", JSON.stringify({ project_name: "main", limit: "9".repeat(100_000) }))
    expect(res.status).toBe(422)
    expect(res.body.detail[0]!.loc).toEqual(["body", "limit"])
    const msg = res.body.detail[0]!.msg
    expect(msg.length).toBeLessThan(1_100)
    expect(msg).toContain("(100,0")
  })

  it("refuses a body nested deeper than 64 levels before parsing it; 64 levels, and brackets inside strings, pass", async () => {
    const nested = (depth: number) => `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`
    for (const path of ["/api/runs/list", "/api/fleets/list", "/api/instances/list", "/api/stacks/get", "/api/stacks/pull"]) {
      for (const body of [nested(200_000), nested(65), `${"[".repeat(65)}${"]".repeat(65)}`]) {
        const res = await call(server, path, body)
        expect(res.status, path).toBe(422)
        expect(res.body.detail[0]).toEqual({ msg: "The request body nests arrays and objects deeper than 64 levels", code: "invalid_request", loc: ["body"] })
      }
    }
    // 64 levels: decoded as usual (an unknown key, quoted in short).
    const deepest = await call(server, "/api/runs/list", nested(64))
    expect(deepest.status).toBe(400)
    expect(deepest.body.detail[0]!.msg).toBe(`a is not a field this server knows (got {"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{"a":{...)`)
    const inString = await call(server, "/api/project/main/runs/get", JSON.stringify({ run_name: `${"[{".repeat(100)}\\"${"{".repeat(100)}` }))
    expect(inString.status).toBe(400)
    expect(inString.body.detail[0]!.msg).toMatch(/^Run .* does not exist in project main$/)
  })

  it("says an unknown route's path with an excerpt of it", async () => {
    const res = await call(server, `/api/${"p".repeat(10_000)}`, "{}")
    expect(res.status).toBe(404)
    expect(res.body.detail[0]!.msg.length).toBeLessThan(300)
  })
})
