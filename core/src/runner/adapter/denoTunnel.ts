/**
 * The Deno side of a TCP tunnel over a WebSocket (`TunnelTarget`): connects to the target with
 * `Deno.connect`, then accepts the WebSocket with `Deno.upgradeWebSocket` and carries bytes both
 * ways; an empty binary message is a half-close, as on Node.js (nodeTunnel.ts).
 */
import type { MessagesTarget, SocketHandlers, SocketTarget, TunnelTarget } from "./types.ts"

interface DenoConn {
  readonly readable: ReadableStream<Uint8Array>
  write(data: Uint8Array): Promise<number>
  closeWrite(): Promise<void>
  close(): void
}
interface DenoTunnelApi {
  connect(options: { hostname: string; port: number }): Promise<DenoConn>
  upgradeWebSocket(request: Request, options?: { protocol?: string }): { socket: WebSocket; response: Response }
}

/** Bytes queued on the WebSocket past which reading the TCP side waits. */
const HIGH_WATER = 1 << 20

export const acceptTunnel = async (request: Request, target: TunnelTarget): Promise<Response> => {
  const deno = (globalThis as unknown as { Deno: DenoTunnelApi }).Deno
  let conn: DenoConn
  try {
    conn = await deno.connect({ hostname: target.host, port: target.port })
  } catch (error) {
    target.done(true)
    return new Response(`cannot reach port ${target.port} of the job: ${error instanceof Error ? error.message : String(error)}`, { status: 502 })
  }
  const { socket, response } = deno.upgradeWebSocket(request, { protocol: target.protocol })
  socket.binaryType = "arraybuffer"
  let ended = false
  const end = (failed: boolean) => {
    if (ended) return
    ended = true
    try {
      conn.close()
    } catch {
      // already closed by the peer
    }
    if (socket.readyState <= 1) socket.close(failed ? 1011 : 1000)
    target.done(failed)
  }
  // Writes to the TCP side in order, one at a time.
  let writing: Promise<unknown> = Promise.resolve()
  socket.onmessage = (event) => {
    const chunk = new Uint8Array(event.data as ArrayBuffer)
    writing = writing.then(async () => {
      // The client's half-close; a job that has closed its connection entirely is past it.
      if (chunk.length === 0) return conn.closeWrite().catch(() => undefined)
      for (let at = 0; at < chunk.length;) at += await conn.write(chunk.subarray(at))
    }).catch(() => end(true))
  }
  socket.onclose = () => end(false)
  socket.onerror = () => end(true)
  socket.onopen = () => {
    void (async () => {
      const reader = conn.readable.getReader()
      for (;;) {
        const { done, value } = await reader.read()
        if (done) break
        if (socket.readyState !== 1) return
        socket.send(value)
        while (socket.bufferedAmount > HIGH_WATER && socket.readyState === 1) await new Promise((r) => setTimeout(r, 5))
      }
      if (socket.readyState === 1) socket.send(new Uint8Array(0))
    })().catch(() => end(true))
  }
  return response
}

/** Accepts the WebSocket and sends what `target.messages` yields, one binary message each; then closes. */
export const acceptMessages = (request: Request, target: MessagesTarget): Response => {
  const deno = (globalThis as unknown as { Deno: DenoTunnelApi }).Deno
  const { socket, response } = deno.upgradeWebSocket(request)
  const aborted = new AbortController()
  socket.onclose = () => aborted.abort()
  socket.onerror = () => aborted.abort()
  socket.onopen = () => {
    void (async () => {
      try {
        for await (const chunk of target.messages(aborted.signal)) {
          if (aborted.signal.aborted) return
          socket.send(chunk)
          // Deno's WebSocket has no write callback: wait while much is queued.
          while (socket.bufferedAmount > HIGH_WATER && !aborted.signal.aborted) await new Promise((r) => setTimeout(r, 10))
        }
        if (socket.readyState === 1) socket.close(1000)
      } catch {
        if (socket.readyState === 1) socket.close(1011)
      }
    })()
  }
  return response
}

/** Accepts the WebSocket and hands it to `target.open`: binary messages as bytes, text as strings. */
export const acceptSocket = (request: Request, target: SocketTarget): Response => {
  const deno = (globalThis as unknown as { Deno: DenoTunnelApi }).Deno
  const { socket, response } = deno.upgradeWebSocket(request)
  socket.binaryType = "arraybuffer"
  let handlers: SocketHandlers | undefined
  let closed = false
  const onClosed = () => {
    if (closed) return
    closed = true
    handlers?.closed()
  }
  socket.onopen = () => {
    handlers = target.open({
      send: (data) => {
        if (socket.readyState === 1) socket.send(data)
      },
      close: (code, reason) => {
        if (socket.readyState <= 1) socket.close(code, reason)
      }
    })
  }
  socket.onmessage = (event) => handlers?.message(typeof event.data === "string" ? event.data : new Uint8Array(event.data as ArrayBuffer))
  socket.onclose = onClosed
  socket.onerror = onClosed
  return response
}
