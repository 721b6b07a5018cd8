// SSH fleets through the API and the engine, with a stand-in for the `remote` backend whose
// hosts are real runners on this machine's loopback addresses (127.0.0.2, …): applying a fleet
// provisions its hosts, answers never carry the private keys, runs take the fleet's hosts, a
// 3-node task rendezvous over TCP at its master's address, a busy host is not double-booked,
// a failed master fails the run and stops the others, and deleting the fleet deprovisions it.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { appCall } from "../support/api.ts"
import { makeRemoteStandIn } from "../support/remote-standin.ts"
import { makeUntil } from "../support/until.ts"

const TOKEN = "fleets-e2e-token"
const PRIVATE_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in-secret-key-material\n-----END OPENSSH PRIVATE KEY-----\n"
const JUMP_KEY = "-----BEGIN OPENSSH PRIVATE KEY-----\njump-secret-key-material\n-----END OPENSSH PRIVATE KEY-----\n"
let server: Server
const remote = makeRemoteStandIn()
const call = appCall(() => server, TOKEN)

const fleetSpec = (name: string, hosts: ReadonlyArray<unknown>, extra: Record<string, unknown> = {}) => ({
  configuration: {
    type: "fleet",
    name,
    placement: "cluster",
    ssh_config: { user: "dstack", identity_file: "~/.ssh/id", ssh_key: { public: "ssh-ed25519 AAAA test", private: PRIVATE_KEY }, hosts },
    ...extra
  }
})

const runSpec = (configuration: Record<string, unknown>, runName: string) => ({
  run_spec: {
    run_name: runName,
    repo_id: "e2e",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "task", resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }, ...configuration }
  }
})

const until = makeUntil({ timeoutMs: 30_000, everyMs: 100 })

const getFleet = async (name: string) => (await call("/api/project/main/fleets/get", { name })).body
const getRun = async (name: string) => (await call("/api/project/main/runs/get", { run_name: name })).body
const finished = (run: any) => ["done", "failed", "terminated"].includes(run.status)
const logsOf = async (run: any, jobNum: number) => {
  const sub = run.jobs[jobNum].job_submissions.at(-1)
  return (await call("/api/project/main/logs/poll", { run_name: run.run_spec.run_name, job_submission_id: sub.id })).body.logs.map((l: any) => l.message).join("")
}

beforeAll(async () => {
  server = await createServer({
    state: EmbeddedStateStore.layerMemory(),
    blobs: blobsMemory,
    adminToken: TOKEN,
    plugins: [remote.plugin],
    engine: { resyncMs: 1_000 }
  })
}, 60_000)
afterAll(async () => {
  await server?.close()
})

// Each node: rank 0 listens at the master's address, the others connect and send their rank;
// the master answers every rank seen, and each node prints what it saw.
const RENDEZVOUS = `
const net = require("net")
const rank = Number(process.env.DSTACK_NODE_RANK), n = Number(process.env.DSTACK_NODES_NUM), ip = process.env.DSTACK_MASTER_NODE_IP
console.log("rank " + rank + " of " + n + " master " + ip + " ips " + process.env.DSTACK_NODES_IPS.split("\\n").join(","))
console.log("hostfile " + require("fs").readFileSync(process.env.DSTACK_MPI_HOSTFILE, "utf8").trim().split("\\n").join(";"))
if (rank === 0) {
  const seen = [0], socks = []
  net.createServer((s) => s.on("data", (d) => {
    seen.push(Number(String(d))); socks.push(s)
    if (seen.length === n) {
      const all = seen.sort().join(",")
      for (const x of socks) x.end(all)
      console.log("rank 0 saw " + all)
      setTimeout(() => process.exit(0), 200)
    }
  })).listen(29517, ip)
} else {
  const attempt = () => {
    let got = ""
    const s = net.connect(29517, ip, () => s.write(String(rank)))
    s.on("data", (d) => (got += d))
    s.on("end", () => { console.log("rank " + rank + " saw " + got); process.exit(0) })
    s.on("error", () => setTimeout(attempt, 100))
  }
  attempt()
}
`

describe("SSH fleets (stand-in hosts)", () => {
  it("plans and applies a fleet of 3 hosts, provisions them, and never answers the private keys", async () => {
    const hosts = ["127.0.0.2", "127.0.0.3", { hostname: "127.0.0.4", proxy_jump: { hostname: "127.0.0.2", user: "jump", ssh_key: { public: "ssh-ed25519 BBBB jump", private: JUMP_KEY } } }]
    const plan = await call("/api/project/main/fleets/get_plan", { spec: fleetSpec("trio", hosts) })
    expect(plan.status, JSON.stringify(plan.body)).toBe(200)
    expect(plan.body.offers.map((o: any) => o.instance.name)).toEqual(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    expect(plan.body.action).toBe("create")
    const applied = await call("/api/project/main/fleets/apply", { plan: { spec: fleetSpec("trio", hosts) }, force: false })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    expect(applied.body.instances.map((i: any) => i.status)).toEqual(["pending", "pending", "pending"])
    const fleet = await until("hosts idle", () => getFleet("trio"), (f) => f.instances.every((i: any) => i.status === "idle"))
    expect(fleet.instances.map((i: any) => [i.instance_num, i.hostname, i.backend])).toEqual([[0, "127.0.0.2", "remote"], [1, "127.0.0.3", "remote"], [2, "127.0.0.4", "remote"]])
    expect(fleet.instances[0].instance_type.resources.cpus).toBe(2)
    // The server handed the hosts their credentials, the jump host's included.
    const third = remote.provisioned.find((h) => h.hostname === "127.0.0.4")!
    expect(third.privateKey).toBe(PRIVATE_KEY)
    expect(third.proxyJump).toEqual({ hostname: "127.0.0.2", port: 22, user: "jump", privateKey: JUMP_KEY })
    // No answer carries a private key.
    const answers = [
      plan.body,
      applied.body,
      fleet,
      (await call("/api/project/main/fleets/list")).body,
      (await call("/api/fleets/list", {})).body,
      (await call("/api/instances/list", {})).body,
      (await call("/api/project/main/instances/get", { id: fleet.instances[0].id })).body
    ]
    for (const answer of answers) {
      const text = JSON.stringify(answer)
      expect(text).not.toContain("secret-key-material")
      expect(text).not.toContain("private_key")
    }
    expect(fleet.spec.configuration.ssh_config.ssh_key).toEqual({ public: "ssh-ed25519 AAAA test" })
    expect(fleet.spec.configuration.ssh_config.hosts[2].proxy_jump.ssh_key).toEqual({ public: "ssh-ed25519 BBBB jump" })
  }, 60_000)

  it("plans examples/fleet-ssh/.dstack.yml (its hosts are placeholders) with the key the CLI would send", async () => {
    const { loadConfiguration } = await import("../../core/src/config/index.ts")
    const { Effect, Schema } = await import("effect")
    const { FleetConfiguration } = await import("../../core/src/domain/index.ts")
    const config = await Effect.runPromise(loadConfiguration("examples/fleet-ssh/.dstack.yml", { supportedOnly: true }))
    const encoded: any = Schema.encodeSync(FleetConfiguration)(config as any)
    encoded.ssh_config.ssh_key = { public: "ssh-ed25519 AAAA test", private: PRIVATE_KEY }
    const plan = await call("/api/project/main/fleets/get_plan", { spec: { configuration: encoded } })
    expect(plan.status, JSON.stringify(plan.body)).toBe(200)
    expect(plan.body.offers.map((o: any) => o.instance.name)).toEqual(["192.168.100.10", "192.168.100.11"])
    expect(plan.body.spec.configuration.placement).toBe("cluster")
  })

  it("refuses a second fleet with the same name, a host already in a fleet, and a host without a key", async () => {
    const again = await call("/api/project/main/fleets/apply", { plan: { spec: fleetSpec("trio", ["127.0.0.9"], { env: { A: "1" } }) } })
    expect(again.status).toBe(400)
    expect(again.body.detail[0].msg).toBe("Fleet trio cannot be updated: only ssh_config.hosts can change in place (hosts added or removed), but env changed: delete the fleet and apply it again")
    const plan = await call("/api/project/main/fleets/get_plan", { spec: fleetSpec("trio", ["127.0.0.9"], { env: { A: "1" } }) })
    expect(plan.body.action).toBe("create")
    const taken = await call("/api/project/main/fleets/apply", { plan: { spec: fleetSpec("other", ["127.0.0.3"]) } })
    expect(taken.status).toBe(400)
    expect(taken.body.detail[0].msg).toMatch(/already in a fleet.*127\.0\.0\.3:22 \(in fleet trio\)/)
    const keyless = await call("/api/project/main/fleets/get_plan", { spec: { configuration: { type: "fleet", name: "keyless", ssh_config: { user: "u", hosts: ["127.0.0.9"] } } } })
    expect(keyless.status).toBe(400)
    expect(keyless.body.detail[0].msg).toMatch(/host 127\.0\.0\.9 has no private key: give identity_file/)
    const blocks = await call("/api/project/main/fleets/get_plan", { spec: fleetSpec("blocky", ["127.0.0.9"], { blocks: 4 }) })
    expect(blocks.status).toBe(400)
    expect(blocks.body.detail[0]).toMatchObject({ fields: [["body", "spec", "configuration", "blocks"]] })
  })

  it("a host that refuses the key ends terminated with the reason", async () => {
    remote.refuse.add("127.0.0.8")
    await call("/api/project/main/fleets/apply", { plan: { spec: fleetSpec("refused", ["127.0.0.8"]) } })
    const fleet = await until("refused host terminated", () => call("/api/project/main/fleets/get", { name: "refused" }).then(async (r) =>
      (await call("/api/instances/list", { fleet_names: ["refused"] })).body), (list: any) => list[0]?.status === "terminated")
    expect(fleet[0].termination_reason).toBe("error")
    expect(fleet[0].termination_reason_message).toMatch(/PermissionDenied: dstack@127\.0\.0\.8: the host refused the key/)
    expect((await call("/api/project/main/fleets/delete", { names: ["refused"] })).status).toBe(200)
  }, 30_000)

  it("runs a 3-node task whose nodes rendezvous at the master's address; a busy host is not double-booked", async () => {
    const applied = await call("/api/project/main/runs/apply", { plan: runSpec({ nodes: 3, fleets: ["trio"], env: { SCRIPT: RENDEZVOUS }, commands: ['node -e "$SCRIPT"', "sleep 6"] }, "rendezvous") })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    await until("all nodes running", () => getRun("rendezvous"), (r) => r.jobs.every((j: any) => j.job_submissions.at(-1).status === "running") || finished(r))
    // Every host of the fleet is busy: another run on the fleet finds no capacity.
    const other = await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["trio"], commands: ["true"] }, "squeezed") })
    expect(other.status).toBe(200)
    const squeezed = await until("squeezed run ends", () => getRun("squeezed"), finished)
    expect(squeezed.status).toBe("failed")
    expect(squeezed.jobs[0].job_submissions.at(-1).termination_reason).toBe("failed_to_start_due_to_no_capacity")
    const run = await until("rendezvous done", () => getRun("rendezvous"), finished)
    expect(run.status, JSON.stringify(run.jobs.map((j: any) => j.job_submissions.at(-1)))).toBe("done")
    const hosts = run.jobs.map((j: any) => j.job_submissions.at(-1).job_provisioning_data.hostname)
    expect([...hosts].sort()).toEqual(["127.0.0.2", "127.0.0.3", "127.0.0.4"])
    for (let rank = 0; rank < 3; rank++) {
      const out = await logsOf(run, rank)
      expect(out).toContain(`rank ${rank} of 3 master ${hosts[0]} ips ${hosts.join(",")}`)
      expect(out).toContain(`hostfile ${hosts.map((h: string) => `${h} slots=1`).join(";")}`)
      expect(out).toContain(`rank ${rank} saw 0,1,2`)
    }
    const fleet = await until("hosts idle again", () => getFleet("trio"), (f) => f.instances.every((i: any) => i.status === "idle"))
    expect(fleet.instances.length).toBe(3)
  }, 90_000)

  it("a multi-node task fails when its master fails, and the other nodes are stopped", async () => {
    await call("/api/project/main/runs/apply", { plan: runSpec({ nodes: 2, fleets: ["trio"], commands: ['if [ "$DSTACK_NODE_RANK" = 0 ]; then sleep 1; exit 3; fi; sleep 120'] }, "master-fails") })
    const run = await until("master-fails ends", () => getRun("master-fails"), finished, 60_000)
    expect(run.status).toBe("failed")
    expect(run.termination_reason).toBe("job_failed")
    const worker = run.jobs[1].job_submissions.at(-1)
    expect(worker.status).toBe("terminated")
    expect(worker.termination_reason).toBe("terminated_by_server")
  }, 90_000)

  it("a multi-node task without a cluster fleet big enough finds no offers and says why", async () => {
    const plan = await call("/api/project/main/runs/get_plan", runSpec({ nodes: 5, commands: ["true"] }, "too-many"))
    expect(plan.status).toBe(200)
    const applied = await call("/api/project/main/runs/apply", { plan: runSpec({ nodes: 5, commands: ["true"] }, "too-many") })
    expect(applied.status).toBe(200)
    const run = await until("too-many ends", () => getRun("too-many"), finished)
    expect(run.status).toBe("failed")
    expect(run.jobs[0].job_submissions.at(-1).termination_reason_message).toMatch(/nodes: 5 needs 5 idle instances of one placement: cluster fleet/)
  }, 60_000)

  it("deleting the fleet deprovisions every host and removes the fleet", async () => {
    const deleted = await call("/api/project/main/fleets/delete", { names: ["trio"] })
    expect(deleted.status, JSON.stringify(deleted.body)).toBe(200)
    await until("fleet gone", () => call("/api/project/main/fleets/get", { name: "trio" }), (r) => r.status === 400)
    expect([...remote.deprovisioned].sort()).toEqual(expect.arrayContaining(["127.0.0.2", "127.0.0.3", "127.0.0.4"]))
    for (const host of ["127.0.0.2", "127.0.0.3", "127.0.0.4"]) expect(remote.runners.has(host)).toBe(false)
    const instances = (await call("/api/instances/list", { fleet_names: ["trio"] })).body
    expect(instances.map((i: any) => [i.status, i.termination_reason])).toEqual([
      ["terminated", "terminated_by_user"], ["terminated", "terminated_by_user"], ["terminated", "terminated_by_user"]
    ])
    expect((await call("/api/project/main/fleets/delete", { names: ["trio"] })).status).toBe(400)
  }, 60_000)
})
