// Docker's multiplexed log stream split into stdout and stderr, whatever the chunking.
import { describe, expect, it } from "vitest"
import { FrameDemuxer } from "../src/DockerExecutor.ts"

const frame = (type: number, text: string): Uint8Array => {
  const payload = new TextEncoder().encode(text)
  const out = new Uint8Array(8 + payload.length)
  out[0] = type
  new DataView(out.buffer).setUint32(4, payload.length)
  out.set(payload, 8)
  return out
}

const collect = (chunks: ReadonlyArray<Uint8Array>) => {
  const got: Array<[string, string]> = []
  const demuxer = new FrameDemuxer((stream, bytes) => got.push([stream, new TextDecoder().decode(bytes)]))
  for (const chunk of chunks) demuxer.push(chunk)
  return got
}

describe("FrameDemuxer", () => {
  const stream = new Uint8Array([...frame(1, "out one\n"), ...frame(2, "err\n"), ...frame(1, ""), ...frame(1, "out two\n")])

  it("splits whole frames by stream type", () => {
    expect(collect([stream])).toEqual([
      ["stdout", "out one\n"],
      ["stderr", "err\n"],
      ["stdout", "out two\n"]
    ])
  })

  it("gives the same result when every byte arrives on its own", () => {
    const bytes = Array.from(stream, (b) => new Uint8Array([b]))
    expect(collect(bytes)).toEqual(collect([stream]))
  })

  it("holds back an incomplete frame until the rest arrives", () => {
    const got = collect([stream.subarray(0, 12)])
    expect(got).toEqual([])
  })
})
