/**
 * Pure mappings between dstack and Kubernetes objects: a node to an offer (allocatable CPUs,
 * memory, ephemeral storage, GPUs from the GPU operators' labels) and a job to the pod that runs
 * it (the job's image; requests from lower bounds, limits from upper bounds; GPUs as extended
 * resources with node affinity; the runner installed by an init container from the runner image).
 */
import type * as k8s from "@kubernetes/client-node"
import { type Backend, InstanceDisk, InstanceGpu, InstanceOffer, InstanceResources, InstanceType, type Requirements } from "@dstack-ts/core"

export const TYPE = "kubernetes"

/** Where the runner listens inside the pod. */
export const RUNNER_PORT = 10999
/** Where the init container copies the runner to (an emptyDir shared with the job's container). */
export const RUNNER_DIR = "/dstack-runner"
/** Where the runner image holds the runner (the layout README.md describes). */
export const RUNNER_IMAGE_DIR = "/opt/dstack-runner"

export const NVIDIA_GPU_RESOURCE = "nvidia.com/gpu"
export const AMD_GPU_RESOURCE = "amd.com/gpu"
/** Set by NVIDIA GPU Feature Discovery: the product (`NVIDIA-A100-SXM4-80GB`) and memory in MiB. */
export const NVIDIA_GPU_PRODUCT_LABEL = "nvidia.com/gpu.product"
export const NVIDIA_GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
/** Set by the AMD GPU operator's node labeller. */
export const AMD_GPU_PRODUCT_LABEL = "amd.com/gpu.product-name"
export const HOSTNAME_LABEL = "kubernetes.io/hostname"

export const MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
export const MANAGED_BY = "dstack-ts"
export const INSTANCE_LABEL = "dstack-ts/instance-id"
export const POD_LABEL = "dstack-ts/pod"
/** The pods of one multi-node job share this label: anti-affinity keeps them on distinct nodes. */
export const GROUP_LABEL = "dstack-ts/group"

const binary: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50 }
const decimal: Record<string, number> = { n: 1e-9, u: 1e-6, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15 }

/** A Kubernetes quantity (`1500m`, `4`, `16Gi`, `1e3`) as a number; undefined when malformed. */
export const parseQuantity = (q: string | undefined): number | undefined => {
  if (q === undefined) return undefined
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|n|u|m|k|M|G|T|P)?$/.exec(q.trim())
  if (!m) return undefined
  const n = Number(m[1])
  if (!Number.isFinite(n)) return undefined
  const s = m[2]
  return s === undefined ? n : n * (binary[s] ?? decimal[s])
}

/** A GPU's name from a product label: `NVIDIA-A100-SXM4-80GB` → `A100`, `NVIDIA-H100-80GB-HBM3` → `H100`. */
export const gpuNameFromProduct = (product: string): string => {
  const words = product.replace(/^(NVIDIA|Tesla|AMD)[-_ ]+/i, "").replace(/^(Tesla|GeForce|RTX)[-_ ]+/i, "").split(/[-_ ]+/)
  return words[0] ?? product
}

/** The GPUs a node offers, from its allocatable extended resources and GPU labels. */
export const nodeGpus = (node: k8s.V1Node): ReadonlyArray<InstanceGpu> => {
  const allocatable = node.status?.allocatable ?? {}
  const labels = node.metadata?.labels ?? {}
  const nvidia = Math.floor(parseQuantity(allocatable[NVIDIA_GPU_RESOURCE]) ?? 0)
  const amd = Math.floor(parseQuantity(allocatable[AMD_GPU_RESOURCE]) ?? 0)
  const gpus: Array<InstanceGpu> = []
  if (nvidia > 0) {
    const product = labels[NVIDIA_GPU_PRODUCT_LABEL]
    const memoryMib = Number(labels[NVIDIA_GPU_MEMORY_LABEL] ?? "0") || 0
    for (let i = 0; i < nvidia; i++) gpus.push(new InstanceGpu({ name: product ? gpuNameFromProduct(product) : "unknown", memoryMib, vendor: "nvidia" }))
  }
  if (amd > 0) {
    const product = labels[AMD_GPU_PRODUCT_LABEL]
    for (let i = 0; i < amd; i++) gpus.push(new InstanceGpu({ name: product ? gpuNameFromProduct(product) : "unknown", memoryMib: 0, vendor: "amd" }))
  }
  return gpus
}

/** True when a node takes pods: Ready and not cordoned. */
export const nodeSchedulable = (node: k8s.V1Node): boolean =>
  node.spec?.unschedulable !== true &&
  (node.status?.conditions ?? []).some((c) => c.type === "Ready" && c.status === "True")

/** One offer per node: what it can allocate to pods. Price 0: the cluster is the user's. */
export const nodeOffer = (node: k8s.V1Node, region: string): InstanceOffer => {
  const allocatable = node.status?.allocatable ?? {}
  const arch = node.status?.nodeInfo?.architecture ?? node.metadata?.labels?.["kubernetes.io/arch"]
  const name = node.metadata?.name ?? "unknown"
  return new InstanceOffer({
    backend: TYPE,
    region,
    price: 0,
    availability: nodeSchedulable(node) ? "available" : "not_available",
    instance: new InstanceType({
      name,
      resources: new InstanceResources({
        cpus: Math.floor(parseQuantity(allocatable.cpu) ?? 0),
        memoryMib: Math.floor((parseQuantity(allocatable.memory) ?? 0) / 2 ** 20),
        gpus: nodeGpus(node),
        spot: false,
        disk: new InstanceDisk({ sizeMib: Math.floor((parseQuantity(allocatable["ephemeral-storage"]) ?? 0) / 2 ** 20) }),
        ...(arch === "arm64" ? { cpuArch: "arm" as const } : arch === "amd64" ? { cpuArch: "x86" as const } : {}),
        description: `Kubernetes node ${name} (context ${region})`
      })
    })
  })
}

/**
 * A node's offer cut to what the job's pod gets there (as upstream's offer modifier): where the
 * requirement has an upper bound (a limit), that bound, else the whole node; GPUs as many as
 * asked (requests equal limits). A node short of a lower bound keeps its own amounts, so that
 * offer filtering excludes it with a reason.
 */
export const fitOffer = (offer: InstanceOffer, requirements: Requirements): InstanceOffer => {
  const node = offer.instance.resources
  const r = requirements.resources
  const fit = (have: number, min: number | undefined, max: number | undefined) =>
    min !== undefined && have < min ? have : max !== undefined ? Math.min(have, max) : have
  const gpus = r.gpu.count.min ?? 0
  return new InstanceOffer({
    ...offer,
    instance: new InstanceType({
      name: offer.instance.name,
      resources: new InstanceResources({
        ...node,
        cpus: fit(node.cpus, r.cpu.count.min, r.cpu.count.max),
        memoryMib: fit(node.memoryMib, r.memory.min === undefined ? undefined : r.memory.min * 1024, r.memory.max === undefined ? undefined : r.memory.max * 1024),
        gpus: node.gpus.length >= gpus ? node.gpus.slice(0, gpus) : node.gpus,
        disk: new InstanceDisk({
          sizeMib: fit(node.disk.sizeMib, r.disk.size.min === undefined ? undefined : r.disk.size.min * 1024, r.disk.size.max === undefined ? undefined : r.disk.size.max * 1024)
        })
      })
    })
  })
}

/** The address the server reaches a node's NodePorts at: ExternalIP, else InternalIP. */
export const nodeAddress = (node: k8s.V1Node): string | undefined => {
  const addresses = node.status?.addresses ?? []
  return addresses.find((a) => a.type === "ExternalIP")?.address ?? addresses.find((a) => a.type === "InternalIP")?.address
}

const gib = (gb: number) => `${Math.round(gb * 1024)}Mi`

/** Which GPU resource a job asks for: by vendor, else by the node's GPUs, else NVIDIA. */
const gpuResource = (job: Backend.InstanceJob, offer: InstanceOffer): string => {
  const vendor = job.requirements.resources.gpu.vendor ?? offer.instance.resources.gpus[0]?.vendor
  return vendor === "amd" ? AMD_GPU_RESOURCE : NVIDIA_GPU_RESOURCE
}

/** Requests (lower bounds) and limits (upper bounds, where bounded) of the job's container. */
export const containerResources = (job: Backend.InstanceJob, offer: InstanceOffer): k8s.V1ResourceRequirements => {
  const r = job.requirements.resources
  const requests: Record<string, string> = {}
  const limits: Record<string, string> = {}
  if (r.cpu.count.min !== undefined) requests.cpu = String(r.cpu.count.min)
  if (r.cpu.count.max !== undefined) limits.cpu = String(r.cpu.count.max)
  if (r.memory.min !== undefined) requests.memory = gib(r.memory.min)
  if (r.memory.max !== undefined) limits.memory = gib(r.memory.max)
  if (r.disk.size.min !== undefined) requests["ephemeral-storage"] = gib(r.disk.size.min)
  if (r.disk.size.max !== undefined) limits["ephemeral-storage"] = gib(r.disk.size.max)
  const gpus = r.gpu.count.min ?? 0
  if (gpus > 0) {
    // Extended resources cannot be overcommitted: Kubernetes wants requests equal to limits.
    const resource = gpuResource(job, offer)
    requests[resource] = String(gpus)
    limits[resource] = String(gpus)
  }
  return { requests, ...(Object.keys(limits).length > 0 ? { limits } : {}) }
}

/**
 * Node affinity: the offer's node (a single pod) and for GPU jobs the GPU labels the names ask
 * for (the node must carry the GPU product label). The pods of a multi-node job (`group`) are
 * not pinned to the offer's node: pod anti-affinity on their group label puts each on a node of
 * its own, and the scheduler picks nodes with room for their requests.
 */
export const nodeAffinity = (job: Backend.InstanceJob, offer: InstanceOffer, group?: string): k8s.V1Affinity => {
  const expressions: Array<k8s.V1NodeSelectorRequirement> = group === undefined ? [{ key: HOSTNAME_LABEL, operator: "In", values: [offer.instance.name] }] : []
  const gpu = job.requirements.resources.gpu
  if ((gpu.count.min ?? 0) > 0) {
    const label = gpuResource(job, offer) === AMD_GPU_RESOURCE ? AMD_GPU_PRODUCT_LABEL : NVIDIA_GPU_PRODUCT_LABEL
    expressions.push({ key: label, operator: "Exists" })
  }
  return {
    ...(expressions.length > 0 ? { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: expressions }] } } } : {}),
    ...(group === undefined ? {} : {
      podAntiAffinity: {
        requiredDuringSchedulingIgnoredDuringExecution: [{ labelSelector: { matchLabels: { [GROUP_LABEL]: group } }, topologyKey: HOSTNAME_LABEL }]
      }
    })
  }
}

/** A DNS-1123 label (pod and service names): lower case, `[a-z0-9-]`, at most 63 characters. */
export const dnsLabel = (text: string, suffix: string): string => {
  const base = text.toLowerCase().replace(/[^a-z0-9-]+/g, "-").replace(/^-+|-+$/g, "")
  return `${base.slice(0, 62 - suffix.length).replace(/-+$/, "")}-${suffix}`.replace(/^-/, "")
}

/** A job's `volumes` as pod volumes and mounts: instance directories as hostPath, network volumes as claims. */
export const jobVolumes = (job: Backend.InstanceJob): { readonly volumes: Array<k8s.V1Volume>; readonly mounts: Array<k8s.V1VolumeMount> } => {
  const volumes: Array<k8s.V1Volume> = []
  const mounts: Array<k8s.V1VolumeMount> = []
  for (const [i, v] of (job.volumes ?? []).entries()) {
    const name = `${"instancePath" in v ? "host-path" : "pvc"}-${i}`
    volumes.push("instancePath" in v
      ? { name, hostPath: { path: v.instancePath, type: "DirectoryOrCreate" } }
      : { name, persistentVolumeClaim: { claimName: v.name } })
    mounts.push({ name, mountPath: v.path })
  }
  return { volumes, mounts }
}

/** The PersistentVolumeClaim made for a network volume that has none yet (`volume_claims`). */
export const volumeClaim = (name: string, namespace: string, options: { readonly size: string; readonly storageClassName?: string | undefined; readonly accessModes?: ReadonlyArray<string> | undefined }): k8s.V1PersistentVolumeClaim => ({
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  metadata: { name, namespace, labels: { [MANAGED_BY_LABEL]: MANAGED_BY } },
  spec: {
    accessModes: [...(options.accessModes ?? ["ReadWriteOnce"])],
    ...(options.storageClassName === undefined ? {} : { storageClassName: options.storageClassName }),
    resources: { requests: { storage: options.size } }
  }
})

export interface PodInput {
  readonly name: string
  readonly namespace: string
  readonly runnerImage: string
  readonly job: Backend.InstanceJob & { readonly image: string }
  readonly offer: InstanceOffer
  readonly config: Backend.InstanceConfiguration
  /** For the pods of a multi-node job: their shared group label value and this pod's rank. */
  readonly group?: { readonly id: string; readonly rank: number }
  /** The job's ports and where the server reaches each (its NodePort), which the runner reports. */
  readonly publishedPorts?: Readonly<Record<string, number>>
}

/** The pod of a job: the runner runs in the job's image, from the emptyDir the init container filled. */
export const jobPod = (input: PodInput): k8s.V1Pod => ({
  apiVersion: "v1",
  kind: "Pod",
  metadata: {
    name: input.name,
    namespace: input.namespace,
    labels: {
      [MANAGED_BY_LABEL]: MANAGED_BY,
      [INSTANCE_LABEL]: input.config.instanceId,
      [POD_LABEL]: input.name,
      ...(input.group === undefined ? {} : { [GROUP_LABEL]: input.group.id })
    },
    annotations: {
      "dstack-ts/project": input.config.projectName,
      "dstack-ts/job": input.job.jobName,
      ...(input.group === undefined ? {} : { "dstack-ts/rank": String(input.group.rank) })
    }
  },
  spec: {
    restartPolicy: "Never",
    affinity: nodeAffinity(input.job, input.offer, input.group?.id),
    volumes: [{ name: "dstack-runner", emptyDir: {} }, ...jobVolumes(input.job).volumes],
    initContainers: [
      {
        name: "dstack-runner-install",
        image: input.runnerImage,
        command: [`${RUNNER_IMAGE_DIR}/busybox`, "cp", "-a", `${RUNNER_IMAGE_DIR}/.`, `${RUNNER_DIR}/`],
        volumeMounts: [{ name: "dstack-runner", mountPath: RUNNER_DIR }]
      }
    ],
    containers: [
      {
        name: "job",
        image: input.job.image,
        command: [`${RUNNER_DIR}/busybox`, "sh", `${RUNNER_DIR}/start`],
        args: ["--host", "0.0.0.0", "--port", String(RUNNER_PORT), "--work-dir", `${RUNNER_DIR}/work`],
        env: [
          { name: "DSTACK_RUNNER_IN_CONTAINER", value: "1" },
          { name: "DSTACK_RUNNER_DIR", value: RUNNER_DIR },
          ...(input.publishedPorts === undefined || Object.keys(input.publishedPorts).length === 0
            ? []
            : [{ name: "DSTACK_RUNNER_PUBLISHED_PORTS", value: JSON.stringify(input.publishedPorts) }])
        ],
        ports: [{ containerPort: RUNNER_PORT, name: "runner" }, ...jobPorts(input.job).map((port) => ({ containerPort: port, name: portName(port) }))],
        resources: containerResources(input.job, input.offer),
        volumeMounts: [{ name: "dstack-runner", mountPath: RUNNER_DIR }, ...jobVolumes(input.job).mounts]
      }
    ]
  }
})

/** The ports a job serves (its `ports` and a service's port), each once, in order. */
export const jobPorts = (job: Backend.InstanceJob): ReadonlyArray<number> => [...new Set(job.ports ?? [])]

/** A port's name in the pod and the service (an IANA service name: at most 15 characters, a letter). */
export const portName = (port: number): string => `port-${port}`

/**
 * The NodePort service of a job's pod: the runner's port, through which the server reaches the
 * runner, and each port the job serves, through which `dstack attach` and the services proxy
 * reach the job (the runner reports their NodePorts in `job_runtime_data`). Made before the pod,
 * so that the pod's environment can say where its ports are published; deleted with it.
 */
export const jobService = (name: string, namespace: string, instanceId: string, ports: ReadonlyArray<number> = []): k8s.V1Service => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace, labels: { [MANAGED_BY_LABEL]: MANAGED_BY, [INSTANCE_LABEL]: instanceId } },
  spec: {
    type: "NodePort",
    selector: { [POD_LABEL]: name },
    ports: [
      { name: "runner", protocol: "TCP", port: RUNNER_PORT, targetPort: RUNNER_PORT as never },
      ...ports.map((port) => ({ name: portName(port), protocol: "TCP", port, targetPort: port as never }))
    ]
  }
})

/** Where each port of a created service is reached on the nodes: port → NodePort; undefined for a port without one. */
export const nodePorts = (service: k8s.V1Service): ReadonlyMap<number, number | undefined> =>
  new Map((service.spec?.ports ?? []).map((p) => [p.port, p.nodePort]))

/**
 * How a watch event of the pod named `name` bears on the pod with `uid`: another pod of that
 * name (one deleted before this one was made, or seen through a lagging watch cache) is
 * `ignore`d, so that its deletion cannot answer for this pod.
 */
export const watchEvent = (uid: string, type: string, pod: k8s.V1Pod): "ignore" | "deleted" | "changed" =>
  pod.metadata?.uid !== uid ? "ignore" : type === "DELETED" ? "deleted" : "changed"
