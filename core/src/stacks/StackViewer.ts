/**
 * What a plugin contributes to the stack viewer (`viewers` in `definePlugin`): a browser script
 * that draws attachments of some content types or applications, and the files it needs (a
 * plotting library), served by the server under `/stacks-assets/viewers/{name}/`. Core's viewer
 * draws nothing itself but an attachment's metadata and a download link.
 *
 * The script is plain JavaScript (no modules), loaded the first time an attachment needs it,
 * and registers a render function:
 *
 * ```js
 * dstackViewer.register("vega-lite", function (ctx) {
 *   // ctx.attachment   { content_type, application, metadata, size, params, description }
 *   // ctx.container    the element to draw in (empty)
 *   // ctx.download     the URL of the attachment's bytes; ctx.json() fetches and parses them
 *   // ctx.fetch(url)   fetch, rejecting on a non-2xx answer with the server's message
 *   // ctx.asset(file)  the URL of one of this viewer's assets; ctx.loadScript(url) loads a script once
 *   // ctx.query(extra) the attachment's query string (stack, frame_id, index) plus `extra`
 *   // ctx.el(tag, attrs, text) creates an element
 *   return Promise.resolve()   // resolved once drawn; a rejection is shown as the error
 * })
 * ```
 */
import { mediaType } from "../ports/Codec.ts"

/** A file a viewer serves beside its script, read the first time it is asked for. */
export interface ViewerAsset {
  readonly contentType: string
  readonly load: () => Promise<Uint8Array>
}

/** One viewer: which attachments it draws and how. */
export interface StackViewer {
  /**
   * Media types it draws (lower case, no parameters); a trailing `*` matches by prefix, e.g.
   * `application/vnd.vegalite.*`.
   */
  readonly contentTypes?: ReadonlyArray<string>
  /** Applications it draws when no viewer claims the content type, e.g. `dataframe`. */
  readonly applications?: ReadonlyArray<string>
  /** The browser script; it calls `dstackViewer.register(name, render)` with its contribution name. */
  readonly script: string
  /** Files served at `/stacks-assets/viewers/{name}/{file}` (a file name may not be `index.js`). */
  readonly assets?: Readonly<Record<string, ViewerAsset>>
}

/** What the page tells its script about each installed viewer. */
export interface ViewerEntry {
  readonly name: string
  readonly contentTypes: ReadonlyArray<string>
  readonly applications: ReadonlyArray<string>
}

/** Does a declared media type (maybe ending in `*`) match a content type? */
export const matchesContentType = (declared: string, contentType: string): boolean => {
  const type = mediaType(contentType)
  const d = declared.toLowerCase()
  return d.endsWith("*") ? type.startsWith(d.slice(0, -1)) : type === d
}

/**
 * The viewer that draws an attachment: the first (in plugin order) that names its content type,
 * else the first that names its application; undefined when none does.
 */
export const viewerFor = (
  viewers: ReadonlyArray<ViewerEntry>,
  contentType: string,
  application: string
): ViewerEntry | undefined =>
  viewers.find((v) => v.contentTypes.some((d) => matchesContentType(d, contentType))) ??
    viewers.find((v) => v.applications.includes(application))

/**
 * An asset that is a file of an npm package installed beside the plugin (found by walking up
 * from `from`, the plugin module's `import.meta.url`, through `node_modules` folders), so that a
 * package's `exports` map need not expose it. Node or Deno only; nothing is read until asked.
 *
 * @example
 * assets: { "vega.min.js": packageAsset(import.meta.url, "vega", "build/vega.min.js", "text/javascript; charset=utf-8") }
 */
export const packageAsset = (from: string, pkg: string, file: string, contentType: string): ViewerAsset => {
  let bytes: Promise<Uint8Array> | undefined
  const load = async (): Promise<Uint8Array> => {
    const [fs, path, url] = await Promise.all([import("node:fs/promises"), import("node:path"), import("node:url")])
    for (let dir = path.dirname(url.fileURLToPath(from)); ; dir = path.dirname(dir)) {
      const candidate = path.join(dir, "node_modules", pkg, file)
      const found = await fs.readFile(candidate).then((b) => new Uint8Array(b), () => undefined)
      if (found !== undefined) return found
      if (path.dirname(dir) === dir) throw new Error(`${pkg}/${file} is not installed beside ${from} (npm install ${pkg})`)
    }
  }
  return {
    contentType,
    load: () => {
      // A failed read is not kept, so installing the package later works without a restart.
      bytes ??= load().catch((e: unknown) => {
        bytes = undefined
        throw e
      })
      return bytes
    }
  }
}
