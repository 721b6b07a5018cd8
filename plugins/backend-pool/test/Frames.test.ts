// A stream's frames delivered to its local socket (both ends of a pool connection do this): a
// Close that follows an End must not cut bytes the socket still holds for a slow reader, and a
// Close without an End resets the stream. Real loopback sockets; the reader starts reading only
// after every frame was delivered.
import * as net from "node:net"
import { afterEach, describe, expect, it } from "vitest"
import { deliverToStream, type Frame, FrameType } from "../src/internal/Frames.ts"

const closers: Array<() => void> = []
afterEach(() => {
  for (const close of closers.splice(0)) close()
})

/** A connected pair: `local` (the end frames are delivered to) and `reader` (the local client), not reading yet. */
const pair = () =>
  new Promise<{ local: net.Socket; reader: net.Socket }>((resolve) => {
    const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (local) => resolve({ local, reader }))
    closers.push(() => server.close())
    let reader: net.Socket
    server.listen(0, "127.0.0.1", () => {
      reader = net.connect({ host: "127.0.0.1", port: (server.address() as net.AddressInfo).port })
      reader.pause()
      closers.push(() => reader.destroy())
    })
  })

/** Everything the reader gets until its socket closes, and whether it ended cleanly. */
const readAll = (reader: net.Socket) =>
  new Promise<{ bytes: number; ended: boolean }>((resolve) => {
    let bytes = 0
    let ended = false
    reader.on("data", (chunk: Buffer) => (bytes += chunk.length))
    reader.on("end", () => (ended = true))
    reader.on("error", () => undefined)
    reader.on("close", () => resolve({ bytes, ended }))
    reader.resume()
  })

const frame = (type: FrameType, payload: Uint8Array = new Uint8Array(0)): Frame => ({ type, id: 1, payload: Buffer.from(payload) })

/**
 * Data frames delivered until the socket holds a megabyte the kernel would not take (its buffers
 * differ from machine to machine: 4 MiB fitted in them on one), so that bytes are still held when
 * the stream closes. Answers the bytes delivered.
 */
const fillPastKernel = (streams: Map<number, net.Socket>, local: net.Socket, chunk: Uint8Array): number => {
  let sent = 0
  while (local.writableLength < 1024 * 1024) {
    if (sent > 1024 * 1024 * 1024) throw new Error("1 GiB went into the kernel's buffers without the socket holding any")
    deliverToStream(streams, frame(FrameType.Data, chunk))
    sent += chunk.length
  }
  return sent
}

describe("deliverToStream", () => {
  it("a Close after an End lets the bytes still held go out to a slow reader first", async () => {
    const { local, reader } = await pair()
    const streams = new Map([[1, local]])
    const chunk = new Uint8Array(64 * 1024).fill(7)
    const sent = fillPastKernel(streams, local, chunk)
    deliverToStream(streams, frame(FrameType.End))
    deliverToStream(streams, frame(FrameType.Close))
    expect(local.writableLength).toBeGreaterThan(0)
    expect(streams.size).toBe(0)
    expect(await readAll(reader)).toEqual({ bytes: sent, ended: true })
    expect(local.destroyed).toBe(true)
  })

  it("a Close without an End (the far side reset) cuts the stream at once: what the socket held is dropped", async () => {
    const { local, reader } = await pair()
    const streams = new Map([[1, local]])
    const sent = fillPastKernel(streams, local, new Uint8Array(64 * 1024))
    deliverToStream(streams, frame(FrameType.Close))
    expect(local.destroyed).toBe(true)
    expect((await readAll(reader)).bytes).toBeLessThan(sent)
  })
})
