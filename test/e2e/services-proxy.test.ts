// The services proxy end to end: a real server on a real port with the local backend, service
// replicas as processes (test/support/service-app.mjs), reached through
// /proxy/services/{project}/{run}/ with fetch, node:http and a WebSocket client: every method,
// streamed uploads and answers both ways, an endless SSE stream, strip_prefix, the redirect
// for a missing slash, auth (refused, allowed, `auth: false`), least outstanding requests,
// a replica that breaks off an answer, a service that is gone, `rate_limits` per client address
// (clients on 127.0.0.1 and 127.0.0.2, both loopback), WebSocket upgrades included, and the
// client's address behind a trusted proxy (X-Forwarded-For) and as the replica sees it (X-Real-IP).
import * as http from "node:http"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import WebSocket from "ws"
import { Effect } from "effect"
import { ServiceRegistry } from "../../core/src/services/ServiceRegistry.ts"
import type { Server } from "../../core/src/server/createServer.ts"
import type { Serving } from "../../core/src/server/serve.ts"
import type { httpCall } from "../support/api.ts"
import { startLocalServer } from "../support/localServer.ts"
import { applyService, waitRunning } from "../support/services.ts"

const TOKEN = "services-e2e-token"
let server: Server
let serving: Serving
let call: ReturnType<typeof httpCall>

const auth = { authorization: `Bearer ${TOKEN}` }
const url = (run: string, rest = "/") => `${serving.url}/proxy/services/main/${run}${rest}`

beforeAll(async () => {
  ;({ server, serving, call } = await startLocalServer({
    token: TOKEN,
    maxInstances: 8,
    // 127.0.0.2 plays a load balancer in front of the server: its X-Forwarded-For names the client.
    server: { services: { holdTimeoutMs: 30_000, trustedProxies: ["127.0.0.2"] } }
  }))
  await applyService(call, "web", { replicas: 2 })
  await applyService(call, "open", { auth: false, strip_prefix: false })
  await waitRunning(call, "web", 2)
  await waitRunning(call, "open")
}, 120_000)
afterAll(async () => {
  for (const name of ["web", "open"]) await call?.("/api/project/main/runs/stop", { runs_names: [name], abort: true })
  await serving?.close()
})

describe("the services proxy", () => {
  it("answers every method through the proxy, with the prefix stripped", async () => {
    for (const method of ["GET", "POST", "PUT", "PATCH", "DELETE"]) {
      const res = await fetch(url("web", "/path?x=1"), { method, headers: auth, ...(method === "GET" ? {} : { body: "b" }) })
      const body = await res.json()
      expect(res.status, `${method}: ${JSON.stringify(body)}`).toBe(200)
      expect(body.url).toBe("/path?x=1")
      // The caller's dstack token is not handed to the service.
      expect(body.headers.authorization).toBeUndefined()
    }
    const head = await fetch(url("web", "/path"), { method: "HEAD", headers: auth })
    expect(head.status).toBe(200)
  })

  it("keeps the prefix with strip_prefix: false, and lets anyone call a service with auth: false", async () => {
    const res = await fetch(url("open", "/path"))
    expect(res.status).toBe(200)
    expect((await res.json()).url).toBe("/proxy/services/main/open/path")
  })

  it("refuses a caller without a token, with a bad token, or who is not a member", async () => {
    expect((await fetch(url("web", "/path"))).status).toBe(401)
    expect((await fetch(url("web", "/path"), { headers: { authorization: "Bearer nope" } })).status).toBe(401)
    const user = await call("/api/users/create", { username: "outsider", global_role: "user" })
    expect(user.status, JSON.stringify(user.body)).toBe(200)
    const token = user.body.creds.token
    const res = await fetch(url("web", "/path"), { headers: { authorization: `Bearer ${token}` } })
    expect(res.status).toBe(403)
    expect(JSON.stringify(await res.json())).toMatch(/not a member of project main/)
  })

  it("redirects the service root without its slash (308), and passes the service's own redirects on", async () => {
    const root = await fetch(url("web", "?a=b"), { headers: auth, redirect: "manual" })
    expect(root.status).toBe(308)
    expect(root.headers.get("location")).toBe("/proxy/services/main/web/?a=b")
    const own = await fetch(url("web", "/redirect"), { headers: auth, redirect: "manual" })
    expect(own.status).toBe(302)
    expect(own.headers.get("location")).toBe("/path")
  })

  it("answers 404 for a service that does not exist, and for a task", async () => {
    const res = await fetch(url("nope", "/"), { headers: auth })
    expect(res.status).toBe(404)
    expect(JSON.stringify(await res.json())).toMatch(/Service nope does not exist in project main/)
  })

  it("streams an upload through without holding it back: the service answers each chunk before the next is sent", async () => {
    const target = new URL(url("web", "/duplex"))
    const lines: Array<string> = []
    await new Promise<void>((resolve, reject) => {
      const req = http.request(target, { method: "POST", headers: { ...auth, "content-type": "application/octet-stream" } }, (res) => {
        expect(res.statusCode).toBe(200)
        let sent = 1
        let buffer = ""
        res.setEncoding("utf8")
        res.on("data", (text: string) => {
          buffer += text
          const parts = buffer.split("\n")
          buffer = parts.pop()!
          for (const line of parts) {
            lines.push(line)
            if (line === "end") return resolve()
            // The next chunk goes only once the previous one came back.
            if (sent < 5) {
              sent++
              req.write(Buffer.alloc(1000 * sent))
            } else req.end()
          }
        })
        res.on("error", reject)
      })
      req.on("error", reject)
      req.flushHeaders()
      req.write(Buffer.alloc(1000))
    })
    expect(lines).toEqual(["1000", "2000", "3000", "4000", "5000", "end"])
  }, 30_000)

  it("carries a large upload (256 MiB, streamed) to the replica whole", async () => {
    const chunk = new Uint8Array(1024 * 1024).fill(7)
    let sent = 0
    const body = new ReadableStream<Uint8Array>({
      pull: (controller) => {
        if (sent++ < 256) controller.enqueue(chunk)
        else controller.close()
      }
    })
    const res = await fetch(url("web", "/count"), { method: "POST", headers: auth, body, duplex: "half" } as RequestInit)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ bytes: 256 * 1024 * 1024 })
  }, 60_000)

  it("streams a never-ending SSE answer as it comes, and lets the caller hang up", async () => {
    const controller = new AbortController()
    const res = await fetch(url("web", "/sse"), { headers: auth, signal: controller.signal })
    expect(res.headers.get("content-type")).toBe("text/event-stream")
    const reader = res.body!.getReader()
    let text = ""
    while (!text.includes("data: 3")) text += new TextDecoder().decode((await reader.read()).value)
    controller.abort()
    expect(text).toMatch(/^data: 0\n\ndata: 1\n\n/)
    // The proxy still serves.
    expect((await fetch(url("web", "/path"), { headers: auth })).status).toBe(200)
  })

  it("carries a WebSocket both ways (auth checked at the upgrade)", async () => {
    const refused = await new Promise<number>((resolve) => {
      const ws = new WebSocket(url("web", "/ws").replace(/^http/, "ws"))
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0))
      ws.on("open", () => resolve(101))
    })
    expect(refused).toBe(401)
    const ws = new WebSocket(url("web", "/ws?q=1").replace(/^http/, "ws"), { headers: auth })
    await new Promise((resolve, reject) => {
      ws.once("open", resolve)
      ws.once("error", reject)
    })
    const replies: Array<string> = []
    const got = new Promise<void>((resolve) =>
      ws.on("message", (data, binary) => {
        replies.push(binary ? `binary ${(data as Buffer).length}` : String(data))
        if (replies.length === 2) resolve()
      }))
    ws.send("hi")
    ws.send(Buffer.alloc(70_000), { binary: true })
    await got
    expect(replies).toEqual(["echo hi via /ws?q=1", "binary 70000"])
    ws.close()
  })

  it("sends a request to the replica with the fewest requests in flight", async () => {
    // Nothing is in flight any more: answers that ended, callers that hung up, closed WebSockets.
    await expect.poll(async () => (await call("/api/project/main/services/get", { run_name: "web" })).body.replicas.map((r: any) => r.outstanding)).toEqual([0, 0])
    // One slow request occupies a replica; the quick ones that follow go to the other.
    const slow = fetch(url("web", "/slow?ms=3000"), { headers: auth }).then((r) => r.text())
    await expect.poll(async () => (await call("/api/project/main/services/get", { run_name: "web" })).body.replicas.map((r: any) => r.outstanding).sort()).toEqual([0, 1])
    // One after another: with three at once, the second sees both replicas at one in flight.
    const quick: Array<string> = []
    for (let i = 0; i < 3; i++) quick.push(await fetch(url("web", "/slow?ms=1"), { headers: auth }).then((r) => r.text()))
    const busy = await slow
    expect(new Set(quick).size).toBe(1)
    expect(quick[0]).not.toBe(busy)
  })

  it("takes a replica that breaks off an answer out of rotation", async () => {
    const broken = await fetch(url("web", "/broken"), { headers: auth })
    const failed = await broken.text().then(() => false, () => true)
    expect(failed).toBe(true)
    const metrics = await call("/api/project/main/services/get", { run_name: "web" })
    expect(metrics.status, JSON.stringify(metrics.body)).toBe(200)
    const out = metrics.body.replicas.filter((r: any) => !r.in_rotation)
    expect(out.length).toBe(1)
    // The rest keep being served by the other replica.
    for (let i = 0; i < 5; i++) expect((await fetch(url("web", "/path"), { headers: auth })).status).toBe(200)
  })
})

/** A GET through the proxy from a given local address: the status and the Retry-After header. */
const getFrom = (localAddress: string, target: string, headers: Record<string, string> = {}) =>
  new Promise<{ status: number; retryAfter: string | undefined; body: string }>((resolve, reject) => {
    const req = http.get(target, { localAddress, headers: { ...auth, ...headers } }, (res) => {
      let body = ""
      res.setEncoding("utf8")
      res.on("data", (chunk: string) => (body += chunk))
      res.on("end", () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers["retry-after"] as string | undefined, body }))
    })
    req.on("error", reject)
  })

describe("rate_limits", () => {
  beforeAll(async () => {
    await applyService(call, "limited", {
      rate_limits: [{ prefix: "/", rps: 0.2, burst: 2 }, { prefix: "/api/", rps: 100, burst: 100 }]
    })
    await waitRunning(call, "limited")
  }, 60_000)
  afterAll(async () => {
    await call?.("/api/project/main/runs/stop", { runs_names: ["limited"], abort: true })
  })

  it("gives concurrent first lookups of a service one entry (one set of counts, one rotation)", async () => {
    const [first, second] = await server.runtime.runPromise(
      Effect.flatMap(ServiceRegistry, (registry) => Effect.all([registry.lookup("main", "limited"), registry.lookup("main", "limited")], { concurrency: "unbounded" }))
    )
    expect(first).toBeDefined()
    expect(second).toBe(first)
  })

  it("lets burst + 1 requests through per client address, then answers 429 with Retry-After; another address has its own", async () => {
    const first = await Promise.all(Array.from({ length: 4 }, () => getFrom("127.0.0.1", url("limited", "/path"))))
    expect(first.map((r) => r.status).sort()).toEqual([200, 200, 200, 429])
    const refused = first.find((r) => r.status === 429)!
    // One request per 5 s: the next is 5 s away.
    expect(refused.retryAfter).toBe("5")
    expect(refused.body).toMatch(/limit under \/ is 0.2 per second per client/)
    // The longest matching prefix has its own, looser limit.
    for (let i = 0; i < 5; i++) expect((await getFrom("127.0.0.1", url("limited", "/api/x"))).status).toBe(200)
    const other = await Promise.all(Array.from({ length: 3 }, () => getFrom("127.0.0.2", url("limited", "/path"))))
    expect(other.map((r) => r.status)).toEqual([200, 200, 200])
    expect((await getFrom("127.0.0.2", url("limited", "/path"))).status).toBe(429)
    // A WebSocket upgrade counts as a request: refused at the upgrade for the client over its limit.
    const upgraded = await new Promise<number>((resolve) => {
      const ws = new WebSocket(url("limited", "/ws").replace(/^http/, "ws"), { headers: auth, localAddress: "127.0.0.1" })
      ws.on("unexpected-response", (_req, res) => resolve(res.statusCode ?? 0))
      ws.on("open", () => {
        ws.close()
        resolve(101)
      })
    })
    expect(upgraded).toBe(429)
    const info = await call("/api/project/main/services/get", { run_name: "limited" })
    // Refused requests never reach a replica, nor count as the service's requests.
    expect(info.body.requests, JSON.stringify(info.body)).toBe(3 + 5 + 3)
  })

  it("behind a trusted proxy, counts the client its X-Forwarded-For names; anyone else's header is not believed", async () => {
    const viaProxy = (client: string) => getFrom("127.0.0.2", url("limited", "/path"), { "x-forwarded-for": client })
    // 127.0.0.2 used its own three above; clients behind it each have their own.
    expect((await Promise.all([1, 2, 3].map(() => viaProxy("198.51.100.7")))).map((r) => r.status)).toEqual([200, 200, 200])
    expect((await viaProxy("198.51.100.7")).status).toBe(429)
    expect((await viaProxy("198.51.100.8")).status).toBe(200)
    // 127.0.0.1 is not trusted: naming another client does not get it a fresh bucket.
    expect((await getFrom("127.0.0.1", url("limited", "/path"), { "x-forwarded-for": "198.51.100.9" })).status).toBe(429)
  })
})

describe("what the replica is told of the caller", () => {
  it("sets X-Real-IP to the client and appends the peer to X-Forwarded-For, over what a caller sent", async () => {
    const direct = JSON.parse((await getFrom("127.0.0.1", url("web", "/path"), { "x-real-ip": "192.0.2.1", "x-forwarded-for": "192.0.2.2" })).body)
    expect(direct.headers["x-real-ip"]).toBe("127.0.0.1")
    expect(direct.headers["x-forwarded-for"]).toBe("192.0.2.2, 127.0.0.1")
    const proxied = JSON.parse((await getFrom("127.0.0.2", url("web", "/path"), { "x-forwarded-for": "203.0.113.5" })).body)
    expect(proxied.headers["x-real-ip"]).toBe("203.0.113.5")
    expect(proxied.headers["x-forwarded-for"]).toBe("203.0.113.5, 127.0.0.2")
    const plain = JSON.parse((await getFrom("127.0.0.1", url("web", "/path"))).body)
    expect(plain.headers["x-real-ip"]).toBe("127.0.0.1")
    expect(plain.headers["x-forwarded-for"]).toBe("127.0.0.1")
  })
})
