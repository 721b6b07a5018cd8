// The stacks transfer baseline: a bare node:http server that stores a PUT body in a file
// (`createWriteStream`, no hashing, no chunking) and answers a GET with the file
// (`createReadStream`, with content-length). What HTTP over loopback plus the disk allow,
// with nothing of dstack-ts in the way. BENCH_BARE_BLOB_DIR names the directory. Prints
// {"port": N} once it listens; SIGTERM closes it.
import * as fs from "node:fs"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import * as path from "node:path"
import { pipeline } from "node:stream/promises"

const dir = process.env.BENCH_BARE_BLOB_DIR!
fs.mkdirSync(dir, { recursive: true })

const server = http.createServer((req, res) => {
  const name = (req.url ?? "/").slice(1).replace(/[^a-zA-Z0-9._-]/g, "_")
  const file = path.join(dir, name || "blob")
  if (req.method === "PUT") {
    let size = 0
    req.on("data", (d: Buffer) => {
      size += d.length
    })
    pipeline(req, fs.createWriteStream(file)).then(
      () => res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ size })),
      (e: Error) => res.writeHead(500).end(String(e))
    )
    return
  }
  if (req.method === "GET") {
    fs.stat(file, (err, st) => {
      if (err) return void res.writeHead(404).end()
      res.writeHead(200, { "content-type": "application/octet-stream", "content-length": st.size })
      pipeline(fs.createReadStream(file, { highWaterMark: 1024 * 1024 }), res).catch(() => res.destroy())
    })
    return
  }
  res.writeHead(405).end()
})
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => console.log(JSON.stringify({ port: (server.address() as AddressInfo).port })))
process.on("SIGTERM", () => {
  server.close()
  server.closeAllConnections()
  process.exit(0)
})
