/**
 * Reassembles length-prefixed frames from a byte stream, whatever its chunking: the runner's
 * event stream (runner/EventStream.ts) and the server's log stream to the SDK (api/logFrames.ts)
 * both send a fixed-size header that holds the payload length, then the payload.
 *
 * `push` returns the frames a chunk completes. A frame that lies whole in the chunk is read in
 * place (the caller's `frameAt` gets a view of the chunk); one that spans chunks is copied, as its
 * pieces arrive, into one buffer of its size made once its header is complete — so no chunk is
 * held on to (a megabyte of output arriving in 64 KiB reads is one buffer, and the reads are
 * garbage at once), and the caller may reuse its chunks. No Node APIs: the SDK runs in browsers.
 */
export interface FrameFormat<A> {
  /** Header size in bytes (the length must be readable from a whole header). */
  readonly headerBytes: number
  /** The payload length of the frame whose header is at `pos`; throws on a header that is not one. */
  readonly lengthAt: (buffer: Uint8Array, pos: number) => number
  /** The frame's value; `payload` is `length` bytes at `pos + headerBytes`. */
  readonly frameAt: (buffer: Uint8Array, pos: number, length: number) => A
  /** A buffer for a frame that spans chunks (default: a zeroed Uint8Array; every byte is overwritten). */
  readonly alloc?: (size: number) => Uint8Array
}

export class FrameAssembler<A> {
  /** The frame being filled (its header first, until its length is known), or undefined. */
  private partial: Uint8Array | undefined
  private filled = 0
  private readonly alloc: (size: number) => Uint8Array

  constructor(private readonly format: FrameFormat<A>) {
    this.alloc = format.alloc ?? ((size) => new Uint8Array(size))
  }

  push(chunk: Uint8Array): Array<A> {
    const { headerBytes, lengthAt, frameAt } = this.format
    const frames: Array<A> = []
    let pos = 0
    while (this.partial !== undefined) {
      const take = Math.min(chunk.byteLength - pos, this.partial.byteLength - this.filled)
      this.partial.set(chunk.subarray(pos, pos + take), this.filled)
      this.filled += take
      pos += take
      if (this.filled < this.partial.byteLength) return frames
      const frame = this.partial
      const length = lengthAt(frame, 0)
      if (frame.byteLength < headerBytes + length) {
        // The header is complete: now the frame's size is known.
        this.partial = this.alloc(headerBytes + length)
        this.partial.set(frame, 0)
        continue
      }
      this.partial = undefined
      this.filled = 0
      frames.push(frameAt(frame, 0, length))
    }
    while (pos + headerBytes <= chunk.byteLength) {
      const length = lengthAt(chunk, pos)
      if (pos + headerBytes + length > chunk.byteLength) break
      frames.push(frameAt(chunk, pos, length))
      pos += headerBytes + length
    }
    if (pos < chunk.byteLength) {
      // The start of the next frame: copied off the chunk.
      const rest = chunk.subarray(pos)
      this.partial = this.alloc(rest.byteLength < headerBytes ? headerBytes : headerBytes + lengthAt(chunk, pos))
      this.partial.set(rest, 0)
      this.filled = rest.byteLength
    }
    return frames
  }

  /** Bytes of an unfinished frame held back (non-zero at the end of a stream: it was cut short). */
  get pending(): number {
    return this.filled
  }
}
