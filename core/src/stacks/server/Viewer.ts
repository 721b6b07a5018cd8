/**
 * The stack viewer: `GET /stacks/{owner}/{name}` answers a plain HTML page with the head frame
 * (or `?frame=ID`) drawn by a small script (viewer.js below), the frame history, and a widget
 * per attachment param. The plotting libraries come from this server's node_modules (no CDN).
 * A token comes from the `dstack_token` cookie; `?token=…` sets the cookie once and redirects
 * to the same page without it.
 */
import { existsSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import type { ApiError } from "../../server/ApiError.ts"
import { notFound } from "../../server/ApiError.ts"
import { rawRoute } from "../../server/Route.ts"
import type { RouteContext } from "../../server/Route.ts"
import { StateStore } from "../../ports/StateStore.ts"
import { parseStackPath } from "./StackName.ts"
import { TOKEN_COOKIE, frameInfo, frameToRead, optionalPrincipal, readableStack } from "./StackRoutes.ts"
import { VIEWER_CSS, VIEWER_JS } from "./ViewerScript.ts"

/** Third-party browser bundles served under /stacks-assets/, found in node_modules. */
const LIBRARIES: Record<string, { readonly pkg: string; readonly file: string }> = {
  "vega.min.js": { pkg: "vega", file: "build/vega.min.js" },
  "vega-lite.min.js": { pkg: "vega-lite", file: "build/vega-lite.min.js" },
  "plotly.min.js": { pkg: "plotly.js-dist-min", file: "plotly.min.js" }
}

const findInNodeModules = (pkg: string, file: string): string | undefined => {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    const candidate = join(dir, "node_modules", pkg, file)
    if (existsSync(candidate)) return candidate
    const parent = dirname(dir)
    if (parent === dir) return undefined
    dir = parent
  }
}

const cache = new Map<string, Uint8Array<ArrayBuffer>>()
const library = (name: string): Uint8Array<ArrayBuffer> | undefined => {
  const lib = LIBRARIES[name]
  if (lib === undefined) return undefined
  const hit = cache.get(name)
  if (hit !== undefined) return hit
  const path = findInNodeModules(lib.pkg, lib.file)
  if (path === undefined) return undefined
  const bytes = new Uint8Array(readFileSync(path))
  cache.set(name, bytes)
  return bytes
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!)

/** JSON inside a <script> element: `<` escaped so no `</script>` can end it early. */
const scriptJson = (v: unknown) => JSON.stringify(v).replace(/</g, "\\u003c")

const page = (title: string, body: string, status: number, extraHead = "") =>
  new Response(
    `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(title)} · dstack</title><link rel="stylesheet" href="/stacks-assets/viewer.css">${extraHead}</head>
<body>${body}</body></html>`,
    { status, headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" } }
  )

const errorPage = (status: number, message: string) =>
  page("Stack", `<main><h1>Stack unavailable</h1><p class="error" id="error" data-status="${status}">${escapeHtml(message)}</p></main>`, status)

const render = (ctx: RouteContext): Effect.Effect<Response, ApiError, any> =>
  Effect.gen(function*() {
    const req = ctx.hono.req
    const url = new URL(req.url)
    const token = url.searchParams.get("token")
    if (token !== null) {
      // Keep the token out of the address bar, history and logs: cookie, then redirect.
      url.searchParams.delete("token")
      return new Response(null, {
        status: 303,
        headers: {
          location: url.pathname + url.search,
          "set-cookie": `${TOKEN_COOKIE}=${encodeURIComponent(token)}; Path=/; HttpOnly; SameSite=Lax`
        }
      })
    }
    const full = decodeURIComponent(url.pathname.slice("/stacks/".length))
    const path = parseStackPath(full)
    if (typeof path === "string") return errorPage(400, path)
    const result = yield* Effect.either(
      Effect.gen(function*() {
        const principal = yield* optionalPrincipal(ctx)
        const stack = yield* readableStack(path, principal)
        const store = yield* StateStore
        const frames = yield* store.stacks.listFrames(path.owner, path.name, 100).pipe(
          Effect.mapError(() => notFound(`The frames of ${full} cannot be read`))
        )
        const shown = yield* frameToRead(stack, url.searchParams.get("frame") ?? undefined)
        return { stack, frames, shown }
      })
    )
    if (result._tag === "Left") return errorPage(result.left.status, result.left.message)
    const { stack, frames, shown } = result.right
    const data = {
      stack: `${stack.owner}/${stack.name}`,
      access: stack.access,
      head: stack.head,
      frame: frameInfo(shown),
      frames: frames.map(frameInfo)
    }
    const title = `${stack.owner}/${stack.name}`
    const history = frames
      .map((f) =>
        `<li${f.id === shown.id ? ' class="current"' : ""}><a href="?frame=${encodeURIComponent(f.id)}" data-frame="${escapeHtml(f.id)}">${
          escapeHtml(f.message ?? "(no message)")
        }</a> <small>${escapeHtml(f.createdBy)} · ${escapeHtml((f.committedAt ?? f.createdAt).toISOString())}${f.id === stack.head ? " · head" : ""}</small></li>`
      )
      .join("")
    return page(
      title,
      `<header><h1><span class="owner">${escapeHtml(stack.owner)}</span>/<span class="name">${escapeHtml(stack.name)}</span></h1>
<span class="access access-${stack.access}">${stack.access}</span></header>
<main>
  <section class="frame"><p class="message" id="frame-message">${escapeHtml(shown.message ?? "")}</p>
    <form id="params" class="params"></form>
    <p id="description" class="description"></p>
    <div id="attachment" class="attachment"></div>
  </section>
  <aside><h2>History</h2><ol id="history">${history}</ol></aside>
</main>
<script type="application/json" id="stack-data">${scriptJson(data)}</script>
<script src="/stacks-assets/viewer.js"></script>`,
      200
    )
  })

export const viewerRoutes = [
  rawRoute({
    method: "GET", path: "/stacks/:owner/*", tag: "stacks", access: "public",
    summary: "The web page of a stack (head frame or ?frame=ID, history, param widgets)",
    requestDescription: "A private stack needs its owner's (or an admin's) token: `?token=` once (kept in a cookie) or the dstack_token cookie.",
    responseDescription: "text/html",
    handler: render
  }),
  rawRoute({
    method: "GET", path: "/stacks-assets/:file", tag: "stacks", access: "public",
    summary: "The viewer's script, stylesheet and plotting libraries",
    handler: (ctx) =>
      Effect.gen(function*() {
        const file = ctx.params.file
        if (file === "viewer.js") return new Response(VIEWER_JS, { headers: { "content-type": "text/javascript; charset=utf-8" } })
        if (file === "viewer.css") return new Response(VIEWER_CSS, { headers: { "content-type": "text/css; charset=utf-8" } })
        const bytes = library(file)
        if (bytes === undefined) return yield* Effect.fail(notFound(`No viewer asset ${file} (is its npm package installed on the server?)`))
        return new Response(bytes, { headers: { "content-type": "text/javascript; charset=utf-8", "cache-control": "public, max-age=86400" } })
      })
  })
]
