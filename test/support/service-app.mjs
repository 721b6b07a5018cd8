// A service app for the services tests, run as a job's command: plain node:http on
// $DSTACK_SERVICE_PORT with the endpoints the proxy tests need (echo, a counted upload, a
// duplex echo, an endless SSE stream, a slow answer, a broken answer, redirects, a readiness endpoint, a crash, a WebSocket echo),
// and for the services bench an answer after a fixed amount of CPU work (`/work?cpu_us=N`).
import * as fs from "node:fs"
import * as http from "node:http"
import * as os from "node:os"
import { WebSocketServer } from "ws"

const port = Number(process.env.DSTACK_SERVICE_PORT ?? process.env.PORT ?? 8000)
const replica = `${process.env.DSTACK_RUN_NAME}:${port}`
// The host's own addresses (a replica on an SSH fleet host answers with its host's IP).
const addresses = Object.values(os.networkInterfaces()).flat().filter((a) => a && a.family === "IPv4" && !a.internal).map((a) => a.address)

const server = http.createServer((req, res) => {
  const url = new URL(req.url, "http://x")
  // Behind a proxy that keeps its prefix (strip_prefix: false), the same endpoints under it.
  switch (url.pathname.replace(/^\/proxy\/services\/[^/]+\/[^/]+/, "")) {
    case "/path":
      res.setHeader("content-type", "application/json")
      return res.end(JSON.stringify({ url: req.url, replica, addresses, version: process.env.VERSION, headers: req.headers }))
    case "/count": {
      let bytes = 0
      req.on("data", (chunk) => (bytes += chunk.length))
      req.on("end", () => res.end(JSON.stringify({ bytes })))
      return
    }
    case "/duplex":
      // Answers at once, then one line per chunk received: a proxy that held the upload back
      // until it had all of it would never let the client see the first line.
      res.writeHead(200, { "content-type": "text/plain" })
      res.flushHeaders()
      req.on("data", (chunk) => res.write(`${chunk.length}\n`))
      req.on("end", () => res.end("end\n"))
      return
    case "/sse": {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" })
      let n = 0
      const timer = setInterval(() => res.write(`data: ${n++}\n\n`), 20)
      res.on("close", () => clearInterval(timer))
      return
    }
    case "/work": {
      // Spins until this process has used `cpu_us` µs more CPU (user + system), then answers: a
      // replica doing a fixed amount of work per request, whatever else the machine runs.
      const start = process.cpuUsage()
      const us = Number(url.searchParams.get("cpu_us") ?? 1000)
      for (let used = 0; used < us; ) {
        const d = process.cpuUsage(start)
        used = d.user + d.system
      }
      res.setHeader("content-type", "application/json")
      return res.end(JSON.stringify({ replica, cpu_us: us }))
    }
    case "/slow":
      return setTimeout(() => res.end(replica), Number(url.searchParams.get("ms") ?? 500))
    case "/broken":
      res.writeHead(200, { "content-type": "text/plain" })
      res.write("partial")
      return setTimeout(() => res.socket.destroy(), 20)
    case "/ready":
      // A readiness probe's target: ready once the file named by $READY_FILE exists, and only
      // for a probe that sends the header the test configures.
      res.statusCode = (!process.env.READY_FILE || fs.existsSync(process.env.READY_FILE)) && req.headers["x-probe"] === "dstack" ? 200 : 503
      return res.end()
    case "/crash":
      // The replica's process exits with an error once it has answered (a crashing replica).
      res.setHeader("connection", "close")
      return res.end(replica, () => process.exit(3))
    case "/redirect":
      res.writeHead(302, { location: "/path" })
      return res.end()
    default:
      res.end(`hello from ${replica}\n`)
  }
})
new WebSocketServer({ server, path: "/ws" }).on("connection", (socket, req) => {
  socket.on("message", (data, binary) => socket.send(binary ? data : `echo ${data} via ${req.url}`, { binary }))
})
server.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`))
