// Inclusive time per function of a V8 .cpuprofile, filtered by a substring of the URL.
// npx tsx bench/support/profile-incl.ts FILE.cpuprofile [url-substring] [N]
import * as fs from "node:fs"
interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: Array<number> }
const [file, filter = "", topArg = "40"] = process.argv.slice(2)
const prof = JSON.parse(fs.readFileSync(file!, "utf8")) as { nodes: Array<Node>; samples: Array<number>; timeDeltas: Array<number> }
const byId = new Map(prof.nodes.map((n) => [n.id, n]))
const self = new Map<number, number>()
prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)))
const parent = new Map<number, number>()
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
const key = (n: Node) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/^.*\/work\/main\//, "")}:${n.callFrame.lineNumber + 1}`
const incl = new Map<string, number>()
const total = [...self.values()].reduce((a, b) => a + b, 0)
const idle = prof.nodes.filter((n) => n.callFrame.functionName === "(idle)").reduce((a, n) => a + (self.get(n.id) ?? 0), 0)
for (const [id, t] of self) {
  // count each function once per sample stack
  const seen = new Set<string>()
  for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
    const n = byId.get(cur)!
    if (!n.callFrame.url.includes(filter)) continue
    const k = key(n)
    if (seen.has(k)) continue
    seen.add(k)
    incl.set(k, (incl.get(k) ?? 0) + t)
  }
}
console.log(`busy ${((total - idle) / 1e6).toFixed(2)} s`)
for (const [k, t] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, Number(topArg))) console.log(`${((100 * t) / (total - idle)).toFixed(1).padStart(5)}%  ${k}`)
