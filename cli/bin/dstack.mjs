#!/usr/bin/env node
// Node entry of the `dstack` command: registers tsx so the TypeScript sources run as they are,
// then hands argv to src/main.ts. (Deno runs src/main.ts directly.)
import { register } from "tsx/esm/api"

register()
const { main } = await import("../src/main.ts")
process.exitCode = await main(process.argv.slice(2))
