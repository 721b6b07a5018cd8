// Services: the proxy against calling the replica directly (requests/s and p50/p99 latency at a
// few concurrencies, closed loop, keep-alive), one process replica of test/support/service-app.mjs
// on the local backend. The server runs in this process, next to the load generator: both
// figures share that handicap equally (the direct one goes through the same event loop's client).
import * as os from "node:os"
import * as path from "node:path"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../core/src/ports/BlobStore.ts"
import { createServer } from "../core/src/server/createServer.ts"
import { serve } from "../core/src/server/serve.ts"
import { httpCall } from "../test/support/api.ts"
import { applyService, waitRunning } from "../test/support/services.ts"
import type { BenchContext } from "./context.ts"
import { load } from "./support/load.ts"
import { summarize, type Row } from "./support/stats.ts"

const TOKEN = "bench-services"

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: TOKEN,
    plugins: [backendLocal, transportLocal],
    compute: { defaultBackends: [{ type: "local", config: { work_dir: path.join(os.tmpdir(), "dstack-ts-bench-services") } }] },
    runner: { entry: path.resolve("cli/src/runner.ts") }
  })
  const serving = await serve(server, { port: 0, handleSignals: false })
  const call = httpCall(serving.url, TOKEN)
  const rows: Array<Row> = []
  try {
    const port = await applyService(call, "bench-web", { auth: true })
    await waitRunning(call, "bench-web")
    // The replica answers once it listens.
    for (let i = 0; i < 100 && (await fetch(`http://127.0.0.1:${port}/path`).catch(() => undefined)) === undefined; i++) await new Promise((r) => setTimeout(r, 100))
    const durationMs = ctx.full ? 10_000 : 3_000
    for (const concurrency of [1, 16]) {
      ctx.log(`services: c=${concurrency}`)
      const direct = await load({ url: `http://127.0.0.1:${port}`, path: "/path", body: "{}" }, { concurrency, durationMs, maxRequests: 200_000 })
      const proxied = await load({ url: serving.url, path: "/proxy/services/main/bench-web/path", body: "{}", token: TOKEN }, { concurrency, durationMs, maxRequests: 200_000 })
      const ratio = proxied.rps / direct.rps
      rows.push({
        section: "services", measure: `proxy req/s, c=${concurrency} (vs the replica directly)`, unit: "req/s", better: "higher",
        value: proxied.rps, baseline: direct.rps, target: "≥ 0.7× direct", verdict: ratio >= 0.7 ? "meets" : "short",
        note: proxied.errors + direct.errors > 0 ? `${proxied.errors} proxy / ${direct.errors} direct errors` : undefined
      })
      const p = summarize(proxied.latencies)
      const d = summarize(direct.latencies)
      rows.push({
        section: "services", measure: `proxy latency, c=${concurrency} (vs the replica directly)`, unit: "ms", better: "lower",
        value: p, baseline: d, target: "p99 ≤ direct + 5 ms", verdict: p.p99 <= d.p99 + 5 ? "meets" : "short"
      })
    }
  } finally {
    await call("/api/project/main/runs/stop", { runs_names: ["bench-web"], abort: true }).catch(() => undefined)
    await serving.close()
  }
  return rows
}
