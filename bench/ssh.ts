// SSH fleet rows, on real sshd hosts in network namespaces (test/support/netns.ts):
// - forward throughput: a job port forwarded by the ssh transport (RunnerTransport.forward)
//   against a raw `ssh -N -L` to the same port; the host's server writes N MiB, the client
//   reads them through the forward. Target ≥ 0.7× (MB/s, higher is better).
// - provisioning a fresh host: the remote backend's provision (probe, ship the bundle, start it
//   supervised, wait for its healthcheck) against a raw `scp` of the same bundle and an `ssh`
//   that starts it and waits for its ready line. Target ≤ 2× (p50).
// - submit → RUNNING on an idle SSH fleet host (a dstack-ts server process with the default
//   build, a fleet of one netns host applied through the API, `fleets: [bench]`), against the
//   same on the local backend of that server, and against a raw `ssh host true` (the issue's
//   target: p50 ≤ raw + 30 ms).
// - attach throughput: `dstack attach` (the real CLI: client → server WebSocket → the ssh
//   transport's forward → the job's port) to a job on the fleet host that writes N MiB to each
//   connection, against a raw `ssh -N -L` to the same port. Target ≥ 0.7× (MB/s). N is large
//   enough (256 MiB) that a round measures the transfer, not the connection's setup, which has
//   a row of its own:
// - attach connection setup: connect to the local port and wait for the job's first byte, a
//   new connection each time (the CLI opens a WebSocket, the server checks the token, the run
//   and the port and opens an SSH channel), against the same through the raw `ssh -N -L` (a
//   channel on its open connection). No target in the issue: shown for what it costs.
//   BENCH_SSH_MB (default 256; full 1024), BENCH_SSH_ROUNDS (default 3; full 7),
//   BENCH_SSH_REPS (submit → RUNNING runs per side, default 10; full 30),
//   BENCH_SSH_PARTS (default forward,provision,submit,attach: which rows to measure; attach
//   needs submit's fleet). BENCH_ATTACH_CPU_PROF=<dir>: the `dstack attach` process writes a
//   CPU profile there (with BENCH_SERVER_CPU_PROF, the server's: bench/support/server.ts).
//   BENCH_SSH_CPU=1 logs, for each throughput round, the processes that used the most CPU during
//   it, in CPU ms per GiB carried (from /proc; every process of the machine, so also whatever
//   else runs beside the bench).
import { execFile, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { RemoteBackend } from "@dstack-ts/backend-ssh"
import { RunnerLaunch } from "@dstack-ts/core"
import { SshTransport } from "@dstack-ts/transport-ssh"
import { Effect, Exit, Scope } from "effect"
import { createNetnsHosts, netnsUnavailable, type NetnsHost, type NetnsHosts } from "../test/support/netnsHosts.ts"
import type { BenchContext } from "./context.ts"
import { apply, call, FINISHED, waitRun } from "./support/api.ts"
import { type BenchServer, startServer } from "./support/server.ts"
import { now, summarize, type Row } from "./support/stats.ts"

const exec = promisify(execFile)
const RUNNER_ENTRY = fileURLToPath(new URL("../cli/src/runner.ts", import.meta.url))
const CLI = fileURLToPath(new URL("../cli/bin/dstack.mjs", import.meta.url))
const SOURCE_PORT = 7000

const sshArgs = (hosts: NetnsHosts, host: NetnsHost) => [
  "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
  "-i", hosts.privateKeyFile, "-p", String(host.port), `${host.user}@${host.ip}`
]

/**
 * The reading client, a Node process of its own (as a client of the server or of `ssh -L` is):
 * told `port bytes` on a line, it reads everything from 127.0.0.1:port and answers MB/s
 * (1 MB = 10^6 bytes), timed from its connect to the close, or `error …`. The same for every arm;
 * in the bench's own process it would share a thread with the ssh transport's forward.
 */
const READER = `
  const net = require("net")
  require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
    const [port, expected] = line.split(" ").map(Number)
    const started = performance.now()
    let bytes = 0
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.on("data", (chunk) => (bytes += chunk.length))
    socket.on("error", (e) => console.log("error " + e.message))
    socket.on("close", () => console.log(bytes === expected ? String(bytes / 1e6 / ((performance.now() - started) / 1000)) : "error read " + bytes + " of " + expected + " bytes"))
  })`

let reader: { readonly proc: ReturnType<typeof spawn>; readonly lines: Array<(line: string) => void> } | undefined

/** Reads everything from 127.0.0.1:port in the reader process; answers MB/s. */
const readAll = (port: number, expected: number) =>
  new Promise<number>((resolve, reject) => {
    if (reader === undefined) {
      const proc = spawn(process.execPath, ["-e", READER], { stdio: ["pipe", "pipe", "inherit"] })
      const lines: Array<(line: string) => void> = []
      let buffered = ""
      proc.stdout!.on("data", (d: Buffer) => {
        buffered += d.toString()
        let at: number
        while ((at = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, at)
          buffered = buffered.slice(at + 1)
          lines.shift()?.(line)
        }
      })
      proc.unref()
      reader = { proc, lines }
    }
    reader.lines.push((line) => (line.startsWith("error") ? reject(new Error(line)) : resolve(Number(line))))
    reader.proc.stdin!.write(`${port} ${expected}\n`)
  })

const stopReader = () => {
  reader?.proc.kill("SIGKILL")
  reader = undefined
}

/** A free port on this machine's loopback. */
const freePort = () =>
  new Promise<number>((resolve) => {
    const server = net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port
      server.close(() => resolve(port))
    })
  })

const waitListening = async (port: number) => {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: "127.0.0.1", port }, () => {
        s.destroy()
        resolve(true)
      })
      s.on("error", () => resolve(false))
    })
    if (ok) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`nothing listens on 127.0.0.1:${port}`)
}

/** A Node program that listens on `port` and writes `bytes` to each connection, then closes it. */
const sourceProgram = (bytes: number, port: number) => `
    const chunk = Buffer.alloc(1 << 20, 97)
    require("net").createServer((s) => {
      s.on("error", () => {}) // a probe that connects and leaves at once
      let left = ${bytes}
      const write = () => { while (left > 0) { const n = Math.min(left, chunk.length); left -= n; if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return s.once("drain", write) } s.end() }
      write()
    }).listen(${port}, "127.0.0.1", () => console.log("ready"))`

/**
 * Reads `bytes` through `ours` and through `raw` (a raw `ssh -L`) in turns, after one warm-up
 * each, by the reader process, and makes the row comparing their MB/s against the ≥ 0.7× target.
 */
/** CPU time (clock ticks) of every process, by `pid command line`. */
const processTicks = (): Map<string, number> => {
  const ticks = new Map<string, number>()
  for (const pid of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(pid)) continue
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
      const command = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim().slice(0, 70)
      ticks.set(`${pid} ${command}`, Number(fields[11]) + Number(fields[12])) // utime + stime
    } catch {
      // the process ended meanwhile
    }
  }
  return ticks
}

/** `readAll`, and with BENCH_SSH_CPU the top CPU users while it ran, in ms per GiB. */
const readAllCounted = async (ctx: BenchContext, arm: string, port: number, bytes: number): Promise<number> => {
  if (process.env.BENCH_SSH_CPU === undefined) return readAll(port, bytes)
  const before = processTicks()
  const mbs = await readAll(port, bytes)
  const tickMs = 1000 / 100 // USER_HZ
  const used = [...processTicks()].map(([name, t]) => [name, (t - (before.get(name) ?? 0)) * tickMs] as const).filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1]).slice(0, 6)
  ctx.log(`  cpu ${arm}: ${used.map(([name, ms]) => `${Math.round(ms / (bytes / 2 ** 30))} ms/GiB ${name}`).join(" | ")}`)
  return mbs
}

const throughputRow = async (ctx: BenchContext, what: string, measure: string, ours: number, raw: number, bytes: number, rounds: number): Promise<Row> => {
  await readAll(ours, bytes) // warm-up: the forward or tunnel is opened
  await readAll(raw, bytes)
  const mine: Array<number> = []
  const theirs: Array<number> = []
  for (let i = 0; i < rounds; i++) {
    // In turns, each arm first every other round.
    if (i % 2 === 0) {
      mine.push(await readAllCounted(ctx, "ours", ours, bytes))
      theirs.push(await readAllCounted(ctx, "raw", raw, bytes))
    } else {
      theirs.push(await readAllCounted(ctx, "raw", raw, bytes))
      mine.push(await readAllCounted(ctx, "ours", ours, bytes))
    }
    ctx.log(`${what} round ${i + 1}: ${mine[i]!.toFixed(0)} vs ssh -L ${theirs[i]!.toFixed(0)} MB/s`)
  }
  const value = summarize(mine)
  const baseline = summarize(theirs)
  return {
    section: "ssh",
    measure,
    unit: "MB/s",
    value,
    baseline,
    better: "higher",
    target: "≥ 0.7× raw ssh -L",
    verdict: value.p50 >= 0.7 * baseline.p50 ? "meets" : "short"
  }
}

const forwardRows = async (ctx: BenchContext, hosts: NetnsHosts, scope: Scope.Scope, mb: number, rounds: number): Promise<Array<Row>> => {
  const host = hosts.hosts[0]!
  const bytes = mb * 1024 * 1024
  // The job's port: a server in the host's namespace that writes `bytes` to each connection.
  const source = spawn("ip", ["netns", "exec", host.netns, "node", "-e", sourceProgram(bytes, SOURCE_PORT)], { stdio: ["ignore", "pipe", "inherit"] })
  await new Promise((resolve) => source.stdout!.once("data", resolve))
  try {
    const transport = await Effect.runPromise(Scope.extend(SshTransport.make(), scope))
    const target = { hostname: host.ip, runnerPort: 10999, ssh: { user: host.user, port: host.port, privateKey: hosts.privateKey } }
    const forward = await Effect.runPromise(Scope.extend(transport.forward(target, 0, SOURCE_PORT), scope))
    const rawPort = await freePort()
    const raw = spawn("ssh", ["-N", "-L", `127.0.0.1:${rawPort}:127.0.0.1:${SOURCE_PORT}`, ...sshArgs(hosts, host)], { stdio: "ignore" })
    try {
      await waitListening(rawPort)
      return [await throughputRow(ctx, "ssh forward", `forward throughput, ${mb} MiB through a forwarded job port (ssh transport vs raw ssh -L), ${rounds} rounds`, forward.localPort, rawPort, bytes, rounds)]
    } finally {
      raw.kill("SIGTERM")
    }
  } finally {
    source.kill("SIGKILL")
  }
}

const provisionRows = async (ctx: BenchContext, hosts: NetnsHosts, scope: Scope.Scope, rounds: number): Promise<Array<Row>> => {
  const host = hosts.hosts[1]!
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-bench-ssh-"))
  try {
    const { file } = await RunnerLaunch.bundleRunner(RUNNER_ENTRY, dir)
    const backend = await Effect.runPromise(Scope.extend(RemoteBackend.make({ runnerEntry: file }), scope))
    const remote = { hostname: host.ip, port: host.port, user: host.user, privateKey: hosts.privateKey }
    const ours: Array<number> = []
    const theirs: Array<number> = []
    for (let i = 0; i < rounds; i++) {
      const config = { projectName: "bench", instanceName: `bench-${i}`, instanceId: `bench-ssh-${i}`, sshKeys: [] }
      let started = now()
      await Effect.runPromise(backend.remoteHosts.provision(remote, config))
      ours.push(now() - started)
      await Effect.runPromise(backend.remoteHosts.deprovision(remote, config))

      // Raw: scp the bundle to a fresh directory, then ssh to start it and wait for its ready line.
      const rawDir = `${os.tmpdir()}/dstack-ts-bench-raw-${i}`
      started = now()
      await exec("ssh", [...sshArgs(hosts, host), `mkdir -p ${rawDir}`])
      await exec("scp", [...sshArgs(hosts, host).slice(0, -3), "-P", String(host.port), file, `${host.user}@${host.ip}:${rawDir}/runner.mjs`])
      await new Promise<void>((resolve, reject) => {
        const child = spawn("ssh", [...sshArgs(hosts, host), `node ${rawDir}/runner.mjs --port 10998 --work-dir ${rawDir}/work`], { stdio: ["ignore", "pipe", "ignore"] })
        child.stdout!.once("data", () => {
          child.kill("SIGTERM")
          resolve()
        })
        child.once("exit", (code) => reject(new Error(`the raw runner exited (${code}) before its ready line`)))
      })
      theirs.push(now() - started)
      await exec("ssh", [...sshArgs(hosts, host), `pkill -f ${rawDir}/runner.mjs; rm -rf ${rawDir}`]).catch(() => undefined)
      ctx.log(`ssh provisioning round ${i + 1}: ${ours[i]!.toFixed(0)} vs scp + ssh ${theirs[i]!.toFixed(0)} ms`)
    }
    const value = summarize(ours)
    const baseline = summarize(theirs)
    return [{
      section: "ssh",
      measure: `provisioning a fresh host (remote backend: probe, ship, start supervised, healthy) vs raw scp + ssh start, ${rounds} rounds`,
      unit: "ms",
      value,
      baseline,
      better: "lower",
      target: "≤ 2× raw",
      verdict: value.p50 <= 2 * baseline.p50 ? "meets" : "short"
    }]
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/** Submit → RUNNING of one run (`echo hi; sleep 1`), polled every 5 ms; waits for it to end. */
/** New connections per arm for the connection setup row. */
const SETUP_CONNECTIONS = 30

/** Connects to 127.0.0.1:port and waits for the first byte (then leaves): ms. */
const firstByte = (port: number) =>
  new Promise<number>((resolve, reject) => {
    const started = now()
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.once("data", () => {
      resolve(now() - started)
      socket.destroy()
    })
    socket.once("error", reject)
    socket.once("close", () => reject(new Error(`127.0.0.1:${port} closed before its first byte`)))
  })

/** First byte of a new connection through `dstack attach` against raw `ssh -L`, in turns. */
const setupRow = async (ctx: BenchContext, ours: number, raw: number, connections: number): Promise<Row> => {
  const mine: Array<number> = []
  const theirs: Array<number> = []
  for (let i = 0; i < connections; i++) {
    if (i % 2 === 0) {
      mine.push(await firstByte(ours))
      theirs.push(await firstByte(raw))
    } else {
      theirs.push(await firstByte(raw))
      mine.push(await firstByte(ours))
    }
  }
  const value = summarize(mine)
  const baseline = summarize(theirs)
  ctx.log(`attach connection setup: ${value.p50.toFixed(1)} vs ssh -L ${baseline.p50.toFixed(1)} ms p50`)
  return {
    section: "ssh",
    measure: `attach connection setup: a new connection to its first byte (\`dstack attach\` vs raw ssh -L), ${connections} connections`,
    unit: "ms",
    value,
    baseline,
    better: "lower",
    verdict: "n/a"
  }
}

/** `dstack attach` throughput through the server against a raw `ssh -L`, on the fleet `bench` of `server`. */
const attachRows = async (ctx: BenchContext, hosts: NetnsHosts, server: BenchServer, mb: number, rounds: number): Promise<Array<Row>> => {
  const host = hosts.hosts[0]!
  const bytes = mb * 1024 * 1024
  const port = SOURCE_PORT + 1
  const program = sourceProgram(bytes, port) // no single quote in it: it goes in one as it is
  await apply(server, "ssh-attach", [`node -e '${program}'`], { fleets: ["bench"], ports: [port] })
  const { run: started } = await waitRun(server, "ssh-attach", (r) => r.status === "running" || FINISHED.includes(r.status), { everyMs: 50 })
  if (started.status !== "running") throw new Error(`the attach job ended ${started.status}: ${JSON.stringify(started.jobs?.[0]?.job_submissions?.at(-1)).slice(0, 800)}`)
  const home = fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-bench-attach-"))
  const prof = process.env.BENCH_ATTACH_CPU_PROF
  const attach = spawn(process.execPath, [...(prof ? ["--cpu-prof", `--cpu-prof-dir=${prof}`] : []), CLI, "attach", "ssh-attach"], {
    env: { ...process.env, HOME: home, NO_COLOR: "1", DSTACK_SERVER_URL: server.url, DSTACK_TOKEN: server.token, DSTACK_PROJECT: "main" },
    stdio: ["ignore", "pipe", "pipe"]
  })
  let output = ""
  attach.stdout!.on("data", (d) => (output += d))
  attach.stderr!.on("data", (d) => (output += d))
  const rawPort = await freePort()
  const raw = spawn("ssh", ["-N", "-L", `127.0.0.1:${rawPort}:127.0.0.1:${port}`, ...sshArgs(hosts, host)], { stdio: "ignore" })
  try {
    const deadline = now() + 60_000
    let localPort: number | undefined
    while (localPort === undefined) {
      const m = /(\d+) → http:\/\/127\.0\.0\.1:(\d+)/.exec(output)
      if (m !== null) localPort = Number(m[2])
      else if (attach.exitCode !== null || now() > deadline) throw new Error(`dstack attach did not forward the port: ${output.slice(-800)}`)
      else await new Promise((r) => setTimeout(r, 100))
    }
    await waitListening(rawPort)
    // Throughput first: connections left after their first byte keep the job writing into
    // closing tunnels for a while, which would fall on the first throughput rounds.
    const throughput = await throughputRow(ctx, "attach", `attach throughput, ${mb} MiB from a job port on the fleet host (\`dstack attach\` through the server vs raw ssh -L), ${rounds} rounds`, localPort, rawPort, bytes, rounds)
    return [throughput, await setupRow(ctx, localPort, rawPort, SETUP_CONNECTIONS)]
  } finally {
    raw.kill("SIGTERM")
    attach.kill("SIGINT")
    await call(server, "/api/project/main/runs/stop", { runs_names: ["ssh-attach"], abort: true })
    fs.rmSync(home, { recursive: true, force: true })
  }
}

const submitToRunning = async (server: BenchServer, name: string, extra: Record<string, unknown>): Promise<number> => {
  const t0 = now()
  await apply(server, name, ["echo hi; sleep 1"], extra)
  const { run, at } = await waitRun(server, name, (r) => r.status === "running" || FINISHED.includes(r.status), { everyMs: 5 })
  if (run.status !== "running") throw new Error(`run ${name} ended ${run.status} before it was seen running: ${JSON.stringify(run.jobs?.[0]?.job_submissions?.at(-1)).slice(0, 600)}`)
  await waitRun(server, name, (r) => FINISHED.includes(r.status), { everyMs: 100 })
  return at - t0
}

const submitRows = async (ctx: BenchContext, hosts: NetnsHosts, reps: number, attach?: { readonly mb: number; readonly rounds: number }): Promise<Array<Row>> => {
  const host = hosts.hosts[0]!
  const server = await startServer({ maxInstances: 1, databaseUrl: ctx.databaseUrl })
  try {
    // The local backend first: with a fleet in place a run without `fleets` could take its host.
    ctx.log(`ssh submit → RUNNING: local backend, 1 warm-up + ${reps} runs`)
    if (reps > 0) await submitToRunning(server, "ssh-warm-local", {})
    const local: Array<number> = []
    for (let i = 0; i < reps; i++) local.push(await submitToRunning(server, `ssh-local-${i}`, {}))

    const configuration = {
      type: "fleet",
      name: "bench",
      ssh_config: { user: host.user, ssh_key: { public: hosts.publicKey, private: hosts.privateKey }, hosts: [{ hostname: host.ip, port: host.port }] }
    }
    const applied = await call(server, "/api/project/main/fleets/apply", { plan: { spec: { configuration } } })
    if (applied.status !== 200) throw new Error(`fleets/apply: HTTP ${applied.status} ${JSON.stringify(applied.body).slice(0, 500)}`)
    const deadline = now() + 300_000
    for (;;) {
      const fleet = (await call(server, "/api/project/main/fleets/get", { name: "bench" })).body
      const status = fleet.instances?.[0]?.status
      if (status === "idle") break
      if (status === "terminated" || now() > deadline) throw new Error(`the bench fleet's host is not idle: ${JSON.stringify(fleet.instances?.[0]).slice(0, 800)}`)
      await new Promise((r) => setTimeout(r, 200))
    }
    if (reps === 0) return attach === undefined ? [] : await attachRows(ctx, hosts, server, attach.mb, attach.rounds)
    ctx.log(`ssh submit → RUNNING: SSH fleet host, 1 warm-up + ${reps} runs; raw ssh true`)
    await submitToRunning(server, "ssh-warm-fleet", { fleets: ["bench"] })
    const fleet: Array<number> = []
    const raw: Array<number> = []
    for (let i = 0; i < reps; i++) {
      fleet.push(await submitToRunning(server, `ssh-fleet-${i}`, { fleets: ["bench"] }))
      const t0 = now()
      await exec("ssh", [...sshArgs(hosts, host), "true"])
      raw.push(now() - t0)
      ctx.log(`ssh submit → RUNNING round ${i + 1}: fleet ${fleet[i]!.toFixed(0)}, local ${local[i]!.toFixed(0)}, ssh true ${raw[i]!.toFixed(0)} ms`)
    }
    const value = summarize(fleet)
    const localSummary = summarize(local)
    const rawSummary = summarize(raw)
    const attachRow = attach === undefined ? [] : await attachRows(ctx, hosts, server, attach.mb, attach.rounds)
    return [
      ...attachRow,
      {
        section: "ssh",
        measure: `submit → RUNNING on an idle SSH fleet host vs on the local backend, n=${reps}`,
        unit: "ms",
        value,
        baseline: localSummary,
        better: "lower",
        target: "p50 ≤ local + 30 ms",
        verdict: value.p50 <= localSummary.p50 + 30 ? "meets" : "short"
      },
      {
        section: "ssh",
        measure: `submit → RUNNING on an idle SSH fleet host vs a raw \`ssh host true\`, n=${reps}`,
        unit: "ms",
        value,
        baseline: rawSummary,
        better: "lower",
        target: "p50 ≤ raw + 30 ms",
        verdict: value.p50 <= rawSummary.p50 + 30 ? "meets" : "short"
      }
    ]
  } finally {
    await server.stop()
  }
}

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const missing = await netnsUnavailable()
  if (missing !== undefined) {
    return [
      { section: "ssh", measure: "forward throughput vs raw ssh -L", unit: "MB/s", better: "higher", target: "≥ 0.7×", notMeasured: missing },
      { section: "ssh", measure: "provisioning a fresh host vs raw scp + ssh", unit: "ms", better: "lower", target: "≤ 2×", notMeasured: missing },
      { section: "ssh", measure: "submit → RUNNING on an idle SSH fleet host vs the local backend", unit: "ms", better: "lower", target: "p50 ≤ local + 30 ms", notMeasured: missing },
      { section: "ssh", measure: "attach connection setup vs raw ssh -L", unit: "ms", better: "lower", notMeasured: missing },
      { section: "ssh", measure: "attach throughput vs raw ssh -L", unit: "MB/s", better: "higher", target: "≥ 0.7×", notMeasured: missing }
    ]
  }
  const mb = Number(process.env.BENCH_SSH_MB ?? (ctx.full ? 1024 : 256))
  const rounds = Number(process.env.BENCH_SSH_ROUNDS ?? (ctx.full ? 7 : 3))
  const reps = Number(process.env.BENCH_SSH_REPS ?? (ctx.full ? 30 : 10))
  const parts = (process.env.BENCH_SSH_PARTS ?? "forward,provision,submit,attach").split(",")
  const hosts = await createNetnsHosts({ count: 2 })
  const scope = Effect.runSync(Scope.make())
  try {
    return [
      ...(parts.includes("forward") ? await forwardRows(ctx, hosts, scope, mb, rounds) : []),
      ...(parts.includes("provision") ? await provisionRows(ctx, hosts, scope, rounds) : []),
      ...(parts.includes("submit") || parts.includes("attach")
        ? await submitRows(ctx, hosts, parts.includes("submit") ? reps : 0, parts.includes("attach") ? { mb, rounds } : undefined)
        : [])
    ]
  } finally {
    stopReader()
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await hosts.down()
  }
}
