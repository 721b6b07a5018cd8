// `dstack push STACK FILE`: pushes a file to a stack as a new frame. The file's type picks the
// codec: .csv/.parquet/.arrow → dataframe, .json with a Vega-Lite or Plotly shape → plot,
// .png/.svg → plot, .onnx/.safetensors → model, anything else → bytes.
import { readFile } from "node:fs/promises"
import { extname } from "node:path"
import { defineCommand } from "citty"
import type { Codec } from "@dstack-ts/core"
import { CliError, clientFor, globalArgs, usageError } from "../context.ts"
import { success } from "../ui.ts"

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

/** The object to push and the codec for a file, chosen by its extension (and JSON shape). */
const objectFor = async (file: string, bytes: Uint8Array): Promise<{ obj: unknown; encoder: Codec.Any; codecs: ReadonlyArray<Codec.Any> }> => {
  const { BuiltinCodecs } = await import("@dstack-ts/core")
  const ext = extname(file).toLowerCase()
  switch (ext) {
    case ".csv": {
      const df = await import("@dstack-ts/handler-dataframe")
      return { obj: df.csv(bytes), encoder: df.csvCodec, codecs: df.codecs }
    }
    case ".parquet":
    case ".arrow":
    case ".arrows":
    case ".feather": {
      const df = await import("@dstack-ts/handler-dataframe")
      return { obj: bytes, encoder: ext === ".parquet" ? df.parquet : df.arrow, codecs: df.codecs }
    }
    case ".png":
    case ".svg": {
      const p = await import("@dstack-ts/handler-plot")
      return { obj: bytes, encoder: ext === ".png" ? p.png : p.svg, codecs: p.codecs }
    }
    case ".onnx":
    case ".safetensors": {
      const m = await import("@dstack-ts/handler-model")
      return { obj: bytes, encoder: ext === ".onnx" ? m.onnx : m.safetensors, codecs: m.codecs }
    }
    case ".json": {
      let parsed: unknown
      try {
        parsed = JSON.parse(new TextDecoder().decode(bytes))
      } catch {
        parsed = undefined
      }
      const p = await import("@dstack-ts/handler-plot")
      if (p.isVegaLiteSpec(parsed)) return { obj: parsed, encoder: p.vegaLite, codecs: p.codecs }
      if (p.isPlotlyFigure(parsed)) return { obj: parsed, encoder: p.plotly, codecs: p.codecs }
      return { obj: bytes, encoder: BuiltinCodecs.bytes, codecs: [] }
    }
    default:
      return { obj: bytes, encoder: BuiltinCodecs.bytes, codecs: [] }
  }
}

export default defineCommand({
  meta: { name: "push", description: "Push a file to a stack as a new frame (dataframe, plot, model or bytes by its type)" },
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
    const { obj, encoder, codecs } = await objectFor(args.file, bytes)
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
    success(`Pushed ${args.file} to ${await stacks.resolve(args.stack)} (frame ${result.frameId})`)
    process.stdout.write(`${result.url}\n`)
  }
})
