// Polling until a condition holds, for end-to-end tests: `until(what, get, ok, timeoutMs?)` asks
// `get` until `ok` accepts its answer and returns that answer, or fails naming `what` with the
// last answer. Each suite makes its own with its defaults (how long, how often).
export interface UntilDefaults {
  readonly timeoutMs: number
  readonly everyMs: number
}

export type Until = <T>(what: string, get: () => Promise<T>, ok: (v: T) => boolean, timeoutMs?: number) => Promise<T>

export const makeUntil = (defaults: UntilDefaults): Until => async (what, get, ok, timeoutMs = defaults.timeoutMs) => {
  const start = Date.now()
  let last = await get()
  while (!ok(last)) {
    if (Date.now() - start > timeoutMs) throw new Error(`${what}: not in time; last: ${JSON.stringify(last).slice(0, 3000)}`)
    await new Promise((r) => setTimeout(r, defaults.everyMs))
    last = await get()
  }
  return last
}
