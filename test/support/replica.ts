// One server replica as a program, for tests with several replicas on one PostgreSQL database
// (test/e2e/replicas.test.ts): createServer with the PostgreSQL state store, the local backend
// (runners are separate processes, so they outlive this one) and the local transport, served
// on a loopback port, with the `s3` blob store of @dstack-ts/blob-unstorage on REPLICA_BLOBS (the
// options as JSON; tests point it at the S3 stand-in, test/support/s3-standin.ts) so that every
// replica sees the code archives and stack files of the others. Every run claim and every run
// write made under a lease is appended to
// REPLICA_EVENTS (one JSON line each, synchronously, so a SIGKILL loses nothing written) so
// that a test can tell which replica worked on which run. Prints `{"port":…,"owner":…}` once it
// listens; SIGTERM closes it (and the runners it started). While the file REPLICA_PAUSE_FILE
// exists the replica claims no run, so a test can hand a run submitted through it to another.
//
// Environment: DSTACK_DATABASE_URL, DSTACK_SERVER_ADMIN_TOKEN, REPLICA_OWNER, REPLICA_WORK_DIR,
// REPLICA_EVENTS, REPLICA_BLOBS, REPLICA_PAUSE_FILE, REPLICA_LEASE_MS, REPLICA_RESYNC_MS,
// REPLICA_MAX_INSTANCES.
import * as fs from "node:fs"
import type { AddressInfo } from "node:net"
import { fileURLToPath } from "node:url"
import { serve } from "@hono/node-server"
import { Effect, Layer } from "effect"
import backendLocal from "@dstack-ts/backend-local"
import blobUnstorage from "@dstack-ts/blob-unstorage"
import transportLocal from "@dstack-ts/transport-local"
import { PostgresStateStore } from "@dstack-ts/state-postgres"
import { StateStore, type RunDocuments } from "../../core/src/ports/StateStore.ts"
import { createServer } from "../../core/src/server/createServer.ts"

/** One line of REPLICA_EVENTS. */
export interface ReplicaEvent {
  readonly event: "claim" | "update"
  readonly owner: string
  readonly run: string
  readonly status?: string
  readonly at: number
}

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === "") throw new Error(`replica: ${name} is not set`)
  return value
}

const owner = env("REPLICA_OWNER")
const eventsFile = env("REPLICA_EVENTS")
const pauseFile = process.env.REPLICA_PAUSE_FILE

const record = (event: Omit<ReplicaEvent, "owner" | "at">) =>
  Effect.sync(() => fs.appendFileSync(eventsFile, `${JSON.stringify({ ...event, owner, at: Date.now() })}\n`))

/** The runs repository, recording what this replica's engine claims and writes under a lease. */
const recordingRuns = (runs: RunDocuments): RunDocuments => ({
  ...runs,
  claim: (request) =>
    (pauseFile !== undefined && fs.existsSync(pauseFile) ? Effect.succeed([]) : runs.claim(request)).pipe(
      Effect.tap((rows) => Effect.forEach(rows, (row) => record({ event: "claim", run: row.id }), { discard: true }))
    ),
  update: (id, patch, options) =>
    runs.update(id, patch, options).pipe(
      Effect.tap((row) => (options?.lease !== undefined ? record({ event: "update", run: id, status: row.status }) : Effect.void))
    )
})

const state = Layer.effect(
  StateStore,
  Effect.map(StateStore, (store) => ({ ...store, runs: recordingRuns(store.runs) }))
).pipe(Layer.provide(PostgresStateStore.layer({ url: env("DSTACK_DATABASE_URL") })))

const server = await createServer({
  state,
  blobs: { driver: "s3", options: JSON.parse(env("REPLICA_BLOBS")) as unknown },
  adminToken: env("DSTACK_SERVER_ADMIN_TOKEN"),
  plugins: [blobUnstorage, backendLocal, transportLocal],
  runner: { entry: fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url)) },
  compute: {
    defaultBackends: [{
      type: "local",
      config: {
        work_dir: env("REPLICA_WORK_DIR"),
        max_instances: Number(process.env.REPLICA_MAX_INSTANCES ?? 8),
        terminate_grace_seconds: 1
      }
    }]
  },
  engine: {
    owner,
    leaseMs: Number(process.env.REPLICA_LEASE_MS ?? 3000),
    resyncMs: Number(process.env.REPLICA_RESYNC_MS ?? 1000)
  }
})

const listener = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
  const s = serve({ fetch: server.app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s))
  s.once("error", reject)
})

let closing = false
const shutdown = () => {
  if (closing) return
  closing = true
  // Keep-alive connections would hold `close` open: the server goes away anyway.
  ;(listener as unknown as { closeAllConnections?: () => void }).closeAllConnections?.()
  listener.close()
  server.close().then(
    () => process.exit(0),
    (error: unknown) => {
      process.stderr.write(`replica ${owner}: close failed: ${String(error)}\n`)
      process.exit(1)
    }
  )
}
process.on("SIGTERM", shutdown)
process.on("SIGINT", shutdown)

process.stdout.write(`${JSON.stringify({ port: (listener.address() as AddressInfo).port, owner })}\n`)
