// A fault-injecting TCP proxy for the fault tests (test/reliability/faults-*.test.ts): it stands
// between a client and a real server (the server and PostgreSQL, the server and a runner) and,
// by its mode, passes bytes through, cuts every connection, stalls, swallows everything
// (blackhole), delays, answers garbage, truncates answers, or resets connections. The mode is set in code (`setMode`) or, for a proxy
// inside another process (test/support/fault-server.ts), read from a file that the test writes.
import * as fs from "node:fs"
import * as net from "node:net"

export type FaultMode =
  /** Bytes flow both ways untouched. */
  | { readonly kind: "pass" }
  /** Open connections are destroyed and new ones closed at once: the target is unreachable. */
  | { readonly kind: "cut" }
  /** Open connections are reset (RST) and new ones too. */
  | { readonly kind: "reset" }
  /**
   * Nothing flows either way (connections are paused, new ones accepted and held): a target
   * that never answers. Leaving the mode lets everything held flow on, nothing dropped.
   */
  | { readonly kind: "stall" }
  /**
   * Connections are accepted and everything either side sends is read and dropped: a target
   * that accepts and never answers. Unlike `stall`, leaving the mode does not revive the
   * connections it swallowed (their bytes are lost, as after a host that lost its state): they
   * stay silent until closed, and only new connections reach the target again.
   */
  | { readonly kind: "blackhole" }
  /** Each chunk from the target reaches the client `ms` later. */
  | { readonly kind: "delay"; readonly ms: number }
  /** The target's answers are replaced by as many bytes of garbage. */
  | { readonly kind: "garbage" }
  /** A connection is closed once `bytes` of the target's answer have passed. */
  | { readonly kind: "truncate"; readonly bytes: number }

export interface FaultProxy {
  readonly port: number
  readonly mode: () => FaultMode
  readonly setMode: (mode: FaultMode) => void
  /** Connections accepted so far. */
  readonly accepted: () => number
  readonly close: () => Promise<void>
}

export interface FaultProxyOptions {
  readonly targetHost: string
  readonly targetPort: number
  /** A file holding the mode as JSON, read every 100 ms (absent or empty: `pass`). */
  readonly modeFile?: string
  readonly listenHost?: string
}

const GARBAGE = Buffer.from("\x00\xffgarbage\r\n\x1b[0m{{{not http}}}\r\n\r\n")

const garbageOf = (length: number): Buffer => {
  const out = Buffer.alloc(length)
  for (let i = 0; i < length; i++) out[i] = GARBAGE[i % GARBAGE.length]!
  return out
}

const readModeFile = (file: string): FaultMode => {
  try {
    const text = fs.readFileSync(file, "utf8").trim()
    return text === "" ? { kind: "pass" } : (JSON.parse(text) as FaultMode)
  } catch {
    return { kind: "pass" }
  }
}

/** Writes a mode for a proxy that reads `file` (another process's). */
export const writeModeFile = (file: string, mode: FaultMode): void => {
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(mode))
  fs.renameSync(`${file}.tmp`, file)
}

interface Pair {
  readonly client: net.Socket
  upstream: net.Socket | undefined
  passed: number
  /** Swallowed by a blackhole: nothing passes either way any more. */
  swallowed: boolean
}

/** Starts a proxy on a free port of 127.0.0.1 (or `listenHost`) in front of the target. */
export const startFaultProxy = (options: FaultProxyOptions): Promise<FaultProxy> => {
  let mode: FaultMode = options.modeFile !== undefined ? readModeFile(options.modeFile) : { kind: "pass" }
  let accepted = 0
  const pairs = new Set<Pair>()

  const destroy = (pair: Pair, reset: boolean) => {
    pairs.delete(pair)
    if (reset) {
      pair.client.resetAndDestroy()
      pair.upstream?.resetAndDestroy()
    } else {
      pair.client.destroy()
      pair.upstream?.destroy()
    }
  }

  const apply = (next: FaultMode) => {
    const wasStalled = mode.kind === "stall"
    mode = next
    if (next.kind === "cut" || next.kind === "reset") for (const pair of [...pairs]) destroy(pair, next.kind === "reset")
    else if (next.kind === "blackhole") for (const pair of pairs) pair.swallowed = true
    else if (next.kind === "stall") {
      for (const pair of pairs) {
        pair.client.pause()
        pair.upstream?.pause()
      }
    } else if (wasStalled) {
      for (const pair of [...pairs]) {
        if (pair.upstream === undefined) connectUpstream(pair)
        pair.client.resume()
        pair.upstream!.resume()
      }
    }
  }

  const connectUpstream = (pair: Pair) => {
    const upstream = net.connect({ host: options.targetHost, port: options.targetPort })
    pair.upstream = upstream
    upstream.on("error", () => destroy(pair, false))
    upstream.on("close", () => destroy(pair, false))
    upstream.on("data", (chunk: Buffer) => {
      const m = mode
      if (pair.swallowed) return
      switch (m.kind) {
        case "pass":
          pair.client.write(chunk)
          break
        case "delay":
          upstream.pause()
          setTimeout(() => {
            if (!pair.client.destroyed) pair.client.write(chunk)
            upstream.resume()
          }, m.ms)
          break
        case "garbage":
          pair.client.write(garbageOf(chunk.length))
          break
        case "truncate": {
          const room = m.bytes - pair.passed
          if (room > 0) pair.client.write(chunk.subarray(0, room))
          pair.passed += Math.min(chunk.length, Math.max(room, 0))
          if (pair.passed >= m.bytes) destroy(pair, false)
          break
        }
        case "stall":
          // A chunk read as the stall began: passed on, nothing after it (the socket is paused).
          pair.client.write(chunk)
          upstream.pause()
          break
        case "cut":
        case "reset":
          destroy(pair, m.kind === "reset")
          break
        case "blackhole":
          pair.swallowed = true
          break
      }
    })
    pair.client.on("data", (chunk: Buffer) => {
      if (mode.kind === "blackhole") pair.swallowed = true
      if (!pair.swallowed) upstream.write(chunk)
    })
  }

  const server = net.createServer((client) => {
    accepted++
    const pair: Pair = { client, upstream: undefined, passed: 0, swallowed: false }
    pairs.add(pair)
    client.on("error", () => destroy(pair, false))
    client.on("close", () => destroy(pair, false))
    switch (mode.kind) {
      case "cut":
        destroy(pair, false)
        return
      case "reset":
        destroy(pair, true)
        return
      case "stall":
        // Accepted and held: the client waits for an answer that does not come (yet).
        client.pause()
        return
      case "blackhole":
        // Accepted, read and dropped: never connected to the target.
        pair.swallowed = true
        client.on("data", () => {})
        return
      default:
        connectUpstream(pair)
    }
  })

  const poll = options.modeFile === undefined
    ? undefined
    : setInterval(() => {
      const next = readModeFile(options.modeFile!)
      if (JSON.stringify(next) !== JSON.stringify(mode)) apply(next)
    }, 100)
  poll?.unref()

  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(0, options.listenHost ?? "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      resolve({
        port,
        mode: () => mode,
        setMode: apply,
        accepted: () => accepted,
        close: () =>
          new Promise<void>((done) => {
            if (poll !== undefined) clearInterval(poll)
            for (const pair of [...pairs]) destroy(pair, false)
            server.close(() => done())
          })
      })
    })
  })
}
