// The services bench's reference arm: a minimal hand-written node:http reverse proxy, what any
// Node.js proxy hop costs on this machine. Every request goes to BENCH_REF_TARGET (host:port) on a
// keep-alive agent, the caller's body piped to it and its answer piped back, status and headers as
// they are (no routing, authentication, replica choice, metrics or error handling beyond a 502).
// Prints {"port": N} once it listens.
import * as http from "node:http"
import type { AddressInfo } from "node:net"

const [host, port] = process.env.BENCH_REF_TARGET!.split(":") as [string, string]
const agent = new http.Agent({ keepAlive: true })

const server = http.createServer((req, res) => {
  const headers = { ...req.headers, host: `${host}:${port}` }
  const upstream = http.request({ agent, host, port: Number(port), method: req.method, path: req.url, headers }, (answer) => {
    res.writeHead(answer.statusCode ?? 502, answer.headers)
    answer.pipe(res)
  })
  upstream.on("error", () => {
    if (!res.headersSent) res.writeHead(502)
    res.end()
  })
  req.pipe(upstream)
})
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })))
process.on("SIGTERM", () => {
  server.close()
  server.closeAllConnections()
  process.exit(0)
})
