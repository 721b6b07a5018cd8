/**
 * Memory and disk sizes as written in configurations: `512MB`, `8GB`, `1TB`, or a plain number
 * of gigabytes. They decode to gigabytes (a number, possibly fractional).
 */
import { Either, Schema } from "effect"
import { scalar, show } from "./Grammar.ts"

const MEMORY_RE = /^\s*(\d+(?:\.\d+)?)\s*(MB|GB|TB)?\s*$/i
const GB_PER_UNIT: Record<string, number> = { mb: 1 / 1024, gb: 1, tb: 1024 }

/**
 * Parses a memory size to gigabytes.
 * @example parseMemory("512MB") // Either.right(0.5)
 */
export const parseMemory = (input: unknown): Either.Either<number, string> => {
  if (typeof input === "number") {
    return Number.isFinite(input) && input >= 0
      ? Either.right(input)
      : Either.left(`expected a non-negative size in GB, got ${input}`)
  }
  if (typeof input === "string") {
    const m = MEMORY_RE.exec(input)
    if (m) return Either.right(Number(m[1]) * GB_PER_UNIT[(m[2] ?? "gb").toLowerCase()])
  }
  return Either.left(`expected a size such as 512MB, 8GB or 1TB (or a number of GB), got ${show(input)}`)
}

/**
 * Writes gigabytes with the unit that reads best: whole TB, whole GB, else whole MB.
 * @example formatMemory(0.5) // "512MB"
 */
export const formatMemory = (gb: number): string => {
  if (gb >= 1024 && gb % 1024 === 0) return `${gb / 1024}TB`
  if (Number.isInteger(gb)) return `${gb}GB`
  const mb = gb * 1024
  if (Number.isInteger(mb)) return `${mb}MB`
  return `${gb}GB`
}

/** A memory size in GB; `8GB` decodes to 8 and encodes back to `8GB`. */
export const Memory: Schema.Schema<number, string | number> = scalar(Schema.Number, parseMemory, formatMemory).annotations({
  identifier: "Memory",
  description: "A size: `512MB`, `8GB`, `1TB`, or a number of GB."
})
