/**
 * Ranges as written in configurations: `N` (exactly N), `a..b`, `a..` (at least a), `..b` (at
 * most b), or the object form `{min, max}`. Used for CPU and GPU counts, nodes, replicas
 * (`IntRange`) and for memory and disk sizes (`MemoryRange`, in GB).
 */
import { Either, Schema } from "effect"
import { scalar, show, withShorthand } from "./Grammar.ts"
import { formatMemory, Memory, parseMemory } from "./Memory.ts"

/** An inclusive range; a missing bound is unbounded. */
export interface Range {
  readonly min?: number
  readonly max?: number
}

/** Parses `N`, `a..b`, `a..` or `..b` with `parseItem` for each bound. */
export const parseRange = (
  input: string | number,
  parseItem: (input: unknown) => Either.Either<number, string>,
  expected: string
): Either.Either<Range, string> => {
  const fail = (detail?: string) =>
    Either.left(`expected ${expected}, got ${show(input)}${detail ? ` (${detail})` : ""}`)
  if (typeof input === "number") {
    return Either.match(parseItem(input), { onLeft: fail, onRight: (n) => Either.right({ min: n, max: n }) })
  }
  const text = input.trim()
  const parts = text.split("..")
  if (parts.length > 2) return fail()
  if (parts.length === 1) {
    return Either.match(parseItem(text), { onLeft: () => fail(), onRight: (n) => Either.right({ min: n, max: n }) })
  }
  const [lo, hi] = parts.map((p) => p.trim())
  if (lo === "" && hi === "") return fail("give at least one bound")
  const range: { min?: number; max?: number } = {}
  if (lo !== "") {
    const r = parseItem(lo)
    if (Either.isLeft(r)) return fail(`bad lower bound ${JSON.stringify(lo)}`)
    range.min = r.right
  }
  if (hi !== "") {
    const r = parseItem(hi)
    if (Either.isLeft(r)) return fail(`bad upper bound ${JSON.stringify(hi)}`)
    range.max = r.right
  }
  if (range.min !== undefined && range.max !== undefined && range.min > range.max) {
    return fail(`the lower bound is above the upper bound`)
  }
  return Either.right(range)
}

/** Writes a range in the shorthand form (`2..8`, `8GB..`, `4`). */
export const formatRange = (range: Range, formatItem: (n: number) => string = String): string => {
  if (range.min !== undefined && range.min === range.max) return formatItem(range.min)
  return `${range.min !== undefined ? formatItem(range.min) : ""}..${range.max !== undefined ? formatItem(range.max) : ""}`
}

/** Says a range in words for messages: `≥8GB`, `≤4`, `2..8`, `exactly 2`. */
export const describeRange = (range: Range, formatItem: (n: number) => string = String): string => {
  if (range.min !== undefined && range.max !== undefined) {
    return range.min === range.max ? formatItem(range.min) : `${formatItem(range.min)}..${formatItem(range.max)}`
  }
  if (range.min !== undefined) return `≥${formatItem(range.min)}`
  if (range.max !== undefined) return `≤${formatItem(range.max)}`
  return "any"
}

/** Whether `value` lies in the range (bounds included). */
export const isInRange = (range: Range, value: number): boolean =>
  (range.min === undefined || value >= range.min) && (range.max === undefined || value <= range.max)

/** Parses a whole non-negative number (a count), from a number or a string of digits. */
export const parseCount = (input: unknown): Either.Either<number, string> => {
  const n = typeof input === "string" && /^\s*\d+\s*$/.test(input) ? Number(input) : input
  return typeof n === "number" && Number.isInteger(n) && n >= 0
    ? Either.right(n)
    : Either.left(`expected a whole, non-negative number, got ${show(input)}`)
}

/** A whole non-negative number written as a number or a string of digits. */
export const Count: Schema.Schema<number, string | number> = scalar(Schema.Number, parseCount, (n) => n).annotations({
  identifier: "Count"
})

const rangeObject = <I>(item: Schema.Schema<number, I>) =>
  Schema.Struct({
    min: Schema.optionalWith(item, { exact: true }),
    max: Schema.optionalWith(item, { exact: true })
  }).pipe(
    Schema.filter((r) =>
      r.min !== undefined && r.max !== undefined && r.min > r.max
        ? { path: ["min"], message: `min (${r.min}) is greater than max (${r.max})` }
        : undefined
    )
  )

const INT_RANGE_EXPECTED = "a number or a range such as 2, 1..4, 2.. or ..8"
const MEMORY_RANGE_EXPECTED = "a size or a range of sizes such as 24GB, 24GB..80GB, 24GB.. or ..80GB"

/** A range of whole numbers: `2`, `1..4`, `2..`, `..8` or `{min, max}`. */
export const IntRange: Schema.Schema<Range, { readonly min?: number; readonly max?: number } | string | number> =
  withShorthand(rangeObject(Count), (input) => parseRange(input, parseCount, INT_RANGE_EXPECTED), INT_RANGE_EXPECTED)
    .annotations({
      identifier: "IntRange",
      description: "A number (`2`) or a range (`1..4`, `2..`, `..8`)."
    }) as never

/** A range of memory sizes in GB: `24GB`, `24GB..80GB`, `8GB..`, `..1TB` or `{min, max}`. */
export const MemoryRange: Schema.Schema<Range, { readonly min?: string | number; readonly max?: string | number } | string | number> =
  withShorthand(rangeObject(Memory), (input) => parseRange(input, parseMemory, MEMORY_RANGE_EXPECTED), MEMORY_RANGE_EXPECTED)
    .annotations({
      identifier: "MemoryRange",
      description: "A size (`24GB`) or a range of sizes (`24GB..80GB`, `8GB..`, `..1TB`)."
    }) as never

/** Writes a memory range in the shorthand form (`8GB..`). */
export const formatMemoryRange = (range: Range): string => formatRange(range, formatMemory)
