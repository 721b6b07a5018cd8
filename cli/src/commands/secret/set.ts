// `dstack secret set NAME [VALUE]`: creates the secret or replaces its value. Without VALUE the
// value is read from standard input, so that it stays out of shell history and process lists.
import { defineCommand } from "citty"
import { clientFor, globalArgs, usageError } from "../../context.ts"
import { success } from "../../ui.ts"

const readStdin = async (): Promise<string> => {
  const chunks: Array<Buffer> = []
  for await (const chunk of process.stdin) chunks.push(Buffer.from(chunk as Uint8Array))
  // One trailing newline is the terminal's, not the secret's.
  return Buffer.concat(chunks).toString("utf8").replace(/\r?\n$/, "")
}

export default defineCommand({
  meta: { name: "set", description: "Set a secret (the value from standard input when VALUE is left out)" },
  args: {
    name: { type: "positional", description: "The name of the secret", required: true, valueHint: "name" },
    value: { type: "positional", description: "The value (default: read from standard input)", required: false, valueHint: "value" },
    ...globalArgs
  },
  run: async ({ args }) => {
    let value = typeof args.value === "string" ? args.value : undefined
    if (value === undefined) {
      if (process.stdin.isTTY) throw usageError("Give the value: `dstack secret set NAME VALUE`, or pipe it: `printf %s \"$TOKEN\" | dstack secret set NAME`")
      value = await readStdin()
    }
    const client = await clientFor()
    await client.secrets.set(args.name, value)
    success(`Secret ${args.name} set in project ${client.project}`)
  }
})
