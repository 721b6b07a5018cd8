/**
 * SVG images, given as text or bytes: recognised by an `<svg` root element (after an optional
 * XML declaration, comments and doctype). Stored verbatim as `image/svg+xml`; decoded to the
 * same form it was pushed in (the metadata remembers whether that was text).
 */
import { Codec, StackContentTypes } from "@dstack-ts/core"
import { Effect } from "effect"
import { defined, pixels } from "./internal/json.ts"

const ID = "plot/svg"

/** An SVG document as text or UTF-8 bytes. */
export type SvgImage = string | Uint8Array

// What may precede the root element: a BOM, whitespace, <?xml …?>, comments, a doctype.
const PROLOG = /^\uFEFF?\s*(?:<\?xml[^>]*\?>\s*)?(?:(?:<!--[\s\S]*?-->|<!DOCTYPE[^>]*>)\s*)*/i

/** The opening `<svg …>` tag at the root, if the text is an SVG document. */
const rootTag = (text: string): string | undefined => {
  const prolog = PROLOG.exec(text)
  const rest = text.slice(prolog ? prolog[0].length : 0)
  const m = /^<svg(?:\s[^>]*)?\/?>/i.exec(rest)
  return m ? m[0] : undefined
}

const head = (bytes: Uint8Array): string => new TextDecoder("utf-8").decode(bytes.subarray(0, 4096))

/** Is this text or these bytes an SVG document (checked on the first 4 KiB)? */
export const isSvg = (o: unknown): o is SvgImage =>
  typeof o === "string" ? rootTag(o.slice(0, 4096)) !== undefined : o instanceof Uint8Array && rootTag(head(o)) !== undefined

const attribute = (tag: string, name: string): string | undefined => {
  const m = new RegExp(`\\s${name}\\s*=\\s*(?:"([^"]*)"|'([^']*)')`, "i").exec(tag)
  return m ? (m[1] ?? m[2]) : undefined
}

/** Width and height from the root's attributes, else from its viewBox. */
const describeSvg = (tag: string, size: number, text: boolean): Codec.Metadata => {
  const viewBox = attribute(tag, "viewBox")?.trim().split(/[\s,]+/).map(Number)
  const fromBox = viewBox && viewBox.length === 4 && viewBox.every(Number.isFinite) ? viewBox : undefined
  return defined({
    kind: "svg",
    width: pixels(attribute(tag, "width")) ?? fromBox?.[2],
    height: pixels(attribute(tag, "height")) ?? fromBox?.[3],
    size,
    text: text ? true : undefined
  })
}

export const svg: Codec.Codec<SvgImage> = Codec.make<SvgImage>({
  plugin: "@dstack-ts/handler-plot",
  id: ID,
  application: StackContentTypes.Application.plot,
  contentTypes: [StackContentTypes.ContentType.svg],
  fileTypes: [{ extensions: [".svg"] }],
  // No fixed magic: an <svg> root after an optional prolog, in the first 4 KiB.
  sniff: isSvg,
  accepts: isSvg,
  encode: (image) =>
    Effect.gen(function*() {
      const text = typeof image === "string"
      const body = text ? new TextEncoder().encode(image) : image
      const source = text ? image : yield* Codec.attempt(ID, "encode", "Invalid", "SVG is not valid UTF-8", () =>
        new TextDecoder("utf-8", { fatal: true }).decode(image))
      return {
        contentType: StackContentTypes.ContentType.svg,
        application: StackContentTypes.Application.plot,
        metadata: describeSvg(rootTag(source.slice(0, 4096)) ?? "<svg>", body.length, text),
        body
      }
    }),
  decode: (encoded) =>
    Effect.gen(function*() {
      const bytes = yield* Codec.bytes(encoded.body)
      const text = yield* Codec.attempt(ID, "decode", "Invalid", "SVG is not valid UTF-8", () =>
        new TextDecoder("utf-8", { fatal: true }).decode(bytes))
      if (rootTag(text.slice(0, 4096)) === undefined) {
        return yield* Codec.fail(ID, "decode", "Invalid", "not an SVG document: no <svg> root element")
      }
      return encoded.metadata.text === true ? text : bytes
    })
})
