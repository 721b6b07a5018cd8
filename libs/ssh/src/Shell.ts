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

/** A script running on the host whose output arrives line by line (`streamScript`). */
export interface StreamingScript {
  /** Settles once the channel has closed: the script's exit status (null when it was cut or signalled) and stderr. */
  readonly done: Promise<{ readonly code: number | null; readonly stderr: string }>
  /** Closes the channel: the script's next write fails (SIGPIPE) and it ends. */
  readonly close: () => void
}

/**
 * Runs `script` with `sh -s -- ARGS` on the host and hands each complete stdout line to
 * `onLine` as it arrives: one channel on the open session for a script that reports progress
 * (a watch loop on the host) instead of a round trip per question.
 *
 * @example
 * const watch = await streamScript(session, 'while :; do squeue -h -j "$1" -o %T; sleep 1; done', ["42"], console.log)
 * watch.close()
 */
export const streamScript = (
  session: Session,
  script: string,
  args: ReadonlyArray<string>,
  onLine: (line: string) => void
): Promise<StreamingScript> =>
  new Promise((resolve, reject) => {
    session.client.exec(`sh -s -- ${args.map(shQuote).join(" ")}`, (error, channel) => {
      if (error) return reject(error)
      let pending = ""
      let stderr = ""
      let code: number | null = null
      channel.on("data", (chunk: Buffer) => {
        pending += chunk.toString("utf8")
        let newline = pending.indexOf("\n")
        while (newline >= 0) {
          onLine(pending.slice(0, newline))
          pending = pending.slice(newline + 1)
          newline = pending.indexOf("\n")
        }
      })
      channel.stderr.on("data", (chunk: Buffer) => {
        if (stderr.length < 64 * 1024) stderr += chunk.toString("utf8")
      })
      channel.on("exit", (status: number | null) => {
        code = status
      })
      const done = new Promise<{ code: number | null; stderr: string }>((settle) => {
        channel.on("close", () => {
          if (pending !== "") onLine(pending)
          pending = ""
          settle({ code, stderr })
        })
      })
      channel.end(script)
      resolve({ done, close: () => channel.close() })
    })
  })
