/**
 * Stack names: `owner/name`, where the name is latin letters, digits, `/`, `_` and `-`. Pure
 * (no I/O), shared by the server, the SDK (which checks a name before any network call) and
 * the CLI.
 */

/** The rule, as shown in every error about a bad name. */
export const STACK_NAME_RULE =
  "a stack name may contain only latin letters, digits, '/', '_' and '-', with no empty segment (no leading, trailing or doubled '/')"

const SEGMENT = /^[A-Za-z0-9_-]+$/

/** Why `name` (without the owner) is not a valid stack name, or undefined when it is. */
export const invalidStackName = (name: string): string | undefined => {
  if (name.length === 0) return `The stack name is empty: ${STACK_NAME_RULE}`
  if (name.length > 512) return `The stack name is longer than 512 characters`
  const segments = name.split("/")
  if (segments.some((s) => !SEGMENT.test(s))) return `Invalid stack name ${JSON.stringify(name)}: ${STACK_NAME_RULE}`
  return undefined
}

/** A stack's full address. */
export interface StackPath {
  readonly owner: string
  readonly name: string
}

/** `owner/name`. */
export const formatStackPath = (p: StackPath): string => `${p.owner}/${p.name}`

/**
 * Parses a full stack path `owner/name` (a leading `/` is allowed): the first segment is the
 * owner. Returns an error message for a bad path.
 */
export const parseStackPath = (full: string): StackPath | string => {
  const trimmed = full.startsWith("/") ? full.slice(1) : full
  const slash = trimmed.indexOf("/")
  if (slash <= 0) {
    return `Invalid stack ${JSON.stringify(full)}: expected owner/name (${STACK_NAME_RULE})`
  }
  const owner = trimmed.slice(0, slash)
  const name = trimmed.slice(slash + 1)
  if (!SEGMENT.test(owner)) return `Invalid stack owner ${JSON.stringify(owner)} in ${JSON.stringify(full)}: ${STACK_NAME_RULE}`
  const why = invalidStackName(name)
  return why === undefined ? { owner, name } : why
}

/**
 * Resolves a stack as a user writes it (upstream): `/owner/name` is absolute; any other name
 * lives under `user`. Without a user, only an absolute name can be resolved.
 */
export const resolveStackPath = (stack: string, user: string | undefined): StackPath | string => {
  if (stack.startsWith("/")) return parseStackPath(stack)
  const why = invalidStackName(stack)
  if (why !== undefined) return why
  if (user === undefined) {
    return `The stack ${JSON.stringify(stack)} is relative to the signed-in user, but there is no token: write it as /owner/${stack}`
  }
  return { owner: user, name: stack }
}

/** A stack's access level. */
export type StackAccess = "public" | "private"

export const isStackAccess = (v: unknown): v is StackAccess => v === "public" || v === "private"

/**
 * JSON equality whatever the order of object keys: the state store keeps params as jsonb, which
 * gives an object's keys back in an order of its own.
 */
const sameJson = (a: unknown, b: unknown): boolean => {
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return a === b
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => sameJson(x, b[i]))
  }
  const ka = Object.keys(a)
  return ka.length === Object.keys(b).length &&
    ka.every((k) => k in b && sameJson((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]))
}

/**
 * Does an attachment's params satisfy the requested ones? Every requested key must be present
 * with an equal value (JSON equality, object keys in any order); keys the request does not name
 * are free.
 */
export const paramsMatch = (have: Readonly<Record<string, unknown>>, want: Readonly<Record<string, unknown>>): boolean =>
  Object.entries(want).every(([k, v]) => k in have && sameJson(have[k], v))
