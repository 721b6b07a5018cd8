// Row 1: submit → RUNNING and submit → first log byte at the client, through the local
// backend, for the process executor and the Docker executor, after one warm-up run; beside a
// raw child_process.spawn of the same command and a raw `docker run --rm` of the same image.
//   BENCH_LATENCY_REPS (default 10; full 30) repetitions per executor.
import { spawn } from "node:child_process"
import { apply, FINISHED, openLogStream, waitRun } from "./support/api.ts"
import { benchJson, memNote, type ServerMemory, startServer, type BenchServer } from "./support/server.ts"
import { now, sleep, summarize, type Row, type Summary } from "./support/stats.ts"
import type { BenchContext } from "./context.ts"

const COMMAND = "echo hi; sleep 1"
const IMAGE = "dstack-ts-test/busybox:1"

interface Sample {
  readonly running: number
  readonly firstByte: number
  /** When each status was first seen (ms after submit), for the breakdown. */
  readonly seen?: Record<string, number>
  readonly applyMs?: number
}

/** One run: apply, then poll the status (5 ms) and read the live log at once. */
export const oneRun = async (server: BenchServer, name: string, extra: Record<string, unknown>): Promise<Sample> => {
  const t0 = now()
  await apply(server, name, [COMMAND], extra)
  const applyMs = now() - t0
  const seen: Record<string, number> = {}
  const firstByte = (async () => {
    // The stream answers once the submission exists; the first `logs` event carries bytes.
    const body = await openLogStream(server, name)
    const reader = body.getReader()
    const decoder = new TextDecoder()
    let text = ""
    try {
      for (;;) {
        const { done, value } = await reader.read()
        if (done) throw new Error(`log stream of ${name} ended without a line: ${text.slice(0, 500)}`)
        text += decoder.decode(value, { stream: true })
        if (/event: logs\ndata: \[\{/.test(text)) return now() - t0
      }
    } finally {
      await reader.cancel().catch(() => {})
    }
  })()
  const running = waitRun(server, name, (r) => {
    const st = r.jobs?.[0]?.job_submissions?.at(-1)?.status ?? r.status
    if (seen[st] === undefined) seen[st] = now() - t0
    return r.status === "running" || FINISHED.includes(r.status)
  }, { everyMs: 5 }).then((x) => {
    if (x.run.status !== "running") throw new Error(`run ${name} ended ${x.run.status} before it was seen running: ${JSON.stringify(x.run.jobs?.[0]?.job_submissions?.at(-1)).slice(0, 600)}`)
    return x.at - t0
  })
  const [r, f] = await Promise.all([running, firstByte])
  await waitRun(server, name, (x) => FINISHED.includes(x.status), { everyMs: 100 })
  return { running: r, firstByte: f, seen, applyMs }
}

/** A raw spawn of the same command: time to the `spawn` event and to the first stdout byte. */
const rawSpawn = (file: string, args: ReadonlyArray<string>): Promise<Sample> =>
  new Promise((resolve, reject) => {
    const t0 = now()
    let spawned = Number.NaN
    let first = Number.NaN
    const p = spawn(file, [...args], { stdio: ["ignore", "pipe", "inherit"] })
    p.on("spawn", () => (spawned = now() - t0))
    p.stdout!.once("data", () => (first = now() - t0))
    p.stdout!.resume()
    p.on("error", reject)
    p.on("close", (code) => (code === 0 ? resolve({ running: spawned, firstByte: first }) : reject(new Error(`${file} exited with ${code}`))))
  })

const rowsFor = (label: string, system: Array<Sample>, base: Array<Sample>, baseLabel: string, slackMs: number, runningBaseIsFirstByte: boolean): Array<Row> => {
  const sRun = summarize(system.map((s) => s.running))
  const sByte = summarize(system.map((s) => s.firstByte))
  const bRun = summarize(base.map((s) => (runningBaseIsFirstByte ? s.firstByte : s.running)))
  const bByte = summarize(base.map((s) => s.firstByte))
  const med = (xs: Array<number | undefined>) => {
    const v = xs.filter((x): x is number => x !== undefined)
    return v.length ? summarize(v).p50.toFixed(0) : "–"
  }
  const statuses = [...new Set(system.flatMap((s) => Object.keys(s.seen ?? {})))]
  const breakdown = `apply answered at ${med(system.map((s) => s.applyMs))} ms; job first seen ${statuses.map((st) => `${st} ${med(system.map((s) => s.seen?.[st]))}`).join(", ")} ms (p50)`
  const verdict = (s: Summary, b: Summary) => (s.p50 - b.p50 <= slackMs && s.p99 <= 2 * s.p50 ? "meets" as const : "short" as const)
  return [
    { section: "1 latency", measure: `${label}: submit → RUNNING vs ${baseLabel}`, unit: "ms", value: sRun, baseline: bRun, better: "lower", target: `p50 ≤ baseline + ${slackMs} ms; p99 ≤ 2 × p50`, verdict: verdict(sRun, bRun), note: `n=${sRun.n}; ${breakdown}` },
    { section: "1 latency", measure: `${label}: submit → first log byte vs ${baseLabel.replace("`spawn` event", "first stdout byte")}`, unit: "ms", value: sByte, baseline: bByte, better: "lower", target: `p50 ≤ baseline + ${slackMs} ms; p99 ≤ 2 × p50`, verdict: verdict(sByte, bByte), note: `n=${sByte.n}` }
  ]
}

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const reps = Number(process.env.BENCH_LATENCY_REPS ?? (ctx.full ? 30 : 10))
  const rows: Array<Row> = []
  const server = await startServer({ maxInstances: 1, databaseUrl: ctx.databaseUrl })
  try {
    // The server just started, nothing run yet: what it holds at rest, after full collections
    // (the floor under the logs row's RSS target).
    await sleep(2_000)
    const idle = await benchJson<ServerMemory>(server, "/bench/memory?gc=1")
    const idleRss = server.rssMiB()
    ctx.log(`latency: the server at rest: rss ${idleRss.toFixed(0)} MiB (${memNote(idle)})`)
    rows.push({
      section: "1 latency",
      measure: `server memory at rest, just started (${ctx.databaseUrl ? "PostgreSQL" : "embedded"} store, no run yet; RSS after full collections)`,
      unit: "MiB",
      value: idleRss,
      better: "lower",
      target: "(information)",
      verdict: "n/a",
      note: memNote(idle)
    })
    // process executor
    ctx.log(`latency: process executor, 1 warm-up + ${reps} runs`)
    await oneRun(server, "warm-process", {})
    const system: Array<Sample> = []
    const base: Array<Sample> = []
    for (let i = 0; i < reps; i++) {
      system.push(await oneRun(server, `lat-process-${i}`, {}))
      base.push(await rawSpawn("bash", ["-c", COMMAND]))
    }
    rows.push(...rowsFor("process executor", system, base, "raw spawn (`spawn` event)", 20, false))

    // docker executor
    if (ctx.dockerMissing) {
      rows.push({ section: "1 latency", measure: "Docker executor: submit → RUNNING / first log byte", unit: "ms", better: "lower", notMeasured: ctx.dockerMissing, target: "p50 ≤ docker run + 100 ms" })
    } else {
      ctx.log(`latency: Docker executor, 1 warm-up + ${reps} runs`)
      await oneRun(server, "warm-docker", { image: IMAGE })
      await rawSpawn("docker", ["run", "--rm", IMAGE, "sh", "-c", COMMAND])
      const dsys: Array<Sample> = []
      const dbase: Array<Sample> = []
      for (let i = 0; i < reps; i++) {
        dsys.push(await oneRun(server, `lat-docker-${i}`, { image: IMAGE }))
        dbase.push(await rawSpawn("docker", ["run", "--rm", IMAGE, "sh", "-c", COMMAND]))
      }
      rows.push(...rowsFor("Docker executor", dsys, dbase, "`docker run --rm` (first stdout byte)", 100, true))
    }
  } finally {
    await server.stop()
  }
  return rows
}
