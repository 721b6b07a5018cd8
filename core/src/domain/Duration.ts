/**
 * Durations as written in configurations: a number of seconds or `90s`, `5m`, `2h`, `1d`, `1w`.
 * They decode to a number of seconds; `DurationOrOff` also takes `off` (no limit).
 */
import { Either, Schema } from "effect"
import { scalar, show } from "./Grammar.ts"

const UNIT_SECONDS = { w: 604_800, d: 86_400, h: 3_600, m: 60, s: 1 } as const

const DURATION_RE = /^\s*(\d+)\s*([smhdw]?)\s*$/

/**
 * Parses a duration to seconds.
 * @example parseDuration("2h") // Either.right(7200)
 */
export const parseDuration = (input: unknown): Either.Either<number, string> => {
  if (typeof input === "number") {
    return Number.isInteger(input) && input >= 0
      ? Either.right(input)
      : Either.left(`expected a whole, non-negative number of seconds, got ${input}`)
  }
  if (typeof input === "string") {
    const m = DURATION_RE.exec(input)
    if (m) return Either.right(Number(m[1]) * UNIT_SECONDS[(m[2] || "s") as keyof typeof UNIT_SECONDS])
  }
  return Either.left(`expected a duration such as 90s, 5m, 2h, 1d or 1w (or a number of seconds), got ${show(input)}`)
}

/**
 * Writes seconds with the largest unit that divides them exactly.
 * @example formatDuration(7200) // "2h"
 */
export const formatDuration = (seconds: number): string => {
  if (seconds === 0) return "0s"
  for (const [unit, size] of Object.entries(UNIT_SECONDS)) {
    if (seconds % size === 0) return `${seconds / size}${unit}`
  }
  return `${seconds}s`
}

/** A duration in seconds; YAML `2h` decodes to 7200 and encodes back to `2h`. */
export const Duration: Schema.Schema<number, string | number> = scalar(
  Schema.Number,
  parseDuration,
  formatDuration
).annotations({
  identifier: "Duration",
  description: "A duration: a number of seconds, or a number with a unit s, m, h, d or w (`90s`, `5m`, `2h`, `1d`, `1w`)."
})

/** A duration in seconds, or `"off"` for no limit (`max_duration: off`). */
export type DurationOrOff = number | "off"

/** Parses a duration or `off` (`false` is read as `off`). */
export const parseDurationOrOff = (input: unknown): Either.Either<DurationOrOff, string> => {
  if (input === "off" || input === false) return Either.right("off")
  return Either.mapLeft(parseDuration(input), () =>
    `expected a duration such as 90s, 5m, 2h, 1d or 1w (a number of seconds), or off, got ${show(input)}`
  )
}

export const DurationOrOff: Schema.Schema<DurationOrOff, string | number | boolean> = scalar(
  Schema.Union(Schema.Number, Schema.Literal("off")),
  parseDurationOrOff,
  (d) => (d === "off" ? "off" : formatDuration(d))
).annotations({
  identifier: "DurationOrOff",
  description: "A duration (`90s`, `5m`, `2h`, `1d`, `1w`, or seconds), or `off` for no limit."
}) as Schema.Schema<DurationOrOff, string | number | boolean>
