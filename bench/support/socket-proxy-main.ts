// The services bench's second reference arm: the barest reverse proxy JavaScript can be on this
// machine, one that reads and writes HTTP/1.1 on the sockets itself instead of through node:http.
// For each request on a caller's connection it finds the head's end and its Content-Length,
// writes the head (Host set, Connection dropped) and the body to an idle kept-alive connection
// to BENCH_REF_TARGET, then passes the answer back as bytes until its Content-Length is done and
// puts that connection back. Nothing else: no chunked bodies (such a request or answer closes the
// connection), no pipelining beyond taking requests in turn, no upgrades, no routing,
// authentication, replica choice, metrics or limits. It measures a bound (what a data plane of
// our own that parses HTTP on sockets could at best reach here), not a proxy anyone should run.
// Prints {"port": N} once it listens.
import * as net from "node:net"

const [host, port] = process.env.BENCH_REF_TARGET!.split(":") as [string, string]
const END_OF_HEAD = Buffer.from("\r\n\r\n")

interface Head {
  /** The request or status line. */
  readonly first: string
  /** The other lines as they came, but those named in `drop`. */
  readonly lines: ReadonlyArray<string>
  /** Content-Length (0 when absent); -1 when the message is chunked. */
  readonly length: number
  /** Where the body starts. */
  readonly bodyAt: number
}

const readHead = (buf: Buffer, drop: ReadonlySet<string>): Head | undefined => {
  const end = buf.indexOf(END_OF_HEAD)
  if (end < 0) return undefined
  const all = buf.toString("latin1", 0, end).split("\r\n")
  const lines: Array<string> = []
  let length = 0
  for (let i = 1; i < all.length; i++) {
    const line = all[i]!
    const colon = line.indexOf(":")
    const name = line.slice(0, colon).trim().toLowerCase()
    if (name === "content-length") length = Number(line.slice(colon + 1).trim())
    else if (name === "transfer-encoding") length = -1
    if (!drop.has(name)) lines.push(line)
  }
  return { first: all[0]!, lines, length, bodyAt: end + 4 }
}

const REQUEST_DROP = new Set(["host", "connection", "keep-alive"])
const ANSWER_DROP = new Set<string>()
const idle: Array<net.Socket> = []

const upstream = (use: (socket: net.Socket) => void): void => {
  const kept = idle.pop()
  if (kept !== undefined) return use(kept)
  const socket = net.connect(Number(port), host, () => use(socket))
  socket.setNoDelay(true)
  socket.on("error", () => undefined)
  socket.on("close", () => {
    const at = idle.indexOf(socket)
    if (at >= 0) idle.splice(at, 1)
  })
}

const server = net.createServer((caller) => {
  caller.setNoDelay(true)
  caller.on("error", () => undefined)
  let pending: Buffer = Buffer.alloc(0)
  let busy = false
  const next = (): void => {
    if (busy) return
    const head = readHead(pending, REQUEST_DROP)
    if (head === undefined) return
    if (head.length < 0 || Number.isNaN(head.length)) return void caller.destroy()
    if (pending.length < head.bodyAt + head.length) return
    busy = true
    const out = Buffer.concat([
      Buffer.from(`${head.first}\r\nHost: ${host}:${port}\r\n${head.lines.map((l) => `${l}\r\n`).join("")}\r\n`, "latin1"),
      pending.subarray(head.bodyAt, head.bodyAt + head.length)
    ])
    pending = pending.subarray(head.bodyAt + head.length)
    upstream((replica) => {
      let answer: Buffer | undefined
      let left = -1
      const onData = (chunk: Buffer): void => {
        if (left < 0) {
          answer = answer === undefined ? chunk : Buffer.concat([answer, chunk])
          const h = readHead(answer, ANSWER_DROP)
          if (h === undefined) return
          if (h.length < 0 || Number.isNaN(h.length)) {
            replica.destroy()
            return void caller.destroy()
          }
          left = h.bodyAt + h.length
          chunk = answer
        }
        caller.write(chunk)
        left -= chunk.length
        if (left <= 0) {
          replica.off("data", onData)
          idle.push(replica)
          busy = false
          next()
        }
      }
      replica.on("data", onData)
      replica.write(out)
    })
  }
  caller.on("data", (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    next()
  })
})
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as net.AddressInfo).port })))
process.on("SIGTERM", () => {
  server.close()
  for (const socket of idle) socket.destroy()
  process.exit(0)
})
