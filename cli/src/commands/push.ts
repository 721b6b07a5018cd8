// `dstack push STACK FILE`: pushes a file to a stack as a new frame. The codec is chosen from
// what the installed codecs declare (AutoHandler.forFile): a magic number in the file's first
// bytes, its extension, then the codec's own check of what it read; a file no codec takes is
// stored as bytes, and the command says so.
import { readFile } from "node:fs/promises"
import { defineCommand } from "citty"
import { installedCodecs } from "../codecs.ts"
import { CliError, clientFor, globalArgs, usageError } from "../context.ts"
import { success, warn } from "../ui.ts"

/** `--param k=v` values: JSON when they parse (numbers, booleans), else the string. */
export const parseParams = (rawArgs: ReadonlyArray<string>): Record<string, unknown> => {
  const params: Record<string, unknown> = {}
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]
    let spec: string | undefined
    if (arg === "--param") spec = rawArgs[++i]
    else if (arg.startsWith("--param=")) spec = arg.slice("--param=".length)
    else continue
    const eq = spec?.indexOf("=") ?? -1
    if (spec === undefined || eq <= 0) throw usageError(`--param needs KEY=VALUE, got ${JSON.stringify(spec ?? "")}`)
    const raw = spec.slice(eq + 1)
    let value: unknown = raw
    try {
      const parsed = JSON.parse(raw)
      if (typeof parsed === "number" || typeof parsed === "boolean") value = parsed
    } catch {
      // a plain string
    }
    params[spec.slice(0, eq)] = value
  }
  return params
}

export default defineCommand({
  meta: { name: "push", description: "Push a file to a stack as a new frame, encoded by the installed codec that recognises it (else as bytes)" },
  args: {
    stack: { type: "positional", description: "The stack: NAME (yours) or /OWNER/NAME", required: true },
    file: { type: "positional", description: "The file to push", required: true },
    message: { type: "string", alias: "m", description: "What is new in this frame" },
    access: { type: "string", description: "public or private (default: your default, private unless changed)" },
    param: { type: "string", description: "A param of the pushed object, KEY=VALUE (repeatable)", valueHint: "k=v" },
    description: { type: "string", description: "Describes the object" },
    ...globalArgs
  },
  run: async ({ args, rawArgs }) => {
    if (args.access !== undefined && args.access !== "public" && args.access !== "private") {
      throw usageError(`--access must be public or private, not ${JSON.stringify(args.access)}`)
    }
    const params = parseParams(rawArgs)
    const { StackServer } = await import("@dstack-ts/core")
    const early = StackServer.StackName.resolveStackPath(args.stack, "_")
    if (typeof early === "string") throw new CliError(early)
    let bytes: Uint8Array
    try {
      bytes = new Uint8Array(await readFile(args.file))
    } catch (e) {
      throw new CliError(`Cannot read ${args.file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`)
    }
    const { AutoHandler, BuiltinCodecs } = await import("@dstack-ts/core")
    const codecs = await installedCodecs()
    const match = AutoHandler.make(codecs).forFile(args.file, bytes)
    let obj: unknown = bytes
    let encoder = BuiltinCodecs.bytes as import("@dstack-ts/core").Codec.Any
    if (match._tag === "Matched") {
      obj = match.object
      encoder = match.codec
    } else {
      const tried = match.declined.map((d) => `${d.codec} (by ${d.by})`).join(", ")
      warn(
        match.declined.length === 0
          ? `No installed codec recognises ${args.file}: storing it as bytes (install a codec plugin for its format to push it as an object)`
          : `${args.file} was claimed by ${tried} but none could read it: storing it as bytes`
      )
    }
    const client = await clientFor()
    const stacks = client.stacks({ codecs })
    const result = await stacks
      .push(args.stack, obj, {
        encoder,
        params,
        ...(args.message !== undefined ? { message: args.message } : {}),
        ...(args.description !== undefined ? { description: args.description } : {}),
        ...(args.access !== undefined ? { access: args.access } : {})
      })
      .catch((e: unknown) => {
        if ((e as { _tag?: string })._tag === "CodecError") throw new CliError(`Cannot push ${args.file}: ${(e as Error).message}`)
        throw e
      })
    success(`Pushed ${args.file} to ${await stacks.resolve(args.stack)} as ${encoder.id} (frame ${result.frameId})`)
    process.stdout.write(`${result.url}\n`)
  }
})
