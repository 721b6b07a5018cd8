// The torchrun provider end to end on real hosts: two network namespaces with their own sshd
// (test/support/netns.ts) made a `placement: cluster` SSH fleet, a real server with the remote
// backend and the ssh transport, and the real CLI. torch cannot be installed here, so the hosts
// have a stand-in `torchrun` on their PATH (test/support/torchrun-standin.py): it records its
// argv and DSTACK_* env, and its nodes do a real TCP rendezvous at the master's address and
// port before running the script. `dstack run` of examples/workflows-torchrun (2 nodes) proves
// the node count, ranks and addresses each node launched with, and both nodes' logs reach
// `dstack run` and `dstack logs --job N`. A node that fails fails the workflow, named. A
// workflow asking for more nodes than the fleet has is refused at plan time, at its line,
// before anything runs.
import { serve } from "@hono/node-server"
import * as fs from "node:fs"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { afterAll, beforeAll, expect, it } from "vitest"
import backendSsh from "@dstack-ts/backend-ssh"
import transportSsh from "@dstack-ts/transport-ssh"
import providersBuiltin, { TORCHRUN_MASTER_PORT } from "@dstack-ts/providers-builtin"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { appCall } from "../support/api.ts"
import { cliRunner, writeProject } from "../support/cli.ts"
import { createNetnsHosts, describeWithNetns, type NetnsHosts } from "../support/netns.ts"
import { makeUntil } from "../support/until.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../../cli/src/runner.ts", import.meta.url))
const STANDIN = fileURLToPath(new URL("../support/torchrun-standin.py", import.meta.url))
const EXAMPLE = fileURLToPath(new URL("../../examples/workflows-torchrun/", import.meta.url))
const TOKEN = "workflows-torchrun-token"
const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-torchrun-e2e-"))
// The hosts' "installed programs": the stand-in as `torchrun`, recording each launch in `records`.
const bin = path.join(home, "bin")
const records = path.join(home, "records")
const python3 = ["/usr/bin/python3", "/usr/local/bin/python3"].find((p) => fs.existsSync(p)) ?? "python3"
let server: Server
let listener: ReturnType<typeof serve>
let url: string
let hosts: NetnsHosts
const call = appCall(() => server, TOKEN)
const until = makeUntil({ timeoutMs: 120_000, everyMs: 250 })
const env = () => ({ ...process.env, HOME: home, NO_COLOR: "1", DSTACK_SERVER_URL: url, DSTACK_TOKEN: TOKEN, DSTACK_PROJECT: "main" })
const dstack = cliRunner(env)

// Node rank 1 exits 3.
const flaky = `workflows:
  - name: flaky
    provider: torchrun
    script: fail.py
    nodes: 2
    resources: { cpu: 1.., memory: 1GB.., disk: 1GB.. }
`

// More nodes than the fleet has.
const tooBig = `workflows:
  - name: big
    provider: torchrun
    script: train.py
    nodes: 3
    resources: { cpu: 1.., memory: 1GB.., disk: 1GB.. }
`

describeWithNetns(() => {
  beforeAll(async () => {
    fs.mkdirSync(bin, { recursive: true })
    fs.writeFileSync(path.join(bin, "torchrun"), `#!/bin/sh\nTORCHRUN_STANDIN_DIR=${records} exec ${python3} ${STANDIN} "$@"\n`, { mode: 0o755 })
    hosts = await createNetnsHosts({ count: 2, path: bin })
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      plugins: [backendSsh, transportSsh, providersBuiltin],
      runner: { entry: RUNNER_ENTRY },
      engine: { resyncMs: 2_000 }
    })
    listener = await new Promise((resolve) => {
      const s = serve({ fetch: server.app.fetch, hostname: "127.0.0.1", port: 0 }, () => resolve(s))
    })
    url = `http://127.0.0.1:${(listener.address() as AddressInfo).port}`
    // The cluster fleet of both hosts (the CLI would read identity_file and send the key).
    const applied = await call("/api/project/main/fleets/apply", {
      plan: {
        spec: {
          configuration: {
            type: "fleet",
            name: "pair",
            placement: "cluster",
            ssh_config: {
              user: "root",
              identity_file: hosts.privateKeyFile,
              ssh_key: { public: hosts.publicKey, private: hosts.privateKey },
              hosts: hosts.hosts.map((h) => ({ hostname: h.ip, port: h.port }))
            }
          }
        }
      }
    })
    expect(applied.status, JSON.stringify(applied.body)).toBe(200)
    const fleet = await until("pair idle", async () => (await call("/api/project/main/fleets/get", { name: "pair" })).body, (f) =>
      f.instances.every((i: any) => i.status === "idle" || i.status === "terminated"), 300_000)
    expect(fleet.instances.map((i: any) => i.status)).toEqual(["idle", "idle"])
  }, 400_000)

  afterAll(async () => {
    ;(listener as unknown as { closeAllConnections?: () => void })?.closeAllConnections?.()
    await new Promise<void>((r) => (listener ? listener.close(() => r()) : r()))
    await server?.close()
    await hosts?.down()
    fs.rmSync(home, { recursive: true, force: true })
  }, 120_000)

  it("runs examples/workflows-torchrun on 2 nodes: each launches with its rank, the node count and the master's address, they rendezvous, and both logs reach the CLI", async () => {
    const dir = EXAMPLE
    const res = await dstack(["run", "train-distributed", "-n", "tr2"], dir)
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(0)
    expect(res.stdout).toMatch(/train-distributed\s+torchrun\s+-\s+process, 2 nodes\s+-\s+run/)

    const run = (await call("/api/project/main/runs/get", { run_name: "tr2" })).body
    expect(run.status).toBe("done")
    expect(run.jobs.map((j: any) => j.job_spec.job_num)).toEqual([0, 1])
    const ips: Array<string> = run.jobs.map((j: any) => j.job_submissions.at(-1).job_provisioning_data.internal_ip)
    expect([...ips].sort()).toEqual(hosts.hosts.map((h) => h.ip).sort())
    const met = `0@${ips[0]},1@${ips[1]}`

    // What each node launched torchrun with, as the stand-in recorded it.
    for (const rank of [0, 1]) {
      const record = JSON.parse(fs.readFileSync(path.join(records, `rank-${rank}.json`), "utf8"))
      expect(record.argv).toEqual([
        "--nnodes=2",
        `--node_rank=${rank}`,
        "--nproc_per_node=1",
        `--master_addr=${ips[0]}`,
        `--master_port=${TORCHRUN_MASTER_PORT}`,
        "train.py",
        "--epochs",
        "2"
      ])
      expect(record.env).toMatchObject({
        DSTACK_NODE_RANK: String(rank),
        DSTACK_NODES_NUM: "2",
        DSTACK_MASTER_NODE_IP: ips[0],
        DSTACK_NODES_IPS: ips.join("\n"),
        DSTACK_GPUS_PER_NODE: "0"
      })
    }

    // `dstack run` followed both nodes, each line marked with its node.
    for (const rank of [0, 1]) {
      expect(res.stdout).toContain(`[train-distributed/${rank}] torchrun stand-in: node ${rank} of 2 met at ${ips[0]}:${TORCHRUN_MASTER_PORT}: ${met}`)
      expect(res.stdout).toContain(`[train-distributed/${rank}] rank ${rank} of 2 (local rank 0), master ${ips[0]}:${TORCHRUN_MASTER_PORT}`)
      expect(res.stdout).toContain(`[train-distributed/${rank}] rank ${rank}: epoch 2/2`)
    }
    // `dstack logs` shows the master's log, `--job 1` the other node's.
    const master = await dstack(["logs", "tr2"], dir)
    expect(master.code, master.stderr).toBe(0)
    expect(master.stdout).toContain(`torchrun stand-in: node 0 of 2 met at ${ips[0]}:${TORCHRUN_MASTER_PORT}: ${met}`)
    expect(master.stdout).toContain("rank 0: epoch 2/2")
    expect(master.stdout).not.toContain("rank 1")
    const worker = await dstack(["logs", "tr2", "--job", "1"], dir)
    expect(worker.code, worker.stderr).toBe(0)
    expect(worker.stdout).toContain(`torchrun stand-in: node 1 of 2 met at ${ips[0]}:${TORCHRUN_MASTER_PORT}: ${met}`)
    expect(worker.stdout).toContain(`rank 1 of 2 (local rank 0), master ${ips[0]}:${TORCHRUN_MASTER_PORT}`)
    expect(worker.stdout).not.toContain("rank 0:")
    const none = await dstack(["logs", "tr2", "--job", "2"], dir)
    expect(none.code).toBe(1)
    expect(none.stderr).toContain("Run tr2 has no job 2 of replica 0; it has: job 0 of replica 0, job 1 of replica 0")
  }, 400_000)

  it("fails a workflow whose second node fails, naming that node and its exit status", async () => {
    await until("pair idle again", async () => (await call("/api/project/main/fleets/get", { name: "pair" })).body, (f) =>
      f.instances.every((i: any) => i.status === "idle"), 60_000)
    const dir = writeProject(home, "flaky", {
      ".dstack/workflows.yaml": flaky,
      "fail.py": "import os, sys\nprint('rank', os.environ['RANK'], 'exits', 3 if os.environ['RANK'] == '1' else 0)\nsys.exit(3 if os.environ['RANK'] == '1' else 0)\n"
    })
    const res = await dstack(["run", "flaky", "-n", "flaky2"], dir)
    expect(res.code, `${res.stdout}\n${res.stderr}`).toBe(1)
    expect(res.stdout).toContain("[flaky/1] rank 1 exits 3")
    expect(res.stderr).toMatch(/Workflow flaky failed: flaky \(run flaky2\) failed: node 1, .*exit status 3/)
  }, 300_000)

  it("refuses at plan time a workflow asking for more nodes than the cluster fleet has, at its line", async () => {
    const dir = writeProject(home, "big", { ".dstack/workflows.yaml": tooBig, "train.py": "" })
    const res = await dstack(["run", "big"], dir)
    expect(res.code).toBe(1)
    expect(res.stderr).toMatch(
      /workflows\.yaml:5:12 {2}workflows\[0\]\.nodes {2}nodes: 3 needs 3 instances of one placement: cluster fleet, or a backend that creates a job's instances together: the largest placement: cluster fleet, pair, has 2 instances that fit, and no backend of the project creates a group of instances/
    )
    // Nothing was submitted: the runs are the earlier tests'.
    const runs = await call("/api/runs/list", { project_name: "main" })
    expect(runs.status, JSON.stringify(runs.body)).toBe(200)
    expect(runs.body.map((r: any) => r.run_spec.run_name).sort()).toEqual(["flaky2", "tr2"])
  }, 120_000)
})
