#!/usr/bin/env node
// Node entry of the `dstack` command: runs what this package's "exports" name as its main module.
// Installed from npm that is the built dist/main.js; in the workspace it is src/main.ts, run
// through tsx so that no build step is needed there. Deno imports the TypeScript itself: tsx's
// require hook would there compile CommonJS dependencies' JSON files as scripts.
import { readFileSync } from "node:fs"

const manifest = JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8"))
const main = manifest.exports["."]
const entry = typeof main === "string" ? main : main.default
if (entry.endsWith(".ts") && !("Deno" in globalThis)) (await import("tsx/esm/api")).register()
const { main: run } = await import(new URL(`../${entry}`, import.meta.url).href)
process.exitCode = await run(process.argv.slice(2))
