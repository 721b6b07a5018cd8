/**
 * The runner's exec WebSocket (`GET /api/exec`), which the server's SSH proxy uses for `ssh RUN`:
 * a command or a shell run where the job runs. The client's first message is the request (text,
 * JSON); then binary messages are stdin and text messages are controls (`resize`, `eof`,
 * `signal`). The runner answers `started` or `error` (text), then sends output as binary messages
 * whose first byte names the stream (1 stdout, 2 stderr), then `exit` (text), and closes.
 */
import { Schema } from "effect"

export const EXEC_PATH = "/api/exec"

/** The runner's presence WebSocket: held open by the SSH proxy per SSH connection to the job. */
export const PRESENCE_PATH = "/api/presence"

const Size = Schema.Struct({ cols: Schema.Int.pipe(Schema.between(1, 10000)), rows: Schema.Int.pipe(Schema.between(1, 10000)) })

/** The first message: what to run. */
export const ExecStart = Schema.Struct({
  command: Schema.optional(Schema.String),
  env: Schema.optionalWith(Schema.Record({ key: Schema.String, value: Schema.String }), { default: () => ({}) }),
  tty: Schema.optional(Size)
})
export type ExecStart = typeof ExecStart.Type

/** A control message after the start. */
export const ExecControl = Schema.Union(
  Schema.Struct({ resize: Size }),
  Schema.Struct({ eof: Schema.Literal(true) }),
  Schema.Struct({ signal: Schema.String.pipe(Schema.pattern(/^[A-Z0-9]+$/)) })
)
export type ExecControl = typeof ExecControl.Type

/** What the runner says (text messages). */
export type ExecReply =
  | { readonly started: true }
  | { readonly error: string }
  | { readonly exit: { readonly code: number } | { readonly signal: string } }

export const STDOUT = 1
export const STDERR = 2

/** A binary output message: the stream's byte, then the bytes. */
export const outputFrame = (stream: "stdout" | "stderr", bytes: Uint8Array): Uint8Array => {
  const frame = new Uint8Array(bytes.byteLength + 1)
  frame[0] = stream === "stdout" ? STDOUT : STDERR
  frame.set(bytes, 1)
  return frame
}

export const decodeExecStart = Schema.decodeUnknownEither(Schema.parseJson(ExecStart))
export const decodeExecControl = Schema.decodeUnknownEither(Schema.parseJson(ExecControl))
