// Public exports of core/src/engine: the pure run and job lifecycles. Append one line per module.
export * from "./Transition.ts"
export * from "./JobLifecycle.ts"
export * from "./RunLifecycle.ts"
