// Whether a replica's app listens: a connection it accepts, or, behind a relay that accepts for it
// (Docker's proxy on a published port, a port-forward), an HTTP answer. Real sockets on
// loopback: a relay made here connects each accepted connection on to the app's port and closes
// it when that is refused, as Docker's userland proxy does.
import * as http from "node:http"
import * as net from "node:net"
import { afterEach, describe, expect, it } from "@effect/vitest"
import { freePort } from "../../src/runner/ServicePort.ts"
import { appAccepts, appAnswers, appListens } from "../../src/services/ReplicaClient.ts"

const closers: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
})

const listen = async (server: net.Server): Promise<number> => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  closers.push(() => new Promise((resolve) => server.close(() => resolve())))
  return (server.address() as net.AddressInfo).port
}

/** A relay on a port of its own to `target`: accepts at once, then connects on (closing the caller's connection when refused). */
const relay = async (target: number): Promise<number> => {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((socket) => {
    sockets.add(socket)
    socket.on("close", () => sockets.delete(socket))
    const upstream = net.connect({ host: "127.0.0.1", port: target })
    upstream.on("error", () => socket.destroy())
    socket.on("error", () => upstream.destroy())
    upstream.on("connect", () => {
      socket.pipe(upstream)
      upstream.pipe(socket)
    })
  })
  const port = await listen(server)
  closers.push(async () => {
    for (const socket of sockets) socket.destroy()
  })
  return port
}

/** An HTTP app on `port` (0: any) that answers every request with its method and target. */
const app = async (port = 0): Promise<{ port: number; seen: Array<string> }> => {
  const seen: Array<string> = []
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`)
    res.end("ok")
  })
  if (port === 0) return { port: await listen(server), seen }
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve))
  closers.push(() => new Promise((resolve) => server.close(() => resolve())))
  return { port, seen }
}

const at = (port: number, relayed: boolean, connect?: () => Promise<net.Socket>) => ({ host: "127.0.0.1", port, relayed, ...(connect ? { connect } : {}) })

describe("whether a replica's app listens", () => {
  it("an app listening directly: accepted, and answered", async () => {
    const { port, seen } = await app()
    expect(await appAccepts(at(port, false))).toBe(true)
    expect(await appAnswers(at(port, true))).toBe(true)
    // The check's request: HTTP's own for a server as a whole, answered whatever the app's routes.
    expect(seen).toEqual(["OPTIONS *"])
  })

  it("nothing listening: refused either way", async () => {
    const port = await freePort()
    expect(await appAccepts(at(port, false))).toBe(false)
    expect(await appAnswers(at(port, true))).toBe(false)
  })

  it("behind a relay, an app not listening yet is told only by the missing answer; once it listens it answers", async () => {
    const target = await freePort()
    const front = await relay(target)
    // The relay accepts for the app: accepting says nothing there.
    expect(await appAccepts(at(front, false))).toBe(true)
    expect(await appAnswers(at(front, true))).toBe(false)
    expect(await appListens(at(front, true))).toBe(false)
    const { seen } = await app(target)
    expect(await appListens(at(front, true))).toBe(true)
    expect(seen).toEqual(["OPTIONS *"])
  })

  it("an app that accepts and never answers is not counted as listening behind a relay (after the check's 2 s)", async () => {
    const silent = net.createServer((socket) => socket.resume())
    const port = await listen(silent)
    const started = Date.now()
    expect(await appAnswers(at(port, true))).toBe(false)
    expect(Date.now() - started).toBeGreaterThanOrEqual(1_900)
  })

  it("through a forward's own connection (`connect`), the same: its opening and then its answer", async () => {
    const target = await freePort()
    const front = await relay(target)
    const connect = () =>
      new Promise<net.Socket>((resolve, reject) => {
        const socket = net.connect({ host: "127.0.0.1", port: front })
        socket.once("connect", () => resolve(socket))
        socket.once("error", reject)
      })
    // The address's own port is not used when `connect` is given.
    const unused = await freePort()
    expect(await appAccepts(at(unused, false, connect))).toBe(true)
    expect(await appAnswers(at(unused, true, connect))).toBe(false)
    await app(target)
    expect(await appAnswers(at(unused, true, connect))).toBe(true)
    const refused = () => Promise.reject(new Error("open failed"))
    expect(await appAccepts({ host: "127.0.0.1", port: unused, relayed: false, connect: refused })).toBe(false)
  })
})
