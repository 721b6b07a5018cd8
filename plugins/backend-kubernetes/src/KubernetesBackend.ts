/**
 * The `kubernetes` backend: each kubeconfig context is a region whose nodes are the offers; an
 * instance is one pod for one job (its image, with the runner installed by an init container)
 * plus a NodePort service the server reaches the runner through. A pod the scheduler does not
 * place in time is deleted and its offer skipped (NoCapacity). Terminating deletes both.
 */
import * as fs from "node:fs"
import * as k8s from "@kubernetes/client-node"
import { Backend, type BackendFactory, type InstanceOffer, JobProvisioningData, type Requirements, configDecoder } from "@dstack-ts/core"
import { Duration, Effect, Schema } from "effect"
import { dnsLabel, fitOffer, jobPod, nodeAddress, nodeOffer, runnerService, TYPE } from "./internal/PodSpec.ts"

const MODULE = "KubernetesBackend"

/** Upstream's JOB_POD_SCHEDULING_TIMEOUT. */
const DEFAULT_SCHEDULING_TIMEOUT_SECONDS = 10

const ProxyJump = Schema.Struct({
  hostname: Schema.optional(Schema.NonEmptyString),
  port: Schema.optional(Schema.Int)
})

const Context = Schema.Union(
  Schema.NonEmptyString,
  Schema.Struct({ name: Schema.NonEmptyString, proxyJump: Schema.optional(ProxyJump).pipe(Schema.fromKey("proxy_jump")) })
)

/** The backend's configuration (upstream's keys, plus `runner_image` and `scheduling_timeout_seconds`). */
export const KubernetesBackendConfig = Schema.Struct({
  type: Schema.optional(Schema.Literal(TYPE)),
  kubeconfig: Schema.Struct({
    filename: Schema.optional(Schema.String),
    data: Schema.optional(Schema.String)
  }),
  contexts: Schema.optional(Schema.Array(Context)),
  proxyJump: Schema.optional(ProxyJump).pipe(Schema.fromKey("proxy_jump")),
  namespace: Schema.optional(Schema.NonEmptyString),
  runnerImage: Schema.NonEmptyString.pipe(Schema.propertySignature, Schema.fromKey("runner_image")),
  schedulingTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("scheduling_timeout_seconds"))
})
export type KubernetesBackendConfig = typeof KubernetesBackendConfig.Type

/** One context of the kubeconfig: a region. */
interface Cluster {
  readonly region: string
  readonly namespace: string
  readonly server: string
  readonly api: k8s.CoreV1Api
  readonly watch: k8s.Watch
  /** Overrides the node address NodePorts are reached at (`proxy_jump.hostname`). */
  readonly hostname?: string
}

/** What the backend keeps of an instance in `backendData`. */
interface PodData {
  readonly namespace: string
  readonly pod: string
}

const fail = (method: string, reason: Backend.BackendErrorReason, message: string, cause?: unknown) =>
  Backend.fail(MODULE, method, reason, message, cause)

/** A Kubernetes API failure as a BackendError: the status code decides the reason; the Status message is kept. */
export const apiError = (method: string, what: string, server: string, cause: unknown): Backend.BackendError => {
  if (cause instanceof k8s.ApiException) {
    const code = Number(cause.code)
    let message: string = cause.message
    try {
      const body = typeof cause.body === "string" ? JSON.parse(cause.body) : cause.body
      if (body && typeof body.message === "string") message = body.message
      else message = /^Message: (.*)$/m.exec(cause.message)?.[1] ?? cause.message
    } catch {
      // a body that is not a Status object: the exception's own message stays
    }
    const reason: Backend.BackendErrorReason = code === 401 || code === 403
      ? "PermissionDenied"
      : code === 404
        ? "NotFound"
        : code === 409
          ? "AlreadyExists"
          : code === 400 || code === 422
            ? "Invalid"
            : code >= 500
              ? "Transport"
              : "Unknown"
    const hint = code === 401 ? " (the kubeconfig's credentials were refused)" : code === 403 ? " (the kubeconfig's user lacks the right; see the backend's README for the RBAC it needs)" : ""
    return new Backend.BackendError({ module: MODULE, method, reason, message: `${what}: the Kubernetes API at ${server} answered ${code}: ${message}${hint}`, cause })
  }
  const text = cause instanceof Error ? `${cause.message}${cause.cause instanceof Error ? `: ${cause.cause.message}` : ""}` : String(cause)
  return new Backend.BackendError({ module: MODULE, method, reason: "Transport", message: `${what}: cannot reach the Kubernetes API at ${server}: ${text}`, cause })
}

const call = <A>(cluster: Cluster, method: string, what: string, f: () => Promise<A>) =>
  Effect.tryPromise({ try: f, catch: (cause) => apiError(method, what, cluster.server, cause) })

const invalid = (message: string, cause?: unknown) =>
  new Backend.BackendError({ module: MODULE, method: "make", reason: "Invalid", message, ...(cause === undefined ? {} : { cause }) })

/** Reads the kubeconfig and makes one API client per context; fails Invalid naming the field. */
const loadClusters = (config: KubernetesBackendConfig): Effect.Effect<ReadonlyArray<Cluster>, Backend.BackendError> =>
  Effect.gen(function*() {
    const { filename, data } = config.kubeconfig
    if (data === undefined && (filename === undefined || filename === "")) {
      return yield* Effect.fail(invalid("kubeconfig: set `filename` (a path) or `data` (the file's contents)"))
    }
    const text = data ?? (yield* Effect.try({
      try: () => fs.readFileSync(filename!.replace(/^~(?=\/)/, process.env.HOME ?? "~"), "utf8"),
      catch: (cause) => invalid(`kubeconfig.filename: cannot read ${filename}: ${cause instanceof Error ? cause.message : String(cause)}`, cause)
    }))
    const kc = new k8s.KubeConfig()
    yield* Effect.try({
      try: () => kc.loadFromString(text),
      catch: (cause) => invalid(`kubeconfig: not a valid kubeconfig: ${cause instanceof Error ? cause.message : String(cause)}`, cause)
    })
    if (config.contexts !== undefined && (config.namespace !== undefined || config.proxyJump !== undefined)) {
      return yield* Effect.fail(invalid("`namespace` and `proxy_jump` apply only without `contexts`: with `contexts`, the namespace comes from each kubeconfig context and `proxy_jump` is set per context"))
    }
    const wanted: ReadonlyArray<{ name: string; proxyJump?: typeof ProxyJump.Type }> = config.contexts !== undefined
      ? config.contexts.map((c) => (typeof c === "string" ? { name: c } : { name: c.name, ...(c.proxyJump ? { proxyJump: c.proxyJump } : {}) }))
      : kc.getCurrentContext()
        ? [{ name: kc.getCurrentContext(), ...(config.proxyJump ? { proxyJump: config.proxyJump } : {}) }]
        : []
    if (wanted.length === 0) return yield* Effect.fail(invalid("kubeconfig: it has no current-context; name the contexts to use in `contexts`"))
    if (config.contexts !== undefined && config.contexts.length === 0) return yield* Effect.fail(invalid("contexts: empty; name at least one kubeconfig context"))
    const clusters: Array<Cluster> = []
    for (const w of wanted) {
      const context = kc.getContextObject(w.name)
      if (context === null) {
        return yield* Effect.fail(invalid(`contexts: the kubeconfig has no context ${w.name} (it has ${kc.getContexts().map((c) => c.name).join(", ") || "none"})`))
      }
      if (w.proxyJump?.port !== undefined) {
        return yield* Effect.fail(invalid(`proxy_jump.port (context ${w.name}): not supported; the runner of each pod is reached through its own NodePort at proxy_jump.hostname`))
      }
      const one = new k8s.KubeConfig()
      one.loadFromString(text)
      one.setCurrentContext(w.name)
      const server = one.getCurrentCluster()?.server
      if (server === undefined) return yield* Effect.fail(invalid(`kubeconfig: context ${w.name} names no cluster with a server`))
      const namespace = config.contexts === undefined ? (config.namespace ?? "default") : (context.namespace ?? "default")
      clusters.push({
        region: w.name,
        namespace,
        server,
        api: one.makeApiClient(k8s.CoreV1Api),
        watch: new k8s.Watch(one),
        ...(w.proxyJump?.hostname ? { hostname: w.proxyJump.hostname } : {})
      })
    }
    return clusters
  })

const decodeConfig = configDecoder(KubernetesBackendConfig, "kubernetes backend configuration")

/** The kubernetes backend, with what tests and diagnostics need. */
export interface KubernetesBackend extends Backend.Backend {
  readonly regions: ReadonlyArray<string>
}

/** Makes the backend from a decoded configuration. */
export const make = (config: KubernetesBackendConfig): Effect.Effect<KubernetesBackend, Backend.BackendError> =>
  Effect.gen(function*() {
    const clusters = yield* loadClusters(config)
    const byRegion = new Map(clusters.map((c) => [c.region, c]))
    const schedulingTimeout = Duration.seconds(config.schedulingTimeoutSeconds ?? DEFAULT_SCHEDULING_TIMEOUT_SECONDS)

    const clusterOf = (method: string, region: string) => {
      const cluster = byRegion.get(region)
      return cluster === undefined ? fail(method, "Invalid", `no context ${region} among this backend's contexts (${[...byRegion.keys()].join(", ")})`) : Effect.succeed(cluster)
    }

    const offersOf = (cluster: Cluster, requirements: Requirements) =>
      call(cluster, "getOffers", `listing the nodes of context ${cluster.region}`, () => cluster.api.listNode()).pipe(
        Effect.map((list) => list.items.map((node) => fitOffer(nodeOffer(node, cluster.region), requirements)))
      )

    // A context that fails is logged and skipped (as upstream) while another answers; when none
    // answers, the first failure is the answer.
    const catalog = (requirements: Requirements) =>
      Effect.forEach(clusters, (c) => Effect.either(offersOf(c, requirements)), { concurrency: "unbounded" }).pipe(
        Effect.flatMap((results) => {
          const offers = results.flatMap((r) => (r._tag === "Right" ? r.right : []))
          const failures = results.flatMap((r) => (r._tag === "Left" ? [r.left] : []))
          if (failures.length > 0 && failures.length === results.length) return Effect.fail(failures[0])
          return Effect.as(Effect.forEach(failures, (e) => Effect.logWarning(e.message), { discard: true }), offers)
        })
      )

    /** Waits for the pod to be placed on a node; the scheduler's last word when it is not. */
    const waitScheduled = (cluster: Cluster, name: string) =>
      Effect.async<{ readonly scheduled: true; readonly pod: k8s.V1Pod } | { readonly scheduled: false; readonly message: string }, Backend.BackendError>((resume) => {
        let last = "the scheduler has not placed it yet"
        let controller: AbortController | undefined
        let done = false
        const finish = (value: Parameters<typeof resume>[0]) => {
          if (done) return
          done = true
          controller?.abort()
          resume(value)
        }
        const timer = setTimeout(() => finish(Effect.succeed({ scheduled: false, message: last })), Duration.toMillis(schedulingTimeout))
        cluster.watch
          .watch(`/api/v1/namespaces/${cluster.namespace}/pods`, { fieldSelector: `metadata.name=${name}` }, (type, pod: k8s.V1Pod) => {
            if (type === "DELETED") return finish(Effect.fail(new Backend.BackendError({ module: MODULE, method: "createInstance", reason: "Unknown", message: `pod ${name} was deleted while it waited to be scheduled` })))
            const condition = pod.status?.conditions?.find((c) => c.type === "PodScheduled")
            if (condition?.status === "True" && pod.spec?.nodeName) {
              clearTimeout(timer)
              return finish(Effect.succeed({ scheduled: true, pod }))
            }
            if (condition?.message) last = condition.message
          }, (error: unknown) => {
            if (done || error === null || error === undefined || (error as Error).name === "AbortError") return
            clearTimeout(timer)
            finish(Effect.fail(apiError("createInstance", `watching pod ${name}`, cluster.server, error)))
          })
          .then((c) => {
            controller = c
            if (done) c.abort()
          }, (error: unknown) => {
            clearTimeout(timer)
            finish(Effect.fail(apiError("createInstance", `watching pod ${name}`, cluster.server, error)))
          })
        return Effect.sync(() => {
          done = true
          clearTimeout(timer)
          controller?.abort()
        })
      })

    const deletePod = (cluster: Cluster, namespace: string, name: string) =>
      Effect.all([
        call(cluster, "terminateInstance", `deleting pod ${name}`, () => cluster.api.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 10 })),
        call(cluster, "terminateInstance", `deleting service ${name}`, () => cluster.api.deleteNamespacedService({ name, namespace }))
      ], { concurrency: 2, mode: "either" }).pipe(
        Effect.flatMap(([pod, service]) => {
          // Both are deleted even if one is gone already; a missing pod is NotFound (make's terminate treats it as done).
          const errors = [pod, service].flatMap((r) => (r._tag === "Left" && r.left.reason !== "NotFound" ? [r.left] : []))
          if (errors.length > 0) return Effect.fail(errors[0])
          if (pod._tag === "Left") return Effect.fail(pod.left)
          return Effect.void
        })
      )

    const createInstance = (offer: InstanceOffer, instance: Backend.InstanceConfiguration) =>
      Effect.gen(function*() {
        const cluster = yield* clusterOf("createInstance", offer.region)
        const job = instance.job
        if (job === undefined || job.image === undefined) {
          return yield* fail("createInstance", "Invalid", `the kubernetes backend runs jobs with an image only: a pod is the job's container (set \`image\` in the configuration${job ? ` of ${job.jobName}` : ""})`)
        }
        // What a pod here cannot do yet is refused, not ignored.
        const unsupported = [
          ...((job.nodes ?? 1) > 1 ? [`a multi-node task (nodes: ${job.nodes})`] : []),
          ...((job.ports ?? []).length > 0 ? [`ports (${job.ports!.join(", ")}): the server reaches only the runner's port of a pod`] : []),
          ...((job.instanceMounts ?? []).length > 0 ? [`instance volumes (${job.instanceMounts!.join(", ")})`] : [])
        ]
        if (unsupported.length > 0) {
          return yield* fail("createInstance", "Invalid", `the kubernetes backend does not run ${unsupported.join("; ")} yet`)
        }
        const name = dnsLabel(`dstack-${instance.instanceName}`, instance.instanceId.replace(/-/g, "").slice(0, 8))
        const pod = jobPod({ name, namespace: cluster.namespace, runnerImage: config.runnerImage, job: { ...job, image: job.image }, offer, config: instance })
        yield* call(cluster, "createInstance", `creating pod ${name} in namespace ${cluster.namespace}`, () => cluster.api.createNamespacedPod({ namespace: cluster.namespace, body: pod }))
        const cleanup = deletePod(cluster, cluster.namespace, name).pipe(Effect.catchIf((e) => e.reason === "NotFound", () => Effect.void), Effect.ignoreLogged)
        const placed = yield* waitScheduled(cluster, name).pipe(Effect.onError(() => cleanup))
        if (!placed.scheduled) {
          yield* cleanup
          return yield* fail("createInstance", "NoCapacity", `pod ${name} was not scheduled within ${Duration.format(schedulingTimeout)} on node ${offer.instance.name} (context ${cluster.region}): ${placed.message}`)
        }
        const provisioned = Effect.gen(function*() {
          const service = yield* call(cluster, "createInstance", `creating service ${name}`, () => cluster.api.createNamespacedService({ namespace: cluster.namespace, body: runnerService(name, cluster.namespace, instance.instanceId) }))
          const nodePort = service.spec?.ports?.[0]?.nodePort
          if (nodePort === undefined) return yield* fail("createInstance", "Unknown", `service ${name} got no NodePort`)
          const nodeName = placed.pod.spec!.nodeName!
          const hostname = cluster.hostname ?? nodeAddress(yield* call(cluster, "createInstance", `reading node ${nodeName}`, () => cluster.api.readNode({ name: nodeName })))
          if (hostname === undefined) return yield* fail("createInstance", "Unknown", `node ${nodeName} has no ExternalIP or InternalIP address: set proxy_jump.hostname`)
          const data: PodData = { namespace: cluster.namespace, pod: name }
          return new JobProvisioningData({
            backend: TYPE,
            instanceType: offer.instance,
            instanceId: name,
            hostname,
            internalIp: placed.pod.status?.hostIP ?? hostname,
            region: cluster.region,
            price: offer.price,
            username: "root",
            dockerized: false,
            runnerPort: nodePort,
            backendData: JSON.stringify(data)
          })
        })
        return yield* provisioned.pipe(Effect.onError(() => cleanup))
      })

    const terminateInstance = (instanceId: string, region: string, backendData?: string) =>
      Effect.gen(function*() {
        // A context this backend does not have holds none of its pods: gone, as far as it can
        // tell (NotFound, which termination treats as done), and said in the log.
        if (!byRegion.has(region)) {
          yield* Effect.logWarning(`kubernetes: pod ${instanceId} is in context ${region}, which this backend no longer has; it is not deleted`)
          return yield* fail("terminateInstance", "NotFound", `no context ${region} among this backend's contexts`)
        }
        const cluster = yield* clusterOf("terminateInstance", region)
        let namespace = cluster.namespace
        if (backendData !== undefined) {
          const parsed = yield* Effect.try({
            try: () => JSON.parse(backendData) as PodData,
            catch: (cause) => new Backend.BackendError({ module: MODULE, method: "terminateInstance", reason: "Invalid", message: `backend data of ${instanceId} is not JSON`, cause })
          })
          namespace = parsed.namespace
        }
        yield* deletePod(cluster, namespace, instanceId)
      })

    const backend = Backend.make({ type: TYPE, catalog, createInstance, terminateInstance, instancePerJob: true })
    return { ...backend, regions: clusters.map((c) => c.region) }
  })

/** The plugin's factory: decodes the configuration section, then makes the backend. */
export const fromConfig: BackendFactory = (config) =>
  decodeConfig(config).pipe(
    Effect.mapError((error) =>
      new Backend.BackendError({
        module: MODULE,
        method: "fromConfig",
        reason: "Invalid",
        message: error.message,
        cause: error.cause
      })
    ),
    Effect.flatMap(make)
  )
