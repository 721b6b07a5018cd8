// SSH fleets on real hosts: network namespaces with their own sshd (test/support/netns.ts), the
// real remote backend (@dstack-ts/backend-ssh) and ssh transport. A fleet of 3 hosts — one
// reachable only through a jump host — is applied from YAML through the API, a task runs there,
// a host whose sshd stops mid-run ends its job as instance_unreachable and `retry` resubmits it,
// and deleting the fleet leaves no runner process on the hosts.
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, expect, it } from "vitest"
import { parse as parseYaml } from "yaml"
import backendSsh from "@dstack-ts/backend-ssh"
import transportSsh from "@dstack-ts/transport-ssh"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { appCall } from "../support/api.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url))
const TOKEN = "fleets-netns-token"
let server: Server
let hosts: NetnsHosts
const call = appCall(() => server, TOKEN)

const until = async <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 120_000): Promise<T> => {
  const start = Date.now()
  let last: T = await get()
  while (!ok(last)) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not in time; last: ${JSON.stringify(last).slice(0, 3000)}`)
    await new Promise((r) => setTimeout(r, 250))
    last = await get()
  }
  return last
}
const getRun = async (name: string) => (await call("/api/project/main/runs/get", { run_name: name })).body
const getFleet = async (name: string) => (await call("/api/project/main/fleets/get", { name })).body
const finished = (run: any) => ["done", "failed", "terminated"].includes(run.status)
const runSpec = (configuration: Record<string, unknown>, runName: string) => ({
  run_spec: { run_name: runName, repo_id: "e2e", repo_data: { repo_type: "virtual" }, configuration: { type: "task", resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." }, ...configuration } }
})

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 2, jump: true })
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [backendSsh, transportSsh],
      runner: { entry: RUNNER_ENTRY },
      engine: { resyncMs: 2_000, unreachableMs: 4_000 }
    })
  }, 120_000)
  afterAll(async () => {
    await server?.close()
    await hosts?.down()
  })

  it("applies a fleet of 3 hosts (one behind a jump host), runs a task, survives a host going away, and deletes clean", async () => {
    const [h0, h1] = hosts.hosts
    const hidden = hosts.hidden!
    // The YAML a user writes; the CLI would read identity_file and add ssh_key (cli/src/fleetKeys.ts).
    const yaml = `
type: fleet
name: netns
placement: cluster
ssh_config:
  user: ${h0.user}
  identity_file: ${hosts.privateKeyFile}
  hosts:
    - {hostname: ${h0.ip}, port: ${h0.port}}
    - {hostname: ${h1.ip}, port: ${h1.port}}
    - hostname: ${hidden.ip}
      port: ${hidden.port}
      proxy_jump: {hostname: ${h0.ip}, port: ${h0.port}, user: ${h0.user}, identity_file: ${hosts.privateKeyFile}}
`
    const configuration = parseYaml(yaml)
    const key = { public: hosts.publicKey, private: hosts.privateKey }
    configuration.ssh_config.ssh_key = key
    configuration.ssh_config.hosts[2].proxy_jump.ssh_key = key
    const applied = await call("/api/project/main/fleets/apply", { plan: { spec: { configuration } } })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    expect(JSON.stringify(applied.body)).not.toContain(hosts.privateKey.trim().split("\n")[1])
    const fleet = await until("hosts idle", () => getFleet("netns"), (f) => f.instances.every((i: any) => i.status === "idle" || i.status === "terminated"), 300_000)
    expect(fleet.instances.map((i: any) => [i.hostname, i.status, i.termination_reason_message ?? ""])).toEqual([
      [h0.ip, "idle", ""], [h1.ip, "idle", ""], [hidden.ip, "idle", ""]
    ])
    expect(fleet.instances[0].instance_type.resources.cpus).toBeGreaterThan(0)

    // A task on the fleet runs on one of its hosts (in that host's namespace).
    await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["netns"], commands: ["echo hello from $(hostname -I)"] }, "netns-hello") })
    const hello = await until("netns-hello ends", () => getRun("netns-hello"), finished)
    expect(hello.status, JSON.stringify(hello.jobs[0].job_submissions)).toBe("done")
    const logs = (await call("/api/project/main/logs/poll", { run_name: "netns-hello" })).body.logs.map((l: any) => l.message).join("")
    expect(logs).toMatch(/hello from (\d+\.\d+\.\d+\.\d+)/)

    // A long job whose host's sshd stops: instance_unreachable, then a retry on another host.
    await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["netns"], commands: ["sleep 300"], retry: { on_events: ["error"], duration: "10m" } }, "netns-long") })
    const running = await until("netns-long running", () => getRun("netns-long"), (r) => r.jobs[0].job_submissions.at(-1).status === "running" || finished(r))
    const first = running.jobs[0].job_submissions.at(-1)
    const victim = [h0, h1, hidden].find((h) => h.ip === first.job_provisioning_data.hostname)!
    // The jump host going away would take the hidden host with it: stop one that is not h0.
    await hosts.stopSshd(victim)
    try {
      const retried = await until("resubmitted", () => getRun("netns-long"), (r) => r.jobs[0].job_submissions.length > 1 || finished(r), 180_000)
      const gone = retried.jobs[0].job_submissions[0]
      expect(gone.termination_reason).toBe("instance_unreachable")
      expect(retried.jobs[0].job_submissions.length).toBeGreaterThan(1)
      const flagged = (await getFleet("netns")).instances.find((i: any) => i.hostname === victim.ip)
      expect(flagged.unreachable).toBe(true)
      await call("/api/project/main/runs/stop", { runs_names: ["netns-long"], abort: true })
      await until("netns-long ends", () => getRun("netns-long"), finished)
    } finally {
      await hosts.startSshd(victim)
    }

    // Deleting the fleet stops every runner it started.
    await until("hosts free", () => getFleet("netns"), (f) => f.instances.every((i: any) => i.status !== "busy"), 60_000)
    const deleted = await call("/api/project/main/fleets/delete", { names: ["netns"] })
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(200)
    await until("fleet gone", () => call("/api/project/main/fleets/get", { name: "netns" }), (r) => r.status === 400, 180_000)
    for (const host of [h0, h1, hidden]) {
      const runners = (await hosts.pids(host)).filter((pid) => {
        try {
          return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("runner")
        } catch {
          return false
        }
      })
      expect(runners, host.name).toEqual([])
    }
  }, 900_000)
})
