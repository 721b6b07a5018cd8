/**
 * What the `kubernetes` transport needs to reach a pod through the Kubernetes API, shared by
 * the backends and the transport of one plugin value: each context of a backend with
 * `pod_access: port_forward` registers its API client here, and the pod's instance carries the
 * address `pod/<namespace>/<pod>@<context>` as its host name (credentials never go into
 * provisioning data, which API answers show).
 */
import type * as k8s from "@kubernetes/client-node"

/** An API server (with the credentials of one backend's context) that pods are reached through. */
export interface PodRoute {
  readonly region: string
  readonly namespace: string
  /** The API server's URL, for messages. */
  readonly server: string
  /** A kubeconfig whose current context is the region: port-forwards authenticate with it. */
  readonly kubeConfig: k8s.KubeConfig
  readonly api: k8s.CoreV1Api
}

/** A pod as its instance's host name names it. */
export interface PodAddress {
  readonly namespace: string
  readonly pod: string
  readonly region: string
}

const PREFIX = "pod/"

/** The host name of a pod reached through the API: `pod/<namespace>/<pod>@<context>`. */
export const podHost = (address: PodAddress): string => `${PREFIX}${address.namespace}/${address.pod}@${address.region}`

/**
 * The pod a host name names, or undefined for any other host name (a node's address). The
 * namespace and pod are DNS labels (no `/` or `@`); the context name is the rest, whatever it holds.
 */
export const parsePodHost = (hostname: string): PodAddress | undefined => {
  const m = /^pod\/([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)@(.*)$/s.exec(hostname)
  return m === null ? undefined : { namespace: m[1], pod: m[3], region: m[5] }
}

/** The routes of one plugin value. */
export interface PodRoutes {
  /** Adds (or replaces, when the backend is made again with new credentials) a context's route. */
  readonly register: (route: PodRoute) => void
  /** The routes registered for a context and namespace (several when projects share the names). */
  readonly routes: (region: string, namespace: string) => ReadonlyArray<PodRoute>
}

export const make = (): PodRoutes => {
  // By context, API server and namespace: a backend made again replaces its entry.
  const byKey = new Map<string, PodRoute>()
  return {
    register: (route) => void byKey.set(JSON.stringify([route.region, route.server, route.namespace]), route),
    routes: (region, namespace) => [...byKey.values()].filter((r) => r.region === region && r.namespace === namespace)
  }
}
