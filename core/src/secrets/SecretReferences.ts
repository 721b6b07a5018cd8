/**
 * `${{ secrets.NAME }}` references: where they may appear (a job's `env` values and its
 * `registry_auth` username and password, as upstream interpolates them), which names a job
 * refers to, and their replacement. Values are put in only on the runner, in memory: the job
 * spec the server stores and plans with keeps the references.
 */
import { Either } from "effect"

/** One reference; the name as upstream's interpolator reads it. */
export const SECRET_REFERENCE: RegExp = /\$\{\{\s*secrets\.([A-Za-z_][A-Za-z0-9_-]*)\s*\}\}/g

/** The names `text` refers to, in order, without repeats. */
export const namesIn = (text: string): ReadonlyArray<string> => [...new Set([...text.matchAll(SECRET_REFERENCE)].map((m) => m[1]!))]

/** The parts of a job spec where references are replaced. */
export interface Interpolated {
  readonly env: Readonly<Record<string, string>>
  readonly registryAuth?: { readonly username: string; readonly password: string } | undefined
}

/** Every secret name a job's env and registry credentials refer to. */
export const referencedNames = (spec: Interpolated): ReadonlyArray<string> =>
  [...new Set([
    ...Object.values(spec.env).flatMap(namesIn),
    ...(spec.registryAuth ? [...namesIn(spec.registryAuth.username), ...namesIn(spec.registryAuth.password)] : [])
  ])]

/** Replaces the references in `text`; a missing secret is an error naming it and `where`. */
export const interpolate = (text: string, secrets: Readonly<Record<string, string>>, where: string): Either.Either<string, string> => {
  let missing: string | undefined
  const out = text.replace(SECRET_REFERENCE, (_, name: string) => {
    if (!Object.hasOwn(secrets, name)) missing ??= name
    return secrets[name] ?? ""
  })
  return missing === undefined ? Either.right(out) : Either.left(`${where} refers to secret ${missing}, which was not submitted`)
}

/** The env and registry credentials with every reference replaced, or the first missing one named. */
export const interpolateSpec = <S extends Interpolated>(spec: S, secrets: Readonly<Record<string, string>>): Either.Either<Interpolated, string> =>
  Either.gen(function* () {
    const env: Record<string, string> = {}
    for (const [key, value] of Object.entries(spec.env)) env[key] = yield* interpolate(value, secrets, `env.${key}`)
    if (spec.registryAuth === undefined) return { env }
    return {
      env,
      registryAuth: {
        username: yield* interpolate(spec.registryAuth.username, secrets, "registry_auth.username"),
        password: yield* interpolate(spec.registryAuth.password, secrets, "registry_auth.password")
      }
    }
  })
