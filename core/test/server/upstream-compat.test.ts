// What upstream's client needs of every request and answer, checked without it: `null` on an
// optional key is its absence (and nowhere else), errors in upstream's statuses and shape, its
// version header checked, `local` shown as `remote` to it, and "not supported" for its routes
// this server lacks.
import { describe, expect, it } from "vitest"
import { Either, ParseResult, Schema } from "effect"
import { nullAsAbsent } from "../../src/domain/internal/nullAsAbsent.ts"
import { TaskConfiguration } from "../../src/domain/Configuration.ts"
import { RunSpec } from "../../src/domain/Run.ts"
import { ApiError, badRequest, notFound, unauthenticated, wireBody } from "../../src/server/ApiError.ts"
import { checkClientVersion, forUpstreamClient } from "../../src/server/ClientVersion.ts"
import { notSupported, notSupportedRoutes, UPSTREAM_ROUTES } from "../../src/server/routes/upstream.ts"
import { builtinRoutes } from "../../src/server/createServer.ts"

const errorsOf = <A, I>(schema: Schema.Schema<A, I>, input: unknown, options: { onExcessProperty?: "error" } = {}) => {
  const result = Schema.decodeUnknownEither(schema, { errors: "all", ...options })(input)
  return Either.isLeft(result) ? ParseResult.ArrayFormatter.formatErrorSync(result.left).map((i) => `${i.path.join(".")}: ${i.message}`) : []
}

describe("null on an optional key", () => {
  const Request = Schema.Struct({
    name: Schema.String,
    limit: Schema.optionalWith(Schema.Number, { default: () => 10 }),
    tag: Schema.optional(Schema.String),
    note: Schema.optional(Schema.NullOr(Schema.String)),
    env: Schema.optional(Schema.Record({ key: Schema.String, value: Schema.NullOr(Schema.String) })),
    items: Schema.optional(Schema.Array(Schema.NullOr(Schema.Number)))
  })

  it("is the key left out: defaults apply, and a null the schema accepts stays", () => {
    const decoded = Schema.decodeUnknownSync(nullAsAbsent(Request))({ name: "a", limit: null, tag: null, note: null, env: { FROM_SHELL: null }, items: [1, null] })
    expect(decoded).toEqual({ name: "a", limit: 10, note: null, env: { FROM_SHELL: null }, items: [1, null] })
  })

  it("is still refused where the key is required, and every other error is said as before", () => {
    expect(errorsOf(nullAsAbsent(Request), { name: null })).toEqual(["name: Expected string, actual null"])
    for (const input of [{ name: "a", limit: "x", tag: 5 }, { limit: 1 }, { name: 1, tag: [], extra: true }]) {
      expect(errorsOf(nullAsAbsent(Request), input)).toEqual(errorsOf(Request, input))
      expect(errorsOf(nullAsAbsent(Request), input, { onExcessProperty: "error" })).toEqual(errorsOf(Request, input, { onExcessProperty: "error" }))
    }
  })

  it("reaches into configurations, their ranges and resources, as upstream's client sends them", () => {
    const task = Schema.decodeUnknownSync(nullAsAbsent(TaskConfiguration))({
      type: "task", commands: ["echo"], name: null, image: null, python: null, retry: null, max_price: null,
      resources: { cpu: { arch: null, count: { min: 2, max: null } }, memory: { min: 8, max: null }, shm_size: null, gpu: null, disk: { size: { min: 100, max: null } } }
    })
    expect(task.image).toBeUndefined()
    expect(task.resources.cpu.count).toEqual({ min: 2 })
    expect(task.resources.memory).toEqual({ min: 8 })
  })

  it("gives a run spec without a repo upstream's virtual repo `none`", () => {
    const spec = Schema.decodeUnknownSync(RunSpec)({ repo_id: null, repo_data: null, configuration: { type: "task", commands: ["echo"] } })
    expect([spec.repoId, spec.repoData]).toEqual(["none", { repoType: "virtual" }])
  })
})

describe("errors in upstream's shape", () => {
  it("says a missing resource with 400 resource_not_exists, a bad token with 403", () => {
    expect(notFound("Run x does not exist").status).toBe(400)
    expect(wireBody(notFound("Run x does not exist"))).toEqual({ detail: [{ msg: "Run x does not exist", code: "resource_not_exists" }] })
    expect(unauthenticated().status).toBe(403)
  })

  it("puts a 400's field path in fields with code error, which upstream's client passes to its exception", () => {
    expect(wireBody(badRequest("You cannot delete yourself", ["body", "users", 0]))).toEqual({
      detail: [{ msg: "You cannot delete yourself", code: "error", fields: [["body", "users", "0"]] }]
    })
    const invalid = new ApiError({ status: 422, detail: [{ msg: "Expected string", code: "invalid_request", loc: ["body", "run_name"] }] })
    expect(wireBody(invalid)).toEqual({ detail: [{ msg: "Expected string", code: "invalid_request", loc: ["body", "run_name"] }] })
  })
})

describe("upstream's client version", () => {
  it("serves 0.20 and 0.21 clients, development builds and clients that send none", () => {
    for (const v of [undefined, "0.21.2", "0.21.0", "0.20.9", "latest", "0.0.0"]) expect(checkClientVersion(v), String(v)).toBeUndefined()
  })

  it("refuses newer and much older clients with upstream's message, and a version that is none", () => {
    expect(checkClientVersion("0.22.0")?.detail[0]?.msg).toBe("The client/CLI version (0.22.0) is incompatible with the server version (0.21.2).")
    expect(checkClientVersion("1.0.0")?.status).toBe(400)
    expect(checkClientVersion("0.19.30")?.detail[0]?.msg).toMatch(/\(0\.19\.30\) is incompatible/)
    expect(checkClientVersion("banana")?.detail[0]?.msg).toBe("Invalid version: banana")
  })

  it("shows the local backend as upstream's remote, and nothing else changes", () => {
    expect(forUpstreamClient('{"backend":"local","name":"local"}')).toBe('{"backend":"remote","name":"local"}')
    const bytes = new TextEncoder().encode('{"backend":"local"}')
    expect(forUpstreamClient(bytes)).toBe('{"backend":"remote"}')
    const same = '{"backend":"aws"}'
    expect(forUpstreamClient(same)).toBe(same)
  })
})

describe("upstream's routes", () => {
  it("has a not-supported answer for each one this server lacks, and none for those it has", () => {
    const missing = notSupportedRoutes(builtinRoutes)
    const paths = missing.map((r) => r.path)
    expect(paths).toContain("/api/project/:project_name/volumes/list")
    expect(paths).not.toContain("/api/project/:project_name/runs/get")
    expect(missing.length).toBeLessThan(UPSTREAM_ROUTES.length)
    const volumes = UPSTREAM_ROUTES.find((u) => u.path.endsWith("/volumes/list"))!
    expect(wireBody(notSupported(volumes)).detail[0]).toMatchObject({
      code: "error",
      msg: expect.stringMatching(/^Volumes \(POST \/api\/project\/\{project_name\}\/volumes\/list\) is not supported by this dstack-ts server: /)
    })
  })
})
