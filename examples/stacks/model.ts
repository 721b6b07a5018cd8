// Models through the SDK: push an ONNX model and the same weights as safetensors, read what the
// server knows about them without loading them, and pull them back. Run it next to a running
// server (`dstack server`):
//   npx tsx examples/stacks/model.ts            (or: deno run -A examples/stacks/model.ts)
import { readFile } from "node:fs/promises"
import { Client } from "@dstack-ts/client"
import { codecs, type Model } from "@dstack-ts/handler-model"

const file = async (name: string) => new Uint8Array(await readFile(new URL(`files/${name}`, import.meta.url)))
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i])

const client = await Client.fromConfig()
const stacks = client.stacks({ codecs })

// The model files as an exporter writes them (torch.onnx.export, safetensors.torch.save_file).
const onnx = await file("linear.onnx")
const safetensors = await file("linear.safetensors")

// One frame, two attachments: a pull picks one by its params.
const frame = stacks.frame("examples/linear")
await frame.add(onnx, { description: "y = x · W + b", params: { format: "onnx" } })
await frame.add(safetensors, { description: "the same weights", params: { format: "safetensors" } })
const pushed = await frame.push("a linear model")
console.log(`pushed examples/linear frame ${pushed.frameId}: ${pushed.url}`)

// The metadata is read from the files on push: inputs, outputs, operators, tensor shapes.
const info = await stacks.get("examples/linear")
for (const a of info.head_frame?.attachments ?? []) {
  const m = a.metadata as Record<string, any>
  const what = m.format === "onnx"
    ? `inputs ${JSON.stringify(m.inputs)}, outputs ${JSON.stringify(m.outputs)}, ops ${m.op_types.join(",")}, ${m.parameter_count} parameters`
    : `tensors ${JSON.stringify(m.tensors)}, ${m.parameter_count} parameters, framework ${m.framework}`
  console.log(`examples/linear ${JSON.stringify(a.params)}: ${a.content_type}, ${what}`)
}

// A pull gives a Model: its format, framework, the bytes as pushed and the metadata.
const onnxBack = (await stacks.pull("examples/linear", { params: { format: "onnx" } })) as Model
const stBack = (await stacks.pull("examples/linear", { params: { format: "safetensors" } })) as Model
console.log(`pulled ${onnxBack.format} (${onnxBack.bytes.length} bytes) and ${stBack.format} (${stBack.bytes.length} bytes)`)

const checks: Array<[string, boolean]> = [
  ["onnx", onnxBack.format === "onnx" && sameBytes(new Uint8Array(onnxBack.bytes), onnx)],
  ["safetensors", stBack.format === "safetensors" && sameBytes(new Uint8Array(stBack.bytes), safetensors)]
]
for (const [name, ok] of checks) console.log(`${ok ? "ok" : "MISMATCH"} ${name}`)
process.exit(checks.every(([, ok]) => ok) ? 0 : 1)
