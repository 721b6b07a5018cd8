// The API baseline: a bare node:http server that reads the request body and answers each
// path with the same JSON bytes the dstack-ts server gave for it (BENCH_BARE_BODIES names a
// JSON file {path: body}). Prints {"port": N} once it listens.
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"

const bodies = new Map(Object.entries(JSON.parse(fs.readFileSync(process.env.BENCH_BARE_BODIES!, "utf8")) as Record<string, string>).map(([k, v]) => [k, Buffer.from(v)]))

const server = http.createServer((req, res) => {
  req.on("data", () => {})
  req.on("end", () => {
    const body = bodies.get(req.url ?? "")
    if (body === undefined) {
      res.writeHead(404).end()
      return
    }
    res.writeHead(200, { "content-type": "application/json", "content-length": body.length })
    res.end(body)
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })))
process.on("SIGTERM", () => {
  server.close()
  server.closeAllConnections()
  process.exit(0)
})
