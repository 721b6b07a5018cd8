// Every input answered: generated bodies, headers, paths, queries and tokens sent to every route
// of the server's route table, and generated YAML given to the configuration loader. An answer
// is never a 5xx and never late, and every error is the shape the API promises (ApiErrorBody:
// `{detail: [{msg, code, …}]}`, upstream's codes, messages that quote at most a short excerpt
// of the input). Bodies come from each route's own request schema (Effect's Arbitrary, so they
// reach the handlers), from its keys with values of the wrong type, and from arbitrary JSON,
// deep nesting and garbage. Run counts are modest; the seed is printed, and `FC_SEED=n`
// replays a failure.
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { Arbitrary, Cause, Effect, Exit, FastCheck as fc, Schema, SchemaAST } from "effect"
import { stringify } from "yaml"
import { EmbeddedStateStore } from "@dstack-ts/state-embedded"
import { layerMemory as blobsMemory } from "../../core/src/ports/BlobStore.ts"
import { createServer, type Server } from "../../core/src/server/createServer.ts"
import { notSupportedRoutes } from "../../core/src/server/routes/upstream.ts"
import { ApiErrorBody, MAX_MESSAGE } from "../../core/src/server/ApiError.ts"
import type { AnyRoute } from "../../core/src/server/Route.ts"
import { parseConfiguration } from "../../core/src/config/Load.ts"
import { AnyConfiguration } from "../../core/src/domain/Configuration.ts"

const ADMIN = "inputs-admin-token"
/** YAML text of a value (`stringify` gives undefined for some values). */
const yamlStringify = (value: unknown): string => stringify(value) ?? ""
const SEED = process.env.FC_SEED !== undefined ? Number(process.env.FC_SEED) : Date.now() % 2_147_483_647
const RUNS = Number(process.env.FC_RUNS ?? 12)
/** How long one answer may take (headers, then the whole body) before it counts as a hang. */
const ANSWER_MS = 10_000

let server: Server
let userToken = ""
const generated = { requests: 0, yaml: 0, schemaRoutes: 0 }

beforeAll(async () => {
  console.log(`[inputs] fast-check seed ${SEED} (replay with FC_SEED=${SEED}), ${RUNS} runs per property`)
  server = await createServer({ state: EmbeddedStateStore.layerMemory(), blobs: blobsMemory, adminToken: ADMIN, secrets: { key: Buffer.alloc(32, 7).toString("base64") } })
  const created = await post("/api/users/create", ADMIN, JSON.stringify({ username: "fuzzer", global_role: "user" }))
  userToken = JSON.parse(created.text).creds.token
  await post("/api/projects/main/add_members", ADMIN, JSON.stringify({ members: [{ username: "fuzzer", project_role: "user" }] }))
}, 60_000)
afterAll(async () => {
  console.log(`[inputs] requests generated: ${generated.requests} (${generated.schemaRoutes} routes with bodies made from their request schema), YAML texts generated: ${generated.yaml}`)
  await server?.close()
})

const withTimeout = <A>(what: string, p: Promise<A>): Promise<A> =>
  Promise.race([p, new Promise<A>((_, reject) => setTimeout(() => reject(new Error(`no answer within ${ANSWER_MS} ms: ${what}`)), ANSWER_MS))])

interface Answer {
  readonly status: number
  readonly contentType: string
  readonly text: string
}

const send = async (method: string, url: string, headers: Record<string, string>, body: string | undefined): Promise<Answer> => {
  generated.requests++
  const what = `${method} ${url.slice(0, 200)}`
  const res = await withTimeout(what, Promise.resolve(server.app.request(url, { method, headers, ...(body !== undefined && method !== "GET" ? { body } : {}) })))
  const contentType = res.headers.get("content-type") ?? ""
  // A stream (live logs) has answered once its headers arrive.
  if (contentType.startsWith("text/event-stream") || contentType.startsWith("application/x-dstack-ts-logs")) {
    await res.body?.cancel()
    return { status: res.status, contentType, text: "" }
  }
  return { status: res.status, contentType, text: await withTimeout(`${what} (body)`, res.text()) }
}
const post = (route: string, token: string, body: string) =>
  send("POST", route, { "content-type": "application/json", authorization: `Bearer ${token}` }, body)

const decodeErrorBody = Schema.decodeUnknownEither(ApiErrorBody)
/** Upstream's codes at 400 (its client raises by them), and this server's for other statuses. */
const CODES_400 = new Set(["error", "resource_not_exists", "resource_exists", "no_offers"])

/** The promises every answer keeps; a string naming the broken one, or undefined. */
const broken = (a: Answer, page = false): string | undefined => {
  if (a.status >= 500) return `a ${a.status}: ${a.text.slice(0, 300)}`
  if (a.status < 400) return undefined
  // The stack viewer's pages (outside /api) answer a browser: an error there is a page.
  if (page && a.contentType.startsWith("text/html")) return a.text.length > 64 * 1024 ? `an error page of ${a.text.length} bytes` : undefined
  if (!a.contentType.startsWith("application/json")) return `an error of type ${a.contentType}`
  let json: unknown
  try {
    json = JSON.parse(a.text)
  } catch {
    return `an error body that is not JSON: ${a.text.slice(0, 200)}`
  }
  const body = decodeErrorBody(json)
  if (body._tag === "Left") return `an error body not of the promised shape: ${a.text.slice(0, 300)}`
  for (const d of body.right.detail) {
    if (d.msg.length === 0) return "an empty error message"
    if (d.msg.length > MAX_MESSAGE + 64) return `an error message of ${d.msg.length} characters`
    if (a.status === 400 && !CODES_400.has(d.code)) return `code ${d.code} at 400`
    if (a.status === 400 && d.loc !== undefined) return "loc at 400 (upstream's client reads fields)"
    if (a.status === 422 && d.code !== "invalid_request") return `code ${d.code} at 422`
    // An optional field of the wrong type is one problem, not also "Expected undefined".
    if (/^Expected undefined, actual/.test(d.msg) && body.right.detail.length > 1) return `a second, confusing detail: ${d.msg.slice(0, 100)}`
    if (a.status === 403 && d.code !== "forbidden" && d.code !== "not_authenticated") return `code ${d.code} at 403`
  }
  if (a.text.length > 64 * 1024) return `an error body of ${a.text.length} bytes`
  return undefined
}

// ---------------------------------------------------------------------------------------------
// Generators

/** The keys of a request schema's encoded (wire) side, when it is a struct. */
const wireKeys = (schema: Schema.Schema.Any): ReadonlyArray<string> => {
  let ast = SchemaAST.encodedAST(schema.ast)
  while (SchemaAST.isTransformation(ast) || SchemaAST.isRefinement(ast)) ast = SchemaAST.isTransformation(ast) ? ast.from : ast.from
  return SchemaAST.isTypeLiteral(ast) ? ast.propertySignatures.map((p) => String(p.name)) : []
}

/** Valid-shaped wire bodies of a schema, when Effect can make them; undefined when not. */
const schemaBodies = (schema: Schema.Schema.Any): fc.Arbitrary<unknown> | undefined => {
  try {
    const arb = Arbitrary.make(Schema.encodedSchema(schema) as Schema.Schema<unknown>)
    // One draw, to find schemas whose generator cannot work before the property runs.
    fc.sample(arb, { numRuns: 1, seed: SEED })
    return arb
  } catch {
    return undefined
  }
}

const wrongValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.string({ maxLength: 40 }),
  fc.string({ minLength: 2_000, maxLength: 3_000 }),
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 })
)

const nested = fc.integer({ min: 1, max: 20_000 }).chain((depth) =>
  fc.constantFrom(`${"[".repeat(depth)}${"]".repeat(depth)}`, `${'{"a":'.repeat(depth)}1${"}".repeat(depth)}`, `{"run_spec":${"[".repeat(depth)}${"]".repeat(depth)}}`)
)

/** A request body's text for a route: valid-shaped, wrong-typed, arbitrary, nested or garbage. */
const bodyText = (route: AnyRoute<any>): fc.Arbitrary<string | undefined> => {
  const request = route.kind === "json" ? route.request : undefined
  const keys = request ? wireKeys(request) : []
  const valid = request ? schemaBodies(request) : undefined
  const options: Array<fc.Arbitrary<string | undefined>> = [
    fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)),
    fc.string({ maxLength: 200 }),
    nested,
    fc.constant(undefined)
  ]
  if (keys.length > 0) {
    options.push(fc.record(Object.fromEntries(keys.map((k) => [k, wrongValue])), { requiredKeys: [] }).map((v) => JSON.stringify(v)))
  }
  if (valid !== undefined) generated.schemaRoutes++
  if (valid !== undefined) options.push(valid.map((v) => JSON.stringify(v)), valid.map((v) => JSON.stringify(v)))
  return fc.oneof(...options)
}

const token: fc.Arbitrary<string | undefined> = fc.oneof(
  fc.constant(ADMIN),
  fc.constant(ADMIN),
  fc.constant("<user>"),
  fc.constant(undefined),
  fc.string({ maxLength: 100 }),
  fc.string({ minLength: 5_000, maxLength: 6_000 })
)

/** Header values are Latin-1 only (a Request refuses others): generated text kept to it. */
const latin1 = (s: string) => s.replace(/[^\x20-\x7e]/g, "x")

const headers = fc.record(
  {
    contentType: fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "garbage/;;;"),
    authorization: token.map((t) => (t === undefined ? undefined : t === ADMIN || t === "<user>" ? `Bearer ${t}` : `Bearer ${latin1(t)}`)),
    rawAuthorization: fc.option(fc.string({ maxLength: 60 }).map(latin1)),
    apiVersion: fc.option(fc.oneof(fc.constantFrom("0.21.2", "0.19.0", "latest", "0.0.0", "99.0"), fc.string({ maxLength: 30 }).map(latin1))),
    accept: fc.option(fc.constantFrom("application/json", "text/event-stream", "application/x-dstack-ts-logs", "*/*"))
  },
  { requiredKeys: ["contentType", "authorization"] }
)

const segment = fc.oneof(
  fc.constantFrom("main", "nope", "admin", "fuzzer"),
  fc.string({ minLength: 1, maxLength: 40 }),
  fc.string({ minLength: 300, maxLength: 2_000 }),
  fc.constantFrom("..", "%2e%2e", "%00", "a%2Fb", " ", "%ZZ")
)

/** A path for a route's pattern: each `:param` (and `*`) filled with a generated segment. */
const pathFor = (pattern: string): fc.Arbitrary<string> => {
  const params = pattern.match(/:[a-z_]+|\*/g) ?? []
  if (params.length === 0) return fc.constant(pattern)
  return fc.tuple(...params.map(() => segment)).map((values) => {
    let i = 0
    return pattern.replace(/:[a-z_]+|\*/g, () => {
      const v = values[i++]!
      return /%/.test(v) ? v : encodeURIComponent(v)
    })
  })
}

const query = fc.option(
  fc.dictionary(
    fc.constantFrom("run_name", "job_submission_id", "start_time", "diagnose", "stack", "frame_id", "index", "format", "x"),
    fc.oneof(fc.string({ maxLength: 40 }), fc.constantFrom("0", "-1", "1e400", "2026-13-45T99:99", "true", "main")),
    { maxKeys: 4 }
  ).map((q) => new URLSearchParams(q).toString())
)

// ---------------------------------------------------------------------------------------------

describe("every route answers every input", () => {
  it("generated bodies, headers, paths, queries and tokens: never a 5xx, never a hang, always the promised error shape", async () => {
    const routes = [...server.routes, ...notSupportedRoutes(server.routes)]
    const failures: Array<string> = []
    for (const route of routes) {
      const property = fc.asyncProperty(pathFor(route.path), query, headers, bodyText(route), async (path, q, h, body) => {
        // Never take away the tokens the next runs send, nor the main project.
        fc.pre(body === undefined || !/"(admin|fuzzer|main)"/.test(body))
        const url = `${path}${q ? `?${q}` : ""}`
        const sent: Record<string, string> = { "content-type": h.contentType }
        const auth = h.authorization?.replace("<user>", userToken)
        if (auth !== undefined) sent.authorization = auth
        if (h.rawAuthorization != null) sent.authorization = h.rawAuthorization
        if (h.apiVersion != null) sent["x-api-version"] = h.apiVersion
        if (h.accept != null) sent.accept = h.accept
        const answer = await send(route.method, url, sent, body)
        const problem = broken(answer, !route.path.startsWith("/api/"))
        if (problem !== undefined) throw new Error(`${route.method} ${url.slice(0, 120)} body ${String(body).slice(0, 120)}: ${problem}`)
      })
      const result = await fc.check(property, { seed: SEED, numRuns: RUNS, endOnFailure: true })
      if (result.failed) failures.push(`${route.method} ${route.path} (seed ${result.seed}, replay with FC_SEED): ${String((result.errorInstance as Error)?.message ?? result.errorInstance).slice(0, 600)}`)
    }
    expect(failures, `seed ${SEED}`).toEqual([])
  }, 600_000)

  it("paths that match no route: a 404 of the promised shape", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(segment, { minLength: 1, maxLength: 6 }), fc.constantFrom("GET", "POST", "PUT", "DELETE", "PATCH"), async (parts, method) => {
        const url = `/api/${parts.map((p) => (/%/.test(p) ? p : encodeURIComponent(p))).join("/")}`
        const answer = await send(method, url, { "content-type": "application/json", authorization: `Bearer ${ADMIN}` }, method === "GET" ? undefined : "{}")
        const problem = broken(answer)
        if (problem !== undefined) throw new Error(`${method} ${url.slice(0, 120)}: ${problem}`)
      }),
      { seed: SEED, numRuns: RUNS * 8 }
    )
  }, 120_000)
})

// ---------------------------------------------------------------------------------------------
// The configuration loader

const CONFIG_KEYS = ["type", "name", "image", "commands", "env", "resources", "ports", "port", "replicas", "nodes", "python", "working_dir", "retry", "max_duration", "spot_policy", "ssh_config", "model", "gateway", "volumes", "registry_auth", "fleets", "backends", "regions", "idle_duration", "utilization_policy", "scaling", "files", "repos", "entrypoint", "user", "privileged", "shell"]
const CONFIG_TYPES = ["task", "service", "dev-environment", "fleet", "volume", "gateway", "workflow", "bogus"]

const configLike = fc
  .record({
    type: fc.constantFrom(...CONFIG_TYPES),
    extra: fc.dictionary(fc.constantFrom(...CONFIG_KEYS), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 6 })
  })
  .map(({ type, extra }) => yamlStringify({ ...extra, type }))

const validConfigs = (() => {
  try {
    const arb = Arbitrary.make(Schema.encodedSchema(AnyConfiguration) as Schema.Schema<unknown>)
    fc.sample(arb, { numRuns: 1, seed: SEED })
    return arb.map((v) => yamlStringify(v))
  } catch {
    return undefined
  }
})()

/** A text with one random edit: a character inserted, a line dropped, or cut short. */
const mutated = (texts: fc.Arbitrary<string>) =>
  fc.tuple(texts, fc.nat(), fc.constantFrom(":", "-", " ", "\t", "\n", "&a", "*a", "!!binary", "{", "[", "'", '"', "#", "|", ">", "%", "@", "\u0000")).map(([text, n, ch]) => {
    const at = text.length === 0 ? 0 : n % text.length
    switch (n % 3) {
      case 0:
        return text.slice(0, at) + ch + text.slice(at)
      case 1: {
        const lines = text.split("\n")
        lines.splice(n % Math.max(lines.length, 1), 1)
        return lines.join("\n")
      }
      default:
        return text.slice(0, at)
    }
  })

const aliasBomb = fc.integer({ min: 2, max: 12 }).map((levels) => {
  const lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
  for (let i = 1; i < levels; i++) lines.push(`a${i}: &a${i} [${Array(10).fill(`*a${i - 1}`).join(", ")}]`)
  return `type: task\ncommands: *a${levels - 1}\n${lines.join("\n")}\n`
})

const yamlText = fc.oneof(
  fc.string({ maxLength: 300 }),
  fc.jsonValue({ maxDepth: 4 }).map((v) => yamlStringify(v)),
  configLike,
  mutated(configLike),
  aliasBomb,
  fc.integer({ min: 1, max: 5_000 }).map((d) => `type: task\ncommands: ${"[".repeat(d)}${"]".repeat(d)}\n`),
  ...(validConfigs !== undefined ? [validConfigs, mutated(validConfigs)] : [])
)

describe("the configuration loader answers every YAML text", () => {
  it("a configuration, or a ConfigurationError whose every issue has a position and a message: never a defect", () => {
    fc.assert(
      fc.property(yamlText, (text) => {
        generated.yaml++
        const exit = Effect.runSyncExit(parseConfiguration(text, { file: "fuzz.dstack.yml", supportedOnly: true }))
        if (Exit.isSuccess(exit)) return
        const failure = Cause.failureOption(exit.cause)
        if (failure._tag === "None") throw new Error(`a defect, not a ConfigurationError: ${Cause.pretty(exit.cause).slice(0, 500)}\n--- text:\n${text.slice(0, 500)}`)
        const error = failure.value
        expect(error._tag).toBe("ConfigurationError")
        expect(error.issues.length).toBeGreaterThan(0)
        for (const issue of error.issues) {
          expect(issue.line).toBeGreaterThanOrEqual(1)
          expect(issue.column).toBeGreaterThanOrEqual(1)
          expect(issue.message.length).toBeGreaterThan(0)
          expect(issue.message.length).toBeLessThan(2_000)
        }
      }),
      { seed: SEED, numRuns: RUNS * 25 }
    )
  }, 120_000)
})
