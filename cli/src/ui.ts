// Terminal output of the CLI: a spinner and colours on a TTY, plain lines otherwise; tables;
// yes/no prompts. Everything a command prints goes through here so that non-TTY output
// (pipes, CI, tests) stays free of escape codes.
import { createInterface } from "node:readline/promises"

const env = (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {}

/** True when stdout is a terminal and colours are not turned off (NO_COLOR, TERM=dumb). */
export const isTTY = (): boolean => process.stdout.isTTY === true && env.NO_COLOR === undefined && env.TERM !== "dumb"
const isErrTTY = (): boolean => process.stderr.isTTY === true && env.NO_COLOR === undefined && env.TERM !== "dumb"

const paint = (code: number, reset: number, tty: () => boolean) => (s: string) => (tty() ? `\u001B[${code}m${s}\u001B[${reset}m` : s)
export const bold = paint(1, 22, isTTY)
export const dim = paint(2, 22, isTTY)
export const green = paint(32, 39, isTTY)
const red = paint(31, 39, isErrTTY)
const grayErr = paint(90, 39, isErrTTY)
const yellow = paint(33, 39, isErrTTY)

/** Prints a line to stdout. */
export const print = (line = ""): void => {
  process.stdout.write(line + "\n")
}

/** Prints a success line (`✓ …`) to stdout. */
export const success = (line: string): void => print(`${green("✓")} ${line}`)

/** Prints a one-line error (`✗ …`) to stderr. */
export const printError = (line: string): void => {
  process.stderr.write(`${red("✗")} ${line}\n`)
}

/** Prints a warning (`! …`) to stderr: the command goes on. */
export const warn = (line: string): void => {
  process.stderr.write(`${yellow("!")} ${line}\n`)
}

/** Prints extra detail (stack traces under --debug) to stderr. */
export const printDetail = (text: string): void => {
  process.stderr.write(grayErr(text) + "\n")
}

/**
 * Renders rows as aligned columns under a header. Widths count code points, so names with
 * accents line up; colours are added after padding.
 */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const width = (s: string) => [...s].length
  const widths = headers.map((h, i) => Math.max(width(h), ...rows.map((r) => width(r[i] ?? ""))))
  const line = (cells: ReadonlyArray<string>) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c + " ".repeat(widths[i] - width(c))))
      .join("  ")
      .trimEnd()
  return [bold(line(headers)), ...rows.map(line)].join("\n")
}

export interface Spinner {
  /** Stops the spinner and clears its line. */
  readonly stop: () => void
}

/** Shows `text` with a spinner on stderr while a TTY is attached; does nothing otherwise. */
export const spinner = (text: string): Spinner => {
  if (!isErrTTY()) return { stop: () => {} }
  const frames = ["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"]
  let i = 0
  const draw = () => process.stderr.write(`\r${frames[i++ % frames.length]} ${text}`)
  draw()
  const timer = setInterval(draw, 80)
  return {
    stop: () => {
      clearInterval(timer)
      process.stderr.write("\r\u001B[2K")
    }
  }
}

/** Runs `work` under a spinner. */
export const withSpinner = async <A>(text: string, work: () => Promise<A>): Promise<A> => {
  const s = spinner(text)
  try {
    return await work()
  } finally {
    s.stop()
  }
}

/** True when there is a terminal to ask on. */
export const canPrompt = (): boolean => process.stdin.isTTY === true && process.stderr.isTTY === true

/** Asks a yes/no question on the terminal; the answer defaults to no. */
export const confirm = async (question: string): Promise<boolean> => {
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    const answer = await rl.question(`${question} [y/n]: `)
    return /^y(es)?$/i.test(answer.trim())
  } finally {
    rl.close()
  }
}
