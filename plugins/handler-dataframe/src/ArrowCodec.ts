/**
 * Dataframes as Apache Arrow IPC: Arrow tables, arrays of records (converted to a table) and
 * Arrow IPC bytes written elsewhere. Decodes to an Arrow `Table`.
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { type Table, tableFromIPC, tableToIPC } from "apache-arrow"
import { Effect } from "effect"
import { describeTable, isArrowTable, isRecordArray, tableFromRecords } from "./internal/columns.ts"

const { ContentType } = StackContentTypes
const ID = "dataframe/arrow"

/** What the Arrow codec encodes: a table, records, or IPC bytes (stream or file format). */
export type ArrowInput = Table | ReadonlyArray<Record<string, unknown>> | Uint8Array

const ARROW_MAGIC = [0x41, 0x52, 0x52, 0x4f, 0x57, 0x31] // "ARROW1"

const hasMagicAt = (b: Uint8Array, at: number) => ARROW_MAGIC.every((m, i) => b[at + i] === m)

/** Arrow IPC file format: "ARROW1" at both ends. */
export const isArrowFile = (b: Uint8Array): boolean =>
  b.length >= 12 && hasMagicAt(b, 0) && hasMagicAt(b, b.length - 6)

/** Arrow IPC stream format: a continuation marker and a plausible first message length. */
export const isArrowStream = (b: Uint8Array): boolean => {
  if (b.length < 8 || b[0] !== 0xff || b[1] !== 0xff || b[2] !== 0xff || b[3] !== 0xff) return false
  const length = new DataView(b.buffer, b.byteOffset, b.byteLength).getInt32(4, true)
  return length > 0 && length <= b.length - 8
}

/** Reads an IPC payload into a table, refusing bytes that hold no Arrow schema. */
export const readIpc = (method: string, bytes: Uint8Array, contentType: string): Effect.Effect<Table, Codec.CodecError> => {
  const file = Codec.mediaType(contentType) === ContentType.arrowFile
  if (file ? !isArrowFile(bytes) : !isArrowStream(bytes)) {
    return Codec.fail(
      ID,
      method,
      "Invalid",
      file ? "not an Arrow IPC file: the ARROW1 magic is missing" : "not an Arrow IPC stream: no continuation marker and message length"
    )
  }
  return Effect.flatMap(
    Codec.attempt(ID, method, "Invalid", "corrupt Arrow IPC payload", () => tableFromIPC(bytes)),
    (table) =>
      table.schema.fields.length === 0
        ? Codec.fail(ID, method, "Invalid", "corrupt Arrow IPC payload: no schema message")
        : Effect.succeed(table)
  )
}

/**
 * The Arrow codec. Encodes to the IPC stream format unless `contentType` asks for
 * `application/vnd.apache.arrow.file`; IPC bytes are stored as they are.
 */
export const arrow: Codec.Codec<ArrowInput, Table> = Codec.make<ArrowInput, Table>({
  plugin: "@dstack-ts/handler-dataframe",
  id: ID,
  application: StackContentTypes.Application.dataframe,
  contentTypes: [ContentType.arrowStream, ContentType.arrowFile],
  // Feather v2 is the IPC file format; a stream starts with the 0xFFFFFFFF continuation marker.
  fileTypes: [
    { extensions: [".arrow", ".feather"], contentType: ContentType.arrowFile, magic: [{ bytes: "ARROW1" }] },
    { extensions: [".arrows"], contentType: ContentType.arrowStream, magic: [{ bytes: [0xff, 0xff, 0xff, 0xff] }] }
  ],
  accepts: (obj) =>
    isArrowTable(obj) || isRecordArray(obj) || (obj instanceof Uint8Array && (isArrowFile(obj) || isArrowStream(obj))),
  encode: (obj, options) =>
    Effect.gen(function*() {
      if (obj instanceof Uint8Array) {
        const contentType = isArrowFile(obj) ? ContentType.arrowFile : ContentType.arrowStream
        const table = yield* readIpc("encode", obj, contentType)
        return {
          contentType,
          application: StackContentTypes.Application.dataframe,
          metadata: describeTable(table, "arrow"),
          body: obj
        }
      }
      const table = isArrowTable(obj)
        ? obj
        : yield* Codec.attempt(ID, "encode", "Invalid", "cannot convert records to an Arrow table", () =>
          tableFromRecords(obj as ReadonlyArray<Record<string, unknown>>))
      const file = options.contentType !== undefined && Codec.mediaType(options.contentType) === ContentType.arrowFile
      const body = yield* Codec.attempt(ID, "encode", "Invalid", "cannot write the table as Arrow IPC", () =>
        tableToIPC(table, file ? "file" : "stream"))
      return {
        contentType: file ? ContentType.arrowFile : ContentType.arrowStream,
        application: StackContentTypes.Application.dataframe,
        metadata: describeTable(table, "arrow"),
        body
      }
    }),
  decode: (encoded) => Effect.flatMap(Codec.bytes(encoded.body), (bytes) => readIpc("decode", bytes, encoded.contentType))
})
