// Byte helpers shared by the ports and their implementations.
import { Chunk, Effect, Stream } from "effect"

/** Concatenates byte chunks into one array (the chunk itself when there is only one). */
export const concatBytes = (chunks: ReadonlyArray<Uint8Array>): Uint8Array => {
  if (chunks.length === 1) return chunks[0]
  let size = 0
  for (const c of chunks) size += c.length
  const out = new Uint8Array(size)
  let at = 0
  for (const c of chunks) {
    out.set(c, at)
    at += c.length
  }
  return out
}

/** Whole bytes as they are, or a byte stream collected into one array: for small values only. */
export const collectBytes = <E, R>(body: Uint8Array | Stream.Stream<Uint8Array, E, R>): Effect.Effect<Uint8Array, E, R> =>
  body instanceof Uint8Array
    ? Effect.succeed(body)
    : Effect.map(Stream.runCollect(body), (chunks) => concatBytes(Chunk.toReadonlyArray(chunks)))
