/**
 * @dstack-ts/backend-kubernetes — the `kubernetes` backend: kubeconfig contexts as regions,
 * their nodes as offers, each job a pod of its image reached through a NodePort service. The
 * default export is the plugin; `KubernetesBackend` holds `make` and the configuration schema,
 * `PodSpec` the pure mappings (node → offer, job → pod).
 */
import { definePlugin } from "@dstack-ts/core"
import pkg from "../package.json" with { type: "json" }
import * as PodSpec from "./internal/PodSpec.ts"
import * as KubernetesBackend from "./KubernetesBackend.ts"

export { KubernetesBackend, PodSpec }

/** The plugin: contributes the backend `kubernetes`. */
export const plugin = definePlugin({
  name: pkg.name,
  version: pkg.version,
  core: pkg.peerDependencies["@dstack-ts/core"],
  description: "Runs each job as a pod of its image on a Kubernetes cluster (kubeconfig contexts as regions, nodes as offers)",
  backends: { kubernetes: KubernetesBackend.fromConfig }
})

export default plugin
