/**
 * Generates docs/api.md, the HTTP API reference, from the server's OpenAPI document (the one
 * `createServer` serves at `/api/docs`, built from the route schemas by core/src/server/OpenApi.ts).
 * Each route: method, path, who may call it, request fields, response fields, errors.
 * Usage: `npx tsx scripts/gen-api-docs.ts` (writes) or `--check` (fails when out of date).
 */
import { readFile, writeFile } from "node:fs/promises"
import { fileURLToPath } from "node:url"
import { builtinRoutes } from "../core/src/server/createServer.ts"
import { openApiDocument } from "../core/src/server/OpenApi.ts"
import { isServed, UPSTREAM_ROUTES } from "../core/src/server/routes/upstream.ts"
import type { AnyRoute, RouteAccess } from "../core/src/server/Route.ts"

type JsonSchema = Record<string, any>
type Document = Record<string, any>

/** The document as the server builds it (its `info` aside, which holds the version). */
export const serverDocument = (): Document => openApiDocument(builtinRoutes, { title: "dstack-ts server API", version: "" })

const openApiPath = (path: string) => path.replace(/:([A-Za-z_]+)/g, "{$1}")

/** Nested objects are listed down to this many levels (`run_spec.configuration` is level 2). */
const MAX_DEPTH = 2
/** Enums longer than this are cut with "…". */
const MAX_ENUM = 9

const escape = (text: string) => text.replace(/\|/g, "\\|").replace(/\n+/g, " ")

/** The schema a `$ref` names (a JSON pointer: `~1` is `/`, `~0` is `~`). */
const refName = (ref: string) => ref.replace("#/components/schemas/", "").replace(/~1/g, "/").replace(/~0/g, "~")

const anchor = (text: string) =>
  text.toLowerCase().replace(/[^a-z0-9 _-]/g, "").replace(/ /g, "-")

const schemaAnchor = (name: string) => `schema-${anchor(name.replace(/[@/]/g, " ").trim())}`

const isNull = (s: JsonSchema) => s.type === "null"

/** Removes a single-`$ref` `allOf` wrapper (how annotations on a reference are written). */
const unwrap = (s: JsonSchema): JsonSchema =>
  Array.isArray(s.allOf) && s.allOf.length === 1 && Object.keys(s.allOf[0]).some((k) => k === "$ref" || k === "type")
    ? { ...s.allOf[0], ...(s.description ? { description: s.description } : {}) }
    : s

/** The members of a union, nested unions (`(number or null) or null`) taken apart. */
const flatten = (members: ReadonlyArray<JsonSchema>): Array<JsonSchema> =>
  members.flatMap((m) => {
    const u = unwrap(m)
    const nested = u.$ref === undefined && u.enum === undefined ? (u.anyOf ?? u.oneOf) : undefined
    return Array.isArray(nested) ? flatten(nested) : [m]
  })

const isObject = (s: JsonSchema) => s.type === "object" && s.properties !== undefined

/** The property that tells the members of a union of objects apart (`repo_type`), if any. */
const discriminator = (members: ReadonlyArray<JsonSchema>): string | undefined => {
  if (!members.every(isObject)) return undefined
  const keys = Object.keys(members[0].properties).filter((k) =>
    members.every((m) => Array.isArray(m.properties[k]?.enum) && m.properties[k].enum.length === 1 && (m.required ?? []).includes(k))
  )
  return keys[0]
}

/** A short type for a schema: `string`, `"a" \| "b"`, `Date`, `object[]`, `string or null` … */
const typeOf = (raw: JsonSchema): string => {
  const s = unwrap(raw)
  if (s.$ref) {
    const name = refName(s.$ref)
    return `[${name}](#${schemaAnchor(name)})`
  }
  if (Array.isArray(s.enum)) {
    const values = s.enum.map((v: unknown) => `\`${JSON.stringify(v)}\``)
    return values.length > MAX_ENUM ? `${values.slice(0, MAX_ENUM).join(" \\| ")} \\| …` : values.join(" \\| ")
  }
  if (s.const !== undefined) return `\`${JSON.stringify(s.const)}\``
  const union = s.anyOf ?? s.oneOf
  if (Array.isArray(union)) {
    const all = flatten(union)
    const members = all.filter((m: JsonSchema) => !isNull(m))
    const nullable = members.length < all.length ? " or null" : ""
    const tag = discriminator(members.map(unwrap))
    if (tag !== undefined) {
      const values = members.map((m: JsonSchema) => `\`${JSON.stringify(unwrap(m).properties[tag].enum[0])}\``)
      return `object, one of ${members.length} shapes by \`${tag}\` (${values.join(", ")})${nullable}`
    }
    const types = [...new Set(members.map(typeOf))]
    return `${types.join(" or ")}${nullable}`
  }
  if (s.type === "array") {
    if (s.prefixItems) return `[${s.prefixItems.map(typeOf).join(", ")}]`
    const item = s.items === undefined ? "any" : typeOf(s.items)
    return item.includes(" ") ? `array of (${item})` : `${item}[]`
  }
  if (s.type === "object") {
    if (s.properties !== undefined && Object.keys(s.properties).length > 0) return "object"
    if (s.additionalProperties && typeof s.additionalProperties === "object") return `map of string → ${typeOf(s.additionalProperties)}`
    if (s.patternProperties) return `map of string → ${Object.values(s.patternProperties).map((v) => typeOf(v as JsonSchema)).join(" or ")}`
    return "object"
  }
  if (Array.isArray(s.type)) return s.type.join(" or ")
  if (typeof s.type === "string") return s.type
  return "any"
}

/** What a schema says of itself beyond its type: its description and bounds. */
const noteOf = (raw: JsonSchema): string => {
  const s = unwrap(raw)
  const parts: Array<string> = []
  if (typeof s.description === "string") parts.push(s.description)
  else if (typeof raw.description === "string") parts.push(raw.description)
  return parts.join(" ")
}

interface Row {
  readonly field: string
  readonly type: string
  readonly required: boolean
  readonly note: string
}

/** The object a field holds, to list its own fields: itself, its array's items, or its nullable member. */
const inner = (raw: JsonSchema): { schema: JsonSchema; suffix: string } | undefined => {
  const s = unwrap(raw)
  if (isObject(s)) return { schema: s, suffix: "" }
  if (s.type === "array" && s.items !== undefined) {
    const items = inner(s.items)
    return items === undefined ? undefined : { schema: items.schema, suffix: `[]${items.suffix}` }
  }
  const union = s.anyOf ?? s.oneOf
  if (Array.isArray(union)) {
    const members = flatten(union).filter((m: JsonSchema) => !isNull(m))
    if (members.length === 1) return inner(members[0])
  }
  return undefined
}

const rowsOf = (object: JsonSchema, prefix: string, depth: number): Array<Row> => {
  const required = new Set<string>(object.required ?? [])
  const rows: Array<Row> = []
  for (const [name, property] of Object.entries<JsonSchema>(object.properties ?? {})) {
    const field = `${prefix}${name}`
    rows.push({ field, type: typeOf(property), required: required.has(name), note: noteOf(property) })
    const nested = inner(property)
    if (nested !== undefined && depth < MAX_DEPTH) rows.push(...rowsOf(nested.schema, `${field}${nested.suffix}.`, depth + 1))
  }
  return rows
}

const fieldTable = (rows: ReadonlyArray<Row>): string =>
  [
    "| field | type | required | description |",
    "| --- | --- | --- | --- |",
    ...rows.map((r) => `| \`${r.field}\` | ${r.type} | ${r.required ? "yes" : ""} | ${escape(r.note)} |`)
  ].join("\n")

/** A request or response body: a field table for an object, else its type. */
const body = (raw: JsonSchema | undefined): string => {
  if (raw === undefined) return "none"
  const s = unwrap(raw)
  if (isObject(s)) {
    const rows = rowsOf(s, "", 1)
    return rows.length === 0 ? "an empty JSON object `{}`" : `a JSON object:\n\n${fieldTable(rows)}`
  }
  if (s.type === "array" && s.items !== undefined && isObject(unwrap(s.items))) {
    return `a JSON array of objects:\n\n${fieldTable(rowsOf(unwrap(s.items), "[].", 1))}`
  }
  return `${typeOf(s)}${noteOf(s) ? `: ${noteOf(s)}` : ""}`
}

const accessText = (access: RouteAccess | undefined, secured: boolean): string => {
  if (access === undefined) return secured ? "a bearer token" : "none"
  if (access === "public") return "none: anyone may call it (a token, when sent, identifies the caller)"
  if (access === "user") return "any active user's token"
  if (access === "admin") return "a global admin's token"
  return `a token of a member of the project in the path with role \`${access.project}\` or higher (global admins always)`
}

const errorsText = (responses: Record<string, any>): string =>
  `${Object.keys(responses).filter((code) => code !== "200").map((code) => `\`${code}\``).join(", ")} ([errors](#errors))`

/** Shared schemas that JSON Schema cannot describe (the server decodes them with its own rules). */
const SCHEMA_NOTES: Record<string, string> = {
  AnyRunConfiguration:
    "A run configuration, as in a `.dstack.yml`: `type: task`, `service` or `dev-environment` with its keys; see [docs/configuration.md](configuration.md).",
  SshHostOrName: "A host name or address, or an object with `hostname` and the `ssh_config` keys to override; see `ssh_config.hosts[]` in [docs/configuration.md](configuration.md)."
}

const intro = `# HTTP API reference

<!-- Generated by scripts/gen-api-docs.ts from the server's OpenAPI document. Do not edit by hand. -->

The server's API is upstream dstack's: the same routes, the same snake_case JSON. This page is
generated from the OpenAPI 3.1 document that every server serves at \`GET /api/docs\` (also
\`/api/docs/openapi.json\`), which is itself built from the schemas the routes decode their
requests with and encode their answers with, so neither can drift from the server. Regenerate
with \`npx tsx scripts/gen-api-docs.ts\`; a test fails while this file is out of date.

## Conventions

- **Calls.** Almost every route is \`POST\` with a JSON body (\`Content-Type: application/json\`),
  even the reads, as upstream. A route without request fields takes an empty body or \`{}\`.
- **Tokens.** \`Authorization: Bearer <token>\`. The first start of a server prints the admin's
  token (or takes \`DSTACK_SERVER_ADMIN_TOKEN\`); \`POST /api/users/create\` answers a new user's
  token once. The stack viewer's routes also accept the \`dstack_token\` cookie.
- **Project routes** live under \`/api/project/{project_name}/…\` and need a member's token;
  global admins may call every route.
- **Errors** are upstream's: JSON \`{ "detail": [{ "msg", "code", … }] }\` with the statuses
  upstream's client acts on. A malformed body gets \`422\` with one detail per problem, each with
  \`loc\`, the path of the field at fault (\`["body", "run_spec", "configuration", "commands"]\`);
  a request refused for what it asks gets \`400\` with code \`error\` (the field, if any, in
  \`fields: [[…]]\`), a missing resource \`400\` with \`resource_not_exists\`, an existing one
  \`resource_exists\`; a missing or bad token \`403\` with \`not_authenticated\`, a role too low
  \`403\` with \`forbidden\`; an unknown route \`404\`. (The stack viewer's pages answer
  \`404\` and \`401\`, as a browser expects.)
- **Upstream's client.** A request with \`X-API-VERSION\` (upstream's client sends its version)
  is checked against the API version served, 0.21: a newer minor version is refused with
  upstream's message. \`null\` for an optional field is the field left out, everywhere. Answers
  to it show the \`local\` backend as upstream's on-prem \`remote\` and log messages in base64.
  \`runs/get\` and \`runs/list\` answer, on the run and on each job submission, the
  \`status_message\` and \`error\` upstream's server derives from statuses and termination
  reasons (\`exited (1)\`, \`stopped\`, \`inactivity duration exceeded\`, …), which its CLI prints;
  a submission waiting in a batch scheduler's queue says why in its \`status_message\`.
  [Upstream's routes](#upstreams-routes) lists every route its client calls and its state here.
- **Fields this server does not carry out.** A key a route's schema does not know is accepted
  only at upstream's default for it (null, empty, or its pydantic model's default, taken from
  upstream's source into \`core/src/server/UpstreamRequestFields.ts\`), since upstream's client
  sends every field it has; any other value gets \`400\` naming each such key, e.g.
  \`run_spec.configuration.tags is not supported by this server (got {"team":"ml"}; only
  upstream's default null is accepted)\`. Nothing sent is accepted and ignored.
- **Attach from upstream's CLI.** \`dstack apply\` without \`-d\` and \`dstack attach\` need
  the user's SSH key pair (\`users/get_my_user\` answers it, and a run submitted without
  \`ssh_key_pub\` carries its public half, as upstream's server does) and an SSH proxy to the
  job: a server started with \`--sshproxy-port\` runs one and fills each job's
  \`job_connection_info.sshproxy_*\` in \`runs/get\` and \`runs/list\`
  ([ssh-proxy.md](ssh-proxy.md)). Without it upstream's CLI submits the run and then fails in
  \`Run.attach\` (an \`AssertionError\`: the job has no SSH port to reach); the run goes on,
  follow it with \`dstack logs\` and \`dstack ps\`, or apply with \`-d\`.
- **Types.** \`Date\` fields are ISO 8601 strings; a field that may be absent is not marked
  required; \`or null\` means the server may send \`null\`. Objects are listed two levels deep;
  the [shared schemas](#shared-schemas) are at the end, and a run's \`configuration\` is the
  \`.dstack.yml\` of [docs/configuration.md](configuration.md).
- **Clients.** The TypeScript SDK (\`Client\` in \`@dstack-ts/core\`) and the CLI call these
  routes; so can \`curl\`:

\`\`\`sh
curl -s -X POST http://127.0.0.1:3000/api/project/main/runs/get \\
  -H "Authorization: Bearer $DSTACK_TOKEN" -H "Content-Type: application/json" \\
  -d '{"run_name": "hello"}'
\`\`\`
`

const title = (tag: string) => tag.charAt(0).toUpperCase() + tag.slice(1)

/** Renders the reference from an OpenAPI document and the routes' access rules. */
export const renderApiDocs = (
  document: Document = serverDocument(),
  routes: ReadonlyArray<AnyRoute<any>> = builtinRoutes
): string => {
  const accessOf = new Map(routes.map((r) => [`${r.method.toLowerCase()} ${openApiPath(r.path)}`, r.access]))
  const byTag = new Map<string, Array<{ method: string; path: string; op: any }>>()
  for (const [path, operations] of Object.entries<Record<string, any>>(document.paths)) {
    for (const [method, op] of Object.entries(operations)) {
      const tag = op.tags?.[0] ?? "other"
      byTag.set(tag, [...(byTag.get(tag) ?? []), { method, path, op }])
    }
  }
  const heading = (method: string, path: string) => `\`${method.toUpperCase()} ${path}\``
  const contents = [...byTag].map(([tag, ops]) =>
    `- **${title(tag)}**: ${ops.map(({ method, path }) => `[${heading(method, path).slice(1, -1).replace(/^[A-Z]+ /, "")}](#${anchor(`${method} ${path}`)})`).join(", ")}`
  )
  const sections = [...byTag].map(([tag, ops]) =>
    [
      `## ${title(tag)}`,
      ...ops.map(({ method, path, op }) => {
        const secured = Array.isArray(op.security) && op.security.length > 0
        const params = (op.parameters ?? []).map((p: any) => `\`${p.name}\``)
        const request = op.requestBody?.content?.["application/json"]?.schema
        const requestText = request !== undefined
          ? body(request)
          : op.requestBody?.description
          ? op.requestBody.description
          : "none"
        const ok = op.responses?.["200"]
        const response = ok?.content?.["application/json"]?.schema
        const responseText = response !== undefined ? body(response) : ok?.description ?? "none"
        return [
          `### ${heading(method, path)}`,
          "",
          op.summary,
          "",
          `- **Auth**: ${accessText(accessOf.get(`${method} ${path}`), secured)}`,
          ...(params.length > 0 ? [`- **Path parameters**: ${params.join(", ")}`] : []),
          `- **Errors**: ${errorsText(op.responses ?? {})}`,
          "",
          `**Request**: ${requestText}`,
          "",
          `**Response** (\`200\`): ${responseText}`,
          ""
        ].join("\n")
      })
    ].join("\n\n")
  )
  const schemas = Object.entries<JsonSchema>(document.components?.schemas ?? {}).map(([name, schema]) => {
    const s = unwrap(schema)
    const text = isObject(s) ? fieldTable(rowsOf(s, "", 1)) : `${typeOf({ ...s, $id: undefined, title: undefined }) === "any" ? "" : `${typeOf(s)}. `}${noteOf(s)}`.trim()
    return `### <a id="${schemaAnchor(name)}"></a>${name}\n\n${text || SCHEMA_NOTES[name] || "Any JSON value; the server decodes it with its own rules."}\n`
  })
  const errorSchema = document.paths["/api/server/get_info"]?.post?.responses?.["400"]?.content?.["application/json"]?.schema
  const statuses = Object.entries<any>(document.paths["/api/server/get_info"]?.post?.responses ?? {})
    .filter(([code]) => code !== "200")
    .map(([code, r]) => `- \`${code}\`: ${r.description}`)
  const errors = errorSchema === undefined
    ? ""
    : `## Errors\n\n${statuses.join("\n")}\n\nEvery error has this body (\`ApiErrorBody\`):\n\n${fieldTable(rowsOf(unwrap(errorSchema), "", 1))}\n`
  const upstream = [
    "## Upstream's routes\n",
    "Every route upstream's dstack client (0.21) calls, and its state on this server. A route not",
    "supported answers \`400\` with code \`error\` and says why, which upstream's client shows.\n",
    "| Route | State |",
    "| --- | --- |",
    ...UPSTREAM_ROUTES.map((u) => `| \`${u.method} ${openApiPath(u.path)}\` | ${isServed(routes, u) ? "works" : `not supported: ${u.why}`} |`),
    ""
  ].join("\n")
  return [
    intro,
    upstream,
    "## Routes\n",
    ...contents,
    "",
    ...sections,
    errors,
    "## Shared schemas\n",
    "Schemas that several routes refer to.\n",
    ...schemas
  ].join("\n")
}

const target = fileURLToPath(new URL("../docs/api.md", import.meta.url))

const main = async () => {
  const text = renderApiDocs()
  if (process.argv.includes("--check")) {
    const current = await readFile(target, "utf8").catch(() => "")
    if (current !== text) {
      console.error("docs/api.md is out of date: run npx tsx scripts/gen-api-docs.ts")
      process.exit(1)
    }
    return
  }
  await writeFile(target, text)
  console.log(`wrote ${target}`)
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main()
