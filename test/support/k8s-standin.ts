// A Kubernetes API server stand-in for the tests: no Kubernetes API server can be installed
// here, so this one speaks the real REST and watch protocol (core/v1 JSON, `?watch=true` chunked
// events, `Status` objects for errors, resourceVersion, bearer tokens) for only what the
// kubernetes backend uses: nodes, namespaces, pods (with logs and `follow`), NodePort services
// (each port's NodePort a TCP relay on 127.0.0.1 to a Running pod of the selector, as
// kube-proxy), the pods/portforward subresource (a WebSocket upgrade speaking
// `v4.channel.k8s.io` as the kubelet does: per port a data and an error channel, each opened
// with the port, bytes relayed to the pod's port) and PersistentVolumeClaims (bound at once,
// each a Docker volume). Its pods are real Docker containers on this machine (init containers,
// emptyDir/hostPath/claim volumes, resource limits, `hostNetwork`); phases and exit codes come
// from them. Images are never pulled.
// It schedules pods by requests against node allocatable, by node selectors/affinity and by
// required pod anti-affinity on the hostname topology.
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import { execFileSync } from "node:child_process"
import * as http from "node:http"
import * as https from "node:https"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import Docker from "dockerode"
import { type WebSocket, WebSocketServer } from "ws"
import { dockerSocketPath } from "./docker.ts"

/** A node of the stand-in's one cluster. */
export interface StandinNode {
  readonly name: string
  /** `capacity` = `allocatable`, as Kubernetes quantities, e.g. `{ cpu: "2", memory: "4Gi", "nvidia.com/gpu": "1" }`. */
  readonly allocatable: Readonly<Record<string, string>>
  readonly labels?: Readonly<Record<string, string>>
}

export interface StandinOptions {
  /** Default: one node `standin-node-0` with 2 CPUs, 4Gi of memory and 100Gi of ephemeral storage. */
  readonly nodes?: ReadonlyArray<StandinNode>
  /** Namespaces that exist (default `["default"]`). */
  readonly namespaces?: ReadonlyArray<string>
  /**
   * The InternalIP the nodes report (default `127.0.0.1`, where the NodePorts listen). Another
   * address (e.g. `192.0.2.1`, TEST-NET) stands for a cluster whose nodes the server cannot reach.
   */
  readonly nodeAddress?: string
}

export interface K8sStandin {
  /** `http://127.0.0.1:PORT`. */
  readonly url: string
  /** A token with every right; and one the stand-in knows but forbids everything to. */
  readonly token: string
  readonly forbiddenToken: string
  /** A kubeconfig (YAML) for this server with context `standin` (namespace `default`), using `token` unless told. */
  readonly kubeconfig: (options?: { readonly token?: string; readonly context?: string; readonly server?: string }) => string
  /** Pods as the API shows them (namespace/name → object). */
  readonly pods: () => ReadonlyArray<Pod>
  /** PersistentVolumeClaims as the API shows them. */
  readonly claims: () => ReadonlyArray<Json>
  /** Services as the API shows them. */
  readonly services: () => ReadonlyArray<Json>
  readonly close: () => Promise<void>
}

type Json = Record<string, any>
type Pod = Json

const STANDIN_LABEL = "dstack-ts.k8s-standin"
/** The WebSocket protocol of pods/portforward (the kubelet's; `v5` is for exec and attach only). */
const PORT_FORWARD_PROTOCOL = "v4.channel.k8s.io"

const binarySuffixes: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 }
const decimalSuffixes: Record<string, number> = { m: 1e-3, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12 }

/** A Kubernetes quantity (`500m`, `2`, `512Mi`, `1G`) as a number; NaN when malformed. */
export const parseQuantity = (q: string | number): number => {
  if (typeof q === "number") return q
  const m = /^([0-9.]+)([A-Za-z]*)$/.exec(q.trim())
  if (!m) return NaN
  const n = Number(m[1])
  const suffix = m[2]
  if (suffix === "") return n
  if (suffix in binarySuffixes) return n * binarySuffixes[suffix]
  if (suffix in decimalSuffixes) return n * decimalSuffixes[suffix]
  return NaN
}

const status = (code: number, reason: string, message: string, details?: Json): Json => ({
  kind: "Status",
  apiVersion: "v1",
  metadata: {},
  status: "Failure",
  message,
  reason,
  ...(details ? { details } : {}),
  code
})

const send = (res: http.ServerResponse, code: number, body: Json) => {
  res.writeHead(code, { "content-type": "application/json" })
  res.end(JSON.stringify(body))
}

const readBody = (req: http.IncomingMessage): Promise<string> =>
  new Promise((resolve, reject) => {
    let body = ""
    req.setEncoding("utf8")
    req.on("data", (c: string) => (body += c))
    req.on("end", () => resolve(body))
    req.on("error", reject)
  })

const matchesLabels = (labels: Json | undefined, selector: string | null): boolean => {
  if (!selector) return true
  return selector.split(",").every((term) => {
    const [k, v] = term.split("=")
    return (labels ?? {})[k] === v
  })
}

const matchesFields = (obj: Json, selector: string | null): boolean => {
  if (!selector) return true
  return selector.split(",").every((term) => {
    const [k, v] = term.split("=")
    if (k === "metadata.name") return obj.metadata.name === v
    if (k === "metadata.namespace") return obj.metadata.namespace === v
    return false
  })
}

/** Starts the stand-in; Docker must be reachable. */
export const startK8sStandin = async (options: StandinOptions = {}): Promise<K8sStandin> => {
  const docker = new Docker({ socketPath: dockerSocketPath() })
  const token = `standin-${randomUUID()}`
  const forbiddenToken = `standin-forbidden-${randomUUID()}`
  const nodes: ReadonlyArray<StandinNode> = options.nodes ?? [{ name: "standin-node-0", allocatable: { cpu: "2", memory: "4Gi", "ephemeral-storage": "100Gi", pods: "110" } }]
  const namespaces = new Set(options.namespaces ?? ["default"])
  const nodeAddress = options.nodeAddress ?? "127.0.0.1"
  const pods = new Map<string, Pod>()
  const services = new Map<string, { obj: Json; servers: Array<net.Server> }>()
  // By pod uid, not name: a pod made under the name of one being deleted has its own.
  const containers = new Map<string, Array<string>>() // pod uid → docker container ids
  const volumes = new Map<string, Array<string>>() // pod uid → docker volume names (its emptyDirs)
  const claims = new Map<string, Json>() // namespace/name → PersistentVolumeClaim; its data is a docker volume
  const sockets = new Set<net.Socket>()
  let resourceVersion = 1
  const history: Array<{ rv: number; type: string; object: Json }> = []
  const watchers = new Set<{ ns: string | undefined; labels: string | null; fields: string | null; res: http.ServerResponse }>()
  const closing = { value: false }

  const key = (ns: string, name: string) => `${ns}/${name}`

  const emit = (type: "ADDED" | "MODIFIED" | "DELETED", pod: Pod) => {
    const rv = ++resourceVersion
    pod.metadata.resourceVersion = String(rv)
    const object = structuredClone(pod)
    history.push({ rv, type, object })
    if (history.length > 1000) history.shift()
    for (const w of watchers) {
      if ((w.ns === undefined || w.ns === object.metadata.namespace) && matchesLabels(object.metadata.labels, w.labels) && matchesFields(object, w.fields)) {
        w.res.write(`${JSON.stringify({ type, object })}\n`)
      }
    }
  }

  const podRequests = (pod: Pod): Record<string, number> => {
    const total: Record<string, number> = {}
    for (const c of pod.spec.containers ?? []) {
      const requests = { ...(c.resources?.limits ?? {}), ...(c.resources?.requests ?? {}) }
      for (const [r, q] of Object.entries(requests)) total[r] = (total[r] ?? 0) + parseQuantity(q as string)
    }
    return total
  }

  /** Why the node cannot take the pod by labels and affinities, or undefined when it can. */
  const nodeMismatch = (node: StandinNode, pod: Pod): string | undefined => {
    const labels: Json = { "kubernetes.io/hostname": node.name, ...(node.labels ?? {}) }
    const AFFINITY = "node(s) didn't match Pod's node affinity/selector"
    for (const [k, v] of Object.entries(pod.spec.nodeSelector ?? {})) if (labels[k] !== v) return AFFINITY
    const terms: Array<Json> | undefined = pod.spec.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms
    // Terms are ORed, expressions within a term ANDed.
    const matched = terms === undefined || terms.length === 0 || terms.some((term) =>
      (term.matchExpressions ?? []).every((e: Json) => {
        const value = labels[e.key]
        if (e.operator === "Exists") return value !== undefined
        if (e.operator === "DoesNotExist") return value === undefined
        if (e.operator === "In") return value !== undefined && (e.values ?? []).includes(value)
        if (e.operator === "NotIn") return value === undefined || !(e.values ?? []).includes(value)
        return false
      })
    )
    if (!matched) return AFFINITY
    // Required pod anti-affinity: no live pod matching a term's labels on the node (the
    // stand-in knows the hostname topology only).
    for (const term of pod.spec.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []) {
      if (term.topologyKey !== "kubernetes.io/hostname") return `topology key ${term.topologyKey} is not known to the stand-in`
      const selector = Object.entries(term.labelSelector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`).join(",")
      const clash = [...pods.values()].some((other) =>
        other !== pod && other.spec.nodeName === node.name && other.metadata.namespace === pod.metadata.namespace &&
        other.status.phase !== "Succeeded" && other.status.phase !== "Failed" && matchesLabels(other.metadata.labels, selector))
      if (clash) return "node(s) didn't match pod anti-affinity rules"
    }
    return undefined
  }

  /** Why no node fits, or the node. */
  const schedule = (pod: Pod): { node: StandinNode } | { message: string } => {
    for (const v of pod.spec.volumes ?? []) {
      if (v.persistentVolumeClaim !== undefined && !claims.has(key(pod.metadata.namespace, v.persistentVolumeClaim.claimName))) {
        return { message: `persistentvolumeclaim "${v.persistentVolumeClaim.claimName}" not found.` }
      }
    }
    const wants = podRequests(pod)
    const reasons: Array<string> = []
    for (const node of nodes) {
      const mismatch = nodeMismatch(node, pod)
      if (mismatch !== undefined) {
        reasons.push(mismatch)
        continue
      }
      const used: Record<string, number> = {}
      for (const other of pods.values()) {
        if (other.spec.nodeName !== node.name || other.status.phase === "Succeeded" || other.status.phase === "Failed") continue
        for (const [r, n] of Object.entries(podRequests(other))) used[r] = (used[r] ?? 0) + n
      }
      const short = Object.entries(wants).filter(([r, n]) => n > 0 && n + (used[r] ?? 0) > parseQuantity(node.allocatable[r] ?? "0"))
      if (short.length === 0) return { node }
      reasons.push(...short.map(([r]) => `Insufficient ${r}`))
    }
    return { message: `0/${nodes.length} nodes are available: ${[...new Set(reasons)].join(", ")}.` }
  }

  const setCondition = (pod: Pod, type: string, value: "True" | "False", reason?: string, message?: string) => {
    const conditions: Array<Json> = (pod.status.conditions ??= [])
    const rest = conditions.filter((c) => c.type !== type)
    pod.status.conditions = [...rest, { type, status: value, lastTransitionTime: new Date().toISOString(), ...(reason ? { reason } : {}), ...(message ? { message } : {}) }]
  }

  const waiting = (pod: Pod, name: string, reason: string, message: string, init = false) => {
    const field = init ? "initContainerStatuses" : "containerStatuses"
    pod.status[field] = [{ name, ready: false, restartCount: 0, image: "", state: { waiting: { reason, message } } }]
  }

  // This very pod deleted (a pod of the same name made since is another one), or the stand-in closed.
  const gone = (pod: Pod) => pods.get(key(pod.metadata.namespace, pod.metadata.name)) !== pod || closing.value

  /** Runs one container of a pod to its end (init) or starts it (main). */
  const createContainer = async (pod: Pod, c: Json, network?: string) => {
    const k = key(pod.metadata.namespace, pod.metadata.name)
    const vols = new Map<string, string>()
    const mounts = new Map<string, { Type: "volume" | "bind"; Source: string }>()
    for (const v of pod.spec.volumes ?? []) {
      if (v.emptyDir !== undefined) {
        vols.set(v.name, `k8s-standin-${pod.metadata.uid}-${v.name}`)
        mounts.set(v.name, { Type: "volume", Source: vols.get(v.name)! })
      } else if (v.persistentVolumeClaim !== undefined) {
        mounts.set(v.name, { Type: "volume", Source: claimVolume(pod.metadata.namespace, v.persistentVolumeClaim.claimName) })
      } else if (v.hostPath !== undefined) {
        // The stand-in's nodes are this machine: a hostPath is a directory here.
        if (v.hostPath.type === "DirectoryOrCreate") fs.mkdirSync(v.hostPath.path, { recursive: true })
        mounts.set(v.name, { Type: "bind", Source: v.hostPath.path })
      }
    }
    const limits = c.resources?.limits ?? {}
    const container = await docker.createContainer({
      Image: c.image,
      ...(c.command ? { Entrypoint: c.command } : {}),
      ...(c.args ? { Cmd: c.args } : {}),
      Env: (c.env ?? []).map((e: Json) => `${e.name}=${e.value ?? ""}`),
      ...(c.workingDir ? { WorkingDir: c.workingDir } : {}),
      Labels: { [STANDIN_LABEL]: k },
      HostConfig: {
        Mounts: (c.volumeMounts ?? []).map((m: Json) => {
          const mount = mounts.get(m.name)
          if (mount === undefined) throw new Error(`volume ${m.name} is not a volume of the pod the stand-in has (emptyDir, hostPath, persistentVolumeClaim)`)
          return { ...mount, Target: m.mountPath, ...(m.readOnly === true ? { ReadOnly: true } : {}) }
        }),
        ...(limits.cpu ? { NanoCpus: Math.round(parseQuantity(limits.cpu) * 1e9) } : {}),
        ...(limits.memory ? { Memory: Math.round(parseQuantity(limits.memory)) } : {}),
        ...(network ? { NetworkMode: network } : pod.spec.hostNetwork === true ? { NetworkMode: "host" } : {})
      }
    })
    const uid: string = pod.metadata.uid
    containers.set(uid, [...(containers.get(uid) ?? []), container.id])
    volumes.set(uid, [...vols.values()])
    // Deleted (or the stand-in closed) while the container was being created: nothing may outlive it.
    if (gone(pod)) {
      await removeDocker(uid)
      throw new Error(`pod ${k} was deleted`)
    }
    return container
  }

  const terminated = (name: string, exitCode: number, startedAt: string) => ({
    name,
    ready: false,
    restartCount: 0,
    image: "",
    state: { terminated: { exitCode, reason: exitCode === 0 ? "Completed" : "Error", startedAt, finishedAt: new Date().toISOString() } }
  })

  const imageMissing = async (image: string) => {
    try {
      await docker.getImage(image).inspect()
      return false
    } catch {
      return true
    }
  }

  /** Starts a scheduled pod: init containers in order, then its one container; phases follow them. */
  const run = async (pod: Pod) => {
    for (const c of [...(pod.spec.initContainers ?? []), ...pod.spec.containers]) {
      if (await imageMissing(c.image)) {
        waiting(pod, c.name, "ErrImageNeverPull", `image ${c.image} is not on this machine and the stand-in never pulls`)
        emit("MODIFIED", pod)
        return
      }
    }
    for (const c of pod.spec.initContainers ?? []) {
      if (gone(pod)) return
      const started = new Date().toISOString()
      const container = await createContainer(pod, c)
      await container.start()
      const { StatusCode } = await container.wait()
      if (gone(pod)) return
      pod.status.initContainerStatuses = [...(pod.status.initContainerStatuses ?? []), terminated(c.name, StatusCode, started)]
      if (StatusCode !== 0) {
        pod.status.phase = "Failed"
        emit("MODIFIED", pod)
        return
      }
      emit("MODIFIED", pod)
    }
    if (gone(pod)) return
    const c = pod.spec.containers[0]
    const container = await createContainer(pod, c)
    await container.start()
    const info = await container.inspect()
    if (gone(pod)) return
    const startedAt = info.State.StartedAt
    pod.status.phase = "Running"
    // A pod on the host's network has the node's address (here this machine's loopback).
    const podIP = pod.spec.hostNetwork === true ? "127.0.0.1" : Object.values(info.NetworkSettings.Networks ?? {})[0]?.IPAddress ?? ""
    pod.status.podIP = podIP
    pod.status.podIPs = [{ ip: podIP }]
    pod.status.startTime = startedAt
    pod.status.containerStatuses = [{ name: c.name, ready: true, restartCount: 0, image: c.image, containerID: `docker://${container.id}`, started: true, state: { running: { startedAt } } }]
    setCondition(pod, "Ready", "True")
    emit("MODIFIED", pod)
    const { StatusCode } = await container.wait()
    if (gone(pod)) return
    pod.status.phase = StatusCode === 0 ? "Succeeded" : "Failed"
    pod.status.containerStatuses = [{ ...terminated(c.name, StatusCode, startedAt), image: c.image, containerID: `docker://${container.id}` }]
    setCondition(pod, "Ready", "False", "PodCompleted")
    emit("MODIFIED", pod)
  }

  const trySchedule = (pod: Pod) => {
    const placed = schedule(pod)
    if ("message" in placed) {
      const unchanged = pod.status.conditions?.find((c: Json) => c.type === "PodScheduled")?.message === placed.message
      setCondition(pod, "PodScheduled", "False", "Unschedulable", placed.message)
      if (!unchanged) emit("MODIFIED", pod)
      return
    }
    pod.spec.nodeName = placed.node.name
    pod.status.hostIP = nodeAddress
    setCondition(pod, "PodScheduled", "True")
    emit("MODIFIED", pod)
    run(pod).catch((error: unknown) => {
      if (gone(pod)) return
      pod.status.phase = "Failed"
      pod.status.message = `the stand-in could not run the pod: ${error instanceof Error ? error.message : String(error)}`
      emit("MODIFIED", pod)
    })
  }

  /** The docker volume holding a claim's data. */
  const claimVolume = (ns: string, claim: string) => `k8s-standin-${token.slice(-12)}-pvc-${ns}-${claim}`

  const removeDocker = async (uid: string) => {
    for (const id of containers.get(uid) ?? []) await docker.getContainer(id).remove({ force: true }).catch(() => undefined)
    containers.delete(uid)
    for (const v of volumes.get(uid) ?? []) await docker.getVolume(v).remove().catch(() => undefined)
    volumes.delete(uid)
  }

  const nodeObject = (node: StandinNode) => ({
    kind: "Node",
    apiVersion: "v1",
    metadata: { name: node.name, uid: node.name, resourceVersion: "1", labels: { "kubernetes.io/hostname": node.name, "kubernetes.io/arch": os.arch() === "arm64" ? "arm64" : "amd64", "kubernetes.io/os": "linux", ...(node.labels ?? {}) } },
    spec: {},
    status: {
      capacity: node.allocatable,
      allocatable: node.allocatable,
      addresses: [{ type: "InternalIP", address: nodeAddress }, { type: "Hostname", address: node.name }],
      conditions: [{ type: "Ready", status: "True", reason: "KubeletReady" }],
      nodeInfo: { architecture: os.arch() === "arm64" ? "arm64" : "amd64", operatingSystem: "linux", kubeletVersion: "v1.31.0-standin" }
    }
  })

  /** A NodePort service: the stand-in's kube-proxy listens on 127.0.0.1:nodePort and pipes to a ready pod of its selector. */
  const openNodePort = (svc: Json, port: Json): Promise<net.Server> =>
    new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true }, (client) => {
        sockets.add(client)
        client.on("close", () => sockets.delete(client))
        const target = [...pods.values()].find((p) =>
          p.metadata.namespace === svc.metadata.namespace && p.status.phase === "Running" && p.status.podIP && matchesLabels(p.metadata.labels, Object.entries(svc.spec.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(","))
        )
        if (target === undefined) return void client.destroy()
        const upstream = net.connect({ host: target.status.podIP, port: Number(port.targetPort ?? port.port), allowHalfOpen: true })
        sockets.add(upstream)
        upstream.on("close", () => sockets.delete(upstream))
        client.pipe(upstream)
        upstream.pipe(client)
        upstream.on("error", () => client.destroy())
        client.on("error", () => upstream.destroy())
      })
      server.once("error", reject)
      server.listen({ host: "127.0.0.1", port: port.nodePort }, () => resolve(server))
    })

  const freeNodePort = async (): Promise<number> => {
    for (let i = 0; i < 50; i++) {
      const candidate = 30000 + Math.floor(Math.random() * 2768)
      const ok = await new Promise<boolean>((resolve) => {
        const s = net.createServer()
        s.once("error", () => resolve(false))
        s.listen({ host: "127.0.0.1", port: candidate }, () => s.close(() => resolve(true)))
      })
      if (ok) return candidate
    }
    throw new Error("no free port in 30000-32767")
  }

  const handle = async (req: http.IncomingMessage, res: http.ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://standin")
    const auth = req.headers.authorization
    if (auth !== `Bearer ${token}` && auth !== `Bearer ${forbiddenToken}`) {
      return send(res, 401, status(401, "Unauthorized", "Unauthorized"))
    }
    const parts = url.pathname.split("/").filter(Boolean)
    const method = req.method ?? "GET"
    if (url.pathname === "/version") return send(res, 200, { major: "1", minor: "31", gitVersion: "v1.31.0-standin", platform: "linux/amd64" })
    if (auth === `Bearer ${forbiddenToken}`) {
      return send(res, 403, status(403, "Forbidden", `${url.pathname} is forbidden: User "system:serviceaccount:default:forbidden" cannot ${method.toLowerCase()} it`))
    }
    if (parts[0] !== "api" || parts[1] !== "v1") return send(res, 404, status(404, "NotFound", "the server could not find the requested resource"))
    const rest = parts.slice(2)
    // /api/v1/nodes
    if (rest[0] === "nodes" && rest.length === 1 && method === "GET") {
      return send(res, 200, { kind: "NodeList", apiVersion: "v1", metadata: { resourceVersion: String(resourceVersion) }, items: nodes.map(nodeObject) })
    }
    if (rest[0] === "nodes" && rest.length === 2 && method === "GET") {
      const node = nodes.find((n) => n.name === rest[1])
      if (node === undefined) return send(res, 404, status(404, "NotFound", `nodes "${rest[1]}" not found`, { name: rest[1], kind: "nodes" }))
      return send(res, 200, nodeObject(node))
    }
    if (rest[0] === "namespaces" && rest.length === 2 && method === "GET") {
      if (!namespaces.has(rest[1])) return send(res, 404, status(404, "NotFound", `namespaces "${rest[1]}" not found`, { name: rest[1], kind: "namespaces" }))
      return send(res, 200, { kind: "Namespace", apiVersion: "v1", metadata: { name: rest[1] }, status: { phase: "Active" } })
    }
    if (rest[0] !== "namespaces" || rest.length < 3) return send(res, 404, status(404, "NotFound", "the server could not find the requested resource"))
    const ns = rest[1]
    const resource = rest[2]
    const name = rest[3]
    if (!namespaces.has(ns)) return send(res, 404, status(404, "NotFound", `namespaces "${ns}" not found`, { name: ns, kind: "namespaces" }))

    if (resource === "pods") {
      if (name === undefined && method === "GET") {
        const labels = url.searchParams.get("labelSelector")
        const fields = url.searchParams.get("fieldSelector")
        const selected = () => [...pods.values()].filter((p) => p.metadata.namespace === ns && matchesLabels(p.metadata.labels, labels) && matchesFields(p, fields))
        if (url.searchParams.get("watch") === "true" || url.searchParams.get("watch") === "1") {
          res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" })
          const since = url.searchParams.get("resourceVersion")
          if (since && since !== "0") {
            for (const e of history) {
              if (e.rv > Number(since) && e.object.metadata.namespace === ns && matchesLabels(e.object.metadata.labels, labels) && matchesFields(e.object, fields)) {
                res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`)
              }
            }
          } else {
            for (const p of selected()) res.write(`${JSON.stringify({ type: "ADDED", object: p })}\n`)
          }
          const w = { ns, labels, fields, res }
          watchers.add(w)
          req.on("close", () => watchers.delete(w))
          const timeout = Number(url.searchParams.get("timeoutSeconds") ?? "0")
          if (timeout > 0) setTimeout(() => res.end(), timeout * 1000).unref()
          return
        }
        return send(res, 200, { kind: "PodList", apiVersion: "v1", metadata: { resourceVersion: String(resourceVersion) }, items: selected() })
      }
      if (name === undefined && method === "POST") {
        let body: Json
        try {
          body = JSON.parse(await readBody(req))
        } catch (error) {
          return send(res, 400, status(400, "BadRequest", `the body is not JSON: ${String(error)}`))
        }
        const podName = body?.metadata?.name
        if (typeof podName !== "string" || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(podName) || podName.length > 253) {
          return send(res, 422, status(422, "Invalid", `Pod "${podName}" is invalid: metadata.name: Invalid value`, { name: podName, kind: "Pod" }))
        }
        const containersSpec = body.spec?.containers
        if (!Array.isArray(containersSpec) || containersSpec.length !== 1 || typeof containersSpec[0]?.image !== "string") {
          return send(res, 422, status(422, "Invalid", `Pod "${podName}" is invalid: spec.containers: the stand-in runs pods of exactly one container with an image`, { name: podName, kind: "Pod" }))
        }
        if (pods.has(key(ns, podName))) return send(res, 409, status(409, "AlreadyExists", `pods "${podName}" already exists`, { name: podName, kind: "pods" }))
        const pod: Pod = {
          kind: "Pod",
          apiVersion: "v1",
          metadata: { ...body.metadata, namespace: ns, uid: randomUUID(), creationTimestamp: new Date().toISOString() },
          spec: { restartPolicy: "Always", ...body.spec },
          status: { phase: "Pending", qosClass: "Burstable" }
        }
        pods.set(key(ns, podName), pod)
        emit("ADDED", pod)
        trySchedule(pod)
        return send(res, 201, pod)
      }
      const pod = name === undefined ? undefined : pods.get(key(ns, name))
      if (pod === undefined) return send(res, 404, status(404, "NotFound", `pods "${name}" not found`, { name, kind: "pods" }))
      if (rest.length === 4 && method === "GET") return send(res, 200, pod)
      if (rest.length === 4 && method === "DELETE") {
        // DeleteOptions in the body: `preconditions.uid` (and `resourceVersion`) must match the
        // object, else 409 Conflict and nothing is deleted
        // (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/delete-options/).
        const text = await readBody(req)
        let options: Json = {}
        try {
          options = text.trim() === "" ? {} : JSON.parse(text)
        } catch (error) {
          return send(res, 400, status(400, "BadRequest", `the body is not JSON: ${String(error)}`))
        }
        const pre = options?.preconditions ?? {}
        if (pre.uid !== undefined && pre.uid !== pod.metadata.uid) {
          return send(res, 409, status(409, "Conflict", `Operation cannot be fulfilled on Pod "${name}": Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${pod.metadata.uid}`, { name, kind: "pods" }))
        }
        if (pre.resourceVersion !== undefined && pre.resourceVersion !== pod.metadata.resourceVersion) {
          return send(res, 409, status(409, "Conflict", `Operation cannot be fulfilled on Pod "${name}": Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${pod.metadata.resourceVersion}`, { name, kind: "pods" }))
        }
        pods.delete(key(ns, name!))
        pod.metadata.deletionTimestamp = new Date().toISOString()
        emit("DELETED", pod)
        // The sandbox goes with the pod: its port-forwards end.
        for (const ws of portForwards.get(pod.metadata.uid) ?? []) ws.terminate()
        portForwards.delete(pod.metadata.uid)
        await removeDocker(pod.metadata.uid)
        // Capacity freed: pending pods may fit now.
        for (const other of pods.values()) if (other.spec.nodeName === undefined) trySchedule(other)
        return send(res, 200, pod)
      }
      if (rest[4] === "log" && method === "GET") {
        const ids = containers.get(pod.metadata.uid) ?? []
        const id = ids[ids.length - 1]
        if (id === undefined || pod.status.containerStatuses?.[0]?.state?.waiting) {
          return send(res, 400, status(400, "BadRequest", `container "${pod.spec.containers[0].name}" in pod "${name}" is waiting to start: ${pod.status.containerStatuses?.[0]?.state?.waiting?.reason ?? "ContainerCreating"}`))
        }
        const follow = url.searchParams.get("follow") === "true"
        if (!follow) {
          // Without follow the Engine answers the whole log at once, in its multiplexed frames
          // (8-byte header: stream, 3 zero bytes, big-endian length).
          const all = await docker.getContainer(id).logs({ follow: false, stdout: true, stderr: true })
          const parts: Array<Buffer> = []
          for (let at = 0; at + 8 <= all.length;) {
            const size = all.readUInt32BE(at + 4)
            parts.push(all.subarray(at + 8, at + 8 + size))
            at += 8 + size
          }
          res.writeHead(200, { "content-type": "text/plain" })
          return void res.end(Buffer.concat(parts))
        }
        const stream = (await docker.getContainer(id).logs({ follow: true, stdout: true, stderr: true })) as unknown as NodeJS.ReadableStream
        res.writeHead(200, { "content-type": "text/plain", "transfer-encoding": "chunked" })
        docker.modem.demuxStream(stream, res, res)
        stream.on("end", () => res.end())
        req.on("close", () => (stream as any).destroy?.())
        return
      }
    }

    if (resource === "persistentvolumeclaims") {
      if (name === undefined && method === "POST") {
        const body = JSON.parse(await readBody(req))
        const claimName = body?.metadata?.name
        if (typeof claimName !== "string" || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(claimName)) {
          return send(res, 422, status(422, "Invalid", `PersistentVolumeClaim "${claimName}" is invalid: metadata.name: Invalid value`, { name: claimName, kind: "PersistentVolumeClaim" }))
        }
        if (claims.has(key(ns, claimName))) return send(res, 409, status(409, "AlreadyExists", `persistentvolumeclaims "${claimName}" already exists`, { name: claimName, kind: "persistentvolumeclaims" }))
        const storage = body.spec?.resources?.requests?.storage
        if (storage === undefined || Number.isNaN(parseQuantity(storage))) {
          return send(res, 422, status(422, "Invalid", `PersistentVolumeClaim "${claimName}" is invalid: spec.resources[storage]: Required value`, { name: claimName, kind: "PersistentVolumeClaim" }))
        }
        // Bound at once: the stand-in's provisioner is a docker volume on this machine.
        const obj: Json = {
          kind: "PersistentVolumeClaim",
          apiVersion: "v1",
          metadata: { ...body.metadata, namespace: ns, uid: randomUUID(), resourceVersion: String(++resourceVersion), creationTimestamp: new Date().toISOString() },
          spec: { accessModes: ["ReadWriteOnce"], ...body.spec, volumeName: `pvc-${randomUUID()}` },
          status: { phase: "Bound", accessModes: body.spec?.accessModes ?? ["ReadWriteOnce"], capacity: { storage } }
        }
        claims.set(key(ns, claimName), obj)
        for (const other of pods.values()) if (other.spec.nodeName === undefined) trySchedule(other)
        return send(res, 201, obj)
      }
      const claim = name === undefined ? undefined : claims.get(key(ns, name))
      if (claim === undefined) return send(res, 404, status(404, "NotFound", `persistentvolumeclaims "${name}" not found`, { name, kind: "persistentvolumeclaims" }))
      if (method === "GET") return send(res, 200, claim)
      if (method === "DELETE") {
        claims.delete(key(ns, name!))
        await docker.getVolume(claimVolume(ns, name!)).remove().catch(() => undefined)
        return send(res, 200, claim)
      }
    }

    // Services: https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/
    // (create, read, delete); NodePorts are allocated from 30000-32767 and served on 127.0.0.1.
    if (resource === "services") {
      if (name === undefined && method === "POST") {
        const body = JSON.parse(await readBody(req))
        const svcName = body?.metadata?.name
        // A Service name is a DNS-1035 label (a letter first).
        if (typeof svcName !== "string" || !/^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(svcName) || svcName.length > 63) {
          return send(res, 422, status(422, "Invalid", `Service "${svcName}" is invalid: metadata.name: Invalid value: "${svcName}": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character`, { name: svcName, kind: "Service" }))
        }
        if (services.has(key(ns, svcName))) return send(res, 409, status(409, "AlreadyExists", `services "${svcName}" already exists`, { name: svcName, kind: "services" }))
        if (body.spec?.type !== "NodePort") {
          return send(res, 422, status(422, "Invalid", `Service "${svcName}" is invalid: spec.type: the stand-in has NodePort services only`))
        }
        // The API's validation of spec.ports: a name on each port when there are several, and
        // no port (with its protocol) twice.
        const specPorts: Array<Json> = body.spec.ports ?? []
        const invalid = (field: string, what: string) => send(res, 422, status(422, "Invalid", `Service "${svcName}" is invalid: ${field}: ${what}`, { name: svcName, kind: "Service", causes: [{ reason: "FieldValueInvalid", message: what, field }] }))
        for (const [i, p] of specPorts.entries()) {
          if (specPorts.length > 1 && !p.name) return invalid(`spec.ports[${i}].name`, "Required value")
          if (specPorts.findIndex((q) => q.port === p.port && (q.protocol ?? "TCP") === (p.protocol ?? "TCP")) !== i) return invalid(`spec.ports[${i}]`, `Duplicate value: ${JSON.stringify({ port: p.port, protocol: p.protocol ?? "TCP" })}`)
          if (specPorts.findIndex((q) => q.name === p.name) !== i) return invalid(`spec.ports[${i}].name`, `Duplicate value: "${p.name}"`)
        }
        const obj: Json = { kind: "Service", apiVersion: "v1", metadata: { ...body.metadata, namespace: ns, uid: randomUUID(), resourceVersion: String(++resourceVersion), creationTimestamp: new Date().toISOString() }, spec: { ...body.spec, clusterIP: "10.96.0.1" }, status: { loadBalancer: {} } }
        const servers: Array<net.Server> = []
        obj.spec.ports = []
        for (const p of specPorts) {
          const port = { protocol: "TCP", ...p, nodePort: p.nodePort ?? (await freeNodePort()) }
          servers.push(await openNodePort(obj, port))
          obj.spec.ports.push(port)
        }
        services.set(key(ns, svcName), { obj, servers })
        return send(res, 201, obj)
      }
      const svc = name === undefined ? undefined : services.get(key(ns, name))
      if (svc === undefined) return send(res, 404, status(404, "NotFound", `services "${name}" not found`, { name, kind: "services" }))
      if (method === "GET") return send(res, 200, svc.obj)
      if (method === "DELETE") {
        services.delete(key(ns, name!))
        for (const s of svc.servers) s.close()
        // The API answers a deletion with the object as it was.
        return send(res, 200, svc.obj)
      }
    }
    return send(res, 405, status(405, "MethodNotAllowed", `${method} ${url.pathname} is not supported by the stand-in`))
  }

  // The pods/portforward subresource as the kubelet serves it through the API server
  // (k8s.io/kubelet/pkg/cri/streaming/portforward/websocket.go): a WebSocket whose binary
  // messages start with a channel byte; port i has data channel 2i and error channel 2i+1, each
  // opened with the port as 2 little-endian bytes. The pod's port is dialled at once; a dial
  // that fails writes its error on the error channel and ends the connection, as does the pod
  // closing its side. Only the binary `v4.channel.k8s.io` (or no protocol) is spoken.
  const portForwards = new Map<string, Set<WebSocket>>() // pod uid → its open port-forwards
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (offered) => (offered.has(PORT_FORWARD_PROTOCOL) ? PORT_FORWARD_PROTOCOL : false) })
  const refuseUpgrade = (socket: import("node:stream").Duplex, code: number, body: Json) => {
    const text = JSON.stringify(body)
    socket.end(`HTTP/1.1 ${code} ${http.STATUS_CODES[code] ?? ""}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`)
  }
  const upgrade = (req: http.IncomingMessage, socket: import("node:stream").Duplex, head: Buffer) => {
    socket.on("error", () => socket.destroy())
    const url = new URL(req.url ?? "/", "http://standin")
    const auth = req.headers.authorization
    if (auth !== `Bearer ${token}` && auth !== `Bearer ${forbiddenToken}`) return refuseUpgrade(socket, 401, status(401, "Unauthorized", "Unauthorized"))
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/portforward$/.exec(url.pathname)
    if (m === null) return refuseUpgrade(socket, 404, status(404, "NotFound", "the server could not find the requested resource"))
    const [, ns, name] = m
    if (auth === `Bearer ${forbiddenToken}`) {
      return refuseUpgrade(socket, 403, status(403, "Forbidden", `pods "${name}" is forbidden: User "system:serviceaccount:default:forbidden" cannot create resource "pods/portforward" in API group "" in the namespace "${ns}"`, { name, kind: "pods" }))
    }
    if (!namespaces.has(ns)) return refuseUpgrade(socket, 404, status(404, "NotFound", `namespaces "${ns}" not found`, { name: ns, kind: "namespaces" }))
    const pod = pods.get(key(ns, name))
    if (pod === undefined) return refuseUpgrade(socket, 404, status(404, "NotFound", `pods "${name}" not found`, { name, kind: "pods" }))
    const texts = url.searchParams.getAll("ports").flatMap((p) => p.split(",")).filter((p) => p !== "")
    if (texts.length === 0) return refuseUpgrade(socket, 400, status(400, "BadRequest", `query parameter "port" is required`))
    const ports = texts.map(Number)
    const bad = texts.find((t, i) => !/^[0-9]+$/.test(t) || ports[i] < 1 || ports[i] > 65535)
    if (bad !== undefined) return refuseUpgrade(socket, 400, status(400, "BadRequest", `invalid port "${bad}": the port must be 1-65535`))
    if (pod.spec.nodeName === undefined) return refuseUpgrade(socket, 400, status(400, "BadRequest", `pod ${name} does not have a host assigned`))
    if (pod.status.phase !== "Running" || !pod.status.podIP) {
      return refuseUpgrade(socket, 400, status(400, "BadRequest", `unable to upgrade connection: pod ${name} is not running (phase ${pod.status.phase})`))
    }
    const offered = String(req.headers["sec-websocket-protocol"] ?? "").split(",").map((p) => p.trim()).filter((p) => p !== "")
    if (offered.length > 0 && !offered.includes(PORT_FORWARD_PROTOCOL)) {
      return refuseUpgrade(socket, 400, status(400, "BadRequest", `requested protocol(s) are not supported: [${offered.join(" ")}]; supports [${PORT_FORWARD_PROTOCOL}]`))
    }
    const uid: string = pod.metadata.uid
    const podIP: string = pod.status.podIP
    wss.handleUpgrade(req, socket, head, (ws) => {
      const open = portForwards.get(uid) ?? new Set<WebSocket>()
      portForwards.set(uid, open.add(ws))
      const conns: Array<net.Socket> = []
      let pending = ports.length
      const finished = () => {
        if (--pending === 0) ws.close(1000)
      }
      ws.on("close", () => {
        open.delete(ws)
        for (const c of conns) c.destroy()
      })
      ws.on("error", () => ws.terminate())
      ports.forEach((port, i) => {
        const portBytes = Buffer.alloc(2)
        portBytes.writeUInt16LE(port)
        ws.send(Buffer.concat([Buffer.from([2 * i]), portBytes]))
        ws.send(Buffer.concat([Buffer.from([2 * i + 1]), portBytes]))
        const conn = net.connect({ host: podIP, port })
        conns.push(conn)
        sockets.add(conn)
        let connected = false
        conn.on("connect", () => (connected = true))
        conn.on("data", (chunk: Buffer) => ws.send(Buffer.concat([Buffer.from([2 * i]), chunk])))
        conn.on("error", (error: NodeJS.ErrnoException) => {
          if (!connected) {
            const why = error.code === "ECONNREFUSED" ? "connect: connection refused" : error.message
            ws.send(Buffer.concat([Buffer.from([2 * i + 1]), Buffer.from(`error forwarding port ${port} to pod ${name}, uid ${uid}: failed to connect to localhost:${port} inside the pod's network namespace, IPv4: dial tcp4 ${podIP}:${port}: ${why}`)]))
          }
          conn.destroy()
        })
        conn.on("close", () => {
          sockets.delete(conn)
          finished()
        })
      })
      ws.on("message", (data: Buffer) => {
        const channel = data[0]
        if (channel % 2 === 0 && channel / 2 < conns.length && data.length > 1) conns[channel / 2].write(data.subarray(1))
      })
    })
  }

  // HTTPS with a self-signed certificate the kubeconfig trusts (certificate-authority-data), as a cluster serves it.
  const tls = selfSignedCertificate()
  const server = https.createServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (!res.headersSent) send(res, 500, status(500, "InternalError", `the stand-in failed: ${error instanceof Error ? error.message : String(error)}`))
      else res.end()
    })
  })
  server.on("upgrade", upgrade)
  await new Promise<void>((resolve) => server.listen({ host: "127.0.0.1", port: 0 }, resolve))
  const url = `https://127.0.0.1:${(server.address() as net.AddressInfo).port}`

  const kubeconfig = (o: { readonly token?: string; readonly context?: string; readonly server?: string } = {}) => {
    const context = o.context ?? "standin"
    return [
      "apiVersion: v1",
      "kind: Config",
      `current-context: ${context}`,
      "clusters:",
      `- name: ${context}`,
      "  cluster:",
      `    server: ${o.server ?? url}`,
      `    certificate-authority-data: ${Buffer.from(tls.cert).toString("base64")}`,
      "contexts:",
      `- name: ${context}`,
      "  context:",
      `    cluster: ${context}`,
      `    user: ${context}`,
      "    namespace: default",
      "users:",
      `- name: ${context}`,
      "  user:",
      `    token: ${o.token ?? token}`,
      ""
    ].join("\n")
  }

  return {
    url,
    token,
    forbiddenToken,
    kubeconfig,
    pods: () => [...pods.values()].map((p) => structuredClone(p)),
    claims: () => [...claims.values()].map((c) => structuredClone(c)),
    services: () => [...services.values()].map((s) => structuredClone(s.obj)),
    close: async () => {
      closing.value = true
      for (const w of watchers) w.res.end()
      watchers.clear()
      for (const s of sockets) s.destroy()
      for (const open of portForwards.values()) for (const ws of open) ws.terminate()
      wss.close()
      for (const { servers } of services.values()) for (const s of servers) s.close()
      await Promise.all([...containers.keys()].map(removeDocker))
      for (const k of claims.keys()) {
        const [ns, name] = k.split("/")
        await docker.getVolume(claimVolume(ns, name)).remove().catch(() => undefined)
      }
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    }
  }
}

/** A key and a self-signed certificate for 127.0.0.1 and localhost, made with openssl. */
const selfSignedCertificate = (): { key: string; cert: string } => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-k8s-tls-"))
  try {
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
      "-subj", "/CN=k8s-standin", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
      "-keyout", path.join(dir, "key.pem"), "-out", path.join(dir, "cert.pem")
    ], { stdio: "ignore" })
    return { key: fs.readFileSync(path.join(dir, "key.pem"), "utf8"), cert: fs.readFileSync(path.join(dir, "cert.pem"), "utf8") }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** Writes `text` to a fresh file under the system temp dir and answers its path (a kubeconfig file for `filename`). */
export const writeTempFile = (name: string, text: string): string => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-k8s-"))
  const file = path.join(dir, name)
  fs.writeFileSync(file, text)
  return file
}
