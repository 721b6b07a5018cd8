/**
 * @dstack-ts/backend-kubernetes — the `kubernetes` backend: kubeconfig contexts as regions,
 * their nodes as offers, each job a pod of its image; and the `kubernetes` transport, which
 * reaches a pod's runner and ports at its node's NodePorts or, with `pod_access:
 * port_forward`, through the Kubernetes API's port-forward. The default export is the plugin
 * (`makeKubernetesPlugin()` makes one whose transport knows only its own backends);
 * `KubernetesBackend` holds `make` and the configuration schema, `KubernetesTransport` the
 * transport, `PodSpec` the pure mappings (node → offer, job → pod).
 */
import { definePlugin, type Plugin } from "@dstack-ts/core"
import { Effect } from "effect"
import pkg from "../package.json" with { type: "json" }
import * as PodRoutes from "./PodRoutes.ts"
import * as PodSpec from "./internal/PodSpec.ts"
import * as KubernetesBackend from "./KubernetesBackend.ts"
import * as KubernetesTransport from "./KubernetesTransport.ts"

export { KubernetesBackend, KubernetesTransport, PodRoutes, PodSpec }

/**
 * A plugin value: the backend `kubernetes` and the transport `kubernetes` (which the engine
 * picks for the backend's instances, being named like it), sharing `routes`.
 */
export const makeKubernetesPlugin = (routes: PodRoutes.PodRoutes = PodRoutes.make()): Plugin =>
  definePlugin({
    name: pkg.name,
    version: pkg.version,
    core: pkg.peerDependencies["@dstack-ts/core"],
    description: "Runs each job as a pod of its image on a Kubernetes cluster (kubeconfig contexts as regions, nodes as offers), reached at its NodePorts or through the API's port-forward",
    backends: { kubernetes: KubernetesBackend.factory(routes) },
    transports: { kubernetes: () => Effect.succeed(KubernetesTransport.make(routes)) }
  })

/** The plugin (over `KubernetesBackend.defaultRoutes`, so that `KubernetesBackend.fromConfig` backends are reached too). */
export const plugin: Plugin = makeKubernetesPlugin(KubernetesBackend.defaultRoutes)

export default plugin
