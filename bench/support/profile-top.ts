// Summarises a V8 .cpuprofile (node --cpu-prof): the functions with the most self time and
// the packages/files they live in.  npx tsx bench/support/profile-top.ts FILE.cpuprofile [N]
import * as fs from "node:fs"

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: Array<number> }
const file = process.argv[2]!
const top = Number(process.argv[3] ?? 25)
const prof = JSON.parse(fs.readFileSync(file, "utf8")) as { nodes: Array<Node>; samples: Array<number>; timeDeltas: Array<number> }
const selfUs = new Map<number, number>()
prof.samples.forEach((id, i) => selfUs.set(id, (selfUs.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)))
const total = [...selfUs.values()].reduce((a, b) => a + b, 0)
const byFn = new Map<string, number>()
const byArea = new Map<string, number>()
const area = (url: string) => {
  if (url === "") return "(native/gc/idle)"
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)
  if (nm) return nm[1]!
  const m = /\/work\/main\/(.*?\/src\/[^/]+)/.exec(url)
  if (m) return m[1]!
  return url.startsWith("node:") ? url : url.replace(/^file:\/\//, "").split("/").slice(-2).join("/")
}
for (const n of prof.nodes) {
  const t = selfUs.get(n.id) ?? 0
  if (t === 0) continue
  const key = `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^file:\/\/\/work\/main\//, "")}:${n.callFrame.lineNumber + 1}`
  byFn.set(key, (byFn.get(key) ?? 0) + t)
  const a = area(n.callFrame.url)
  byArea.set(a, (byArea.get(a) ?? 0) + t)
}
const pct = (t: number) => `${((100 * t) / total).toFixed(1).padStart(5)}%`
console.log(`total ${(total / 1e6).toFixed(2)} s sampled`)
console.log("\nby area:")
for (const [k, t] of [...byArea].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`${pct(t)}  ${k}`)
console.log("\nby function (self):")
for (const [k, t] of [...byFn].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${pct(t)}  ${k}`)
