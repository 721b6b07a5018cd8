// The `kubernetes` transport through the Kubernetes API stand-in's pods/portforward
// (test/support/k8s-standin.ts: a real WebSocket upgrade, the kubelet's v4.channel.k8s.io
// framing, bytes relayed to the pod's port). The RunnerTransport conformance suite runs through
// a pod on the host's network (so the suite's runners on this machine's loopback are its
// ports); a job's pod made with `pod_access: port_forward` on nodes whose address the server
// cannot reach answers through it; a pod gone and a port nothing listens on fail clearly.
import * as net from "node:net"
import * as k8s from "@kubernetes/client-node"
import { afterAll, beforeAll, describe, expect, it } from "@effect/vitest"
import { type Backend, Requirements, RunnerTransport } from "@dstack-ts/core"
import { freeLoopbackPort, listenLoopback, testTransport } from "@dstack-ts/core/testing"
import { Effect, Either, Layer, Logger, Schedule, Schema } from "effect"
import plugin, { KubernetesBackend, KubernetesTransport, PodRoutes } from "../src/index.ts"
import { describeWith } from "../../../test/support/components.ts"
import { dockerUnavailableReason, ensureBusyboxImage } from "../../../test/support/docker.ts"
import { type K8sStandin, startK8sStandin } from "../../../test/support/k8s-standin.ts"
import { ensureK8sRunnerImage } from "../../../test/support/k8s-runner-image.ts"

const requirements = (resources: Record<string, unknown>): Requirements => Schema.decodeUnknownSync(Requirements)({ resources })

const KUBECONFIG = "apiVersion: v1\nkind: Config\ncurrent-context: a\nclusters:\n- name: a\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: a\n  context:\n    cluster: a\n    user: a\nusers:\n- name: a\n  user:\n    token: t\n"

const failureOf = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.map(Effect.either(self), (e) => {
    if (Either.isRight(e)) throw new Error(`expected a failure, got ${JSON.stringify(e.right).slice(0, 1500)}`)
    return e.left
  })

describe("pod addresses and configuration", () => {
  it("a pod's host name names its namespace, pod and context; a node's address is no pod", () => {
    const address = { namespace: "team-a", pod: "dstack-train-0-1a2b3c4d", region: "arn:aws:eks:eu-west-1:1234:cluster/gpu@prod" }
    expect(PodRoutes.podHost(address)).toBe("pod/team-a/dstack-train-0-1a2b3c4d@arn:aws:eks:eu-west-1:1234:cluster/gpu@prod")
    expect(PodRoutes.parsePodHost(PodRoutes.podHost(address))).toEqual(address)
    for (const other of ["10.0.0.4", "node-1.example.com", "pod/only-one-part", "", "[::1]"]) expect(PodRoutes.parsePodHost(other)).toBeUndefined()
  })

  it("the plugin contributes the kubernetes transport beside the backend (the engine picks a transport named like the backend)", () => {
    expect(Object.keys(plugin.transports ?? {})).toEqual(["kubernetes"])
  })

  it.scoped("pod_access takes node_port or port_forward; proxy_jump with port_forward is refused, naming both", () =>
    Effect.gen(function*() {
      const make = (extra: Record<string, unknown>) => KubernetesBackend.fromConfig({ type: "kubernetes", runner_image: "runner:1", kubeconfig: { data: KUBECONFIG }, ...extra })
      const bad = yield* failureOf(make({ pod_access: "tunnel" }))
      expect(bad.reason).toBe("Invalid")
      expect(bad.message).toBe("invalid kubernetes backend configuration: pod_access: expected \"node_port\" or \"port_forward\", got \"tunnel\"")
      const jump = yield* failureOf(make({ pod_access: "port_forward", proxy_jump: { hostname: "1.2.3.4" } }))
      expect(jump.message).toMatch(/proxy_jump \(context a\): not used with pod_access: port_forward/)
      yield* make({ pod_access: "port_forward" })
      yield* make({ pod_access: "node_port" })
    }))

  it.effect("a pod of a context no loaded backend reaches is a retryable Transport failure naming it", () =>
    Effect.gen(function*() {
      const transport = KubernetesTransport.make(PodRoutes.make())
      const error = yield* failureOf(Effect.scoped(transport.connect({ hostname: "pod/default/dstack-x-1@elsewhere", runnerPort: 10999 })))
      expect(error.reason).toBe("Transport")
      expect(error.message).toMatch(/pod default\/dstack-x-1 of context elsewhere: no kubernetes backend with pod_access: port_forward for context elsewhere/)
    }))
})

const dockerReason = await dockerUnavailableReason()

describeWith("docker", dockerReason === undefined, dockerReason ?? "", () => {
  /** A pod on the host's network: its ports are this machine's, where the suite's runners listen. */
  const HOST_POD = "host-net"
  let standin: K8sStandin
  let runnerImage: string
  let busybox: string
  const routes = PodRoutes.make()
  const transport = KubernetesTransport.make(routes)
  const hostPod = PodRoutes.podHost({ namespace: "default", pod: HOST_POD, region: "standin" })

  const backendConfig = () => ({ type: "kubernetes", kubeconfig: { data: standin.kubeconfig() }, runner_image: runnerImage, scheduling_timeout_seconds: 10, pod_access: "port_forward" })

  beforeAll(async () => {
    ;[runnerImage, busybox] = await Promise.all([ensureK8sRunnerImage(), ensureBusyboxImage()])
    // Nodes at a TEST-NET address: nothing here reaches them but the API.
    standin = await startK8sStandin({ nodeAddress: "192.0.2.1" })
    // The backend registers its context with the routes the transport reads.
    await Effect.runPromise(Effect.scoped(KubernetesBackend.factory(routes)(backendConfig())))
    const kc = new k8s.KubeConfig()
    kc.loadFromString(standin.kubeconfig())
    const api = kc.makeApiClient(k8s.CoreV1Api)
    await api.createNamespacedPod({ namespace: "default", body: { metadata: { name: HOST_POD }, spec: { hostNetwork: true, containers: [{ name: "c", image: busybox, command: ["sleep", "3600"] }] } } })
    for (let i = 0; i < 300; i++) {
      if ((await api.readNamespacedPod({ name: HOST_POD, namespace: "default" })).status?.phase === "Running") return
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`pod ${HOST_POD} did not run`)
  }, 180_000)
  afterAll(async () => {
    await standin?.close()
  })

  testTransport("kubernetes (port-forward through the API stand-in)", Layer.sync(RunnerTransport.RunnerTransport, () => transport), {
    listen: (server) => Effect.map(listenLoopback(server), (target) => ({ ...target, hostname: hostPod })),
    unreachable: Effect.map(freeLoopbackPort, (runnerPort) => ({ hostname: hostPod, runnerPort })),
    halfClose: false
  })

  it.live("with several API servers registered for a context and namespace, the one that has the pod is used; none that has it is NotFound", () =>
    Effect.gen(function*() {
      const shared = PodRoutes.make()
      const kc = new k8s.KubeConfig()
      kc.loadFromString(standin.kubeconfig())
      // Another project's cluster under the same context and namespace names, whose API refuses everything.
      const other = new k8s.KubeConfig()
      other.loadFromString(standin.kubeconfig({ token: standin.forbiddenToken, server: standin.url.replace("127.0.0.1", "localhost") }))
      shared.register({ region: "standin", namespace: "default", server: "https://other.example", kubeConfig: other, api: other.makeApiClient(k8s.CoreV1Api) })
      shared.register({ region: "standin", namespace: "default", server: standin.url, kubeConfig: kc, api: kc.makeApiClient(k8s.CoreV1Api) })
      const echo = net.createServer((socket) => socket.pipe(socket))
      const target = yield* listenLoopback(echo)
      const forwarded = yield* KubernetesTransport.make(shared).forward({ ...target, hostname: hostPod }, 0, target.runnerPort)
      const back = yield* Effect.promise(() => new Promise<string>((resolve, reject) => {
        const socket = net.connect({ host: forwarded.localHost, port: forwarded.localPort }, () => socket.write("ping"))
        socket.on("data", (d: Buffer) => {
          resolve(d.toString())
          socket.destroy()
        })
        socket.on("error", reject)
      }))
      expect(back).toBe("ping")
      const missing = yield* failureOf(KubernetesTransport.make(shared).connect({ hostname: "pod/default/no-such-pod@standin", runnerPort: 10999 }))
      expect(missing.reason).toBe("NotFound")
      expect(missing.message).toMatch(/pod default\/no-such-pod of context standin: none of the 2 API servers registered for it has the pod/)
    }).pipe(Effect.scoped), 60_000)

  it.live("credentials the API refuses: a request says so, naming the rights the user needs", () =>
    Effect.gen(function*() {
      const refused = PodRoutes.make()
      const kc = new k8s.KubeConfig()
      kc.loadFromString(standin.kubeconfig({ token: standin.forbiddenToken }))
      refused.register({ region: "standin", namespace: "default", server: standin.url, kubeConfig: kc, api: kc.makeApiClient(k8s.CoreV1Api) })
      const client = yield* KubernetesTransport.make(refused).connect({ hostname: hostPod, runnerPort: 10999 })
      const error = yield* failureOf(client.fetch("/api/healthcheck"))
      expect(error.reason).toBe("Transport")
      expect(error.message).toMatch(/port-forward to port 10999 of pod default\/host-net through the Kubernetes API at https:\/\/127\.0\.0\.1:\d+: the kubeconfig's credentials were refused \(403\); the user needs pods\/portforward get and create/)
    }).pipe(Effect.scoped), 60_000)

  const healthOf = (client: RunnerTransport.RunnerClient) =>
    client.fetch("/api/healthcheck").pipe(
      Effect.flatMap((r) => (r.ok ? Effect.promise(() => r.json()) : Effect.fail(new Error(`HTTP ${r.status}`)))),
      Effect.timeout("5 seconds"),
      Effect.retry(Schedule.spaced("250 millis").pipe(Schedule.intersect(Schedule.recurs(120))))
    )

  it.live("a job's pod with pod_access: port_forward has no service and a pod host name; its runner answers through the API, also through a forwarded port", () =>
    Effect.gen(function*() {
      const backend = yield* KubernetesBackend.factory(routes)(backendConfig())
      const { offers } = yield* backend.getOffers(requirements({ cpu: "1..", memory: "0.5GB.." }))
      const job = { jobName: "pf-0", image: busybox, requirements: requirements({ cpu: "1..", memory: "0.5GB.." }), ports: [8000] }
      const config: Backend.InstanceConfiguration = { projectName: "main", instanceName: "pf-0", instanceId: crypto.randomUUID(), sshKeys: [], job }
      const pd = yield* backend.createInstance(offers[0], config)
      expect(pd.hostname).toBe(`pod/default/${pd.instanceId}@standin`)
      expect(pd.runnerPort).toBe(10999)
      expect(standin.services()).toEqual([])
      const pod = standin.pods().find((p) => p.metadata.name === pd.instanceId)!
      // Nothing is published: the runner reports the job's ports as they are.
      expect(pod.spec.containers[0].env.map((e: { name: string }) => e.name)).not.toContain("DSTACK_RUNNER_PUBLISHED_PORTS")
      const target = { hostname: pd.hostname!, runnerPort: pd.runnerPort!, instanceId: pd.instanceId }
      expect(yield* healthOf(yield* transport.connect(target))).toMatchObject({ service: "dstack-ts-runner" })
      const forwarded = yield* transport.forward(target, 0, 10999)
      expect(forwarded.localHost).toBe("127.0.0.1")
      expect(yield* healthOf(RunnerTransport.fetchClient("test", `http://127.0.0.1:${forwarded.localPort}`))).toMatchObject({ service: "dstack-ts-runner" })

      // A port nothing listens on: the connection closes without data and the API's reason is logged.
      const logs: Array<string> = []
      const logger = Logger.make(({ message }) => void logs.push(Array.isArray(message) ? message.join(" ") : String(message)))
      const dead = yield* transport.forward(target, 0, 8000).pipe(Effect.provide(Logger.replace(Logger.defaultLogger, logger)))
      const got = yield* Effect.promise(() => new Promise<string>((resolve) => {
        const chunks: Array<Buffer> = []
        const socket = net.connect({ host: dead.localHost, port: dead.localPort }, () => socket.write("GET / HTTP/1.0\r\n\r\n"))
        socket.on("data", (c: Buffer) => chunks.push(c))
        socket.on("error", () => undefined)
        socket.on("close", () => resolve(Buffer.concat(chunks).toString()))
      }))
      expect(got).toBe("")
      yield* Effect.sync(() => logs.join("\n")).pipe(Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (text) => text !== "" }), Effect.timeout("10 seconds"))
      expect(logs.join("\n")).toMatch(new RegExp(`port-forward to port 8000 of pod default/${pd.instanceId}: error forwarding port 8000 to pod ${pd.instanceId}.*connection refused`))

      // The pod gone: a request says so, in the API's words.
      const client = yield* transport.connect(target)
      yield* backend.terminateInstance(pd.instanceId, pd.region, pd.backendData)
      expect(standin.pods().map((p) => p.metadata.name)).toEqual([HOST_POD])
      const gone = yield* failureOf(client.fetch("/api/healthcheck"))
      expect(gone.reason).toBe("Transport")
      expect(gone.message).toMatch(new RegExp(`port-forward to port 10999 of pod default/${pd.instanceId} through the Kubernetes API at https://127.0.0.1:\\d+: the pod does not exist`))
    }).pipe(Effect.scoped), 120_000)
})
