// Child processes that run a fixture of core/test/state/fixtures under the same runtime as the
// tests (see test/support/children.ts).
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { spawnScript, type Child } from "../../../test/support/children.ts"

export type { Child }

const here = path.dirname(fileURLToPath(import.meta.url))

/** Runs fixtures/<name>.ts in a new process of the current runtime. */
export const spawnFixture = (name: string, env: Record<string, string>): Child =>
  spawnScript(path.join(here, "fixtures", `${name}.ts`), env)
