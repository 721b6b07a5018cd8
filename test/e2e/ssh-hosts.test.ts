// SSH hosts end to end at the level of the packages (backend + transport + runner), on real
// sshd hosts in network namespaces: the remote backend provisions a host (the CLI's runner
// build, shipped as one bundle), the ssh transport reaches its runner through a tunnel, a job
// runs there with the process executor and one with the Docker executor (the host's Docker
// socket), and deprovisioning leaves no runner process and no file on the host.
import * as fs from "node:fs"
import { fileURLToPath } from "node:url"
import { type Backend, type RunnerTransport } from "@dstack-ts/core"
import { RemoteBackend } from "@dstack-ts/backend-ssh"
import { SshTransport } from "@dstack-ts/transport-ssh"
import { Effect, Exit, Schedule, Scope } from "effect"
import { afterAll, beforeAll, expect, it } from "vitest"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import { inCI } from "../support/components.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url))

let hosts: NetnsHosts
let scope: Scope.CloseableScope
const run = <A, E>(effect: Effect.Effect<A, E, Scope.Scope>) => Effect.runPromise(Scope.extend(effect, scope))

const submitBody = (commands: ReadonlyArray<string>, jobName: string, spec: Record<string, unknown> = {}) => ({
  run: { id: "run-id", run_spec: { run_name: "hello", repo_id: "repo" } },
  job_spec: { job_name: jobName, requirements: { resources: {} }, commands, ...spec },
  cluster_info: { job_ips: [], master_job_ip: "", gpus_per_job: 0 },
  secrets: {}
})

const post = (client: RunnerTransport.RunnerClient, path: string, body?: unknown) =>
  client.fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) })
  })

/** Pulls the runner until the job is final; answers its states and output. */
const runJob = (client: RunnerTransport.RunnerClient, body: unknown) =>
  Effect.gen(function*() {
    expect((yield* post(client, "/api/submit", body)).status).toBe(200)
    expect((yield* post(client, "/api/run")).status).toBe(200)
    const states: Array<string> = []
    let output = ""
    let cursor = 0
    yield* Effect.gen(function*() {
      const response = yield* client.fetch(`/api/pull?timestamp=${cursor}`)
      const answer = yield* Effect.promise(() => response.json())
      states.push(...answer.job_states.map((s: { state: string }) => s.state))
      output += answer.job_logs.map((l: { message: string }) => Buffer.from(l.message, "base64").toString("utf8")).join("")
      cursor = answer.last_updated
      if (!(states.some((s) => ["done", "failed", "terminated"].includes(s)) && !answer.has_more)) yield* Effect.fail("not yet" as const)
    }).pipe(Effect.retry({ schedule: Schedule.spaced("100 millis"), while: (e) => e === "not yet" }), Effect.timeout("120 seconds"))
    return { states, output }
  })

const dockerReason = await dockerUnavailableReason()

describeWithNetns(() => {
  beforeAll(async () => {
    scope = Effect.runSync(Scope.make())
    hosts = await createNetnsHosts({ count: 1 })
  })
  afterAll(async () => {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await hosts?.down()
  })

  it("provisions a host, runs a process job and a Docker job through the SSH tunnel, and deprovisions it clean", async () => {
    const host = hosts.hosts[0]!
    const backend = await run(RemoteBackend.make({ runnerEntry: RUNNER_ENTRY }))
    const transport = await run(SshTransport.make())
    const remote: Backend.RemoteHost = { hostname: host.ip, port: host.port, user: host.user, privateKey: hosts.privateKey }
    const config = { projectName: "main", instanceName: "fleet-0", instanceId: "e2e-ssh-0", sshKeys: [] }
    const provisioned = await run(backend.remoteHosts.provision(remote, config))
    const { dir } = JSON.parse(provisioned.backendData!) as RemoteBackend.RemoteHostData

    const client = await run(transport.connect({
      hostname: host.ip,
      runnerPort: provisioned.runnerPort,
      instanceId: config.instanceId,
      ssh: { user: host.user, port: host.port, privateKey: hosts.privateKey }
    }))
    // The job runs in the host's namespace: it sees the host's address, not this machine's.
    const processJob = await run(runJob(client, submitBody(["echo hello from $(hostname -I)"], "hello-0-0")))
    expect(processJob.states).toEqual(["running", "done"])
    expect(processJob.output.trim()).toBe(`hello from ${host.ip}`)

    if (dockerReason === undefined) {
      const image = await ensureBusyboxImage()
      const dockerJob = await run(runJob(client, submitBody(["echo hello from $(uname -s)"], "docker-0-0", { image_name: image })))
      expect(dockerJob.states[dockerJob.states.length - 1]).toBe("done")
      expect(dockerJob.output).toBe("hello from Linux\n")
    } else if (inCI) {
      throw new Error(`the Docker job needs dockerd under CI=true: ${dockerReason}`)
    } else {
      console.warn(`\n!!! SKIPPING the Docker job on the SSH host: ${dockerReason}\n`)
    }

    await run(backend.remoteHosts.deprovision(remote, config))
    const left = (await hosts.pids(host)).filter((pid) => {
      try {
        return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(dir)
      } catch {
        return false
      }
    })
    expect(left).toEqual([])
    expect(fs.existsSync(dir)).toBe(false)
  }, 400_000)
})
