// The default server build (cli/src/defaultBuild.ts: the embedded state store under
// FAULT_SERVER_DIR, or PostgreSQL with DSTACK_DATABASE_URL; blobs on disk or in an S3 bucket per
// DSTACK_SERVER_S3_*) as a program, for tests that kill servers (test/reliability/crash.test.ts,
// replicas-load.test.ts): the local backend under FAULT_WORK_DIR (its runners are separate
// processes, so they outlive the server), and short leases so that a restarted server or another
// replica takes a killed server's runs over in seconds. `DSTACK_FAULT=point[:n]` kills it at a
// named point (core/src/internal/Faults.ts). Prints `{"port":…}` once it listens; SIGTERM closes
// it (leaving the runners running, as `dstack server` does).
//
// Environment: DSTACK_SERVER_ADMIN_TOKEN, FAULT_SERVER_DIR, FAULT_WORK_DIR, FAULT_MAX_INSTANCES,
// FAULT_LEASE_MS, FAULT_RESYNC_MS, and DSTACK_DATABASE_URL, DSTACK_SERVER_S3_*,
// DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS as for `dstack server`.
import { createServer, serve } from "../../core/src/index.ts"
import { defaultServerOptions } from "../../cli/src/defaultBuild.ts"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === "") throw new Error(`fault-server: ${name} is not set`)
  return value
}

const base = defaultServerOptions(env("FAULT_SERVER_DIR"), env("DSTACK_SERVER_ADMIN_TOKEN"), {
  // One server on PostgreSQL with blobs on its disk is fine; replicas set DSTACK_SERVER_S3_BUCKET.
  allowLocalBlobs: process.env.DSTACK_SERVER_S3_BUCKET === undefined
})

const server = await createServer({
  ...base,
  compute: {
    ...base.compute,
    defaultBackends: [{
      type: "local",
      config: {
        work_dir: env("FAULT_WORK_DIR"),
        max_instances: Number(process.env.FAULT_MAX_INSTANCES ?? 8),
        terminate_grace_seconds: 1
      }
    }]
  },
  engine: {
    ...base.engine,
    leaseMs: Number(process.env.FAULT_LEASE_MS ?? 8000),
    resyncMs: Number(process.env.FAULT_RESYNC_MS ?? 1000)
  }
})
const serving = await serve(server, { hostname: "127.0.0.1", port: 0, handleSignals: true })
process.stdout.write(`${JSON.stringify({ port: serving.port })}\n`)
