// A host killed under a running job: an SSH fleet host (a network namespace with its own sshd,
// test/support/netns.ts; the real remote backend and ssh transport) whose every process — sshd,
// the runner, the job — is killed with SIGKILL and whose link is taken down, as a machine that
// loses power. The server fails the job as `instance_unreachable` with a message, and flags the
// instance unreachable; the next run on that fleet is not placed on the dead host. Detection
// follows the unreachable limit (4 s here): the follower's reconnect (an SSH login that the
// transport retries with its own timeouts, ~42 s in all) is given only what is left of the
// limit. It printed ~5.6 s (it took ~41 s before); the test allows 180 s, timing is not asserted.
import * as fs from "node:fs"
import { afterAll, beforeAll, expect, it } from "vitest"
import type { Server } from "../../core/src/server/createServer.ts"
import { appCall, mainProjectReads } from "../support/api.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"
import { makeUntil } from "../support/until.ts"
import { finished, sshFleetServer } from "../support/sshFleetServer.ts"

const TOKEN = "host-kill-token"
const UNREACHABLE_MS = 4_000
let server: Server
let hosts: NetnsHosts
const call = appCall(() => server, TOKEN)
const until = makeUntil({ timeoutMs: 120_000, everyMs: 250 })
const { getRun, getFleet } = mainProjectReads(call)
const runSpec = (configuration: Record<string, unknown>, runName: string) => ({
  run_spec: { run_name: runName, repo_id: "host-kill", repo_data: { repo_type: "virtual" }, configuration: { type: "task", resources: { cpu: "1..", memory: "0.1GB..", disk: "0.1GB.." }, ...configuration } }
})

describeWithNetns(() => {
  beforeAll(async () => {
    hosts = await createNetnsHosts({ count: 2 })
    server = await sshFleetServer(TOKEN, {
      engine: { unreachableMs: UNREACHABLE_MS }
    })
  }, 300_000)
  afterAll(async () => {
    await server?.close()
    await hosts?.down()
  }, 120_000)

  it("a host killed (every process SIGKILLed, its link down) under a running job: the job fails as instance_unreachable with a message, the instance is flagged unreachable, and the next run goes to the other host", async () => {
    const [h0, h1] = hosts.hosts
    const key = { public: hosts.publicKey, private: hosts.privateKey }
    const applied = await call("/api/project/main/fleets/apply", {
      plan: { spec: { configuration: { type: "fleet", name: "pair", ssh_config: { user: "root", identity_file: hosts.privateKeyFile, ssh_key: key, hosts: [h0, h1].map((h) => ({ hostname: h!.ip, port: h!.port })) } } } }
    })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    await until("hosts idle", () => getFleet("pair"), (f) => f.instances.length === 2 && f.instances.every((i: any) => i.status === "idle"), 300_000)

    const started = await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["pair"], commands: ["echo started", "sleep 300"] }, "host-kill") })
    expect(started.status, JSON.stringify(started.body)).toBe(200)
    const running = await until("host-kill running", () => getRun("host-kill"), (r) => r.jobs[0].job_submissions.at(-1).status === "running" || finished(r))
    expect(running.status).toBe("running")
    const victim = [h0!, h1!].find((h) => h.ip === running.jobs[0].job_submissions.at(-1).job_provisioning_data.hostname)!
    const survivor = victim === h0 ? h1! : h0!

    // The machine goes away at once: every process in its namespace killed, then its link down
    // (the server's open SSH connection to it gets silence, not a reset).
    const pids = await hosts.pids(victim)
    expect(pids.length, "the host runs sshd, the runner and the job").toBeGreaterThan(0)
    const killedAt = Date.now()
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // Already gone.
      }
    }
    await hosts.cut(victim)
    try {
      const run = await until("host-kill ends", () => getRun("host-kill"), finished, 180_000)
      const sub = run.jobs[0].job_submissions.at(-1)
      console.log(`run ${run.status} ${Date.now() - killedAt} ms after the host was killed (unreachable limit ${UNREACHABLE_MS} ms): ${sub.termination_reason}: ${sub.termination_reason_message}`)
      expect(run.status).toBe("failed")
      expect(sub.termination_reason).toBe("instance_unreachable")
      expect(sub.termination_reason_message, "a message says why").toMatch(/\S{10,}/)
      const instance = (await getFleet("pair")).instances.find((i: any) => i.hostname === victim.ip)
      expect(instance.unreachable === true || instance.status === "terminated", JSON.stringify(instance)).toBe(true)
      for (const pid of pids) expect(fs.existsSync(`/proc/${pid}`), `process ${pid} of the killed host`).toBe(false)

      // The fleet's other host takes the next run; the dead one is not chosen.
      await call("/api/project/main/runs/apply", { plan: runSpec({ fleets: ["pair"], commands: ["echo after"] }, "after-kill") })
      const after = await until("after-kill ends", () => getRun("after-kill"), finished, 180_000)
      expect(after.status, JSON.stringify(after.jobs[0].job_submissions.at(-1))).toBe("done")
      expect(after.jobs[0].job_submissions.at(-1).job_provisioning_data.hostname).toBe(survivor.ip)
    } finally {
      await hosts.restore(victim).catch(() => {})
    }
  }, 600_000)
})
