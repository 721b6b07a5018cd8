// Talking to the server under test the way a client does: JSON POSTs with the bearer token,
// applying a task, polling its status, reading the first bytes of its live log.
import type { BenchServer } from "./server.ts"
import { now, sleep } from "./stats.ts"

export const call = async (server: BenchServer, route: string, body?: unknown): Promise<{ status: number; body: any }> => {
  const res = await fetch(`${server.url}${route}`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${server.token}` },
    body: body === undefined ? undefined : JSON.stringify(body)
  })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {}
  return { status: res.status, body: parsed }
}

export const runSpec = (runName: string, commands: ReadonlyArray<string>, extra: Record<string, unknown> = {}) => ({
  run_spec: {
    run_name: runName,
    repo_id: "bench",
    repo_data: { repo_type: "virtual" },
    configuration: { type: "task", commands, resources: { cpu: "1..", memory: "1GB..", disk: "1GB.." }, ...extra }
  }
})

export const apply = async (server: BenchServer, runName: string, commands: ReadonlyArray<string>, extra: Record<string, unknown> = {}) => {
  const res = await call(server, "/api/project/main/runs/apply", { plan: runSpec(runName, commands, extra) })
  if (res.status !== 200) throw new Error(`apply ${runName} failed: HTTP ${res.status} ${JSON.stringify(res.body).slice(0, 500)}`)
  return res.body
}

export const FINISHED = ["done", "failed", "terminated"]

export const getRun = async (server: BenchServer, runName: string) => (await call(server, "/api/project/main/runs/get", { run_name: runName })).body

/** Polls runs/get every `everyMs` until `done(run)`; answers the run and when it was seen (ms, `now()` clock). */
export const waitRun = async (server: BenchServer, runName: string, done: (run: any) => boolean, options: { everyMs?: number; timeoutMs?: number } = {}) => {
  const deadline = now() + (options.timeoutMs ?? 120_000)
  let last: any
  while (now() < deadline) {
    last = await getRun(server, runName)
    if (done(last)) return { run: last, at: now() }
    await sleep(options.everyMs ?? 50)
  }
  throw new Error(`run ${runName} did not get there in time; last status ${last?.status} ${JSON.stringify(last?.jobs?.[0]?.job_submissions?.at(-1)).slice(0, 800)}`)
}

/** Opens the run's live log; yields raw SSE text chunks until the stream ends or `signal` aborts. */
export const openLogStream = async (server: BenchServer, runName: string, signal?: AbortSignal) => {
  const res = await fetch(`${server.url}/api/project/main/logs/stream?run_name=${encodeURIComponent(runName)}`, {
    headers: { authorization: `Bearer ${server.token}` },
    ...(signal ? { signal } : {})
  })
  if (res.status !== 200 || res.body === null) throw new Error(`logs/stream ${runName}: HTTP ${res.status} ${await res.text()}`)
  return res.body
}
