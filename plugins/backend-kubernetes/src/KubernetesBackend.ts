/**
 * The `kubernetes` backend: each kubeconfig context is a region whose nodes are the offers; an
 * instance is one pod for one job (its image, with the runner installed by an init container).
 * The server reaches the runner and the job's ports (`dstack attach`, the services proxy)
 * either through a NodePort service of the pod at its node's address (`pod_access: node_port`,
 * the default) or through the Kubernetes API's pods/portforward (`pod_access: port_forward`,
 * for nodes the server cannot reach; see KubernetesTransport.ts). A multi-node job is one pod
 * per rank on distinct nodes (pod anti-affinity), made together. A pod the scheduler does not
 * place in time is deleted and its offer skipped (NoCapacity). Terminating deletes what was made.
 */
import * as fs from "node:fs"
import type * as k8s from "@kubernetes/client-node"
import { Backend, type BackendFactory, type InstanceOffer, InstanceType, JobProvisioningData, type Requirements, configDecoder } from "@dstack-ts/core"
import { Duration, Effect, Schema } from "effect"
import { dnsLabel, fitOffer, jobPod, jobPorts, jobService, nodeAddress, nodeOffer, nodePorts, parseQuantity, RUNNER_PORT, TYPE, volumeClaim, watchEvent } from "./internal/PodSpec.ts"
import * as PodRoutes from "./PodRoutes.ts"
import { client, isApiException } from "./internal/client.ts"

const MODULE = "KubernetesBackend"

/** Upstream's JOB_POD_SCHEDULING_TIMEOUT. */
const DEFAULT_SCHEDULING_TIMEOUT_SECONDS = 10
/** How long a scheduled pod of a multi-node job may take to get its IP (its sandbox up). */
const POD_START_TIMEOUT_MS = 300_000

const ProxyJump = Schema.Struct({
  hostname: Schema.optional(Schema.NonEmptyString),
  port: Schema.optional(Schema.Int)
})

const Context = Schema.Union(
  Schema.NonEmptyString,
  Schema.Struct({ name: Schema.NonEmptyString, proxyJump: Schema.optional(ProxyJump).pipe(Schema.fromKey("proxy_jump")) })
)

/**
 * How the server reaches a pod's runner and the job's ports: `node_port` through a NodePort
 * service at the node's address (the nodes must be reachable from the server); `port_forward`
 * through the Kubernetes API's pods/portforward with the kubeconfig's credentials (only the
 * API server must be reachable).
 */
export const PodAccess = Schema.Literal("node_port", "port_forward")
export type PodAccess = typeof PodAccess.Type

/** The backend's configuration (upstream's keys, plus `runner_image`, `scheduling_timeout_seconds`, `volume_claims` and `pod_access`). */
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
  schedulingTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("scheduling_timeout_seconds")),
  /** Default `node_port`. */
  podAccess: Schema.optional(PodAccess).pipe(Schema.fromKey("pod_access")),
  /** How the claim of a network volume that has none yet is made; without it such a volume is refused. */
  volumeClaims: Schema.optional(Schema.Struct({
    size: Schema.String.pipe(Schema.filter((q) => parseQuantity(q) !== undefined && parseQuantity(q)! > 0 || `expected a Kubernetes quantity such as 10Gi, got ${JSON.stringify(q)}`)),
    storageClassName: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("storage_class_name")),
    accessModes: Schema.optional(Schema.Array(Schema.Literal("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"))).pipe(Schema.fromKey("access_modes"))
  })).pipe(Schema.fromKey("volume_claims"))
})
export type KubernetesBackendConfig = typeof KubernetesBackendConfig.Type

/** One context of the kubeconfig: a region. */
interface Cluster {
  readonly region: string
  readonly namespace: string
  readonly server: string
  readonly api: k8s.CoreV1Api
  readonly watch: k8s.Watch
  /** The kubeconfig with this context current: port-forwards authenticate with it. */
  readonly kubeConfig: k8s.KubeConfig
  /** Overrides the node address NodePorts are reached at (`proxy_jump.hostname`). */
  readonly hostname?: string
}

/** A pod the backend made: its name, and its uid, which tells it from a same-named pod made before or after. */
interface PodRef {
  readonly name: string
  readonly uid: string
}

/** What the backend keeps of an instance in `backendData`. */
interface PodData {
  readonly namespace: string
  readonly pod: string
  /** The pod's uid: deletion is conditional on it, so that a same-named pod made later is left alone. */
  readonly uid?: string
  /** `port_forward`: the pod has no service to delete. */
  readonly access?: PodAccess
}

const fail = (method: string, reason: Backend.BackendErrorReason, message: string, cause?: unknown) =>
  Backend.fail(MODULE, method, reason, message, cause)

/** A Kubernetes API failure as a BackendError: the status code decides the reason; the Status message is kept. */
export const apiError = (method: string, what: string, server: string, cause: unknown): Backend.BackendError => {
  if (isApiException(cause)) {
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
    const lib = yield* Effect.mapError(client, (cause) => new Backend.BackendError({ module: MODULE, method: "make", reason: "Unknown", message: cause.message, cause }))
    const kc = new lib.KubeConfig()
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
      if (w.proxyJump !== undefined && config.podAccess === "port_forward") {
        return yield* Effect.fail(invalid(`proxy_jump (context ${w.name}): not used with pod_access: port_forward, which reaches pods through the Kubernetes API; remove one of them`))
      }
      if (w.proxyJump?.port !== undefined) {
        return yield* Effect.fail(invalid(`proxy_jump.port (context ${w.name}): not supported; the runner of each pod is reached through its own NodePort at proxy_jump.hostname`))
      }
      const one = new lib.KubeConfig()
      one.loadFromString(text)
      one.setCurrentContext(w.name)
      const server = one.getCurrentCluster()?.server
      if (server === undefined) return yield* Effect.fail(invalid(`kubeconfig: context ${w.name} names no cluster with a server`))
      const namespace = config.contexts === undefined ? (config.namespace ?? "default") : (context.namespace ?? "default")
      clusters.push({
        region: w.name,
        namespace,
        server,
        api: one.makeApiClient(lib.CoreV1Api),
        watch: new lib.Watch(one),
        kubeConfig: one,
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

/**
 * The routes of the default plugin value and of `fromConfig`: its `kubernetes` transport
 * reaches the pods of the backends made with them (`pod_access: port_forward`).
 */
export const defaultRoutes: PodRoutes.PodRoutes = PodRoutes.make()

/** Makes the backend from a decoded configuration; with `pod_access: port_forward` its contexts join `routes`. */
export const make = (config: KubernetesBackendConfig, routes: PodRoutes.PodRoutes = defaultRoutes): Effect.Effect<KubernetesBackend, Backend.BackendError> =>
  Effect.gen(function*() {
    const clusters = yield* loadClusters(config)
    const access: PodAccess = config.podAccess ?? "node_port"
    if (access === "port_forward") {
      for (const c of clusters) routes.register({ region: c.region, namespace: c.namespace, server: c.server, kubeConfig: c.kubeConfig, api: c.api })
    }
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

    /**
     * Follows one pod through the watch API until `decide` answers for it (a value, or a
     * failure) or `timeoutMs` passes (then `onTimeout` with the last note `decide` made). Only
     * events of the pod made (its `metadata.uid`) count: another pod of the same name cannot
     * answer, nor its deletion fail the wait.
     */
    const watchPod = <A>(
      cluster: Cluster,
      method: string,
      { name, uid }: PodRef,
      timeoutMs: number,
      decide: (pod: k8s.V1Pod) => { readonly done: A } | { readonly fail: string } | { readonly note: string } | undefined,
      onTimeout: (last: string) => A | Backend.BackendError
    ) =>
      Effect.async<A, Backend.BackendError>((resume) => {
        let last = ""
        let controller: AbortController | undefined
        let done = false
        const finish = (value: Effect.Effect<A, Backend.BackendError>) => {
          if (done) return
          done = true
          clearTimeout(timer)
          controller?.abort()
          resume(value)
        }
        const timer = setTimeout(() => {
          const answer = onTimeout(last)
          finish(answer instanceof Backend.BackendError ? Effect.fail(answer) : Effect.succeed(answer))
        }, timeoutMs)
        const failed = (message: string) => new Backend.BackendError({ module: MODULE, method, reason: "Unknown", message })
        cluster.watch
          .watch(`/api/v1/namespaces/${cluster.namespace}/pods`, { fieldSelector: `metadata.name=${name}` }, (type, pod: k8s.V1Pod) => {
            const event = watchEvent(uid, type, pod)
            if (event === "ignore") return
            if (event === "deleted") return finish(Effect.fail(failed(`pod ${name} was deleted while it was being started`)))
            const d = decide(pod)
            if (d === undefined) return
            if ("done" in d) return finish(Effect.succeed(d.done))
            if ("fail" in d) return finish(Effect.fail(failed(d.fail)))
            last = d.note
          }, (error: unknown) => {
            if (done || error === null || error === undefined || (error as Error).name === "AbortError") return
            finish(Effect.fail(apiError(method, `watching pod ${name}`, cluster.server, error)))
          })
          .then((c) => {
            controller = c
            if (done) c.abort()
          }, (error: unknown) => finish(Effect.fail(apiError(method, `watching pod ${name}`, cluster.server, error))))
        return Effect.sync(() => {
          done = true
          clearTimeout(timer)
          controller?.abort()
        })
      })

    /** Waits for the pod to be placed on a node; the scheduler's last word when it is not. */
    const waitScheduled = (cluster: Cluster, method: string, pod: PodRef) =>
      watchPod<{ readonly scheduled: true; readonly pod: k8s.V1Pod } | { readonly scheduled: false; readonly message: string }>(
        cluster,
        method,
        pod,
        Duration.toMillis(schedulingTimeout),
        (pod) => {
          const condition = pod.status?.conditions?.find((c) => c.type === "PodScheduled")
          if (condition?.status === "True" && pod.spec?.nodeName) return { done: { scheduled: true, pod } }
          return condition?.message ? { note: condition.message } : undefined
        },
        (last) => ({ scheduled: false, message: last || "the scheduler has not placed it yet" })
      )

    /**
     * Waits for a scheduled pod to have its IP (the address the other nodes of a multi-node job
     * reach it at): its sandbox is up. A pod that ends first (its runner install failed) fails.
     */
    const waitPodIp = (cluster: Cluster, method: string, ref: PodRef) =>
      watchPod(
        cluster,
        method,
        ref,
        POD_START_TIMEOUT_MS,
        (pod) => {
          const phase = pod.status?.phase
          if (phase === "Failed" || phase === "Succeeded") {
            return { fail: `pod ${ref.name} ended (${phase}) before it started: ${pod.status?.message ?? JSON.stringify(pod.status?.initContainerStatuses?.map((s) => s.state) ?? [])}` }
          }
          if (pod.status?.podIP) return { done: pod.status.podIP }
          const waiting = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].map((s) => s.state?.waiting).find((w) => w !== undefined)
          return waiting ? { note: `${waiting.reason}: ${waiting.message ?? ""}` } : undefined
        },
        (last) => new Backend.BackendError({ module: MODULE, method, reason: "Timeout", message: `pod ${ref.name} got no IP within ${POD_START_TIMEOUT_MS / 1000}s${last ? ` (${last})` : ""}` })
      )

    /**
     * Deletes a job's pod and its service, each even if the other is gone already. With the
     * pod's uid the deletion is conditional on it (`preconditions.uid`): a pod of that name with
     * another uid is not this job's, is left alone, and counts as this one gone. A missing pod
     * is NotFound (make's terminate treats it as done).
     */
    const deletePod = (cluster: Cluster, namespace: string, name: string, uid?: string, withService = true) =>
      Effect.all([
        call(cluster, "terminateInstance", `deleting pod ${name}`, () =>
          cluster.api.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 10, ...(uid === undefined ? {} : { body: { preconditions: { uid } } }) })).pipe(
            // 409 Conflict: the precondition failed, the pod of that name is another one.
            Effect.catchIf((e) => uid !== undefined && e.reason === "AlreadyExists", (e) => Effect.fail(new Backend.BackendError({ module: MODULE, method: "terminateInstance", reason: "NotFound", message: `pod ${name} (uid ${uid}) is gone; ${e.message}`, cause: e })))
          ),
        withService
          ? call(cluster, "terminateInstance", `deleting service ${name}`, () => cluster.api.deleteNamespacedService({ name, namespace }))
          : Effect.void
      ], { concurrency: 2, mode: "either" }).pipe(
        Effect.flatMap(([pod, service]) => {
          const errors = [pod, service].flatMap((r) => (r._tag === "Left" && r.left.reason !== "NotFound" ? [r.left] : []))
          if (errors.length > 0) return Effect.fail(errors[0])
          if (pod._tag === "Left") return Effect.fail(pod.left)
          return Effect.void
        })
      )

    /**
     * Each network volume of the job is the PersistentVolumeClaim of its name in the namespace:
     * reused when it exists, else made from `volume_claims`, else refused naming it. Claims stay
     * when the run ends (a volume outlives its runs).
     */
    const ensureClaims = (cluster: Cluster, method: string, job: Backend.InstanceJob) =>
      Effect.forEach((job.volumes ?? []).flatMap((v) => ("name" in v ? [v.name] : [])), (name) =>
        call(cluster, method, `reading PersistentVolumeClaim ${name}`, () => cluster.api.readNamespacedPersistentVolumeClaim({ name, namespace: cluster.namespace })).pipe(
          Effect.asVoid,
          Effect.catchIf((e) => e.reason === "NotFound", () =>
            config.volumeClaims === undefined
              ? fail(method, "Invalid", `network volume ${name}: namespace ${cluster.namespace} of context ${cluster.region} has no PersistentVolumeClaim ${name}; create it, or set \`volume_claims.size\` in the backend's configuration to have it made`)
              : call(cluster, method, `creating PersistentVolumeClaim ${name} in namespace ${cluster.namespace}`, () =>
                cluster.api.createNamespacedPersistentVolumeClaim({ namespace: cluster.namespace, body: volumeClaim(name, cluster.namespace, config.volumeClaims!) })).pipe(
                  Effect.asVoid,
                  // Made meanwhile by another job that mounts it: reused.
                  Effect.catchIf((e) => e.reason === "AlreadyExists", () => Effect.void)
                ))
        ), { discard: true })

    /**
     * The pods of one job: one for a single-node job (pinned to the offer's node); for a
     * multi-node job one per rank (`configs`, the master first), kept on distinct nodes by pod
     * anti-affinity, each reachable by the others at its pod IP. Each pod has a NodePort
     * service of its name, made first (the pod's environment says where its ports are
     * published): the runner's port and each port the job serves. All are scheduled or none is
     * kept; whatever was made is deleted on failure.
     */
    const createPods = (method: string, offer: InstanceOffer, configs: ReadonlyArray<Backend.InstanceConfiguration>) =>
      Effect.gen(function*() {
        const cluster = yield* clusterOf(method, offer.region)
        const job = configs[0].job
        if (job === undefined || job.image === undefined) {
          return yield* fail(method, "Invalid", `the kubernetes backend runs jobs with an image only: a pod is the job's container (set \`image\` in the configuration${job ? ` of ${job.jobName}` : ""})`)
        }
        const ports = jobPorts(job)
        // What a pod here cannot do is refused, not ignored.
        const unsupported = [
          ...((job.nodes ?? 1) > 1 && configs.length === 1 ? [`a multi-node task (nodes: ${job.nodes}) one node at a time: its nodes are created together`] : []),
          ...(ports.includes(RUNNER_PORT) ? [`a job port ${RUNNER_PORT}: the runner listens on it in the pod; pick another port`] : []),
          ...(job.instanceMounts ?? []).filter((p) => p.startsWith("~")).map((p) => `an instance volume under ~ (${p}): a node has no home directory for a pod; give an absolute path`)
        ]
        if (unsupported.length > 0) {
          return yield* fail(method, "Invalid", `the kubernetes backend does not run ${unsupported.join("; ")}`)
        }
        yield* ensureClaims(cluster, method, job)
        const multi = configs.length > 1
        const names = configs.map((ic) => dnsLabel(`dstack-${ic.instanceName}`, ic.instanceId.replace(/-/g, "").slice(0, 8)))
        const group = multi ? names[0] : undefined
        // What was made, by name: its service, and its pod's uid once the pod was made. On
        // failure each is deleted; a pod not made here (its name taken) is left alone.
        const created = new Map<string, string | undefined>()
        const cleanup = Effect.suspend(() =>
          Effect.forEach([...created], ([name, uid]) =>
            (uid === undefined
              ? call(cluster, method, `deleting service ${name}`, () => cluster.api.deleteNamespacedService({ name, namespace: cluster.namespace }))
              : deletePod(cluster, cluster.namespace, name, uid, access === "node_port")
            ).pipe(Effect.catchIf((e) => e.reason === "NotFound", () => Effect.void), Effect.ignoreLogged), { discard: true, concurrency: "unbounded" }))
        const provisioned = Effect.gen(function*() {
          const made: Array<{ readonly pod: PodRef; readonly runnerPort: number }> = []
          for (const [rank, ic] of configs.entries()) {
            const name = names[rank]
            // Through port-forward the pod's own ports are reached: no service, nothing published.
            let published: ReadonlyMap<number, number | undefined> = new Map([RUNNER_PORT, ...ports].map((port) => [port, port]))
            if (access === "node_port") {
              const service = yield* call(cluster, method, `creating service ${name} in namespace ${cluster.namespace}`, () =>
                cluster.api.createNamespacedService({ namespace: cluster.namespace, body: jobService(name, cluster.namespace, ic.instanceId, ports) }))
              created.set(name, undefined)
              published = nodePorts(service)
              const missing = [RUNNER_PORT, ...ports].filter((port) => published.get(port) === undefined)
              if (missing.length > 0) return yield* fail(method, "Unknown", `service ${name} got no NodePort for port ${missing.join(", ")}`)
            }
            const body = jobPod({
              name,
              namespace: cluster.namespace,
              runnerImage: config.runnerImage,
              job: { ...job, image: job.image! },
              offer,
              config: ic,
              ...(group === undefined ? {} : { group: { id: group, rank } }),
              ...(access === "node_port" ? { publishedPorts: Object.fromEntries(ports.map((port) => [String(port), published.get(port)!])) } : {})
            })
            const pod = yield* call(cluster, method, `creating pod ${name} in namespace ${cluster.namespace}`, () => cluster.api.createNamespacedPod({ namespace: cluster.namespace, body }))
            const uid = pod.metadata?.uid
            if (uid === undefined) return yield* fail(method, "Unknown", `the Kubernetes API at ${cluster.server} answered the creation of pod ${name} without its metadata.uid`)
            created.set(name, uid)
            made.push({ pod: { name, uid }, runnerPort: published.get(RUNNER_PORT)! })
          }
          // The waits may be cut short (the run was stopped) even where the caller made the
          // creation uninterruptible: the pods made so far are then deleted, as on failure.
          const placed = yield* Effect.interruptible(Effect.forEach(made, ({ pod }) => waitScheduled(cluster, method, pod), { concurrency: "unbounded" }))
          const unplaced = placed.flatMap((p, rank) => (p.scheduled ? [] : [`${names[rank]}: ${p.message}`]))
          if (unplaced.length > 0) {
            return yield* fail(method, "NoCapacity", multi
              ? `the pods of a multi-node job were not scheduled within ${Duration.format(schedulingTimeout)} (${configs.length} pods on distinct nodes, context ${cluster.region}): ${unplaced.join("; ")}`
              : `pod ${names[0]} was not scheduled within ${Duration.format(schedulingTimeout)} on node ${offer.instance.name} (context ${cluster.region}): ${(placed[0] as { message: string }).message}`)
          }
          // The nodes of a cluster reach each other at their pod IPs.
          const podIps = multi ? yield* Effect.interruptible(Effect.forEach(made, ({ pod }) => waitPodIp(cluster, method, pod), { concurrency: "unbounded" })) : []
          return yield* Effect.forEach(made, ({ pod: { name, uid }, runnerPort }, rank) =>
            Effect.gen(function*() {
              const scheduled = placed[rank] as { readonly scheduled: true; readonly pod: k8s.V1Pod }
              const nodeName = scheduled.pod.spec!.nodeName!
              // Through port-forward the pod is named, not addressed: the transport finds its
              // API server by the context and namespace (PodRoutes).
              const hostname = access === "port_forward"
                ? PodRoutes.podHost({ namespace: cluster.namespace, pod: name, region: cluster.region })
                : cluster.hostname ?? nodeAddress(yield* call(cluster, method, `reading node ${nodeName}`, () => cluster.api.readNode({ name: nodeName })))
              if (hostname === undefined) return yield* fail(method, "Unknown", `node ${nodeName} has no ExternalIP or InternalIP address: set proxy_jump.hostname, or pod_access: port_forward`)
              const data: PodData = { namespace: cluster.namespace, pod: name, uid, ...(access === "port_forward" ? { access } : {}) }
              return new JobProvisioningData({
                backend: TYPE,
                // A multi-node job's pods land on nodes the scheduler picks: each names its own.
                instanceType: multi ? new InstanceType({ ...offer.instance, name: nodeName }) : offer.instance,
                instanceId: name,
                hostname,
                internalIp: multi ? podIps[rank] : (scheduled.pod.status?.hostIP ?? (access === "port_forward" ? undefined : hostname)),
                region: cluster.region,
                price: offer.price,
                username: "root",
                dockerized: false,
                runnerPort,
                backendData: JSON.stringify(data)
              })
            }))
        })
        return yield* provisioned.pipe(Effect.onError(() => cleanup))
      })

    const createInstance = (offer: InstanceOffer, instance: Backend.InstanceConfiguration) =>
      Effect.map(createPods("createInstance", offer, [instance]), (pds) => pds[0])

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
        let uid: string | undefined
        let withService = true
        if (backendData !== undefined) {
          const parsed = yield* Effect.try({
            try: () => JSON.parse(backendData) as PodData,
            catch: (cause) => new Backend.BackendError({ module: MODULE, method: "terminateInstance", reason: "Invalid", message: `backend data of ${instanceId} is not JSON`, cause })
          })
          namespace = parsed.namespace
          uid = parsed.uid
          withService = parsed.access !== "port_forward"
        }
        yield* deletePod(cluster, namespace, instanceId, uid, withService)
      })

    const backend = Backend.make({ type: TYPE, catalog, createInstance, createInstanceGroup: (offer, configs) => createPods("createInstanceGroup", offer, configs), terminateInstance, instancePerJob: true })
    return { ...backend, regions: clusters.map((c) => c.region) }
  })

/** The plugin's factory over `routes` (those its `kubernetes` transport reaches pods through): decodes the configuration section, then makes the backend. */
export const factory = (routes: PodRoutes.PodRoutes): BackendFactory => (config) =>
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
    Effect.flatMap((decoded) => make(decoded, routes))
  )

/** The factory of the default plugin value (over `defaultRoutes`). */
export const fromConfig: BackendFactory = factory(defaultRoutes)
