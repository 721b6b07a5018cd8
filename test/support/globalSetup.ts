// Runs once per `vitest run`, before any suite: on Node, builds the workspace in the installed
// layout (test/support/builtWorkspace.ts) and hands suites the `dstack` command to spawn from it;
// on Deno, the command is the workspace's own bin (Deno runs the TypeScript sources).
import * as path from "node:path"
import type { TestProject } from "vitest/node"
import { buildWorkspace } from "./builtWorkspace.ts"

declare module "vitest" {
  export interface ProvidedContext {
    /** The `dstack` command's entry file that end-to-end suites spawn with this runtime. */
    dstackCli: string
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const cli = "Deno" in globalThis
    ? path.resolve("cli/bin/dstack.mjs")
    : path.join(await buildWorkspace(), "@dstack-ts/cli/bin/dstack.mjs")
  project.provide("dstackCli", cli)
}
