// Which client calls, by the `X-API-VERSION` header that upstream's dstack client sends (its
// own version; dstack-ts's client sends none). The server speaks upstream's API of
// `UPSTREAM_API_VERSION`: a newer minor client is refused with upstream's message, an older
// one than `OLDEST_CLIENT` too; and answers to upstream clients name this server's `local`
// backend as upstream's on-prem type `remote`, since no upstream client knows `local`.
import { ApiError } from "./ApiError.ts"

/** The upstream dstack release whose HTTP API this server answers. */
export const UPSTREAM_API_VERSION = "0.21.2"
/** The oldest upstream client whose requests and models this server follows. */
export const OLDEST_CLIENT = "0.20.0"

const parse = (v: string): readonly [number, number, number] | undefined => {
  const m = /^v?(\d+)\.(\d+)(?:\.(\d+))?/.exec(v.trim())
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined
}
const [API_MAJOR, API_MINOR] = parse(UPSTREAM_API_VERSION)!
const [OLD_MAJOR, OLD_MINOR] = parse(OLDEST_CLIENT)!

const incompatible = (client: string) =>
  new ApiError({
    status: 400,
    detail: [{ msg: `The client/CLI version (${client}) is incompatible with the server version (${UPSTREAM_API_VERSION}).`, code: "invalid_request" }]
  })

/**
 * The refusal for a client version this server cannot serve, or undefined. No header, `latest`
 * and `0.0.0` (upstream's development builds) are served, as upstream serves them.
 */
export const checkClientVersion = (header: string | undefined): ApiError | undefined => {
  if (header === undefined || header === "latest") return undefined
  const v = parse(header)
  if (v === undefined) return new ApiError({ status: 400, detail: [{ msg: `Invalid version: ${header.slice(0, 64)}`, code: "invalid_request" }] })
  const [major, minor] = v
  if (major === 0 && minor === 0 && v[2] === 0) return undefined
  if (major > API_MAJOR || (major === API_MAJOR && minor > API_MINOR)) return incompatible(header.slice(0, 64))
  if (major < OLD_MAJOR || (major === OLD_MAJOR && minor < OLD_MINOR)) return incompatible(header.slice(0, 64))
  return undefined
}

const LOCAL = /"backend":"local"/g
const decoder = new TextDecoder()

/**
 * A JSON answer as an upstream client reads it: `"backend":"local"` (offers, provisioning data,
 * instances) becomes upstream's `"backend":"remote"`. Unchanged when no such value is in it.
 */
export const forUpstreamClient = (json: string | Uint8Array): string | Uint8Array => {
  const text = typeof json === "string" ? json : decoder.decode(json)
  return text.includes('"backend":"local"') ? text.replace(LOCAL, '"backend":"remote"') : json
}
