// The runner's binary event stream: whatever pieces the bytes arrive in (a byte at a time, cut
// inside a header, a frame of many chunks), the decoder yields the same events, and it holds
// on to no chunk the caller reuses.
import { describe, expect, it } from "vitest"
import { encodeFrames, FrameDecoder, type StreamFrame } from "../../src/runner/EventStream.ts"

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff)
const EVENTS: Array<StreamFrame> = [
  { kind: "state", timestamp: 1, state: { state: "running", timestamp: 1 } as any },
  { kind: "log", timestamp: 2, message: bytes(0, 1) },
  { kind: "log", timestamp: 3, message: bytes(1, 2) },
  { kind: "runner_log", timestamp: 4, message: bytes(15, 3) },
  { kind: "log", timestamp: 5, message: bytes(16, 4) },
  { kind: "log", timestamp: 6, message: bytes(17, 5) },
  { kind: "log", timestamp: 7, message: bytes(70_000, 6) },
  { kind: "log", timestamp: 8, message: bytes(300_000, 7) },
  // Sent only to a follower that asked for heartbeats: no payload, the stream's cursor.
  { kind: "heartbeat", timestamp: 8 },
  { kind: "end", timestamp: 9 }
]

/** Events as comparable plain values (payloads copied: views may point into reused chunks). */
const plain = (events: ReadonlyArray<StreamFrame>) =>
  events.map((e) => (e.kind === "log" || e.kind === "runner_log" ? { kind: e.kind, timestamp: e.timestamp, message: Buffer.from(e.message).toString("base64") } : e.kind === "state" ? { kind: e.kind, timestamp: e.timestamp, state: e.state.state } : { kind: e.kind, timestamp: e.timestamp }))

/** Decodes `stream` fed in chunks of the given sizes, each chunk a reused buffer overwritten after its push. */
const decodeIn = (stream: Uint8Array, sizes: (i: number) => number) => {
  const decoder = new FrameDecoder()
  const out: Array<ReturnType<typeof plain>[number]> = []
  let pos = 0
  const scratch = new Uint8Array(stream.byteLength)
  for (let i = 0; pos < stream.byteLength; i++) {
    const n = Math.max(1, Math.min(sizes(i), stream.byteLength - pos))
    const chunk = scratch.subarray(0, n)
    chunk.set(stream.subarray(pos, pos + n))
    out.push(...plain(decoder.push(chunk)))
    chunk.fill(0xee)
    pos += n
  }
  expect(decoder.buffered).toBe(0)
  return out
}

describe("FrameDecoder", () => {
  const stream = encodeFrames(EVENTS)
  const expected = plain(EVENTS)

  it("decodes the stream whole", () => {
    expect(plain(new FrameDecoder().push(stream))).toEqual(expected)
  })

  it("decodes it cut anywhere: a byte at a time, inside headers, in socket-sized reads", () => {
    for (const size of [1, 3, 15, 16, 17, 1000, 65_536]) expect(decodeIn(stream, () => size)).toEqual(expected)
    let seed = 7
    const random = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 40_000
    for (let round = 0; round < 5; round++) expect(decodeIn(stream, random)).toEqual(expected)
  })

  it("says how much of a frame it holds while the rest is to come", () => {
    const decoder = new FrameDecoder()
    const one = encodeFrames([{ kind: "log", timestamp: 1, message: bytes(100, 1) }])
    expect(decoder.push(one.subarray(0, 10))).toEqual([])
    expect(decoder.buffered).toBe(10)
    expect(decoder.push(one.subarray(10, 50))).toEqual([])
    expect(decoder.buffered).toBe(50)
    expect(decoder.push(one.subarray(50)).length).toBe(1)
    expect(decoder.buffered).toBe(0)
  })

  it("refuses a frame of an unknown kind and one of an impossible size, naming them", () => {
    const unknown = new Uint8Array(32)
    unknown[0] = 9
    expect(() => new FrameDecoder().push(unknown)).toThrow(/unknown event frame kind 9/)
    // Known as soon as the header is in, before any buffer is made for the frame.
    expect(() => new FrameDecoder().push(unknown.subarray(0, 16))).toThrow(/unknown event frame kind 9/)
    const huge = new Uint8Array(16)
    huge[0] = 2
    new DataView(huge.buffer).setUint32(4, 0xffffffff, true)
    expect(() => new FrameDecoder().push(huge)).toThrow(/4294967295 bytes is over the limit/)
  })
})
