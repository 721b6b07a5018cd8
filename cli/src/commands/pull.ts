// `dstack pull STACK`: downloads the attachment a pull picks (head frame, first whose params
// match the --param values) to a file, streamed, byte for byte as it was stored. Without -o the
// file's extension is the one declared by the installed codec that decodes its content type.
import { createWriteStream } from "node:fs"
import { Readable } from "node:stream"
import { pipeline } from "node:stream/promises"
import { defineCommand } from "citty"
import { installedCodecs } from "../codecs.ts"
import { CliError, clientFor, globalArgs } from "../context.ts"
import { success } from "../ui.ts"
import { parseParams } from "./push.ts"

export default defineCommand({
  meta: { name: "pull", description: "Download an object of a stack (the head frame's first match of --param) to a file" },
  args: {
    stack: { type: "positional", description: "The stack: NAME (yours) or /OWNER/NAME", required: true },
    output: { type: "string", alias: "o", description: "The file to write (default: the stack's last name segment plus an extension)", valueHint: "file" },
    param: { type: "string", description: "Pick the object with this param, KEY=VALUE (repeatable)", valueHint: "k=v" },
    frame: { type: "string", description: "A frame id instead of the head" },
    ...globalArgs
  },
  run: async ({ args, rawArgs }) => {
    const params = parseParams(rawArgs)
    const { StackServer } = await import("@dstack-ts/core")
    const early = StackServer.StackName.resolveStackPath(args.stack, "_")
    if (typeof early === "string") throw new CliError(early)
    const client = await clientFor()
    const raw = await client.stacks().pullRaw(args.stack, { params, ...(args.frame ? { frameId: args.frame } : {}) })
    let output = args.output
    if (output === undefined) {
      const { AutoHandler } = await import("@dstack-ts/core")
      const auto = AutoHandler.make(await installedCodecs())
      output = `${raw.stack.split("/").pop()}${auto.extensionFor(raw.attachment.content_type, raw.attachment.application)}`
    }
    if (raw.response.body === null) throw new CliError("The server sent no body")
    await pipeline(Readable.fromWeb(raw.response.body as import("node:stream/web").ReadableStream), createWriteStream(output))
    success(`Pulled ${raw.stack} (frame ${raw.frameId}, ${raw.attachment.application}, ${raw.attachment.size ?? "?"} bytes) to ${output}`)
  }
})
