/**
 * The frames of a joined machine's one connection: length-prefixed, each with a type and a
 * stream id, so that many TCP streams (runner requests, port forwards), heartbeats and the
 * machine's hello share one byte stream (the WebSocket, which the server's adapter carries to
 * a loopback TCP port). Layout: u32 length of the rest, u8 type, u32 stream id, payload.
 */
import { Buffer } from "node:buffer"
import type * as net from "node:net"

export const FrameType = {
  /** machine → server: JSON `Hello`. */
  Hello: 1,
  /** server → machine: JSON `{ machine }`, the key the machine is known by. */
  Welcome: 2,
  /** machine → server: a heartbeat. */
  Ping: 3,
  /** server → machine: its answer. */
  Pong: 4,
  /** server → machine: open stream `id` to a TCP port of the machine's loopback (payload: u16 port). */
  Open: 5,
  /** either way: bytes of stream `id`. */
  Data: 6,
  /** either way: the sender finished writing stream `id` (a half-close). */
  End: 7,
  /** either way: stream `id` is closed (payload: why, in words, possibly empty). */
  Close: 8,
  /** machine → server: it leaves the pool (payload: why, in words). */
  Bye: 9,
  /**
   * server → machine: it is refused or removed for good (payload: why, in words); the connection
   * closes and the machine does not rejoin by itself.
   */
  Refuse: 10,
  /**
   * server → machine: the connection closes, but the machine may rejoin (payload: why, in words):
   * the server shuts down, or heard nothing for too long.
   */
  Drop: 11,
  /**
   * server → machine: JSON `{ instanceId }` (null when freed), the instance that holds the
   * machine now. The machine says it again in its hello when it rejoins, so a server that
   * restarted knows the machine is busy.
   */
  Assign: 12
} as const
export type FrameType = (typeof FrameType)[keyof typeof FrameType]

export interface Frame {
  readonly type: number
  readonly id: number
  readonly payload: Buffer
}

/** What a machine says when it joins. */
export interface Hello {
  /** The machine's name in the pool (unique in the project while joined). */
  readonly name: string
  /** The runner's port on the machine's loopback. */
  readonly runnerPort: number
  /** Seconds between heartbeats. */
  readonly heartbeatSeconds: number
  /**
   * Names this run of the machine's agent (and its runner): a rejoin with the same session is
   * the same machine coming back, its runner and jobs still there; another session is a
   * machine that started again.
   */
  readonly session?: string | undefined
  /** The instance that held the machine when its connection dropped (from `Assign`). */
  readonly instanceId?: string | undefined
  readonly resources: {
    readonly cpus: number
    readonly memoryMib: number
    readonly diskMib: number
    readonly gpus: ReadonlyArray<{ readonly name: string; readonly memoryMib: number }>
    readonly cpuArch?: "x86" | "arm" | undefined
    readonly hostname: string
  }
}

/** The largest frame either side accepts: a bigger length is a broken or hostile peer. */
export const MAX_FRAME = 8 * 1024 * 1024

export const encode = (type: FrameType, id: number, payload: Uint8Array | string = Buffer.alloc(0)): Buffer => {
  const body = typeof payload === "string" ? Buffer.from(payload, "utf8") : Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength)
  const head = Buffer.allocUnsafe(9)
  head.writeUInt32BE(5 + body.length, 0)
  head.writeUInt8(type, 4)
  head.writeUInt32BE(id >>> 0, 5)
  return Buffer.concat([head, body])
}

/** Splits a byte stream into frames; `push` answers the whole frames now complete, or an error text. */
export const decoder = () => {
  let buffered = Buffer.alloc(0)
  return (chunk: Uint8Array): ReadonlyArray<Frame> | string => {
    buffered = buffered.length === 0 ? Buffer.from(chunk) : Buffer.concat([buffered, chunk])
    const frames: Array<Frame> = []
    while (buffered.length >= 4) {
      const length = buffered.readUInt32BE(0)
      if (length < 5 || length > MAX_FRAME) return `a frame of ${length} bytes (expected 5 to ${MAX_FRAME})`
      if (buffered.length < 4 + length) break
      frames.push({ type: buffered.readUInt8(4), id: buffered.readUInt32BE(5), payload: buffered.subarray(9, 4 + length) })
      buffered = buffered.subarray(4 + length)
    }
    return frames
  }
}

/** Data frames carry at most this many bytes, so one stream does not hold the others up for long. */
export const DATA_CHUNK = 64 * 1024

/**
 * A stream frame (Data, End, Close) delivered to its socket, the same on both ends of the
 * connection: bytes written, the write side ended, or the socket closed and forgotten. A Close
 * after an End lets the bytes written before it go out first (the socket may still hold them,
 * when its reader is slower than the connection): only then is it destroyed. A Close without an
 * End is the far side's reset: destroyed at once. A frame for a stream no longer open is dropped.
 * False for frames of other types.
 */
export const deliverToStream = (
  streams: Map<number, Pick<net.Socket, "write" | "end" | "destroy" | "once" | "writableEnded" | "writableFinished">>,
  frame: Frame
): boolean => {
  if (frame.type !== FrameType.Data && frame.type !== FrameType.End && frame.type !== FrameType.Close) return false
  const socket = streams.get(frame.id)
  if (socket === undefined) return true
  if (frame.type === FrameType.Data) socket.write(frame.payload)
  else if (frame.type === FrameType.End) socket.end()
  else {
    streams.delete(frame.id)
    if (socket.writableEnded && !socket.writableFinished) socket.once("finish", () => socket.destroy())
    else socket.destroy()
  }
  return true
}
