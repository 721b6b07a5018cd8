/**
 * Running shell scripts on a host through an open session: quoting for `sh`, and a script
 * sent on stdin to `sh -s -- ARGS` (so it never shows in the host's process list or shell
 * history) answering its stdout, stderr and exit status.
 */
import type { Session } from "./SshSession.ts"

/** `value` as one `sh` word: single-quoted, with embedded quotes escaped. */
export const shQuote = (value: string): string => `'${value.replace(/'/g, `'\\''`)}'`

export interface ExecResult {
  readonly stdout: string
  readonly stderr: string
  /** The exit status; null when the command was ended by a signal or the channel closed first. */
  readonly code: number | null
}

/**
 * Runs `script` with `sh -s -- ARGS` on the host (its text or a stream on stdin), or
 * `command` as given with `script` as its stdin. Rejects only when the connection fails; a
 * failing script answers its status.
 *
 * @example
 * const { stdout } = await runScript(session, 'squeue -h -j "$1" -o %T', ["42"])
 */
export const runScript = (
  session: Session,
  script: string | NodeJS.ReadableStream,
  args: ReadonlyArray<string>,
  command?: string
): Promise<ExecResult> =>
  session.ssh.execCommand(command ?? `sh -s -- ${args.map(shQuote).join(" ")}`, { stdin: script as never, noTrim: true }) as Promise<ExecResult>
