// The default server build: the one place that lists the first-party plugins. `dstack server`
// runs it; a custom build (examples/custom-server) picks its own plugins and storage instead.
import { join } from "node:path"
import { homedir } from "node:os"
import { fileURLToPath } from "node:url"
import { CliError } from "./context.ts"
import backendLocal from "@dstack-ts/backend-local"
import transportLocal from "@dstack-ts/transport-local"
import transportDirect from "@dstack-ts/transport-direct"
import transportSsh from "@dstack-ts/transport-ssh"
import backendSsh from "@dstack-ts/backend-ssh"
import backendSlurm from "@dstack-ts/backend-slurm"
import backendKubernetes from "@dstack-ts/backend-kubernetes"
import backendPool from "@dstack-ts/backend-pool"
import handlerDataframe from "@dstack-ts/handler-dataframe"
import handlerPlot from "@dstack-ts/handler-plot"
import handlerModel from "@dstack-ts/handler-model"
import stateEmbedded from "@dstack-ts/state-embedded"
import statePostgres from "@dstack-ts/state-postgres"
import blobUnstorage from "@dstack-ts/blob-unstorage"
import providersBuiltin from "@dstack-ts/providers-builtin"
import type { ServerOptions } from "@dstack-ts/core"
import { serverBlobs } from "./serverBlobs.ts"

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
  backendSlurm,
  backendKubernetes,
  backendPool,
  handlerDataframe,
  handlerPlot,
  handlerModel,
  providersBuiltin
] as const

/**
 * The default runner build's entry (cli/src/runner.ts, or runner.js beside this file once
 * built): what the server's backends start on their instances.
 */
export const defaultRunnerEntry = (): string =>
  fileURLToPath(new URL(import.meta.url.endsWith(".ts") ? "./runner.ts" : "./runner.js", import.meta.url))

/** The engine's `unreachableMs` from DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS, when set. */
const runnerUnreachable = (env: NodeJS.ProcessEnv): { unreachableMs?: number } => {
  const text = env.DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS
  if (text === undefined || text === "") return {}
  const seconds = Number(text)
  if (!Number.isFinite(seconds) || seconds <= 0) {
    throw new CliError(`DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS: "${text.slice(0, 40)}" is not a positive number of seconds`)
  }
  return { unreachableMs: seconds * 1000 }
}

/** The engine's `logQuotaPerJobHour` from DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR (upstream's name), when set. */
const logQuota = (env: NodeJS.ProcessEnv): { logQuotaPerJobHour?: number } => {
  const text = env.DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR
  if (text === undefined || text === "") return {}
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new CliError(`DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR: "${text.slice(0, 40)}" is not a whole number of bytes (0: no quota)`)
  }
  return { logQuotaPerJobHour: Number(text) }
}

/** Where the default server keeps its data: `DSTACK_SERVER_DIR`, else `~/.dstack-ts/server`. */
export const defaultServerDir = (): string => process.env.DSTACK_SERVER_DIR || join(homedir(), ".dstack-ts", "server")

/**
 * The default build's options: the `embedded` state store (PostgreSQL in WASM) under
 * `<dir>/data`, or `postgres` when `DSTACK_DATABASE_URL` is set (several replicas may share it);
 * the `s3` blob store when `DSTACK_SERVER_S3_BUCKET` is set (see serverBlobs.ts), else `fs`
 * under `<dir>/blobs` — which a server on PostgreSQL refuses unless `allowLocalBlobs`; the
 * `local` backend in every project. Secrets are encrypted with `DSTACK_SERVER_SECRETS_KEY` when
 * set (replicas must share one key), else with the key in `<dir>/secrets.key`, made with mode
 * 0600 on first start. A job whose runner does not answer for
 * `DSTACK_SERVER_RUNNER_UNREACHABLE_SECONDS` (default 120) fails as `instance_unreachable`; one
 * that writes more than `DSTACK_SERVER_LOG_QUOTA_PER_JOB_HOUR` bytes of logs within an hour
 * (default 50 MiB, 0: no quota) is stopped and fails as `log_quota_exceeded`.
 */
export const defaultServerOptions = (
  serverDir: string,
  adminToken: string | undefined,
  settings: { readonly env?: NodeJS.ProcessEnv; readonly allowLocalBlobs?: boolean } = {}
): ServerOptions => {
  const env = settings.env ?? process.env
  const databaseUrl = env.DSTACK_DATABASE_URL
  return {
    state: databaseUrl
      ? { driver: "postgres", options: { url: databaseUrl } }
      : { driver: "embedded", options: { data_dir: join(serverDir, "data") } },
    blobs: serverBlobs(env, serverDir),
    allowLocalBlobs: settings.allowLocalBlobs === true,
    adminToken,
    plugins: defaultPlugins,
    runner: { entry: defaultRunnerEntry() },
    // Kubernetes pods are reached by the backend plugin's own `kubernetes` transport (named like
    // the backend, so the engine picks it): NodePorts, or the API's port-forward.
    compute: { defaultBackends: [{ type: "local" }] },
    engine: { ...runnerUnreachable(env), ...logQuota(env) },
    secrets: env.DSTACK_SERVER_SECRETS_KEY
      ? { key: env.DSTACK_SERVER_SECRETS_KEY }
      : { keyFile: join(serverDir, "secrets.key") }
  }
}
