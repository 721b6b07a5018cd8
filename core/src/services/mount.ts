/**
 * Puts the services proxy on a server's app: the proxy and model routes, made once the
 * server's runtime is built, and the upgrade hook for WebSockets.
 */
import type { ManagedRuntime } from "effect"
import type { Hono } from "hono"
import type { UpgradeHandler } from "../runner/adapter/types.ts"
import type { Access } from "../server/Access.ts"
import { makeServiceProxy, mountServiceProxy, type ServiceProxy, type ServiceProxyOptions } from "./ServiceProxy.ts"
import { ServiceRegistry } from "./ServiceRegistry.ts"
import { Autoscaler } from "./Autoscaler.ts"
import { makeModelRouter, type ModelRouter } from "./ModelRouter.ts"
import { type ClientAddress, makeClientAddress } from "./ClientAddress.ts"

export type ServicesOptions = ServiceProxyOptions

export const mountServices = (
  app: Hono,
  runtime: ManagedRuntime.ManagedRuntime<ServiceRegistry | Autoscaler | Access, never>,
  options: ServicesOptions,
  clientAddress: ClientAddress = makeClientAddress(options.trustedProxies)
): { readonly upgrade: UpgradeHandler } => {
  let made: Promise<ServiceProxy> | undefined
  const proxy = () =>
    (made ??= runtime.runtime().then(async (rt) => {
      const registry = await runtime.runPromise(ServiceRegistry)
      const autoscaler = await runtime.runPromise(Autoscaler)
      return makeServiceProxy(registry, rt, autoscaler.hooks, options, autoscaler.limiter, clientAddress)
    }))
  let router: Promise<ModelRouter> | undefined
  const models = () =>
    (router ??= proxy().then(async (p) => makeModelRouter(await runtime.runPromise(ServiceRegistry), p, await runtime.runtime())))
  mountServiceProxy(app, proxy, models)
  return { upgrade: async (request, clientIp) => (await proxy()).upgrade(request, clientIp) }
}
