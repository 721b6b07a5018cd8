/**
 * Reading a project's workflow files on Node.js and Deno: `.dstack/workflows.yaml`,
 * `.dstack/workflows/*.yaml`, `.dstack/variables.yaml` and `.dstack/providers.yaml`, those
 * that exist, as texts by path (the server parses them and reports problems at their lines).
 */
import { readdir, readFile } from "node:fs/promises"
import { join } from "node:path"

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
  return texts
}
