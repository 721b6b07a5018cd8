// The attach tunnel end to end below the routes: the runtime adapter's serve (Node.js's with
// `ws`, or Deno's with Deno.upgradeWebSocket when run on Deno) accepting a TunnelTarget, and the
// client's Tunnel.ts carrying a local TCP connection over it. The TCP peer answers only once the
// client has finished writing (a half-close must cross the tunnel both ways), a large body
// crosses intact, a peer that speaks first loses nothing while the client is not yet bridging,
// and a target nothing listens on is refused with 502 before any upgrade.
import * as net from "node:net"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import type { ListeningServer, TunnelTarget } from "../../core/src/runner/adapter/types.ts"
import { bridge, openTunnel, TunnelRefused } from "../src/Tunnel.ts"

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined"
let http: ListeningServer
let peer: net.Server
let peerPort = 0
let closedPort = 0
let greeter: net.Server
let greeterPort = 0
const ended: Array<boolean> = []

/** Reads everything until the client's half-close, then answers its length and a checksum. */
const startPeer = () =>
  new Promise<void>((resolve) => {
    peer = net.createServer({ allowHalfOpen: true }, (socket) => {
      const chunks: Array<Buffer> = []
      socket.on("data", (d: Buffer) => chunks.push(d))
      socket.on("end", () => {
        const all = Buffer.concat(chunks)
        let sum = 0
        for (const b of all) sum = (sum + b) % 65521
        socket.end(`got ${all.length} bytes, sum ${sum}`)
      })
    })
    peer.listen(0, "127.0.0.1", () => {
      peerPort = (peer.address() as net.AddressInfo).port
      resolve()
    })
  })

/** A peer that speaks first: a greeting as soon as it is connected, then the end. */
const startGreeter = () =>
  new Promise<void>((resolve) => {
    greeter = net.createServer((socket) => socket.end("hello from the job"))
    greeter.listen(0, "127.0.0.1", () => {
      greeterPort = (greeter.address() as net.AddressInfo).port
      resolve()
    })
  })

beforeAll(async () => {
  await startPeer()
  await startGreeter()
  const probe = net.createServer()
  await new Promise<void>((r) => probe.listen(0, "127.0.0.1", () => r()))
  closedPort = (probe.address() as net.AddressInfo).port
  await new Promise((r) => probe.close(r))
  const { serve } = isDeno ? await import("../../core/src/runner/adapter/deno.ts") : await import("../../core/src/runner/adapter/node.ts")
  http = await serve(() => new Response("no route", { status: 404 }), {
    hostname: "127.0.0.1",
    port: 0,
    upgrade: async (request) => {
      const port = Number(new URL(request.url).searchParams.get("port"))
      const target: TunnelTarget = { kind: "tcp", host: "127.0.0.1", port, protocol: "dstack-tunnel", done: (failed) => void ended.push(failed) }
      return target
    }
  })
})

afterAll(async () => {
  await http?.close()
  await new Promise((r) => peer?.close(r))
  await new Promise((r) => greeter?.close(r))
})

/**
 * A local connection through the tunnel to `port`: writes `body` and half-closes (or, without a
 * body, only listens), reads the answer. `beforeBridgeMs`: how long the tunnel is open before the
 * client bridges it (the CLI may do other work in between).
 */
const through = async (port: number, body: Buffer | undefined, beforeBridgeMs = 0) => {
  const ws = await openTunnel({ url: `http://127.0.0.1:${http.port}`, token: "t", project: "p", runName: "r", port })
  if (beforeBridgeMs > 0) await new Promise((r) => setTimeout(r, beforeBridgeMs))
  // A local socket pair: `inner` is what the client's listener would accept.
  const local = net.createServer({ allowHalfOpen: true, pauseOnConnect: true })
  await new Promise<void>((r) => local.listen(0, "127.0.0.1", () => r()))
  const accepted = new Promise<net.Socket>((r) => local.once("connection", r))
  const outer = net.connect({ port: (local.address() as net.AddressInfo).port, host: "127.0.0.1", allowHalfOpen: true })
  const inner = await accepted
  bridge(ws, inner, () => undefined)
  inner.resume()
  let answer = ""
  outer.on("data", (d) => (answer += d))
  const done = new Promise<void>((r) => outer.once("end", () => r()))
  if (body !== undefined) outer.end(body)
  await done
  outer.destroy()
  await new Promise((r) => local.close(r))
  return answer
}

describe(`attach tunnel over the ${isDeno ? "Deno" : "Node.js"} adapter`, () => {
  it("carries a half-close both ways: the peer answers only after the client's end", async () => {
    expect(await through(peerPort, Buffer.from("hello"))).toBe(`got 5 bytes, sum ${[..."hello"].reduce((s, c) => s + c.charCodeAt(0), 0)}`)
  })

  it("carries 8 MiB intact", async () => {
    const body = Buffer.alloc(8 * 1024 * 1024)
    for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 11)) & 0xff
    let sum = 0
    for (const b of body) sum = (sum + b) % 65521
    expect(await through(peerPort, body)).toBe(`got ${body.length} bytes, sum ${sum}`)
  }, 60_000)

  it("keeps what a peer that speaks first sends before the client bridges", async () => {
    // The client may do other work between the open and the bridge (the CLI: its retry loop);
    // the greeting may have come with the handshake's answer meanwhile.
    const answer = await through(greeterPort, undefined, 100)
    expect(answer).toBe("hello from the job")
  })

  it("refuses with 502 when nothing listens on the target port", async () => {
    const error = await openTunnel({ url: `http://127.0.0.1:${http.port}`, token: "t", project: "p", runName: "r", port: closedPort }).then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(TunnelRefused)
    expect((error as TunnelRefused).status).toBe(502)
    expect((error as TunnelRefused).message).toContain(`cannot reach port ${closedPort}`)
    expect((error as TunnelRefused).retryable).toBe(true)
    expect(ended).toContain(true)
  })
})
