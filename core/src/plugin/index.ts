// Public exports of core/src/plugin. Append one export line per module.
export {}
export * from "./Plugin.ts"
export * from "./PluginError.ts"
export * as PluginHost from "./PluginHost.ts"
export * as PluginDiscovery from "./Discovery.ts"
export { CORE_VERSION } from "./CoreVersion.ts"
export * from "./PluginConfig.ts"
