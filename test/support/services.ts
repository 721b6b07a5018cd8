// Helpers of the services tests: submit a service that runs test/support/service-app.mjs
// on a free port, and wait until its replicas run.
import * as net from "node:net"
import * as path from "node:path"
import type { httpCall } from "./api.ts"

const APP = path.resolve("test/support/service-app.mjs")

export const freePort = (): Promise<number> =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })

const small = { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." }

/** The run spec of a service running the test app on `port`. */
export const serviceRunSpec = (name: string, port: number, extra: Record<string, unknown> = {}) => ({
  run_name: name,
  repo_id: "services",
  repo_data: { repo_type: "virtual" },
  configuration: { type: "service", commands: [`exec node ${APP}`], port, resources: small, ...extra }
})

export const applyService = async (call: ReturnType<typeof httpCall>, name: string, extra: Record<string, unknown> = {}) => {
  const port = await freePort()
  const res = await call("/api/project/main/runs/apply", { plan: { run_spec: serviceRunSpec(name, port, extra) } })
  if (res.status !== 200) throw new Error(`applying service ${name} answered ${res.status}: ${JSON.stringify(res.body)}`)
  return port
}

/** Plans and applies a changed spec of an active service, as `dstack apply` does (the plan names the run it updates). */
export const reapplyService = async (call: ReturnType<typeof httpCall>, name: string, port: number, extra: Record<string, unknown> = {}) => {
  const run_spec = serviceRunSpec(name, port, extra)
  const plan = await call("/api/project/main/runs/get_plan", { run_spec })
  if (plan.status !== 200) throw new Error(`planning service ${name} answered ${plan.status}: ${JSON.stringify(plan.body)}`)
  return call("/api/project/main/runs/apply", { plan: { run_spec, current_resource: plan.body.current_resource } })
}

export const waitRunning = async (call: ReturnType<typeof httpCall>, name: string, replicas = 1, timeoutMs = 60_000) => {
  const start = Date.now()
  for (;;) {
    const run = (await call("/api/project/main/runs/get", { run_name: name })).body
    const running = (run.jobs ?? []).filter((j: any) => j.job_submissions.at(-1)?.status === "running").length
    if (running >= replicas) return run
    if (["failed", "terminated", "done"].includes(run.status)) throw new Error(`run ${name} ended: ${JSON.stringify(run.jobs.map((j: any) => j.job_submissions.at(-1)))}`)
    if (Date.now() - start > timeoutMs) throw new Error(`run ${name} did not get ${replicas} running replicas: ${run.status}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

