// The default server build: the one place that lists the first-party plugins. `dstack server`
// runs it; a custom build (examples/custom-server) picks its own plugins and storage instead.
import { join } from "node:path"
import { homedir } from "node:os"
import { fileURLToPath } from "node:url"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import transportDirect from "@dstack-ts/transport-direct"
import transportSsh from "@dstack-ts/transport-ssh"
import backendSsh from "@dstack-ts/backend-ssh"
import handlerDataframe from "@dstack-ts/handler-dataframe"
import handlerPlot from "@dstack-ts/handler-plot"
import handlerModel from "@dstack-ts/handler-model"
import stateEmbedded from "@dstack-ts/state-embedded"
import statePostgres from "@dstack-ts/state-postgres"
import blobUnstorage from "@dstack-ts/blob-unstorage"
import type { ServerOptions } from "@dstack-ts/core"

/** The first-party plugins every default server has. */
export const defaultPlugins = [
  stateEmbedded,
  statePostgres,
  blobUnstorage,
  backendLocal,
  transportLocal,
  transportDirect,
  transportSsh,
  backendSsh,
  handlerDataframe,
  handlerPlot,
  handlerModel
] as const

/**
 * The default runner build's entry (cli/src/runner.ts, or runner.js beside this file once
 * built): what the server's backends start on their instances.
 */
export const defaultRunnerEntry = (): string =>
  fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "./runner.ts" : "./runner.js", import.meta.url))

/** Where the default server keeps its data: `DSTACK_SERVER_DIR`, else `~/.dstack-ts/server`. */
export const defaultServerDir = (): string => process.env.DSTACK_SERVER_DIR || join(homedir(), ".dstack-ts", "server")

/**
 * The default build's options: the `embedded` state store (PostgreSQL in WASM) under
 * `<dir>/data`, or `postgres` when `DSTACK_DATABASE_URL` is set (several replicas may share it);
 * the `fs` blob store under `<dir>/blobs`; the `local` backend in every project.
 */
export const defaultServerOptions = (serverDir: string, adminToken: string | undefined): ServerOptions => {
  const databaseUrl = process.env.DSTACK_DATABASE_URL
  return {
    state: databaseUrl
      ? { driver: "postgres", options: { url: databaseUrl } }
      : { driver: "embedded", options: { data_dir: join(serverDir, "data") } },
    blobs: { driver: "fs", options: { base: join(serverDir, "blobs") } },
    adminToken,
    plugins: defaultPlugins,
    runner: { entry: defaultRunnerEntry() },
    compute: { defaultBackends: [{ type: "local" }] }
  }
}
