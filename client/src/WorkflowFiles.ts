/**
 * Reading a project's workflow files on Node.js and Deno: `.dstack/workflows.yaml`,
 * `.dstack/workflows/*.yaml`, `.dstack/variables.yaml` and `.dstack/providers.yaml`, those
 * that exist, and the schema files providers.yaml names, as texts by path (the server parses
 * them and reports problems at their lines).
 */
import { readdir, readFile } from "node:fs/promises"
import { isAbsolute, join, normalize } from "node:path"
import { parse } from "yaml"

const missing = (e: unknown) => (e as { code?: string })?.code === "ENOENT"

export const readWorkflowFiles = async (dir: string): Promise<Record<string, string>> => {
  const texts: Record<string, string> = {}
  const read = async (rel: string) => {
    try {
      texts[rel] = await readFile(join(dir, rel), "utf8")
    } catch (e) {
      if (!missing(e)) throw e
    }
  }
  await read(".dstack/workflows.yaml")
  await read(".dstack/variables.yaml")
  await read(".dstack/providers.yaml")
  const extra = await readdir(join(dir, ".dstack/workflows")).catch((e) => {
    if (missing(e)) return [] as Array<string>
    throw e
  })
  for (const name of extra.sort()) if (/\.ya?ml$/.test(name)) await read(`.dstack/workflows/${name}`)
  // The parameter schemas of the provider programs (`schema:` in providers.yaml) travel too: the
  // server checks a workflow's parameters with them. One that is missing is reported there.
  for (const schema of providerSchemaPaths(texts[".dstack/providers.yaml"])) await read(schema)
  return texts
}

/** The `schema` paths of providers.yaml, those inside the repository; none when it does not parse. */
const providerSchemaPaths = (text: string | undefined): Array<string> => {
  if (text === undefined) return []
  let value: unknown
  try {
    value = parse(text)
  } catch {
    return []
  }
  const providers = (value as { providers?: unknown } | null)?.providers
  if (!Array.isArray(providers)) return []
  return providers
    .map((p) => (p as { schema?: unknown } | null)?.schema)
    .filter((s): s is string => typeof s === "string" && !isAbsolute(s) && !normalize(s).startsWith(".."))
    .map((s) => normalize(s))
}
