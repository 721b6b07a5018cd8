// A tiny HTTP server for examples/http-task: answers every request with a greeting that names
// the run, on the port in $PORT (8000 by default). Plain Node, no dependencies.
import { createServer } from "node:http"

const port = Number(process.env.PORT ?? 8000)
const run = process.env.DSTACK_RUN_NAME ?? "a dstack-ts run"

const server = createServer((req, res) => {
  console.log(`${req.method} ${req.url}`)
  res.setHeader("content-type", "text/plain")
  res.end(`Hello from ${run}, served on port ${port}\n`)
})
server.listen(port, () => console.log(`listening on port ${port}`))
// `dstack stop` sends SIGTERM: close the server and end the task cleanly.
process.on("SIGTERM", () => server.close(() => process.exit(0)))
