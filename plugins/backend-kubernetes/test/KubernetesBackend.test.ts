// The kubernetes backend against the Kubernetes API stand-in (test/support/k8s-standin.ts: the
// real REST and watch protocol, pods as Docker containers): offers from nodes, the pod a job
// becomes, a real runner answering in the pod through its NodePort, deletion with the instance,
// and the unhappy paths (bad kubeconfig, unreachable API, forbidden token, unschedulable pod).
import * as net from "node:net"
import { PassThrough } from "node:stream"
import * as k8s from "@kubernetes/client-node"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { Backend, InstanceOffer, Requirements, RunnerTransport } from "@dstack-ts/core"
import { testBackend } from "@dstack-ts/core/testing"
import { Effect, Either, Fiber, Layer, Schedule, Schema } from "effect"
import plugin, { KubernetesBackend, PodSpec } from "../src/index.ts"
import { describeWith } from "../../../test/support/components.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../../../test/support/docker.ts"
import { type K8sStandin, startK8sStandin, writeTempFile } from "../../../test/support/k8s-standin.ts"
import { ensureK8sRunnerImage } from "../../../test/support/k8s-runner-image.ts"

const requirements = (resources: Record<string, unknown>): Requirements => Schema.decodeUnknownSync(Requirements)({ resources })

// A new instance id each time, as the engine gives: a pod is named after it, and a pod of an
// earlier case that the stand-in is still deleting must not answer for this case's pod.
const instance = (job?: Backend.InstanceJob): Backend.InstanceConfiguration => ({
  projectName: "main",
  instanceName: "k8s-test-0",
  instanceId: crypto.randomUUID(),
  sshKeys: [],
  ...(job ? { job } : {})
})

const make = (config: Record<string, unknown>) => KubernetesBackend.fromConfig({ type: "kubernetes", runner_image: "runner:1", ...config })

const failureOf = <A, R>(self: Effect.Effect<A, Backend.BackendError, R>) =>
  Effect.map(Effect.either(self), (e) => {
    if (Either.isRight(e)) throw new Error(`expected a failure, got ${JSON.stringify(e.right).slice(0, 1500)}`)
    return e.left
  })

describe("pod spec mapping", () => {
  const offer = PodSpec.nodeOffer(
    {
      metadata: { name: "gpu-node", labels: { "nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB", "nvidia.com/gpu.memory": "81920" } },
      status: {
        allocatable: { cpu: "7500m", memory: "30Gi", "ephemeral-storage": "100Gi", "nvidia.com/gpu": "2" },
        conditions: [{ type: "Ready", status: "True" }],
        nodeInfo: { architecture: "amd64" } as never
      }
    },
    "ctx"
  )

  it("a node becomes an offer of its allocatable resources and labelled GPUs", () => {
    expect(offer.instance.name).toBe("gpu-node")
    expect(offer.region).toBe("ctx")
    expect(offer.availability).toBe("available")
    const r = offer.instance.resources
    expect([r.cpus, r.memoryMib, r.disk.sizeMib, r.cpuArch]).toEqual([7, 30 * 1024, 100 * 1024, "x86"])
    expect(r.gpus.map((g) => [g.name, g.memoryMib, g.vendor])).toEqual([["A100", 81920, "nvidia"], ["A100", 81920, "nvidia"]])
  })

  it("lower bounds become requests, upper bounds limits, GPUs an extended resource with node affinity", () => {
    const job = { jobName: "train-0", image: "pytorch:2", requirements: requirements({ cpu: "2..4", memory: "8GB..16GB", disk: "10GB..", gpu: "A100:2" }) }
    const pod = PodSpec.jobPod({ name: "dstack-train-0-abcd", namespace: "ns", runnerImage: "runner:1", job, offer, config: instance(job) })
    const c = pod.spec!.containers[0]
    expect(c.image).toBe("pytorch:2")
    expect(c.resources).toEqual({
      requests: { cpu: "2", memory: "8192Mi", "ephemeral-storage": "10240Mi", "nvidia.com/gpu": "2" },
      limits: { cpu: "4", memory: "16384Mi", "nvidia.com/gpu": "2" }
    })
    expect(c.env).toContainEqual({ name: "DSTACK_RUNNER_IN_CONTAINER", value: "1" })
    expect(pod.spec!.initContainers![0].image).toBe("runner:1")
    expect(pod.spec!.restartPolicy).toBe("Never")
    expect(pod.spec!.affinity!.nodeAffinity!.requiredDuringSchedulingIgnoredDuringExecution!.nodeSelectorTerms[0].matchExpressions).toEqual([
      { key: "kubernetes.io/hostname", operator: "In", values: ["gpu-node"] },
      { key: "nvidia.com/gpu.product", operator: "Exists" }
    ])
  })

  it("volumes: an instance directory is a hostPath, a network volume the claim of its name, each mounted at its path", () => {
    const job = { jobName: "j", image: "x", requirements: requirements({}), volumes: [{ name: "data", path: "/data" }, { instancePath: "/mnt/cache", path: "/cache" }] }
    const pod = PodSpec.jobPod({ name: "p", namespace: "ns", runnerImage: "runner:1", job, offer, config: instance(job) })
    expect(pod.spec!.volumes!.slice(1)).toEqual([
      { name: "pvc-0", persistentVolumeClaim: { claimName: "data" } },
      { name: "host-path-1", hostPath: { path: "/mnt/cache", type: "DirectoryOrCreate" } }
    ])
    expect(pod.spec!.containers[0].volumeMounts!.slice(1)).toEqual([{ name: "pvc-0", mountPath: "/data" }, { name: "host-path-1", mountPath: "/cache" }])
  })

  it("an AMD GPU job asks for amd.com/gpu", () => {
    const job = { jobName: "j", image: "rocm:6", requirements: requirements({ gpu: { vendor: "amd", count: 1 } }) }
    expect(PodSpec.containerResources(job, offer).requests).toMatchObject({ "amd.com/gpu": "1" })
  })

  it("names are DNS labels of at most 63 characters", () => {
    const name = PodSpec.dnsLabel(`dstack-${"My_Task".repeat(20)}`, "abcd1234")
    expect(name).toMatch(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/)
    expect(name.length).toBeLessThanOrEqual(63)
    expect(name.endsWith("-abcd1234")).toBe(true)
  })

  it("a job's ports: its service maps the runner's port and each job port (once) to NodePorts; the pod's env says where they are published", () => {
    const job = { jobName: "web-0", image: "nginx", requirements: requirements({}), ports: [8000, 9000, 8000] }
    expect(PodSpec.jobPorts(job)).toEqual([8000, 9000])
    const service = PodSpec.jobService("dstack-web-0-abcd", "ns", "id-1", PodSpec.jobPorts(job))
    expect(service.spec).toEqual({
      type: "NodePort",
      selector: { "dstack-ts/pod": "dstack-web-0-abcd" },
      ports: [
        { name: "runner", protocol: "TCP", port: 10999, targetPort: 10999 },
        { name: "port-8000", protocol: "TCP", port: 8000, targetPort: 8000 },
        { name: "port-9000", protocol: "TCP", port: 9000, targetPort: 9000 }
      ]
    })
    expect(PodSpec.nodePorts({ spec: { ports: [{ port: 10999, nodePort: 30001 }, { port: 8000, nodePort: 30002 }] } })).toEqual(new Map([[10999, 30001], [8000, 30002]]))
    const pod = PodSpec.jobPod({ name: "dstack-web-0-abcd", namespace: "ns", runnerImage: "runner:1", job, offer, config: instance(job), publishedPorts: { 8000: 30002, 9000: 30003 } })
    const c = pod.spec!.containers[0]
    expect(c.env).toContainEqual({ name: "DSTACK_RUNNER_PUBLISHED_PORTS", value: '{"8000":30002,"9000":30003}' })
    expect(c.ports).toEqual([{ containerPort: 10999, name: "runner" }, { containerPort: 8000, name: "port-8000" }, { containerPort: 9000, name: "port-9000" }])
    // Without ports the pod's env does not mention them.
    const plain = PodSpec.jobPod({ name: "p", namespace: "ns", runnerImage: "runner:1", job: { ...job, ports: [] }, offer, config: instance(job), publishedPorts: {} })
    expect(plain.spec!.containers[0].env!.map((e) => e.name)).not.toContain("DSTACK_RUNNER_PUBLISHED_PORTS")
  })

  it("a watch event counts only for the pod made (its uid): another pod of the same name is ignored, deleted or not", () => {
    const pod = (uid: string) => ({ metadata: { name: "dstack-x-1", uid } })
    expect(PodSpec.watchEvent("uid-new", "DELETED", pod("uid-old"))).toBe("ignore")
    expect(PodSpec.watchEvent("uid-new", "MODIFIED", pod("uid-old"))).toBe("ignore")
    expect(PodSpec.watchEvent("uid-new", "ADDED", { metadata: { name: "dstack-x-1" } })).toBe("ignore")
    expect(PodSpec.watchEvent("uid-new", "DELETED", pod("uid-new"))).toBe("deleted")
    expect(PodSpec.watchEvent("uid-new", "MODIFIED", pod("uid-new"))).toBe("changed")
  })

  it("quantities parse as Kubernetes writes them", () => {
    expect([PodSpec.parseQuantity("1500m"), PodSpec.parseQuantity("2Gi"), PodSpec.parseQuantity("1G"), PodSpec.parseQuantity("x")]).toEqual([1.5, 2 ** 31, 1e9, undefined])
  })
})

describe("configuration", () => {
  it("the plugin contributes the kubernetes backend", () => {
    expect(Object.keys(plugin.backends ?? {})).toEqual(["kubernetes"])
  })

  it.scoped("a kubeconfig that is neither a file nor data, unreadable, or malformed is Invalid, naming the field", () =>
    Effect.gen(function*() {
      expect((yield* failureOf(make({ kubeconfig: {} }))).message).toMatch(/kubeconfig: set `filename`/)
      expect((yield* failureOf(make({ kubeconfig: { filename: "/nonexistent/kubeconfig" } }))).message).toMatch(/kubeconfig.filename: cannot read \/nonexistent\/kubeconfig/)
      expect((yield* failureOf(make({ kubeconfig: { data: "{ not: [yaml" } }))).message).toMatch(/kubeconfig: not a valid kubeconfig/)
    }))

  it.scoped("an unknown context, namespace beside contexts, proxy_jump.port and a missing runner_image are refused by name", () =>
    Effect.gen(function*() {
      const data = "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: a\nusers:\n- name: a\n  user:\n    token: t\n"
      expect((yield* failureOf(make({ kubeconfig: { data }, contexts: ["b"] }))).message).toMatch(/no context b \(it has a\)/)
      expect((yield* failureOf(make({ kubeconfig: { data }, contexts: ["a"], namespace: "x" }))).message).toMatch(/`namespace` and `proxy_jump` apply only without `contexts`/)
      expect((yield* failureOf(make({ kubeconfig: { data }, proxy_jump: { port: 30022 } }))).message).toMatch(/proxy_jump.port/)
      const noImage = yield* failureOf(KubernetesBackend.fromConfig({ kubeconfig: { data } }))
      expect(noImage.reason).toBe("Invalid")
      expect(noImage.message).toMatch(/runner_image/)
      const ok = yield* make({ kubeconfig: { data }, contexts: ["a", { name: "a" }].slice(0, 1) })
      expect((ok as KubernetesBackend.KubernetesBackend).regions).toEqual(["a"])
    }))

  it.scoped("an API nobody answers is a retryable Transport failure naming the server", () =>
    Effect.gen(function*() {
      const port = yield* Effect.promise(() => new Promise<number>((resolve) => {
        const s = net.createServer().listen(0, "127.0.0.1", () => {
          const p = (s.address() as net.AddressInfo).port
          s.close(() => resolve(p))
        })
      }))
      const data = `apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:${port}\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: a\nusers:\n- name: a\n  user:\n    token: t\n`
      const backend = yield* make({ kubeconfig: { data } })
      const error = yield* failureOf(backend.getOffers(requirements({ cpu: 1 })))
      expect(error.reason).toBe("Transport")
      expect(error.isRetryable).toBe(true)
      expect(error.message).toContain(`cannot reach the Kubernetes API at https://127.0.0.1:${port}`)
    }))
})

const dockerReason = await dockerUnavailableReason()

describeWith("docker", dockerReason === undefined, dockerReason ?? "", () => {
  let standin: K8sStandin
  let runnerImage: string
  let busybox: string
  beforeAll(async () => {
    ;[runnerImage, busybox] = await Promise.all([ensureK8sRunnerImage(), ensureBusyboxImage()])
    standin = await startK8sStandin({
      nodes: [
        { name: "cpu-node", allocatable: { cpu: "2", memory: "4Gi", "ephemeral-storage": "200Gi", pods: "110" } },
        { name: "gpu-node", allocatable: { cpu: "8", memory: "32Gi", "ephemeral-storage": "100Gi", "nvidia.com/gpu": "1" }, labels: { "nvidia.com/gpu.product": "NVIDIA-L4", "nvidia.com/gpu.memory": "23034" } }
      ]
    })
  }, 180_000)
  afterAll(async () => {
    await standin?.close()
  })

  const backendWith = (extra: Record<string, unknown> = {}) =>
    KubernetesBackend.fromConfig({ kubeconfig: { filename: writeTempFile("config", standin.kubeconfig()) }, runner_image: runnerImage, scheduling_timeout_seconds: 5, ...extra })

  const offerFor = (backend: Backend.Backend, node: string) =>
    Effect.map(backend.getOffers(requirements({ cpu: "1..", memory: "0.5GB..", disk: "1GB.." })), ({ offers }) => offers.find((o) => o.instance.name === node)!)

  it.scoped("offers are the cluster's nodes, in the context's region; a GPU requirement leaves the CPU node out with a reason", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      const { offers } = yield* backend.getOffers(requirements({ cpu: "1..", memory: "1GB..", disk: "1GB.." }))
      expect(offers.map((o) => [o.instance.name, o.region, o.instance.resources.cpus]).sort()).toEqual([["cpu-node", "standin", 2], ["gpu-node", "standin", 8]])
      const gpu = yield* backend.getOffers(requirements({ gpu: "L4:1", disk: "1GB.." }))
      expect(gpu.offers.map((o) => o.instance.name)).toEqual(["gpu-node"])
      expect(gpu.excluded.map((e) => e.offer.instance.name)).toEqual(["cpu-node"])
    }))

  it.scoped("a forbidden token is PermissionDenied with the API's message", () =>
    Effect.gen(function*() {
      const backend = yield* KubernetesBackend.fromConfig({ kubeconfig: { data: standin.kubeconfig({ token: standin.forbiddenToken }) }, runner_image: runnerImage })
      const error = yield* failureOf(backend.getOffers(requirements({ cpu: 1 })))
      expect(error.reason).toBe("PermissionDenied")
      expect(error.message).toMatch(/answered 403: .*forbidden/)
      const unknown = yield* KubernetesBackend.fromConfig({ kubeconfig: { data: standin.kubeconfig({ token: "nobody" }) }, runner_image: runnerImage })
      const refused = yield* failureOf(unknown.getOffers(requirements({ cpu: 1 })))
      expect(refused.reason).toBe("PermissionDenied")
      expect(refused.message).toMatch(/answered 401: .*credentials were refused/)
    }))

  it.scoped("a job without an image, a multi-node job one node at a time, the runner's port as a job port and instance volumes under ~ are refused, naming each", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      const offer = yield* offerFor(backend, "cpu-node")
      const error = yield* failureOf(backend.createInstance(offer, instance({ jobName: "j", requirements: requirements({ cpu: 1 }) })))
      expect(error.reason).toBe("Invalid")
      expect(error.message).toMatch(/jobs with an image only/)
      const cluster = yield* failureOf(backend.createInstance(offer, instance({ jobName: "j", image: "busybox", requirements: requirements({ cpu: 1 }), nodes: 2, ports: [8000, 10999], instanceMounts: ["~/data"] })))
      expect(cluster.reason).toBe("Invalid")
      expect(cluster.message).toBe("the kubernetes backend does not run a multi-node task (nodes: 2) one node at a time: its nodes are created together; a job port 10999: the runner listens on it in the pod; pick another port; an instance volume under ~ (~/data): a node has no home directory for a pod; give an absolute path")
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }))

  it.live("a network volume is the claim of its name: refused naming it when missing and volume_claims is unset, made from volume_claims, reused when it exists", () =>
    Effect.gen(function*() {
      const job = (name: string) => ({ jobName: "vol-0", image: busybox, requirements: requirements({ cpu: "1..", memory: "0.5GB.." }), volumes: [{ name, path: "/data" }] })
      const plain = yield* backendWith()
      const offer = yield* offerFor(plain, "cpu-node")
      const missing = yield* failureOf(plain.createInstance(offer, instance(job("absent"))))
      expect(missing.reason).toBe("Invalid")
      expect(missing.message).toBe("network volume absent: namespace default of context standin has no PersistentVolumeClaim absent; create it, or set `volume_claims.size` in the backend's configuration to have it made")
      expect([standin.pods(), standin.claims()]).toEqual([[], []])
      const badSize = yield* failureOf(backendWith({ volume_claims: { size: "lots" } }))
      expect(badSize.message).toMatch(/volume_claims.*size.*expected a Kubernetes quantity such as 10Gi, got "lots"/s)

      const making = yield* backendWith({ volume_claims: { size: "2Gi", storage_class_name: "standard", access_modes: ["ReadWriteOnce"] } })
      const pd = yield* making.createInstance(offer, instance(job("made")))
      expect(standin.claims().map((c) => [c.metadata.name, c.spec.resources.requests.storage, c.spec.storageClassName, c.status.phase])).toEqual([["made", "2Gi", "standard", "Bound"]])
      yield* making.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      // The claim outlives the pod; the next job mounting it reuses it.
      expect(standin.claims().map((c) => c.metadata.name)).toEqual(["made"])
      const again = yield* plain.createInstance(offer, instance(job("made")))
      expect(standin.pods()[0].spec.volumes).toContainEqual({ name: "pvc-0", persistentVolumeClaim: { claimName: "made" } })
      expect(standin.claims().length).toBe(1)
      yield* plain.terminateInstance(again.instanceId, again.region, again.backendData)
    }).pipe(Effect.scoped), 60_000)

  it.live("a pod the scheduler cannot place in time is deleted and its offer skipped (NoCapacity, with the scheduler's reason)", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith({ scheduling_timeout_seconds: 1 })
      const offer = yield* offerFor(backend, "cpu-node")
      const job = { jobName: "big", image: busybox, requirements: requirements({ cpu: "16..", memory: "1GB" }) }
      const error = yield* failureOf(backend.createInstance(offer, instance(job)))
      expect(error.reason).toBe("NoCapacity")
      expect(error.message).toMatch(/not scheduled within 1s on node cpu-node .*Insufficient cpu/)
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }).pipe(Effect.scoped), 30_000)

  it.live("a creation interrupted while its pod waits for the scheduler deletes the pod at once, even where the caller made it uninterruptible (a stop)", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith({ scheduling_timeout_seconds: 300 })
      const offer = yield* offerFor(backend, "cpu-node")
      const job = { jobName: "big", image: busybox, requirements: requirements({ cpu: "16..", memory: "1GB" }) }
      const fiber = yield* Effect.fork(Effect.uninterruptible(backend.createInstance(offer, instance(job))))
      yield* Effect.sync(() => standin.pods().length).pipe(
        Effect.repeat({ schedule: Schedule.spaced("100 millis"), until: (n) => n > 0 }),
        Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("the pod was never created") })
      )
      // Well inside the 300 s scheduling wait.
      yield* Fiber.interrupt(fiber).pipe(Effect.timeoutFail({ duration: "30 seconds", onTimeout: () => new Error("the interruption waited for the scheduling timeout") }))
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }).pipe(Effect.scoped), 90_000)

  it.live("a job becomes a pod of its image whose runner answers through the NodePort; terminate deletes it, twice is fine", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      expect(backend.instancePerJob).toBe(true)
      const offer = yield* offerFor(backend, "cpu-node")
      const job = { jobName: "hello-0", image: busybox, requirements: requirements({ cpu: "1..2", memory: "0.5GB..1GB" }) }
      const pd = yield* backend.createInstance(offer, instance(job))
      expect(pd.backend).toBe("kubernetes")
      expect(pd.region).toBe("standin")
      expect(pd.hostname).toBe("127.0.0.1")
      const [pod] = standin.pods()
      expect(pod.metadata.name).toBe(pd.instanceId)
      expect(pod.spec.containers[0].image).toBe(busybox)
      expect(pod.spec.containers[0].resources).toEqual({ requests: { cpu: "1", memory: "512Mi", "ephemeral-storage": "102400Mi" }, limits: { cpu: "2", memory: "1024Mi" } })
      const client = RunnerTransport.fetchClient("test", `http://${pd.hostname}:${pd.runnerPort}`)
      const health = yield* client.fetch("/api/healthcheck").pipe(
        Effect.flatMap((r) => (r.ok ? Effect.promise(() => r.json()) : Effect.fail(new Error(`HTTP ${r.status}`)))),
        Effect.timeout("5 seconds"),
        Effect.retry(Schedule.spaced("250 millis").pipe(Schedule.intersect(Schedule.recurs(120))))
      )
      expect(health).toMatchObject({ service: "dstack-ts-runner" })
      // The pod's log (the runner's ready line) through the API, as `kubectl logs` reads it.
      const kc = new k8s.KubeConfig()
      kc.loadFromString(standin.kubeconfig())
      const log = yield* Effect.promise(() => kc.makeApiClient(k8s.CoreV1Api).readNamespacedPodLog({ name: pd.instanceId, namespace: "default", container: "job" }))
      expect(log).toContain(`{"host":"0.0.0.0","port":10999}`)
      // Followed: the stream stays open and carries what the container writes.
      const followed = yield* Effect.promise(() => new Promise<string>((resolve, reject) => {
        let text = ""
        const sink = new PassThrough()
        sink.on("data", (chunk: Buffer) => {
          text += chunk.toString("utf8")
          if (text.includes("10999")) {
            controller.then((c) => c.abort())
            resolve(text)
          }
        })
        const controller = new k8s.Log(kc).log("default", pd.instanceId, "job", sink, { follow: true })
        controller.catch(reject)
      }))
      expect(followed).toContain(`{"host":"0.0.0.0","port":10999}`)
      yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      expect([standin.pods(), standin.services()]).toEqual([[], []])
      yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
    }).pipe(Effect.scoped), 120_000)

  const healthOf = (pd: { readonly hostname: string | null; readonly runnerPort?: number | undefined }) =>
    RunnerTransport.fetchClient("test", `http://${pd.hostname}:${pd.runnerPort}`).fetch("/api/healthcheck").pipe(
      Effect.flatMap((r) => (r.ok ? Effect.promise(() => r.json()) : Effect.fail(new Error(`HTTP ${r.status}`)))),
      Effect.timeout("5 seconds"),
      Effect.retry(Schedule.spaced("250 millis").pipe(Schedule.intersect(Schedule.recurs(120))))
    )

  it.live("a multi-node job's pods are made together, one per node (anti-affinity), each at its pod IP; terminating each rank deletes its pod", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      expect(backend.createInstanceGroup).toBeDefined()
      const offer = yield* offerFor(backend, "cpu-node")
      const job = { jobName: "pair-0-0", image: busybox, requirements: requirements({ cpu: "1..", memory: "0.5GB.." }), nodes: 2 }
      const configs = [0, 1].map((rank) => ({ ...instance(job), instanceName: `pair-${rank}`, instanceId: `3333333${rank}-3333-4333-8333-333333333333` }))
      const pds = yield* backend.createInstanceGroup!(offer, configs)
      expect(pds.map((pd) => pd.instanceId)).toEqual([expect.stringMatching(/^dstack-pair-0-/), expect.stringMatching(/^dstack-pair-1-/)])
      const pods = standin.pods()
      const byName = new Map(pods.map((p) => [p.metadata.name, p]))
      // Each rank on a node of its own, whatever node the offer named.
      expect(new Set(pds.map((pd) => byName.get(pd.instanceId)!.spec.nodeName)).size).toBe(2)
      expect(pds.map((pd) => pd.instanceType.name).sort()).toEqual(["cpu-node", "gpu-node"])
      // The address the other nodes use is the pod's IP, not the node's.
      for (const pd of pds) {
        expect(pd.internalIp).toBe(byName.get(pd.instanceId)!.status.podIP)
        expect(pd.internalIp).not.toBe(pd.hostname)
        expect(byName.get(pd.instanceId)!.metadata.labels["dstack-ts/group"]).toBe(pds[0].instanceId)
      }
      expect(new Set(pds.map((pd) => pd.internalIp)).size).toBe(2)
      for (const pd of pds) expect(yield* healthOf(pd)).toMatchObject({ service: "dstack-ts-runner" })
      for (const pd of [...pds].reverse()) yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }).pipe(Effect.scoped), 120_000)

  it.live("a multi-node job with more nodes than the cluster has is NoCapacity and leaves no pod (all or nothing)", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith({ scheduling_timeout_seconds: 2 })
      const offer = yield* offerFor(backend, "cpu-node")
      const job = { jobName: "trio-0-0", image: busybox, requirements: requirements({ cpu: "1..", memory: "0.5GB.." }), nodes: 3 }
      const configs = [0, 1, 2].map((rank) => ({ ...instance(job), instanceName: `trio-${rank}`, instanceId: `4444444${rank}-4444-4444-8444-444444444444` }))
      const error = yield* failureOf(backend.createInstanceGroup!(offer, configs))
      expect(error.reason).toBe("NoCapacity")
      expect(error.message).toMatch(/the pods of a multi-node job were not scheduled within 2s \(3 pods on distinct nodes, context standin\): dstack-trio-2-\w+: 0\/2 nodes are available: node\(s\) didn't match pod anti-affinity rules/)
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }).pipe(Effect.scoped), 60_000)

  const rawApi = () => {
    const kc = new k8s.KubeConfig()
    kc.loadFromString(standin.kubeconfig())
    return kc.makeApiClient(k8s.CoreV1Api)
  }

  it.live("a job's ports get NodePorts on its pod's service, made before the pod; the runner reports them; terminating deletes pod and service", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      const offer = yield* offerFor(backend, "cpu-node")
      const job = { jobName: "web-0", image: busybox, requirements: requirements({ cpu: "1..", memory: "0.5GB.." }), ports: [8000, 9000] }
      const pd = yield* backend.createInstance(offer, instance(job))
      const [service] = standin.services()
      expect(service.metadata.name).toBe(pd.instanceId)
      const byPort = new Map<number, number>(service.spec.ports.map((p: any) => [p.port, p.nodePort]))
      expect([...byPort.keys()]).toEqual([10999, 8000, 9000])
      expect(pd.runnerPort).toBe(byPort.get(10999))
      const [pod] = standin.pods()
      expect(pod.spec.containers[0].env).toContainEqual({ name: "DSTACK_RUNNER_PUBLISHED_PORTS", value: JSON.stringify({ 8000: byPort.get(8000), 9000: byPort.get(9000) }) })
      expect(JSON.parse(pd.backendData!)).toEqual({ namespace: "default", pod: pd.instanceId, uid: pod.metadata.uid })
      // The runner in the pod says where the job's ports are reached: what attach and the services proxy ask.
      yield* healthOf(pd)
      const data = yield* RunnerTransport.fetchClient("test", `http://${pd.hostname}:${pd.runnerPort}`).fetch("/api/job_runtime_data").pipe(Effect.flatMap((r) => Effect.promise(() => r.json())))
      expect(data).toEqual({ network_mode: "host", ports: { 8000: byPort.get(8000), 9000: byPort.get(9000) } })
      yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }).pipe(Effect.scoped), 120_000)

  it.live("a pod of the job's name made by someone else is neither taken nor deleted: creation fails naming it and deletes only its own service; a later terminate leaves it", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      const offer = yield* offerFor(backend, "cpu-node")
      const config = instance({ jobName: "taken-0", image: busybox, requirements: requirements({ cpu: "1..", memory: "0.5GB.." }), ports: [8000] })
      const name = PodSpec.dnsLabel(`dstack-${config.instanceName}`, config.instanceId.replace(/-/g, "").slice(0, 8))
      // Someone else's pod of that name; it asks for more than any node has, so it stays pending.
      const api = rawApi()
      yield* Effect.promise(() => api.createNamespacedPod({ namespace: "default", body: { metadata: { name }, spec: { containers: [{ name: "c", image: busybox, resources: { requests: { cpu: "64" } } }] } } }))
      const error = yield* failureOf(backend.createInstance(offer, config))
      expect(error.reason).toBe("AlreadyExists")
      expect(error.message).toMatch(new RegExp(`creating pod ${name} in namespace default: .*answered 409: pods "${name}" already exists`))
      expect(standin.services()).toEqual([])
      expect(standin.pods().map((p) => p.metadata.name)).toEqual([name])

      // Ours made and terminated, then someone else's of the same name: terminating ours again leaves it.
      yield* Effect.promise(() => api.deleteNamespacedPod({ name, namespace: "default" }))
      const pd = yield* backend.createInstance(offer, config)
      yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      yield* Effect.promise(() => api.createNamespacedPod({ namespace: "default", body: { metadata: { name }, spec: { containers: [{ name: "c", image: busybox, resources: { requests: { cpu: "64" } } }] } } }))
      yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      expect(standin.pods().map((p) => p.metadata.name)).toEqual([name])
      yield* Effect.promise(() => api.deleteNamespacedPod({ name, namespace: "default" }))
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }).pipe(Effect.scoped), 120_000)

  it.live("the same instance made again at once under the name of its pod just deleted gets a pod of its own, followed by its uid", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      const offer = yield* offerFor(backend, "cpu-node")
      const config = instance({ jobName: "again-0", image: busybox, requirements: requirements({ cpu: "1..", memory: "0.5GB.." }) })
      const first = yield* backend.createInstance(offer, config)
      yield* healthOf(first)
      yield* backend.terminateInstance(first.instanceId, first.region, first.backendData)
      const second = yield* backend.createInstance(yield* offerFor(backend, "gpu-node"), config)
      expect(second.instanceId).toBe(first.instanceId)
      const [pod] = standin.pods()
      expect(JSON.parse(second.backendData!).uid).toBe(pod.metadata.uid)
      expect(JSON.parse(second.backendData!).uid).not.toBe(JSON.parse(first.backendData!).uid)
      expect([pod.spec.nodeName, second.instanceType.name]).toEqual(["gpu-node", "gpu-node"])
      expect(yield* healthOf(second)).toMatchObject({ service: "dstack-ts-runner" })
      yield* backend.terminateInstance(second.instanceId, second.region, second.backendData)
      expect([standin.pods(), standin.services()]).toEqual([[], []])
    }).pipe(Effect.scoped), 120_000)

  it.scoped("an offer of another backend or an unknown context is refused", () =>
    Effect.gen(function*() {
      const backend = yield* backendWith()
      const offer = yield* offerFor(backend, "cpu-node")
      const job = { jobName: "j", image: busybox, requirements: requirements({ cpu: 1 }) }
      expect((yield* failureOf(backend.createInstance(new InstanceOffer({ ...offer, backend: "aws" }), instance(job)))).reason).toBe("Invalid")
      expect((yield* failureOf(backend.createInstance(new InstanceOffer({ ...offer, region: "elsewhere" }), instance(job)))).message).toMatch(/no context elsewhere/)
    }))
})

describeWith("docker", dockerReason === undefined, dockerReason ?? "", () => {
  // The port's conformance suite (no provisioning: an instance needs a job with an image).
  testBackend(
    "kubernetes (stand-in API server)",
    Layer.scoped(
      Backend.Backend,
      Effect.gen(function*() {
        const standin = yield* Effect.acquireRelease(Effect.promise(() => startK8sStandin()), (s) => Effect.promise(() => s.close()))
        return yield* KubernetesBackend.fromConfig({ kubeconfig: { data: standin.kubeconfig() }, runner_image: "unused:1" })
      })
    ),
    { requirements: requirements({ cpu: "1..", memory: "1GB..", disk: "1GB.." }), provision: false }
  )
})
