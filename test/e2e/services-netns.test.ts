// A service on an SSH fleet: two real hosts (network namespaces with their own sshd,
// test/support/netns.ts) in one fleet, a service of two replicas (test/support/service-app.mjs
// as processes, one on each host, each listening on its host's own loopback), and requests
// through /proxy/services/{project}/{run}/ reaching both — carried by the ssh transport's
// forward with the hosts' SSH access, as the engine reaches their runners. A WebSocket goes the
// same way. A request with a body at zero replicas waits for the app on the host to listen (not
// only for the forward). Stopping the service leaves the proxy answering 404.
import * as path from "node:path"
import { afterAll, beforeAll, expect, it } from "vitest"
import WebSocket from "ws"
import type { Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { httpCall } from "../support/api.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"
import { freePort, waitRunning } from "../support/services.ts"
import { makeUntil } from "../support/until.ts"
import { sshFleetServer } from "../support/sshFleetServer.ts"

const APP = path.resolve("test/support/service-app.mjs")
const TOKEN = "services-netns-token"
let server: Server
let serving: Serving
let hosts: NetnsHosts
let call: ReturnType<typeof httpCall>
const auth = { authorization: `Bearer ${TOKEN}` }

const until = makeUntil({ timeoutMs: 120_000, everyMs: 250 })

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 2 })
    server = await sshFleetServer(TOKEN, {
      services: { holdTimeoutMs: 30_000 }
    })
    serving = await serve(server, { port: 0, handleSignals: false })
    call = httpCall(serving.url, TOKEN)
    const configuration = {
      type: "fleet",
      name: "svc-fleet",
      ssh_config: {
        user: "root",
        identity_file: hosts.privateKeyFile,
        ssh_key: { public: hosts.publicKey, private: hosts.privateKey },
        hosts: hosts.hosts.map((h) => ({ hostname: h.ip, port: h.port }))
      }
    }
    const applied = await call("/api/project/main/fleets/apply", { plan: { spec: { configuration } } })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    await until("fleet idle", async () => (await call("/api/project/main/fleets/get", { name: "svc-fleet" })).body, (f) =>
      f.instances?.length === 2 && f.instances.every((i: any) => i.status === "idle"), 300_000)
  }, 400_000)

  afterAll(async () => {
    await call?.("/api/project/main/runs/stop", { runs_names: ["fleet-web", "fleet-zero"], abort: true }).catch(() => undefined)
    await serving?.close()
    await hosts?.down()
  })

  it("proxies requests to replicas on two fleet hosts, each of which gets some", async () => {
    const port = await freePort()
    const applied = await call("/api/project/main/runs/apply", {
      plan: {
        run_spec: {
          run_name: "fleet-web",
          repo_id: "services",
          repo_data: { repo_type: "virtual" },
          configuration: {
            type: "service",
            fleets: ["svc-fleet"],
            replicas: 2,
            port,
            commands: [`exec node ${APP}`],
            resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." }
          }
        }
      }
    })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const run = await waitRunning(call, "fleet-web", 2, 180_000)
    const placed = run.jobs.map((j: any) => j.job_submissions.at(-1).job_provisioning_data.hostname).sort()
    expect(placed).toEqual(hosts.hosts.map((h) => h.ip).sort())

    // Each replica listens on its host's loopback: only a forward over the host's SSH reaches it.
    const url = `${serving.url}/proxy/services/main/fleet-web/path`
    const first = await until("a replica answers through the proxy", () =>
      fetch(url, { headers: auth }).then(async (r) => ({ status: r.status, text: await r.text() })), (r) => r.status === 200, 60_000)
    expect(first.status, first.text).toBe(200)
    // Rounds of 4 concurrent requests, each answer counted by the host it came from. One
    // replica's app may start listening later than the other's: wait until both have answered,
    // then least outstanding spreads every later round over both.
    const round = async () => {
      const answers = await Promise.all(Array.from({ length: 4 }, () =>
        fetch(url, { headers: auth }).then(async (r) => {
          const text = await r.text()
          expect(r.status, text).toBe(200)
          return JSON.parse(text) as { addresses: Array<string> }
        })))
      const seen = new Map<string, number>()
      for (const a of answers) {
        const host = hosts.hosts.find((h) => a.addresses.includes(h.ip))
        expect(host, `an answer from an address of no fleet host: ${a.addresses.join(", ")}`).toBeDefined()
        seen.set(host!.ip, (seen.get(host!.ip) ?? 0) + 1)
      }
      return seen
    }
    const all = hosts.hosts.map((h) => h.ip).sort()
    await until("both hosts answer", round, (seen) => seen.size === 2, 60_000)
    const later = new Map<string, number>()
    for (let i = 0; i < 10; i++) for (const [ip, n] of await round()) later.set(ip, (later.get(ip) ?? 0) + n)
    expect([...later.keys()].sort()).toEqual(all)
    for (const [ip, n] of later) expect(n, `requests answered by ${ip}`).toBeGreaterThanOrEqual(5)

    // A WebSocket through the proxy reaches a fleet host too.
    const echoed = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(`ws://127.0.0.1:${serving.port}/proxy/services/main/fleet-web/ws`, { headers: auth })
      ws.once("open", () => ws.send("hi"))
      ws.once("message", (data) => {
        resolve(String(data))
        ws.close()
      })
      ws.once("error", reject)
    })
    expect(echoed).toBe("echo hi via /ws")
  }, 300_000)

  it("answers 404 once the service is stopped", async () => {
    const stopped = await call("/api/project/main/runs/stop", { runs_names: ["fleet-web"], abort: true })
    expect(stopped.status, JSON.stringify(stopped.body)).toBe(200)
    await until("the run ended", async () => (await call("/api/project/main/runs/get", { run_name: "fleet-web" })).body.status, (s) =>
      ["terminated", "done", "failed"].includes(s), 120_000)
    const res = await until("the proxy forgets the service", () => fetch(`${serving.url}/proxy/services/main/fleet-web/path`, { headers: auth }).then((r) => r.status), (s) =>
      s === 404, 30_000)
    expect(res).toBe(404)
  }, 180_000)

  it("holds a request with a body at zero replicas until the app on the fleet host listens, then serves it", async () => {
    // The app starts 2 s after its job runs. The forward's local listener accepts at once, whatever
    // the far side does: only the SSH channel says whether the app listens on the host yet, and
    // the upload must not be sent (and spent) into a connection the host then refuses.
    // The hosts the stopped service held are idle again first (a fleet's jobs take idle hosts only).
    await until("fleet idle", async () => (await call("/api/project/main/fleets/get", { name: "svc-fleet" })).body, (f) =>
      f.instances?.filter((i: any) => i.status === "idle").length === 2, 120_000)
    const port = await freePort()
    const applied = await call("/api/project/main/runs/apply", {
      plan: {
        run_spec: {
          run_name: "fleet-zero",
          repo_id: "services",
          repo_data: { repo_type: "virtual" },
          configuration: {
            type: "service",
            fleets: ["svc-fleet"],
            replicas: "0..1",
            scaling: { metric: "rps", target: 10, scale_up_delay: 0, scale_down_delay: 60 },
            port,
            commands: ["sleep 2", `exec node ${APP}`],
            resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." }
          }
        }
      }
    })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    await until("the service is registered", async () => (await call("/api/project/main/services/get", { run_name: "fleet-zero" })).status, (s) => s === 200, 60_000)
    const upload = new Uint8Array(256 * 1024).fill(7)
    const answer = await fetch(`${serving.url}/proxy/services/main/fleet-zero/count`, { method: "POST", headers: auth, body: upload })
    const text = await answer.text()
    expect(answer.status, text).toBe(200)
    expect(JSON.parse(text)).toEqual({ bytes: upload.length })
    const run = (await call("/api/project/main/runs/get", { run_name: "fleet-zero" })).body
    expect(run.jobs.length).toBe(1)
    await call("/api/project/main/runs/stop", { runs_names: ["fleet-zero"], abort: true })
  }, 240_000)
})
