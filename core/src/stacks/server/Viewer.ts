/**
 * The stack viewer: `GET /stacks/{owner}/{name}` answers a plain HTML page with the head frame
 * (or `?frame=ID`) drawn by a small script (viewer.js), the frame history, and a widget per
 * attachment param. Each attachment is drawn by the installed plugin viewer that claims its
 * content type or application (scripts and assets served under /stacks-assets/viewers/), else
 * shown as its metadata with a download link. A token comes from the `dstack_token` cookie;
 * `?token=…` sets the cookie once and redirects to the same page without it.
 */
import { Effect } from "effect"
import { setCookie } from "hono/cookie"
import type { ApiError } from "../../server/ApiError.ts"
import { notFoundPage as notFound, serverError } from "../../server/ApiError.ts"
import { rawRoute } from "../../server/Route.ts"
import type { RouteContext } from "../../server/Route.ts"
import { StateStore } from "../../ports/StateStore.ts"
import { PluginHost } from "../../plugin/PluginHost.ts"
import type { StackViewer, ViewerEntry } from "../StackViewer.ts"
import { parseStackPath } from "./StackName.ts"
import { TOKEN_COOKIE, frameInfo, frameToRead, optionalPrincipal, readableStack } from "./StackRoutes.ts"
import { VIEWER_CSS, VIEWER_JS } from "./ViewerScript.ts"

const ASSET_CACHE = "public, max-age=86400"

/** The installed viewers (plugins' `viewers`), in plugin order. */
const installedViewers = Effect.map(PluginHost, (host) =>
  host.contributions("viewers").map((c) => ({ name: c.key, viewer: c.value as StackViewer })))

const entryOf = (name: string, v: StackViewer): ViewerEntry => ({
  name,
  contentTypes: (v.contentTypes ?? []).map((t) => t.toLowerCase()),
  applications: v.applications ?? []
})

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

/** A percent-encoded path decoded; undefined when it is not valid percent-encoding. */
const decodedPath = (encoded: string): string | undefined => {
  try {
    return decodeURIComponent(encoded)
  } catch {
    return undefined
  }
}

const render = (ctx: RouteContext): Effect.Effect<Response, ApiError, any> =>
  Effect.gen(function*() {
    const req = ctx.hono.req
    const url = new URL(req.url)
    const token = url.searchParams.get("token")
    if (token !== null) {
      // Keep the token out of the address bar, history and logs: cookie, then redirect.
      url.searchParams.delete("token")
      setCookie(ctx.hono, TOKEN_COOKIE, token, { path: "/", httpOnly: true, sameSite: "Lax" })
      return ctx.hono.redirect(url.pathname + url.search, 303)
    }
    const full = decodedPath(url.pathname.slice("/stacks/".length))
    if (full === undefined) return errorPage(400, "The address is not valid: a % is not followed by two hex digits of UTF-8")
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
    const viewers = (yield* installedViewers).map(({ name, viewer }) => entryOf(name, viewer))
    const data = {
      viewers,
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
    summary: "The viewer's own script and stylesheet",
    handler: (ctx) =>
      Effect.gen(function*() {
        const file = ctx.params.file
        if (file === "viewer.js") return new Response(VIEWER_JS, { headers: { "content-type": "text/javascript; charset=utf-8" } })
        if (file === "viewer.css") return new Response(VIEWER_CSS, { headers: { "content-type": "text/css; charset=utf-8" } })
        return yield* Effect.fail(notFound(`No viewer asset ${file}`))
      })
  }),
  rawRoute({
    method: "GET", path: "/stacks-assets/viewers/:name/:file", tag: "stacks", access: "public",
    summary: "A plugin viewer's script (index.js) or one of its assets (a plotting library …)",
    handler: (ctx) =>
      Effect.gen(function*() {
        const { name, file } = ctx.params
        const found = (yield* installedViewers).find((v) => v.name === name)
        if (found === undefined) return yield* Effect.fail(notFound(`No installed plugin contributes the viewer ${name}`))
        if (file === "index.js") {
          return new Response(found.viewer.script, { headers: { "content-type": "text/javascript; charset=utf-8", "cache-control": ASSET_CACHE } })
        }
        const asset = Object.hasOwn(found.viewer.assets ?? {}, file) ? found.viewer.assets![file] : undefined
        if (asset === undefined) return yield* Effect.fail(notFound(`The viewer ${name} has no asset ${file}`))
        const bytes = yield* Effect.tryPromise({
          try: () => asset.load(),
          catch: (cause) => serverError(`The viewer ${name} cannot load ${file}: ${cause instanceof Error ? cause.message : String(cause)}`, cause)
        })
        return new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { "content-type": asset.contentType, "cache-control": ASSET_CACHE } })
      })
  })
]
