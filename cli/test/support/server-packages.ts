// Child process of the server test (run with tsx and record-packages.mjs preloaded): starts
// `dstack server`'s default build in the directory given as its argument, notes which packages
// the start resolved, then adds a kubernetes backend to the main project through the API and
// prints one JSON line: {"atStart": [...], "afterKubernetes": [...], "create": status}.
import { readFileSync } from "node:fs"
import { join } from "node:path"
import { startServer } from "../../src/commands/server.ts"

const dir = process.argv[2]
const recorded = () => [...new Set(readFileSync(process.env.RECORD_PACKAGES_FILE!, "utf8").split("\n").filter((l) => l !== ""))]
const running = await startServer({ host: "127.0.0.1", port: 0, serverDir: join(dir, "server"), adminToken: "t", configPath: undefined })
try {
  const atStart = recorded()
  // A kubeconfig naming a cluster nobody serves: making the backend reads it with the library.
  const kubeconfig = [
    "apiVersion: v1",
    "kind: Config",
    "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:1'}}]",
    "users: [{name: u, user: {token: x}}]",
    "contexts: [{name: ctx, context: {cluster: c, user: u}}]",
    "current-context: ctx"
  ].join("\n")
  const res = await fetch(`${running.url}/api/project/main/backends/create`, {
    method: "POST",
    headers: { authorization: "Bearer t", "content-type": "application/json" },
    body: JSON.stringify({ type: "kubernetes", runner_image: "dstack-ts-runner:none", kubeconfig: { data: kubeconfig } })
  })
  const answer = await res.text()
  if (!res.ok) console.error(answer)
  console.log(JSON.stringify({ atStart, afterKubernetes: recorded(), create: res.status }))
} finally {
  await running.close()
}
