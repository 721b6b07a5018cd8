// The default server build (cli/src/defaultBuild.ts: the embedded state store under
// FAULT_SERVER_DIR, or PostgreSQL with DSTACK_DATABASE_URL; blobs on disk or in an S3 bucket per
// DSTACK_SERVER_S3_*) as a program, for tests that kill servers (test/reliability/crash.test.ts,
// replicas-load.test.ts): the local backend under FAULT_WORK_DIR (its runners are separate
// processes, so they outlive the server), and short leases so that a restarted server or another
// replica takes a killed server's runs over in seconds. `DSTACK_FAULT=point[:n]` kills it at a
// named point (core/src/internal/Faults.ts). Prints `{"port":…}` once it listens; SIGTERM closes
// it (leaving the runners running, as `dstack server` does).
//
// With FAULT_RUNNER_PROXY_FILE set, the server reaches each runner through a fault proxy
// (./fault-proxy.ts) whose mode the test writes to that file: slow, garbage or cut answers.
//
// FAULT_STATE_OPTIONS (JSON) adds to the state store's options (`query_timeout` of `postgres`).
//
// Environment: DSTACK_SERVER_ADMIN_TOKEN, FAULT_SERVER_DIR, FAULT_WORK_DIR, FAULT_MAX_INSTANCES,
// FAULT_LEASE_MS, FAULT_RESYNC_MS, FAULT_RECONCILE_MS, FAULT_RUNNER_PROXY_FILE, FAULT_STATE_OPTIONS, and
// DSTACK_DATABASE_URL, DSTACK_SERVER_S3_*, DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS as for
// `dstack server`.
import { Effect } from "effect"
import { createServer, definePlugin, RunnerTransport, serve } from "../../core/src/index.ts"
import { defaultServerOptions } from "../../cli/src/defaultBuild.ts"
import { startFaultProxy, type FaultProxy } from "./fault-proxy.ts"

const env = (name: string): string => {
  const value = process.env[name]
  if (value === undefined || value === "") throw new Error(`fault-server: ${name} is not set`)
  return value
}

const base = defaultServerOptions(env("FAULT_SERVER_DIR"), env("DSTACK_SERVER_ADMIN_TOKEN"), {
  // One server on PostgreSQL with blobs on its disk is fine; replicas set DSTACK_SERVER_S3_BUCKET.
  allowLocalBlobs: process.env.DSTACK_SERVER_S3_BUCKET === undefined
})

// The `faulty` transport: a fault proxy per runner, in front of its port on 127.0.0.1.
const proxyFile = process.env.FAULT_RUNNER_PROXY_FILE ?? ""
const proxies = new Map<number, Promise<FaultProxy>>()
const faultyTransport: RunnerTransport.RunnerTransport = {
  name: "faulty",
  connect: (target) =>
    Effect.promise(() => {
      let proxy = proxies.get(target.runnerPort)
      if (proxy === undefined) {
        proxy = startFaultProxy({ targetHost: target.hostname, targetPort: target.runnerPort, modeFile: proxyFile })
        proxies.set(target.runnerPort, proxy)
      }
      return proxy
    }).pipe(Effect.map((p) => RunnerTransport.fetchClient("faulty", `http://127.0.0.1:${p.port}`))),
  forward: (_target, _localPort, remotePort) => Effect.succeed({ localHost: "127.0.0.1", localPort: remotePort, remotePort })
}
const faultyPlugin = definePlugin({
  name: "fault-proxy-transport",
  version: "0.1.0",
  core: "*",
  description: "Reaches local runners through a fault proxy (tests only)",
  transports: { faulty: () => Effect.succeed(faultyTransport) }
})

const stateOptions = process.env.FAULT_STATE_OPTIONS ? (JSON.parse(process.env.FAULT_STATE_OPTIONS) as object) : {}
const server = await createServer({
  ...base,
  state: { ...(base.state as { driver: string; options: object }), options: { ...(base.state as { options: object }).options, ...stateOptions } },
  ...(proxyFile !== "" ? { plugins: [...(base.plugins ?? []), faultyPlugin] } : {}),
  compute: {
    ...base.compute,
    ...(proxyFile !== "" ? { transports: { ...base.compute?.transports, local: "faulty" } } : {}),
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
    resyncMs: Number(process.env.FAULT_RESYNC_MS ?? 1000),
    reconcileMs: Number(process.env.FAULT_RECONCILE_MS ?? 2000)
  }
})
const serving = await serve(server, { hostname: "127.0.0.1", port: 0, handleSignals: true })
process.stdout.write(`${JSON.stringify({ port: serving.port })}\n`)
