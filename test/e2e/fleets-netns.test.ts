// SSH fleets on real hosts: network namespaces with their own sshd (test/support/netns.ts), the
// real remote backend (@dstack-ts/backend-ssh) and ssh transport. A fleet of 3 hosts — one
// reachable only through a jump host — is applied from YAML with the real CLI (`dstack apply`,
// then `dstack fleet list/get`), a task from a git checkout (its code shipped to the host) and a
// task with an image (a container of the host's Docker) run there through the server, a host
// whose sshd stops mid-run ends its job as instance_unreachable and `retry` resubmits it, and
// `dstack fleet delete` leaves no runner process on the hosts. A 3-node task on 3 hosts
// rendezvous over TCP at its master's address, each node from its own address. Each host's key
// is recorded when it is first provisioned; a host whose key then changes is refused, naming
// the host and both fingerprints, and is not logged in to, not even to be cleaned up.
// Re-applying a fleet with a host added and one removed changes only those: the removed host's
// runner and files are gone; a host running a job is not removed (the update is refused).
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { afterAll, beforeAll, expect, it } from "vitest"
import { fingerprint } from "@dstack-ts/ssh"
import type { Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { appCall, mainProjectReads } from "../support/api.ts"
import { cliRunner, writeProject } from "../support/cli.ts"
import { inCI } from "../support/components.ts"
import { BUSYBOX_IMAGE, dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHost, type NetnsHosts } from "../support/netns.ts"
import { makeUntil } from "../support/until.ts"
import { finished, sshFleetServer } from "../support/sshFleetServer.ts"

const TOKEN = "fleets-netns-token"
let server: Server
let serving: Serving
let hosts: NetnsHosts
const call = appCall(() => server, TOKEN)
const execFileP = promisify(execFile)
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-fleets-e2e-"))
/** The real CLI, with a HOME of its own, talking to the served server. */
const dstack = cliRunner(() => ({
  ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith("DSTACK_"))),
  HOME: home,
  NO_COLOR: "1",
  DSTACK_SERVER_URL: serving.url,
  DSTACK_TOKEN: TOKEN,
  DSTACK_PROJECT: "main"
}))
const dockerReason = await dockerUnavailableReason()
const SMALL = "resources:\n  cpu: 1..\n  memory: 0.1GB..\n  disk: 0.1GB..\n"

const until = makeUntil({ timeoutMs: 120_000, everyMs: 250 })
const { getRun, getFleet } = mainProjectReads(call)
const logsOf = async (run: any, jobNum: number) => {
  const sub = run.jobs[jobNum].job_submissions.at(-1)
  return (await call("/api/project/main/logs/poll", { run_name: run.run_spec.run_name, job_submission_id: sub.id })).body.logs.map((l: any) => l.message).join("")
}
/** Applies a fleet of `hosts` (the CLI would read identity_file and send the key as ssh_key). */
const applyFleet = async (name: string, list: ReadonlyArray<{ ip: string; port: number }>) => {
  const key = { public: hosts.publicKey, private: hosts.privateKey }
  const configuration = {
    type: "fleet",
    name,
    placement: "cluster",
    ssh_config: { user: "root", identity_file: hosts.privateKeyFile, ssh_key: key, hosts: list.map((h) => ({ hostname: h.ip, port: h.port })) }
  }
  return call("/api/project/main/fleets/apply", { plan: { spec: { configuration } } })
}
/** Processes in the host's namespace whose command line mentions `what`. */
const processesOn = async (host: NetnsHost, what: string) =>
  (await hosts.pids(host)).filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(what)
    } catch {
      return false
    }
  })

// Each node checks that its entry in DSTACK_NODES_IPS is an address of its own; rank 0 listens at
// the master's address, the others connect and send their rank; the master answers every rank
// with the address it came from, and each node prints what it saw.
const RENDEZVOUS = `
const net = require("net"), os = require("os")
const rank = Number(process.env.DSTACK_NODE_RANK), n = Number(process.env.DSTACK_NODES_NUM), ip = process.env.DSTACK_MASTER_NODE_IP
const ips = process.env.DSTACK_NODES_IPS.split("\\n")
const mine = Object.values(os.networkInterfaces()).flat().map((a) => a.address)
console.log("rank " + rank + " of " + n + " master " + ip + " ips " + ips.join(",") + " own " + mine.includes(ips[rank]))
console.log("hostfile " + require("fs").readFileSync(process.env.DSTACK_MPI_HOSTFILE, "utf8").trim().split("\\n").join(";"))
if (rank === 0) {
  const seen = ["0@" + ip], socks = []
  net.createServer((s) => s.on("data", (d) => {
    seen.push(String(d) + "@" + s.remoteAddress); socks.push(s)
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
    const s = net.connect({ port: 29517, host: ip, localAddress: ips[rank] }, () => s.write(String(rank)))
    s.on("data", (d) => (got += d))
    s.on("end", () => { console.log("rank " + rank + " saw " + got); process.exit(0) })
    s.on("error", () => setTimeout(attempt, 100))
  }
  attempt()
}
`

const runSpec = (configuration: Record<string, unknown>, runName: string) => ({
  run_spec: { run_name: runName, repo_id: "e2e", repo_data: { repo_type: "virtual" }, configuration: { type: "task", resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." }, ...configuration } }
})

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 3, jump: true })
    server = await sshFleetServer(TOKEN, {
      engine: { unreachableMs: 4_000 }
    })
    serving = await serve(server, { port: 0, handleSignals: false })
    if (dockerReason === undefined) await ensureBusyboxImage()
  }, 300_000)
  afterAll(async () => {
    await (serving ?? server)?.close()
    await hosts?.down()
    fs.rmSync(home, { recursive: true, force: true })
  })

  it("runs a 3-node task on 3 hosts: each node gets the cluster env and they rendezvous at the master's address", async () => {
    const trio = hosts.hosts.slice(0, 3)
    const applied = await applyFleet("trio", trio)
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    await until("trio idle", () => getFleet("trio"), (f) => f.instances.every((i: any) => i.status === "idle" || i.status === "terminated"), 300_000)
    const started = await call("/api/project/main/runs/apply", { plan: runSpec({ nodes: 3, fleets: ["trio"], env: { SCRIPT: RENDEZVOUS }, commands: ['node -e "$SCRIPT"'] }, "netns-rendezvous") })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    const run = await until("netns-rendezvous ends", () => getRun("netns-rendezvous"), finished, 180_000)
    expect(run.status, JSON.stringify(run.jobs.map((j: any) => j.job_submissions.at(-1)))).toBe("done")
    const ips = run.jobs.map((j: any) => j.job_submissions.at(-1).job_provisioning_data.internal_ip)
    expect([...ips].sort()).toEqual(trio.map((h) => h.ip).sort())
    const saw = ips.map((ip: string, rank: number) => `${rank}@${ip}`).sort().join(",")
    for (let rank = 0; rank < 3; rank++) {
      const out = await logsOf(run, rank)
      expect(out).toContain(`rank ${rank} of 3 master ${ips[0]} ips ${ips.join(",")} own true`)
      expect(out).toContain(`hostfile ${ips.map((ip: string) => `${ip} slots=1`).join(";")}`)
      expect(out).toContain(`rank ${rank} saw ${saw}`)
    }
    await until("trio idle again", () => getFleet("trio"), (f) => f.instances.every((i: any) => i.status === "idle"), 60_000)
    expect((await call("/api/project/main/fleets/delete", { names: ["trio"] })).status).toBe(200)
    await until("trio gone", () => call("/api/project/main/fleets/get", { name: "trio" }), (r) => r.status === 400, 180_000)
  }, 600_000)

  it("re-applying a fleet adds and removes only the hosts that changed; a busy host is not removed", async () => {
    const [h0, h1, h2] = hosts.hosts
    expect((await applyFleet("grow", [h0, h1])).status).toBe(200)
    const first = await until("grow idle", () => getFleet("grow"), (f) => f.instances.every((i: any) => i.status === "idle" || i.status === "terminated"), 300_000)
    expect(first.instances.map((i: any) => [i.instance_num, i.hostname, i.status])).toEqual([[0, h0.ip, "idle"], [1, h1.ip, "idle"]])
    // The same spec again: nothing changes.
    const same = await applyFleet("grow", [h0, h1])
    expect(same.status, JSON.stringify(same.body)).toBe(200)
    expect(same.body.instances.map((i: any) => i.id)).toEqual(first.instances.map((i: any) => i.id))

    // A job on one host: removing that host is refused, and nothing changes.
    await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["grow"], commands: ["sleep 300"] }, "netns-busy") })
    const running = await until("netns-busy running", () => getRun("netns-busy"), (r) => r.jobs[0].job_submissions.at(-1).status === "running" || finished(r))
    const busyIp = running.jobs[0].job_submissions.at(-1).job_provisioning_data.hostname
    const busy = first.instances.find((i: any) => i.hostname === busyIp)
    const idle = first.instances.find((i: any) => i.hostname !== busyIp)
    const refused = await applyFleet("grow", [h2])
    expect(refused.status).toBe(400)
    expect(refused.body.detail[0].msg).toBe(
      `Fleet grow cannot remove host ${busyIp} (instance ${busy.instance_num}): it runs netns-busy-0-0, stop that run first; nothing was changed`
    )
    const unchanged = await getFleet("grow")
    expect(unchanged.instances.map((i: any) => i.id)).toEqual(first.instances.map((i: any) => i.id))
    expect(unchanged.spec.configuration.ssh_config.hosts.map((h: any) => h.hostname)).toEqual([h0.ip, h1.ip])

    // Keep the busy host, drop the idle one, add h2: only those two change.
    const updated = await applyFleet("grow", [{ ip: busyIp, port: 22 }, h2])
    expect(updated.status, JSON.stringify(updated.body)).toBe(200)
    const after = await until("h2 idle, idle host gone", () => getFleet("grow"), (f) =>
      f.instances.length === 2 && f.instances.every((i: any) => i.status === "idle" || i.status === "busy" || i.status === "terminated"), 300_000)
    expect(after.instances.map((i: any) => [i.instance_num, i.hostname, i.status])).toEqual([[busy.instance_num, busyIp, "busy"], [2, h2.ip, "idle"]])
    expect(after.instances[0].id).toBe(busy.id)
    expect(after.spec.configuration.ssh_config.hosts.map((h: any) => h.hostname)).toEqual([busyIp, h2.ip])
    const removed = (await call("/api/project/main/instances/get", { id: idle.id })).body
    expect([removed.status, removed.termination_reason]).toEqual(["terminated", "terminated_by_user"])
    // The removed host has no runner and no files of its instance left; the kept one still runs its job.
    const removedHost = [h0, h1].find((h) => h.ip === idle.hostname)!
    expect(await processesOn(removedHost, "runner")).toEqual([])
    expect(fs.existsSync(`/root/.dstack-ts/remote/${idle.id}`)).toBe(false)
    expect(fs.existsSync(`/root/.dstack-ts/remote/${busy.id}`)).toBe(true)
    expect((await getRun("netns-busy")).status).toBe("running")

    await call("/api/project/main/runs/stop", { runs_names: ["netns-busy"], abort: true })
    await until("netns-busy ends", () => getRun("netns-busy"), finished)
    await until("grow free", () => getFleet("grow"), (f) => f.instances.every((i: any) => i.status !== "busy"), 60_000)
    expect((await call("/api/project/main/fleets/delete", { names: ["grow"] })).status).toBe(200)
    await until("grow gone", () => call("/api/project/main/fleets/get", { name: "grow" }), (r) => r.status === 400, 180_000)
  }, 600_000)

  it("records a host's key when first provisioned and refuses the host once its key changes, naming it and both fingerprints", async () => {
    const host = hosts.hosts[2]
    const applied = await applyFleet("keys", [host])
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const idle = await until("keys idle", () => getFleet("keys"), (f) => f.instances[0].status !== "pending" && f.instances[0].status !== "provisioning", 300_000)
    expect(idle.instances[0].status, JSON.stringify(idle.instances[0])).toBe("idle")
    const id = idle.instances[0].id
    const recorded = hosts.hostKey(host)
    const presented = await hosts.rekey(host)

    // The health check cannot log in any more: the instance is flagged unreachable, saying why.
    const flagged = await until("host refused", () => getFleet("keys"), (f) => f.instances[0].unreachable === true && /host key/.test(f.instances[0].termination_reason_message ?? ""), 60_000)
    const why = flagged.instances[0].termination_reason_message
    expect(why).toContain(`host root@${host.ip}:22: the host key has changed: recorded ${fingerprint(recorded)}, presented ${fingerprint(presented)}`)
    expect(why).toContain("remove the host from its fleet and add it again")

    // A run finds no usable host there: the refused one is not offered.
    await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["keys"], commands: ["true"] }, "netns-refused") })
    const refused = await until("netns-refused ends", () => getRun("netns-refused"), finished, 60_000)
    expect(refused.status).toBe("failed")
    expect(refused.jobs[0].job_submissions.at(-1).termination_reason).toBe("failed_to_start_due_to_no_capacity")

    // Deleting the fleet does not log in to the host to clean it: its runner is left there, and the instance says why.
    expect((await call("/api/project/main/fleets/delete", { names: ["keys"] })).status).toBe(200)
    await until("keys gone", () => call("/api/project/main/fleets/get", { name: "keys" }), (r) => r.status === 400, 120_000)
    const gone = (await call("/api/project/main/instances/get", { id })).body
    expect(gone.status).toBe("terminated")
    expect(gone.termination_reason_message).toContain(`the host could not be cleaned up: cannot log in to root@${host.ip}:22`)
    expect(gone.termination_reason_message).toContain(`presented ${fingerprint(presented)}`)
    const left = await processesOn(host, "runner")
    expect(left.length).toBeGreaterThan(0)
    for (const pid of left) process.kill(pid, "SIGKILL")
  }, 600_000)
  it("`dstack apply` creates a fleet of 3 hosts (one behind a jump host) from YAML; tasks with repo code and with an image run there; a host going away; `dstack fleet delete` leaves no runner", async () => {
    const [h0, h1] = hosts.hosts
    const hidden = hosts.hidden!
    const all = [h0, h1, hidden]
    // The YAML a user writes: the CLI reads every identity_file (the jump host's too) and sends the keys.
    const dir = writeProject(home, "fleet", {
      "fleet.dstack.yml": `type: fleet
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
    })
    const applied = await dstack(["apply", "-f", "fleet.dstack.yml", "-y"], dir)
    expect(applied.code, applied.stdout + applied.stderr).toBe(0)
    // The plan (one row per host), then the hosts followed until provisioned.
    expect(applied.stdout).toMatch(/Project main, user admin: create fleet netns, placement cluster, 3 host\(s\)/)
    for (const [n, h] of all.entries()) expect(applied.stdout).toMatch(new RegExp(`^${n}\\s+${h.ip}\\s+remote\\s*$`, "m"))
    expect(applied.stdout).toContain("Fleet netns created")
    for (const h of all) expect(applied.stdout).toMatch(new RegExp(`\\s${h.ip}\\s+\\d+xCPU, [\\d.]+GB, [\\d.]+GB disk\\s+remote\\s+idle\\s*$`, "m"))

    // (The two reads at once: each CLI start takes seconds on a loaded machine.)
    const [list, json] = await Promise.all([dstack(["fleet", "list"], dir), dstack(["fleet", "get", "netns", "--json"], dir)])
    expect(list.code, list.stderr).toBe(0)
    expect(list.stdout.split("\n")[0]).toMatch(/^FLEET\s+INSTANCE\s+HOST\s+RESOURCES\s+BACKEND\s+STATUS$/)
    for (const [n, h] of all.entries()) expect(list.stdout).toMatch(new RegExp(`^${n === 0 ? "netns" : ""}\\s+${n}\\s+${h.ip}\\s+.*remote\\s+idle\\s*$`, "m"))
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout).spec.configuration.ssh_config.hosts[2].proxy_jump.hostname).toBe(h0.ip)
    // The server keeps the private keys and never answers them.
    expect(json.stdout).not.toContain(hosts.privateKey.trim().split("\n")[1])
    const fleet = await getFleet("netns")
    expect(fleet.instances.map((i: any) => [i.hostname, i.status])).toEqual(all.map((h) => [h.ip, "idle"]))

    // A task from a git checkout: its files (minus what .gitignore leaves out) reach the host it runs on.
    // Its file names no fleet: `dstack apply --fleet netns` (upstream's argument) targets it.
    const repo = writeProject(home, "repo", {
      ".dstack.yml": `type: task\nname: netns-code\ncommands:\n  - sh run.sh\n  - test -e notes.local || echo notes.local stayed home\n${SMALL}`,
      "run.sh": 'echo "$(cat data.txt) on $(hostname -I | tr -d \' \\n\')"\n',
      "data.txt": "repo code",
      ".gitignore": "*.local\n",
      "notes.local": "not shipped\n",
      "image.dstack.yml": `type: task\nname: netns-image\nfleets: [netns]\nimage: ${BUSYBOX_IMAGE}\ncommands:\n  - 'test -e /.dockerenv && echo "in a container: $(cat data.txt)"'\n${SMALL}`
    })
    for (const args of [["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", "code"]]) {
      await execFileP("git", args, { cwd: repo })
    }
    // Both tasks at once (the fleet has three hosts): the process one, and the image one where Docker is.
    const [code, image] = await Promise.all([
      dstack(["apply", "-f", ".dstack.yml", "--fleet", "netns", "-y"], repo),
      dockerReason === undefined ? dstack(["apply", "-f", "image.dstack.yml", "-y"], repo) : undefined
    ])
    expect(code.code, code.stdout + code.stderr).toBe(0)
    expect(code.stdout).toMatch(/^Fleets\s+netns\s*$/m)
    expect(code.stdout).toContain("Executor: process")
    const codeRun = await getRun("netns-code")
    const codeHost = codeRun.jobs[0].job_submissions.at(-1).job_provisioning_data.hostname
    expect(all.map((h) => h.ip)).toContain(codeHost)
    expect(code.stdout).toContain(`repo code on ${codeHost}`)
    expect(code.stdout).toContain("notes.local stayed home")
    expect(codeRun.status).toBe("done")

    // A task with an image: a container of the host's Docker, the same code mounted.
    if (image !== undefined) {
      expect(image.code, image.stdout + image.stderr).toBe(0)
      expect(image.stdout).toContain(`Executor: docker (image ${BUSYBOX_IMAGE})`)
      expect(image.stdout).toContain("in a container: repo code")
      const imageRun = await getRun("netns-image")
      expect(imageRun.status).toBe("done")
      expect(all.map((h) => h.ip)).toContain(imageRun.jobs[0].job_submissions.at(-1).job_provisioning_data.hostname)
    } else if (inCI) {
      throw new Error(`the image task needs dockerd under CI=true: ${dockerReason}`)
    } else {
      console.warn(`\n!!! SKIPPING the image task on the fleet: ${dockerReason}\n`)
    }

    // A long job whose host's sshd stops: instance_unreachable, then a retry on another host.
    await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["netns"], commands: ["sleep 300"], retry: { on_events: ["error"], duration: "10m" } }, "netns-long") })
    const running = await until("netns-long running", () => getRun("netns-long"), (r) => r.jobs[0].job_submissions.at(-1).status === "running" || finished(r))
    const first = running.jobs[0].job_submissions.at(-1)
    const victim = all.find((h) => h.ip === first.job_provisioning_data.hostname)!
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

    // `dstack fleet delete` stops every runner the fleet started (once the hosts are free and answer again).
    await until("hosts free", () => getFleet("netns"), (f) => f.instances.every((i: any) => i.status !== "busy" && !i.unreachable), 120_000)
    expect((await processesOn(h1, "runner")).length + (await processesOn(h0, "runner")).length).toBeGreaterThan(0)
    const deleted = await dstack(["fleet", "delete", "netns", "-y"], dir)
    expect(deleted.code, deleted.stdout + deleted.stderr).toBe(0)
    expect(deleted.stdout).toContain("Fleet netns deleted")
    expect((await call("/api/project/main/fleets/get", { name: "netns" })).status).toBe(400)
    for (const host of all) expect(await processesOn(host, "runner"), host.name).toEqual([])
  }, 900_000)
})
