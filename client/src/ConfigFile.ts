/**
 * Reads and writes the client configuration file `~/.dstack/config.yml`. The only client
 * module that touches the file system (through `node:` modules, which Node and Deno both
 * provide); the browser build never imports it.
 */
import { Effect, Either } from "effect"
import { mkdir, readFile, rename, writeFile } from "node:fs/promises"
import { homedir } from "node:os"
import { dirname, join } from "node:path"
import { parse, stringify } from "yaml"
import { ClientConfigError } from "./ClientError.ts"
import { decodeClientConfig, resolveProject } from "./ClientConfig.ts"
import type { ClientConfig, ClientEnv, ClientOptions, ResolvedProject } from "./ClientConfig.ts"

/** `$HOME/.dstack/config.yml`; `home` defaults to `HOME` in `env`, then the OS home directory. */
export const defaultConfigPath = (env: { readonly HOME?: string | undefined } = processEnv()): string =>
  join(env.HOME && env.HOME !== "" ? env.HOME : homedir(), ".dstack", "config.yml")

/** The process environment under Node and Deno (both expose `process`), empty elsewhere. */
export const processEnv = (): Record<string, string | undefined> =>
  ((globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {})

const ioError = (path: string, what: string, cause: unknown) =>
  new ClientConfigError({ reason: "Io", path, message: `Cannot ${what} ${path}: ${(cause as Error)?.message ?? String(cause)}`, cause })

/** Loads the config file; `undefined` when it does not exist. */
export const loadConfigFile = (path: string): Effect.Effect<ClientConfig | undefined, ClientConfigError> =>
  Effect.gen(function* () {
    const text = yield* Effect.tryPromise({
      try: () => readFile(path, "utf8"),
      catch: (cause) => cause
    }).pipe(
      Effect.catchAll((cause) =>
        (cause as { code?: string })?.code === "ENOENT" ? Effect.succeed(undefined) : Effect.fail(ioError(path, "read", cause))
      )
    )
    if (text === undefined) return undefined
    const raw = yield* Effect.try({
      try: () => parse(text) as unknown,
      catch: (cause) =>
        new ClientConfigError({ reason: "Invalid", path, message: `${path} is not valid YAML: ${(cause as Error).message}`, cause })
    })
    return yield* Either.match(decodeClientConfig(raw, path), { onLeft: Effect.fail, onRight: Effect.succeed })
  })

/**
 * Writes the config file, creating `~/.dstack` when needed. The file holds tokens, so it is
 * written readable by the owner only, and atomically (a temp file renamed over it).
 */
export const saveConfigFile = (path: string, config: ClientConfig): Effect.Effect<void, ClientConfigError> =>
  Effect.tryPromise({
    try: async () => {
      await mkdir(dirname(path), { recursive: true, mode: 0o700 })
      const tmp = `${path}.${Date.now()}.tmp`
      await writeFile(tmp, stringify(config), { mode: 0o600 })
      await rename(tmp, path)
    },
    catch: (cause) => ioError(path, "write", cause)
  })

/** Resolves the project to talk to from options, the environment and the config file. */
export const resolveFromConfigFile = (
  options: ClientOptions & { readonly configPath?: string | undefined },
  env: ClientEnv & { readonly HOME?: string | undefined } = processEnv()
): Effect.Effect<ResolvedProject, ClientConfigError> =>
  Effect.gen(function* () {
    const path = options.configPath ?? defaultConfigPath(env)
    const hasUrl = (options.serverUrl ?? env.DSTACK_SERVER_URL ?? "") !== ""
    const hasToken = (options.userToken ?? env.DSTACK_TOKEN ?? "") !== ""
    // With a URL and a token at hand the file is not read at all (it may be absent or broken).
    const config = hasUrl && hasToken ? undefined : yield* loadConfigFile(path)
    return yield* Either.match(resolveProject(config, options, env, path), { onLeft: Effect.fail, onRight: Effect.succeed })
  })
