/**
 * The `kubernetes` runner transport: how the server reaches the runner of a job's pod and the
 * job's ports. A pod of a backend with `pod_access: port_forward` (host name
 * `pod/<namespace>/<pod>@<context>`) is reached through the Kubernetes API's pods/portforward
 * subresource, as `kubectl port-forward` does: a local listener on 127.0.0.1 whose every
 * connection is one port-forward WebSocket (`v4.channel.k8s.io`, @kubernetes/client-node's
 * PortForward) authenticated with the backend's kubeconfig. Any other instance (`pod_access:
 * node_port`) is dialled at its node's address and NodePort, as the `direct` transport does.
 *
 * The port-forward WebSocket protocol has no half-close: a client that ends its side ends the
 * port-forward (as the kubelet and `@kubernetes/client-node` treat the end of the input).
 */
import * as net from "node:net"
import { PassThrough, Writable } from "node:stream"
import { RunnerTransport } from "@dstack-ts/core"
import { Effect, Runtime, type Scope } from "effect"
import { client, isApiException } from "./internal/client.ts"
import { parsePodHost, type PodAddress, type PodRoute, type PodRoutes } from "./PodRoutes.ts"

const NAME = "kubernetes"
const { fail, fetchClient } = RunnerTransport

const LOOPBACK = new Set(["127.0.0.1", "localhost", "::1", "[::1]"])
const isPort = (port: number, min: number) => Number.isInteger(port) && port >= min && port <= 65535
const urlHost = (hostname: string) => (hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname)
/** Ends a connection whose port-forward failed with a reset, where the runtime can (Node), else a close. */
const reset = (socket: net.Socket) => {
  const withReset = socket as net.Socket & { resetAndDestroy?: () => void }
  if (typeof withReset.resetAndDestroy === "function") withReset.resetAndDestroy()
  else socket.destroy()
}
const errorText = (cause: unknown) => (cause instanceof Error ? cause.message : String(cause))
/** How many recent port-forward failures a listener keeps, to explain a failed request. */
const KEPT_FAILURES = 20
/** A forward logs the same failure again only after this long (a service still starting fails every connection). */
const REPEAT_LOG_MS = 30_000

/** A failed port-forward: when, and what the API server or the pod said. */
interface ForwardFailure {
  readonly at: number
  readonly message: string
}

/** A local listener whose connections are port-forwards to one port of one pod. */
interface PodListener {
  readonly port: number
  readonly failures: ReadonlyArray<ForwardFailure>
}

/** Which route reaches the pod: the one registered for its context and namespace, or (several) the one whose API has the pod. */
const routeOf = (routes: PodRoutes, method: string, address: PodAddress): Effect.Effect<PodRoute, RunnerTransport.RunnerTransportError> => {
  const candidates = routes.routes(address.region, address.namespace)
  const where = `pod ${address.namespace}/${address.pod} of context ${address.region}`
  if (candidates.length === 0) {
    // The engine makes the project's backend before it reaches a runner (core's Compute.target),
    // so a route is missing only when no project has that backend any more.
    return fail(NAME, method, "Transport", `${where}: no kubernetes backend with pod_access: port_forward for context ${address.region} and namespace ${address.namespace} is loaded on this server`)
  }
  if (candidates.length === 1) return Effect.succeed(candidates[0])
  return Effect.findFirst(candidates, (route) =>
    Effect.tryPromise(() => route.api.readNamespacedPod({ name: address.pod, namespace: address.namespace })).pipe(Effect.as(true), Effect.orElseSucceed(() => false)))
    .pipe(Effect.flatMap((found) => found._tag === "Some" ? Effect.succeed(found.value) : fail(NAME, method, "NotFound", `${where}: none of the ${candidates.length} API servers registered for it has the pod`)))
}

/** Why a port-forward could not open, in the API's words: the pod is gone, not running, or the API refused. */
const explainRefusal = async (route: PodRoute, address: PodAddress, port: number, cause: unknown): Promise<string> => {
  const head = `port-forward to port ${port} of pod ${address.namespace}/${address.pod} through the Kubernetes API at ${route.server}`
  try {
    const pod = await route.api.readNamespacedPod({ name: address.pod, namespace: address.namespace })
    const phase = pod.status?.phase ?? "Unknown"
    return phase === "Running" ? `${head} was refused: ${errorText(cause)}` : `${head}: the pod is ${phase}, not running (${errorText(cause)})`
  } catch (error) {
    if (isApiException(error) && Number(error.code) === 404) return `${head}: the pod does not exist (deleted, or never made)`
    if (isApiException(error) && (Number(error.code) === 401 || Number(error.code) === 403)) {
      return `${head}: the kubeconfig's credentials were refused (${error.code}); the user needs pods/portforward get and create, and pods get`
    }
    return `${head} failed: ${errorText(cause)}`
  }
}

/**
 * Listens on 127.0.0.1:`localPort` (0: a free port) until the scope closes; each connection is
 * piped through a port-forward of its own to `port` of the pod. A forward that fails (the pod
 * gone, nothing listening on the port) resets its connection and is kept for explaining the
 * request that used it; for a forward (`log`, whose connections are not requests of ours) it
 * is also logged as a warning.
 */
const listen = (route: PodRoute, address: PodAddress, localPort: number, port: number, method: string, log: boolean): Effect.Effect<PodListener, RunnerTransport.RunnerTransportError, Scope.Scope> =>
  Effect.gen(function*() {
    const runtime = yield* Effect.runtime<never>()
    const failures: Array<ForwardFailure> = []
    let logged: ForwardFailure | undefined
    const failed = (message: string) => {
      const at = Date.now()
      failures.push({ at, message })
      if (failures.length > KEPT_FAILURES) failures.shift()
      const repeated = logged !== undefined && logged.message === message && at - logged.at < REPEAT_LOG_MS
      if (log && !repeated) {
        logged = { at, message }
        Runtime.runFork(runtime)(Effect.logWarning(`kubernetes transport: ${message}`))
      }
    }
    const lib = yield* Effect.catchAll(client, (cause) => fail(NAME, method, "Transport", cause.message))
    const forwarder = new lib.PortForward(route.kubeConfig)
    const open = new Set<{ readonly socket: net.Socket; ws?: { close: () => void } }>()
    const server = net.createServer({ allowHalfOpen: true }, (socket) => {
      const conn: { readonly socket: net.Socket; ws?: { close: () => void } } = { socket }
      open.add(conn)
      let closed = false
      socket.on("error", () => socket.destroy())
      socket.on("close", () => {
        closed = true
        open.delete(conn)
        conn.ws?.close()
      })
      // The client's end ends the port-forward once its bytes are sent (PortForward closes the
      // WebSocket at the end of its input): the protocol cannot carry a half-close, and an HTTP
      // client's end (an aborted request) must reach the pod as a close.
      const input = new PassThrough()
      socket.pipe(input)
      const errors: Array<Buffer> = []
      const errorChannel = new Writable({
        write: (chunk: Buffer, _encoding, done) => {
          errors.push(chunk)
          done()
        }
      })
      forwarder.portForward(address.namespace, address.pod, [port], socket, errorChannel, input).then(
        (ws) => {
          const socketWs = ws as unknown as { close: () => void; on: (event: "close", listener: () => void) => void }
          conn.ws = socketWs
          if (closed) return socketWs.close()
          socketWs.on("close", () => {
            const error = Buffer.concat(errors).toString("utf8")
            if (error !== "") {
              failed(`port-forward to port ${port} of pod ${address.namespace}/${address.pod}: ${error}`)
              reset(socket)
            } else {
              socket.end()
            }
          })
        },
        (cause: unknown) =>
          void explainRefusal(route, address, port, cause).then((message) => {
            failed(message)
            reset(socket)
          })
      )
    })
    const bound = yield* Effect.acquireRelease(
      Effect.async<number, RunnerTransport.RunnerTransportError>((resume) => {
        server.once("error", (error: NodeJS.ErrnoException) =>
          resume(fail(NAME, method, "Invalid", `cannot listen on 127.0.0.1:${localPort} for the port-forward to pod ${address.namespace}/${address.pod}: ${error.code === "EADDRINUSE" ? `local port ${localPort} is in use` : error.message}`, error)))
        server.listen({ host: "127.0.0.1", port: localPort }, () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
      }),
      () =>
        Effect.async<void>((resume) => {
          for (const { socket, ws } of open) {
            ws?.close()
            socket.destroy()
          }
          server.close(() => resume(Effect.void))
        })
    )
    return { port: bound, failures }
  })

const checkTarget = (method: string, target: RunnerTransport.RunnerTarget, remotePort: number) =>
  target.hostname === ""
    ? fail(NAME, method, "Invalid", "the instance has no host name yet")
    : !isPort(remotePort, 1)
    ? fail(NAME, method, "Invalid", `the ${method === "connect" ? "runner" : "remote"} port must be 1..65535, got ${remotePort}`)
    : Effect.void

/**
 * The transport over the routes of one plugin value.
 *
 * @example
 * const routes = PodRoutes.make() // shared with the backends that register their contexts
 * const transport = KubernetesTransport.make(routes)
 */
export const make = (routes: PodRoutes): RunnerTransport.RunnerTransport => ({
  name: NAME,
  connect: (target) =>
    Effect.gen(function*() {
      yield* checkTarget("connect", target, target.runnerPort)
      const address = parsePodHost(target.hostname)
      if (address === undefined) return fetchClient(NAME, `http://${urlHost(target.hostname)}:${target.runnerPort}`)
      const route = yield* routeOf(routes, "connect", address)
      // A runner not up yet fails many requests: each failure is told in its request's error, not logged.
      const listener = yield* listen(route, address, 0, target.runnerPort, "connect", false)
      const client = fetchClient(NAME, `http://127.0.0.1:${listener.port}`)
      // A failed request says why its port-forward failed, in the API's words.
      return {
        baseUrl: client.baseUrl,
        fetch: (path, init) => {
          const start = Date.now()
          return client.fetch(path, init).pipe(Effect.mapError((error) => {
            const why = listener.failures.filter((f) => f.at >= start).at(-1)
            return why === undefined ? error : new RunnerTransport.RunnerTransportError({ ...error, message: `${error.message}: ${why.message}` })
          }))
        }
      } satisfies RunnerTransport.RunnerClient
    }),
  forward: (target, localPort, remotePort) =>
    Effect.gen(function*() {
      yield* checkTarget("forward", target, remotePort)
      if (!isPort(localPort, 0)) return yield* fail(NAME, "forward", "Invalid", `the local port must be 0..65535, got ${localPort}`)
      const address = parsePodHost(target.hostname)
      if (address === undefined) {
        // A node's NodePort is reached where it is: nothing opened.
        if (localPort === 0 || (LOOPBACK.has(target.hostname) && localPort === remotePort)) return { localHost: target.hostname, localPort: remotePort, remotePort }
        return yield* fail(NAME, "forward", "Invalid", `local port ${localPort}: a NodePort of ${target.hostname} is reached in place, not from another local port (pod_access: port_forward forwards any local port)`)
      }
      const route = yield* routeOf(routes, "forward", address)
      const listener = yield* listen(route, address, localPort, remotePort, "forward", true)
      // The API's port-forward tells a refused port on its error channel, after the local accept.
      return { localHost: "127.0.0.1", localPort: listener.port, remotePort, relayed: true }
    })
})
