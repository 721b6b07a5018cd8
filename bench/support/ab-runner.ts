// A/B of two runner builds without a server: starts both bundles (or entry files node can run)
// and sends each in turn the same `POST /api/start` of `echo hi`, timing the answer and the
// moment `/api/pull` shows the job running. Build a bundle with
// `RunnerLaunch.bundleRunner(entry, dir)` (@dstack-ts/core) from each checkout.
//   npx tsx bench/support/ab-runner.ts A.mjs B.mjs [runs=20]
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { encodeStartBody, START_CONTENT_TYPE } from "../../core/src/runner/RunnerProtocol.ts"
import { submitBody } from "../../core/test/runner/support.ts"
const files = process.argv.slice(2, 4)
const reps = Number(process.argv[4] ?? 20)
const start = (f: string) => new Promise<string>((res, rej) => {
  const dir = fs.mkdtempSync("/tmp/rab-")
  const c = spawn(process.execPath, [f, "--host", "127.0.0.1", "--port", "0", "--work-dir", dir], { stdio: ["ignore", "pipe", "inherit"] })
  c.stdout!.once("data", (d) => { const { port } = JSON.parse(String(d).split("\n")[0]!); res(`http://127.0.0.1:${port}`) })
  c.on("exit", (code) => rej(new Error(`exit ${code}`)))
  process.on("exit", () => c.kill("SIGKILL"))
})
const urls = await Promise.all(files.map(start))
const one = async (url: string) => {
  const body = encodeStartBody(JSON.stringify(submitBody({ commands: ["echo hi"] })), undefined)
  const t0 = performance.now()
  const r = await fetch(`${url}/api/start?timestamp=0`, { method: "POST", headers: { "content-type": START_CONTENT_TYPE, accept: "application/json" }, body: body as unknown as BodyInit })
  const t1 = performance.now(); await r.text()
  if (r.status !== 200) throw new Error(`start ${r.status}`)
  let running = NaN
  for (;;) {
    const p = await (await fetch(`${url}/api/pull?timestamp=0`)).json() as any
    const states = (p.job_states ?? []).map((s: any) => s.state)
    if (Number.isNaN(running) && states.includes("running")) running = performance.now() - t0
    if (states.some((s: string) => ["done", "failed", "terminated"].includes(s))) break
    await new Promise((r) => setTimeout(r, 2))
  }
  return [t1 - t0, running]
}
const res: Record<string, number[][]> = { a: [], b: [] }
for (let i = 0; i < 3; i++) { await one(urls[0]!); await one(urls[1]!) }
for (let i = 0; i < reps; i++) for (const k of i % 2 ? ["a", "b"] : ["b", "a"]) res[k]!.push(await one(urls[k === "a" ? 0 : 1]!))
const med = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!.toFixed(1)
for (const k of ["a", "b"]) console.log(k, files[k === "a" ? 0 : 1], "start answered", med(res[k]!.map((x) => x[0]!)), "ms; running seen", med(res[k]!.map((x) => x[1]!)), "ms")
process.exit(0)
