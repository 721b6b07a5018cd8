// Tasks with an image run as pods of the `kubernetes` backend through the Kubernetes API
// stand-in (test/support/k8s-standin.ts; no real cluster runs here): a real server with the
// backend configured through the API, the runner inside the pod (installed from the locally
// built runner image), its logs and exit status back through the NodePort and the plugin's
// `kubernetes` transport; the pod and its service are deleted when the job ends and when the
// run is stopped. A 2-node task is two pods whose nodes meet at the master's pod IP; volumes
// are claims and hostPaths. A task's port reaches localhost through the SDK's attach, and a
// 2-replica service answers through /proxy/services/…, both through the pods' NodePorts.
// With `pod_access: port_forward` (project `pf`, a second stand-in whose nodes report an
// address nothing here reaches, and no service made) the same task's logs and exit status, and
// attach to its port, go through the API's pods/portforward; a server restarted while such a
// task runs (a store on disk, a new plugin value as a new process has) follows it to its end.
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import backendKubernetes, { makeKubernetesPlugin } from "@dstack-ts/backend-kubernetes"
import { Client } from "@dstack-ts/client"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { serve, type Serving } from "../../core/src/server/serve.ts"
import { appCall } from "../support/api.ts"
import { describeWith } from "../support/components.ts"
import { freeNamedPorts } from "../support/ports.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../support/docker.ts"
import { type K8sStandin, startK8sStandin } from "../support/k8s-standin.ts"
import { ensureK8sRunnerImage } from "../support/k8s-runner-image.ts"

const TOKEN = "k8s-e2e-token"
let server: Server
let serving: Serving | undefined
let standin: K8sStandin
let busybox: string
let runnerImage: string
/** The cluster of project `pf`: its nodes' address (TEST-NET) is unreachable, only its API answers. */
let unreachableNodes: K8sStandin
/** A backend on the stand-in whose nodes cannot be reached: the runner through the API's port-forward. */
const portForwardBackend = () => ({
  type: "kubernetes",
  kubeconfig: { data: unreachableNodes.kubeconfig({ context: "remote-cluster" }) },
  runner_image: runnerImage,
  scheduling_timeout_seconds: 30,
  pod_access: "port_forward"
})

const call = appCall(() => server, TOKEN)

const apply = async (runName: string, commands: ReadonlyArray<string>, extra: Record<string, unknown> = {}, project = "main") => {
  const res = await call(`/api/project/${project}/runs/apply`, {
    plan: {
      run_spec: {
        run_name: runName,
        repo_id: "k8s",
        repo_data: { repo_type: "virtual" },
        configuration: { type: "task", image: busybox, commands, backends: ["kubernetes"], ...extra }
      }
    }
  })
  expect(res.status, JSON.stringify(res.body)).toBe(200)
}

const waitFor = async <A>(what: string, probe: () => Promise<A | undefined>, timeoutMs = 90_000): Promise<A> => {
  const start = Date.now()
  while (Date.now() - start < timeoutMs) {
    const got = await probe()
    if (got !== undefined) return got
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`)
}

const runOf = async (name: string, project = "main") => (await call(`/api/project/${project}/runs/get`, { run_name: name })).body

/** Nothing the runs made is left in the cluster: no pod, no service. */
const nothingLeft = () =>
  waitFor("the pods and services deleted", async () => (standin.pods().length === 0 && standin.services().length === 0 ? true : undefined), 30_000)

/** A GET that retries while the app is not up yet; its body, or the last failure's message. */
const fetchText = async (url: string, headers: Record<string, string> = {}) => {
  let last = ""
  for (let i = 0; i < 100; i++) {
    const got: { readonly ok?: string; readonly error?: string } = await fetch(url, { headers }).then(
      async (r) => (r.ok ? { ok: await r.text() } : { error: `HTTP ${r.status}: ${await r.text()}` }),
      (e: unknown) => ({ error: String(e) })
    )
    if (got.ok !== undefined) return got.ok
    last = got.error ?? ""
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`GET ${url}: ${last}`)
}

const waitFinished = (name: string, project = "main") =>
  waitFor(`run ${name} finished`, async () => {
    const run = await runOf(name, project)
    return ["done", "failed", "terminated"].includes(run.status) ? run : undefined
  })

const logsOf = async (name: string, project = "main") =>
  (await call(`/api/project/${project}/logs/poll`, { run_name: name })).body.logs.map((l: any) => l.message).join("")

const dockerReason = await dockerUnavailableReason()

describeWith("docker", dockerReason === undefined, dockerReason ?? "", () => {
  beforeAll(async () => {
    const [runner, image] = await Promise.all([ensureK8sRunnerImage(), ensureBusyboxImage()])
    runnerImage = runner
    busybox = image
    standin = await startK8sStandin({
      nodes: [0, 1].map((i) => ({ name: `standin-node-${i}`, allocatable: { cpu: "8", memory: "32Gi", "ephemeral-storage": "500Gi", pods: "110" } }))
    })
    server = await createServer({
      state: EmbeddedStateStore.layerMemory(),
      blobs: blobsMemory,
      adminToken: TOKEN,
      // The plugin's `kubernetes` transport (named like the backend, so the engine picks it)
      // reaches a pod at its node's NodePort, or through the API's port-forward.
      plugins: [backendKubernetes],
      runner: { entry: path.resolve("cli/src/runner.ts") },
      engine: { resyncMs: 1_000 }
    })
    // The server's own serve: attach's tunnels are WebSockets through its upgrade hook.
    serving = await serve(server, { port: 0, handleSignals: false })
    const created = await call("/api/project/main/backends/create", {
      type: "kubernetes",
      kubeconfig: { data: standin.kubeconfig() },
      runner_image: runnerImage,
      scheduling_timeout_seconds: 30,
      volume_claims: { size: "1Gi" }
    })
    expect(created.status, JSON.stringify(created.body)).toBe(200)
    unreachableNodes = await startK8sStandin({
      nodeAddress: "192.0.2.1",
      nodes: [0, 1].map((i) => ({ name: `remote-node-${i}`, allocatable: { cpu: "8", memory: "32Gi", "ephemeral-storage": "500Gi", pods: "110" } }))
    })
    expect((await call("/api/projects/create", { project_name: "pf" })).status).toBe(200)
    const pf = await call("/api/project/pf/backends/create", portForwardBackend())
    expect(pf.status, JSON.stringify(pf.body)).toBe(200)
  }, 240_000)
  afterAll(async () => {
    await (serving !== undefined ? serving.close() : server?.close())
    await standin?.close()
    await unreachableNodes?.close()
  })

  describe("kubernetes backend with pod_access: port_forward (nodes unreachable, no NodePort)", () => {
    it("a task's logs and exit status come back through the API's port-forward; no service is made; the pod is deleted when it ends", async () => {
      await apply("pf-hello", ["echo hello-through-port-forward", "echo DSTACK_RUN_NAME=$DSTACK_RUN_NAME", "exit 5"], {}, "pf")
      const run = await waitFinished("pf-hello", "pf")
      const submission = run.jobs[0].job_submissions.at(-1)
      expect(run.status, JSON.stringify(submission)).toBe("failed")
      expect(submission.exit_status, JSON.stringify(submission)).toBe(5)
      const pd = submission.job_provisioning_data
      expect(pd.region).toBe("remote-cluster")
      expect(pd.hostname).toBe(`pod/default/${pd.instance_id}@remote-cluster`)
      // The node's address is one nothing here reaches, and no NodePort exists to reach it by.
      expect(pd.internal_ip).toBe("192.0.2.1")
      expect(unreachableNodes.services()).toEqual([])
      const logs = await logsOf("pf-hello", "pf")
      expect(logs).toContain("hello-through-port-forward")
      expect(logs).toContain("DSTACK_RUN_NAME=pf-hello")
      await waitFor("the pod deleted", async () => (unreachableNodes.pods().length === 0 ? true : undefined), 30_000)
    }, 180_000)

    it("a 2-node task: each pod's runner through the port-forward, the nodes meeting at the master's pod IP", async () => {
      await apply("pf-pair", [
        "echo rank=$DSTACK_NODE_RANK master=$DSTACK_MASTER_NODE_IP",
        'if [ "$DSTACK_NODE_RANK" = 0 ]; then echo "hello from rank 0" | nc -l -p 9000; echo served; else i=0; until sleep 1 | nc -w 2 $DSTACK_MASTER_NODE_IP 9000 >/tmp/got && [ -s /tmp/got ]; do i=$((i+1)); [ $i -gt 50 ] && exit 7; sleep 0.2; done; echo "worker got: $(cat /tmp/got)"; fi'
      ], { nodes: 2 }, "pf")
      const run = await waitFinished("pf-pair", "pf")
      const subs = run.jobs.map((j: any) => j.job_submissions.at(-1))
      expect(run.status, JSON.stringify(subs)).toBe("done")
      expect(subs.map((s: any) => s.job_provisioning_data.hostname)).toEqual(subs.map((s: any) => `pod/default/${s.job_provisioning_data.instance_id}@remote-cluster`))
      for (let rank = 0; rank < 2; rank++) {
        const res = await call("/api/project/pf/logs/poll", { run_name: "pf-pair", job_submission_id: subs[rank].id })
        const out = res.body.logs.map((l: any) => l.message).join("")
        expect(out).toContain(rank === 0 ? "served" : "worker got: hello from rank 0")
      }
      expect(unreachableNodes.services()).toEqual([])
      await waitFor("the pods deleted", async () => (unreachableNodes.pods().length === 0 ? true : undefined), 30_000)
    }, 180_000)

    it("a service is answered through /proxy/services/… over the port-forward", async () => {
      await apply("pf-svc", ["mkdir -p /www && echo proxied-through-port-forward > /www/index.html && exec httpd -f -p 8000 -h /www"], { type: "service", port: 8000 }, "pf")
      await waitFor("a running replica", async () => {
        const run = await runOf("pf-svc", "pf")
        if (["failed", "terminated", "done"].includes(run.status)) throw new Error(`run pf-svc ended: ${JSON.stringify(run.jobs.map((j: any) => j.job_submissions.at(-1)))}`)
        return run.jobs[0]?.job_submissions.at(-1)?.status === "running" ? run : undefined
      }, 150_000)
      const text = await fetchText(`${serving!.url}/proxy/services/pf/pf-svc/index.html`, { authorization: `Bearer ${TOKEN}` })
      expect(text).toBe("proxied-through-port-forward\n")
      expect(unreachableNodes.services()).toEqual([])
      expect((await call("/api/project/pf/runs/stop", { runs_names: ["pf-svc"], abort: false })).status).toBe(200)
      expect((await waitFinished("pf-svc", "pf")).status).toBe("terminated")
      await waitFor("the pod deleted", async () => (unreachableNodes.pods().length === 0 ? true : undefined), 30_000)
    }, 240_000)

    it("an upload held at zero replicas waits for the app behind the port-forward, not the forward's own accept", async () => {
      // The forward's local listener accepts at once and the API says a refused port only after:
      // the proxy waits for the app's HTTP answer. The app (test/support/busybox-service.sh under
      // busybox nc) starts 2 s after its job and reads the body whole before it answers.
      const script = fs.readFileSync(path.resolve("test/support/busybox-service.sh"), "utf8")
      await apply("pf-zero", ["printf '%s' \"$APP\" > /tmp/app.sh", "chmod +x /tmp/app.sh", "sleep 2", "exec nc -ll -p 8000 -e /tmp/app.sh"], {
        type: "service",
        port: 8000,
        env: { APP: script },
        replicas: "0..1",
        scaling: { metric: "rps", target: 10, scale_up_delay: 0, scale_down_delay: 60 }
      }, "pf")
      await waitFor("the service registered", async () => ((await call("/api/project/pf/services/get", { run_name: "pf-zero" })).status === 200 ? true : undefined), 30_000)
      const upload = new Uint8Array(128 * 1024).fill(7)
      const answer = await fetch(`${serving!.url}/proxy/services/pf/pf-zero/count`, { method: "POST", headers: { authorization: `Bearer ${TOKEN}` }, body: upload })
      const text = await answer.text()
      expect(answer.status, text).toBe(200)
      expect(text).toBe(`hello from busybox: POST /count HTTP/1.1 (${upload.length} bytes)`)
      expect((await call("/api/project/pf/runs/stop", { runs_names: ["pf-zero"], abort: true })).status).toBe(200)
      await waitFinished("pf-zero", "pf")
      await waitFor("the pod deleted", async () => (unreachableNodes.pods().length === 0 ? true : undefined), 30_000)
    }, 180_000)

    it("a task's port is served on localhost by attach, through the API's port-forward", async () => {
      const local = await freeNamedPorts()
      await apply("pf-web", ["mkdir -p /www && echo served-through-port-forward > /www/index.html && exec httpd -f -p 8000 -h /www"], { ports: [`${local}:8000`] }, "pf")
      const client = Client.connect({ name: "pf", url: serving!.url, token: TOKEN })
      const run = (await client.runs.get("pf-web"))!
      expect(await run.attach({ timeoutMs: 120_000 })).toEqual({ 8000: local })
      expect(await fetchText(`http://127.0.0.1:${local}/index.html`)).toBe("served-through-port-forward\n")
      expect(unreachableNodes.services()).toEqual([])
      await run.detach()
      expect((await call("/api/project/pf/runs/stop", { runs_names: ["pf-web"], abort: false })).status).toBe(200)
      expect((await waitFinished("pf-web", "pf")).status).toBe("terminated")
      await waitFor("the pod deleted", async () => (unreachableNodes.pods().length === 0 ? true : undefined), 30_000)
    }, 180_000)
    it("a server restarted while a task runs follows it to done with all its logs, through the port-forward of the backend it makes again", async () => {
      // A server on a store that outlives it; each start is a fresh plugin value, as a new
      // process is (no pod route known until the project's backend is made).
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-k8s-restart-"))
      const hostDir = path.join(dir, "host")
      fs.mkdirSync(hostDir)
      const start = () =>
        createServer({
          state: EmbeddedStateStore.layer({ dataDir: path.join(dir, "data") }),
          blobs: blobsMemory,
          adminToken: TOKEN,
          plugins: [makeKubernetesPlugin()],
          runner: { entry: path.resolve("cli/src/runner.ts") },
          engine: { resyncMs: 1_000 }
        })
      let current: Server | undefined = await start()
      const on = appCall(() => current!, TOKEN)
      try {
        expect((await on("/api/projects/create", { project_name: "pfr" })).status).toBe(200)
        const created = await on("/api/project/pfr/backends/create", portForwardBackend())
        expect(created.status, JSON.stringify(created.body)).toBe(200)
        const applied = await on("/api/project/pfr/runs/apply", {
          plan: {
            run_spec: {
              run_name: "pf-restart",
              repo_id: "k8s",
              repo_data: { repo_type: "virtual" },
              // It goes on only once the test says so (a file in the node's directory), after the restart.
              configuration: { type: "task", image: busybox, backends: ["kubernetes"], volumes: [`${hostDir}:/host`], commands: ["echo before-restart", "until [ -f /host/go ]; do sleep 0.2; done", "echo after-restart"] }
            }
          }
        })
        expect(applied.status, JSON.stringify(applied.body)).toBe(200)
        const logs = async () => (await on("/api/project/pfr/logs/poll", { run_name: "pf-restart" })).body.logs.map((l: any) => l.message).join("")
        await waitFor("the task's first line", async () => ((await logs()).includes("before-restart") ? true : undefined), 150_000)
        await current.close()
        current = undefined
        // The pod runs on with the server gone.
        expect(unreachableNodes.pods().map((p) => p.status.phase)).toEqual(["Running"])
        current = await start()
        fs.writeFileSync(path.join(hostDir, "go"), "")
        const run = await waitFor("run pf-restart finished", async () => {
          const r = (await on("/api/project/pfr/runs/get", { run_name: "pf-restart" })).body
          return ["done", "failed", "terminated"].includes(r.status) ? r : undefined
        })
        expect(run.status, JSON.stringify(run.jobs[0].job_submissions.at(-1))).toBe("done")
        const text = await logs()
        expect(text.match(/before-restart/g)).toHaveLength(1)
        expect(text.match(/after-restart/g)).toHaveLength(1)
        await waitFor("the pod deleted", async () => (unreachableNodes.pods().length === 0 ? true : undefined), 30_000)
      } finally {
        await current?.close()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    }, 240_000)
  })

  describe("kubernetes backend end to end (stand-in API server)", () => {
    it("a task with an image runs as a pod: its logs and exit status come back, and the pod is deleted when it ends", async () => {
      await apply("k8s-hello", ["echo hello-from-pod $(cat /etc/passwd | head -1 | cut -d: -f1)", "echo DSTACK_RUN_NAME=$DSTACK_RUN_NAME", "exit 3"])
      const run = await waitFinished("k8s-hello")
      const submission = run.jobs[0].job_submissions.at(-1)
      expect(run.status, JSON.stringify(submission)).toBe("failed")
      expect(submission.exit_status).toBe(3)
      expect(submission.job_provisioning_data.backend).toBe("kubernetes")
      expect(submission.job_provisioning_data.region).toBe("standin")
      const logs = await logsOf("k8s-hello")
      // busybox's /etc/passwd: the commands ran in the job's image, not in the runner image.
      expect(logs).toContain("hello-from-pod root")
      expect(logs).toContain("DSTACK_RUN_NAME=k8s-hello")
      await nothingLeft()
    }, 180_000)

    it("a 2-node task runs as two pods on two nodes, each with the cluster env from the pods' IPs; the worker reaches the master", async () => {
      await apply("k8s-pair", [
        "echo rank=$DSTACK_NODE_RANK of=$DSTACK_NODES_NUM master=$DSTACK_MASTER_NODE_IP ips=$(echo $DSTACK_NODES_IPS | tr ' ' ,)",
        // Rendezvous: the master listens once on 9000; the worker connects to it at the master's address.
        // The worker's nc keeps its input open a second: with none (</dev/null) busybox nc may quit
        // on that end of input before the master's greeting has come in, and read nothing.
        'if [ "$DSTACK_NODE_RANK" = 0 ]; then echo "hello from rank 0" | nc -l -p 9000; echo served; else i=0; until sleep 1 | nc -w 2 $DSTACK_MASTER_NODE_IP 9000 >/tmp/got && [ -s /tmp/got ]; do i=$((i+1)); [ $i -gt 50 ] && exit 7; sleep 0.2; done; echo "worker got: $(cat /tmp/got)"; fi'
      ], { nodes: 2 })
      const run = await waitFinished("k8s-pair")
      const subs = run.jobs.map((j: any) => j.job_submissions.at(-1))
      expect(run.status, JSON.stringify(subs)).toBe("done")
      const ips = subs.map((s: any) => s.job_provisioning_data.internal_ip)
      expect(new Set(ips).size).toBe(2)
      expect(new Set(subs.map((s: any) => s.job_provisioning_data.instance_type.name)).size).toBe(2)
      for (let rank = 0; rank < 2; rank++) {
        const res = await call("/api/project/main/logs/poll", { run_name: "k8s-pair", job_submission_id: subs[rank].id })
        const out = res.body.logs.map((l: any) => l.message).join("")
        expect(out).toContain(`rank=${rank} of=2 master=${ips[0]} ips=${ips.join(",")}`)
        expect(out).toContain(rank === 0 ? "served" : "worker got: hello from rank 0")
      }
      await nothingLeft()
    }, 180_000)

    it("volumes: a network volume is a claim whose data outlives the run; an instance directory is the node's (here this machine's) directory", async () => {
      const hostDir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-k8s-hostpath-"))
      try {
        await apply("k8s-vol-write", ["echo kept-in-the-claim > /data/note", "echo from-the-pod > /host/out", "echo wrote"], { volumes: ["k8s-data:/data", `${hostDir}:/host`] })
        const first = await waitFinished("k8s-vol-write")
        expect(first.status, JSON.stringify(first.jobs[0].job_submissions.at(-1))).toBe("done")
        expect(fs.readFileSync(path.join(hostDir, "out"), "utf8")).toBe("from-the-pod\n")
        expect(standin.claims().map((c) => c.metadata.name)).toEqual(["k8s-data"])
        await apply("k8s-vol-read", ["echo read=$(cat /data/note)"], { volumes: [{ name: "k8s-data", path: "/data" }] })
        const second = await waitFinished("k8s-vol-read")
        expect(second.status).toBe("done")
        expect(await logsOf("k8s-vol-read")).toContain("read=kept-in-the-claim")
      } finally {
        fs.rmSync(hostDir, { recursive: true, force: true })
      }
    }, 180_000)

    it("a network volume on a run that may land elsewhere is refused at plan time, naming it", async () => {
      const res = await call("/api/project/main/runs/get_plan", {
        run_spec: { repo_id: "k8s", repo_data: { repo_type: "virtual" }, configuration: { type: "task", image: busybox, commands: ["true"], volumes: ["k8s-data:/data"] } }
      })
      expect(res.status).toBe(400)
      expect(JSON.stringify(res.body)).toMatch(/volumes\[0\].*network volume k8s-data.*backends: \[kubernetes\]/)
    })

    it("stopping a running task deletes its pod", async () => {
      await apply("k8s-sleepy", ["echo started", "sleep 600"])
      await waitFor("the task running", async () => ((await logsOf("k8s-sleepy")).includes("started") ? true : undefined))
      expect(standin.pods().map((p) => p.status.phase)).toEqual(["Running"])
      const stop = await call("/api/project/main/runs/stop", { runs_names: ["k8s-sleepy"], abort: false })
      expect(stop.status).toBe(200)
      const run = await waitFinished("k8s-sleepy")
      expect(run.status).toBe("terminated")
      await nothingLeft()
    }, 180_000)

    it("a task's port is served on localhost by attach, through the pod's NodePort; stopping deletes its pod and service", async () => {
      const local = await freeNamedPorts()
      await apply("k8s-web", ["mkdir -p /www && echo served-from-the-pod > /www/index.html && exec httpd -f -p 8000 -h /www"], { ports: [`${local}:8000`] })
      const client = Client.connect({ name: "main", url: serving!.url, token: TOKEN })
      const run = (await client.runs.get("k8s-web"))!
      expect(await run.attach({ timeoutMs: 120_000 })).toEqual({ 8000: local })
      expect(await fetchText(`http://127.0.0.1:${local}/index.html`)).toBe("served-from-the-pod\n")
      // Reached through the service of the pod (one NodePort for the runner, one for port 8000).
      const [service] = standin.services()
      expect(service.spec.ports.map((p: any) => p.port)).toEqual([10999, 8000])
      await run.detach()
      expect((await call("/api/project/main/runs/stop", { runs_names: ["k8s-web"], abort: false })).status).toBe(200)
      expect((await waitFinished("k8s-web")).status).toBe("terminated")
      await nothingLeft()
    }, 180_000)

    it("a service of 2 replicas runs as 2 pods and is answered through /proxy/services/…, each replica in turn; stopping deletes every pod and service", async () => {
      await apply("k8s-svc", ["mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8000 -h /www"], { type: "service", port: 8000, replicas: 2 })
      await waitFor("2 running replicas", async () => {
        const run = await runOf("k8s-svc")
        if (["failed", "terminated", "done"].includes(run.status)) throw new Error(`run k8s-svc ended: ${JSON.stringify(run.jobs.map((j: any) => j.job_submissions.at(-1)))}`)
        return run.jobs.filter((j: any) => j.job_submissions.at(-1)?.status === "running").length === 2 ? run : undefined
      }, 150_000)
      expect(standin.pods().length).toBe(2)
      expect(standin.services().length).toBe(2)
      const url = `${serving!.url}/proxy/services/main/k8s-svc/index.html`
      const auth = { authorization: `Bearer ${TOKEN}` }
      const hostnames = new Set<string>()
      for (let i = 0; i < 6; i++) hostnames.add((await fetchText(url, auth)).trim())
      // Each pod's container has its own host name: both replicas answered.
      expect(hostnames.size).toBe(2)
      expect((await fetch(url)).status).toBe(401)
      expect((await call("/api/project/main/runs/stop", { runs_names: ["k8s-svc"], abort: false })).status).toBe(200)
      expect((await waitFinished("k8s-svc")).status).toBe("terminated")
      await nothingLeft()
    }, 240_000)
  })
})
