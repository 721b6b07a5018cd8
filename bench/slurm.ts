// Slurm rows, on a real Slurm cluster (slurm-wlm on netns hosts, test/support/slurmCluster.ts):
// submit→RUNNING on an idle cluster — the slurm backend's createInstance (one script on the login
// node over the pooled SSH session: sbatch, then a watch until the allocation runs, its nodes
// known), against a raw `sbatch --wrap` on the login node polled with `squeue` every 20 ms until
// RUNNING, timed by the login node's shell (no SSH in it), in turns in the same rounds. Target
// ≤ raw + 100 ms. A second row, with no raw counterpart: submission until the runner started in
// the allocation is up and the backend has said where (createInstance, then
// updateProvisioningData until it answers the runner's port): what a job waits for before its
// runner can take it. The backend's own timestamps (SlurmStartTimes, a debug log annotation)
// give where the time goes.
//   BENCH_SLURM_ROUNDS (default 5; full 9)
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { SlurmBackend } from "@dstack-ts/backend-slurm"
import { JobSpec, Requirements, RunnerLaunch } from "@dstack-ts/core"
import { httpStatusOnHost, openSession } from "@dstack-ts/ssh"
import { Effect, Exit, HashMap, Logger, LogLevel, Option, Schema, Scope } from "effect"
import { createSlurmCluster, slurmUnavailable } from "../test/support/slurmCluster.ts"
import type { BenchContext } from "./context.ts"
import { now, percentile, summarize, type Row } from "./support/stats.ts"

const RUNNER_ENTRY = fileURLToPath(new URL("../cli/src/runner.ts", import.meta.url))
const MEASURE = "submit→RUNNING on an idle cluster (slurm backend: sbatch, allocation running with its nodes known: createInstance returned) vs raw sbatch --wrap to RUNNING on the login node"
const READY_MEASURE = "submit→runner ready on an idle cluster (createInstance, then the runner started in the allocation listening: updateProvisioningData answered its port; no raw counterpart)"
const TARGET = "≤ raw + 100 ms"

/** The raw path, timed by the login node's shell: sbatch, then squeue every 20 ms until RUNNING. */
const RAW = `t0=$(date +%s%3N); id=$(sbatch --parsable --output=/dev/null --wrap 'sleep 60') || exit 1; while [ "$(squeue -h -j "$id" -o %T)" != RUNNING ]; do sleep 0.02; done; t1=$(date +%s%3N); echo "$id $((t1 - t0))"`

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const missing = await slurmUnavailable()
  if (missing !== undefined) {
    return [
      { section: "slurm", measure: MEASURE, unit: "ms", better: "lower", target: TARGET, notMeasured: missing },
      { section: "slurm", measure: READY_MEASURE, unit: "ms", better: "lower", notMeasured: missing }
    ]
  }
  const rounds = Number(process.env.BENCH_SLURM_ROUNDS ?? (ctx.full ? 9 : 5))
  const bundleDir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-slurm-"))
  const cluster = await createSlurmCluster({ nodes: 1 })
  const scope = Effect.runSync(Scope.make())
  const installDir = `.dstack-ts/slurm-bench-${cluster.net.name}`
  try {
    // The backend as it ships: the bundle as a script, started from a startup snapshot made on the node.
    const bundle = await RunnerLaunch.bundleRunner(RUNNER_ENTRY, bundleDir, { snapshot: true })
    const backend = await Effect.runPromise(Scope.extend(SlurmBackend.make({
      clusters: [Schema.decodeUnknownSync(SlurmBackend.SlurmClusterConfig)({ name: "bench", hostname: cluster.login.ip, user: "root", private_key: { content: cluster.net.privateKey } })],
      runnerEntry: bundle.file,
      installDir
    }), scope))
    const resources = { cpu: 1, memory: "0.5GB", disk: "1GB.." }
    const offer = (await Effect.runPromise(backend.getOffers(Schema.decodeUnknownSync(Requirements)({ resources })))).offers[0]!
    const spec = Schema.decodeUnknownSync(JobSpec)({ job_name: "bench-0-0", requirements: { resources } })
    const job = { jobName: spec.jobName, requirements: spec.requirements }
    // The backend's breakdown of each allocation, from its debug log.
    let times: SlurmBackend.SlurmStartTimes | undefined
    const capture = Logger.make(({ annotations }) => {
      const t = HashMap.get(annotations, "slurmStartTimes")
      if (Option.isSome(t)) times = t.value as SlurmBackend.SlurmStartTimes
    })
    const logged = <A, E>(effect: Effect.Effect<A, E>) =>
      Effect.runPromise(effect.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, capture)), Logger.withMinimumLogLevel(LogLevel.Debug)))
    const create = (name: string) => logged(backend.createInstance(offer, { projectName: "bench", instanceName: name, instanceId: name, sshKeys: [], job }))
    // As the engine asks it: again at once while the runner is still starting.
    const ready = async (pd: Awaited<ReturnType<typeof create>>) => {
      for (let i = 0; i < 100; i++) {
        const done = await logged(backend.updateProvisioningData(pd))
        if (done !== undefined) return done
      }
      throw new Error(`the runner of Slurm job ${pd.instanceId} did not start`)
    }
    // Warm-up: the bundle is shipped once, the SSH session opened, the home directory read; the
    // first start on the node builds the startup snapshot in the background: kept running until
    // it is there (the node shares this machine's home directory).
    const warm = await create("warm")
    await ready(warm)
    const dir = path.join(os.homedir(), installDir)
    const blob = () => fs.readdirSync(dir).find((f) => f.endsWith(".blob"))
    for (let i = 0; i < 600 && blob() === undefined && !fs.readdirSync(dir).some((f) => f.endsWith(".failed")); i++) await new Promise((r) => setTimeout(r, 100))
    if (blob() === undefined) ctx.log(`slurm: no startup snapshot was made on the node (${fs.readdirSync(dir).join(", ")}); the rounds start the runner without one`)
    await Effect.runPromise(backend.terminateInstance(warm.instanceId, warm.region))
    // Idle: nothing in the queue, the node idle again (a cancelled job's node completes first),
    // and then 3.5 s more: slurmctld may delay scheduling a batch job by up to batch_sched_delay
    // (3 s by default, slurm.conf(5)); measured here, a submission right after a job ended
    // waited ~2.2 s for its allocation, whichever path submitted it.
    const idle = async () => {
      for (let i = 0; i < 200; i++) {
        const queue = (await cluster.slurm("squeue", ["-h", "-o", "%i"])).trim()
        const nodes = (await cluster.slurm("sinfo", ["-h", "-N", "-o", "%T"])).trim().split("\n")
        if (queue === "" && nodes.every((s) => s === "idle")) break
        await new Promise((r) => setTimeout(r, 100))
      }
      await new Promise((r) => setTimeout(r, 3500))
    }
    // After that: what the ssh transport does next — a new session to the node through the
    // login node as jump host, and the runner's healthcheck over it (in neither row's figure).
    const reach = async (pd: { readonly hostname?: string | null; readonly runnerPort?: number | null }, access: NonNullable<ReturnType<typeof backend.runnerAccess>>) => {
      const started = now()
      const session = await openSession(
        { hostname: pd.hostname!, port: access.port ?? 22, user: access.user, privateKey: access.privateKey, proxyJump: { ...access.proxyJump!, port: access.proxyJump!.port ?? 22 } },
        { readyTimeoutMs: 10_000, keepaliveIntervalMs: 0, keepaliveCountMax: 3 }
      )
      try {
        const status = await httpStatusOnHost(session, pd.runnerPort!, "/api/healthcheck")
        if (status !== 200) throw new Error(`the runner's healthcheck through the login node answered ${status}`)
        return now() - started
      } finally {
        session.close()
      }
    }
    const ours: Array<number> = []
    const readyMs: Array<number> = []
    const theirs: Array<number> = []
    const reached: Array<number> = []
    const phases: Array<SlurmBackend.SlurmStartTimes> = []
    for (let i = 0; i < rounds; i++) {
      await idle()
      times = undefined
      const started = now()
      const pd = await create(`b${i}`)
      ours.push(now() - started)
      const t = times as SlurmBackend.SlurmStartTimes | undefined
      if (t !== undefined) phases.push(t)
      const up = await ready(pd)
      readyMs.push(now() - started)
      reached.push(await reach(up, backend.runnerAccess(up)!))
      await Effect.runPromise(backend.terminateInstance(pd.instanceId, pd.region))
      await idle()
      const [id = "", ms = ""] = (await cluster.slurm("sh", ["-c", RAW])).trim().split(" ")
      theirs.push(Number(ms))
      await cluster.slurm("scancel", [id])
      ctx.log(`slurm round ${i + 1}: running seen ${ours[i]!.toFixed(0)} ms (sbatch answered +${t?.submitted}, running seen on the login node +${t?.runningSeen}, handed over +${t?.handedOver}), runner ready ${readyMs[i]!.toFixed(0)} ms (then reachable through the login node in ${reached[i]!.toFixed(0)}) vs raw sbatch→RUNNING ${theirs[i]} ms`)
    }
    const value = summarize(ours)
    const baseline = summarize(theirs)
    const p50Of = (pick: (t: SlurmBackend.SlurmStartTimes) => number | undefined) => {
      const xs = phases.map(pick).filter((x): x is number => x !== undefined)
      return xs.length === 0 ? "–" : percentile(xs, 50).toFixed(0)
    }
    return [{
      section: "slurm",
      measure: `${MEASURE}, ${rounds} rounds`,
      note: `p90 ${percentile(ours, 90).toFixed(0)} vs ${percentile(theirs, 90).toFixed(0)} ms; p50 phases: sbatch answered ${p50Of((t) => t.submitted)}, running seen on the login node ${p50Of((t) => t.runningSeen)}, handed over ${p50Of((t) => t.handedOver)} ms`,
      unit: "ms",
      value,
      baseline,
      better: "lower",
      target: TARGET,
      verdict: value.p50 <= baseline.p50 + 100 ? "meets" : "short"
    }, {
      section: "slurm",
      measure: `${READY_MEASURE}, same ${rounds} rounds`,
      note: `p90 ${percentile(readyMs, 90).toFixed(0)} ms; of it after createInstance returned (the runner's start in the allocation, seen on the login node) p50 ${percentile(readyMs.map((r, i) => r - ours[i]!), 50).toFixed(0)} ms; then the runner reachable through the login node (new SSH session via the jump host, healthcheck) p50 ${percentile(reached, 50).toFixed(0)} ms`,
      unit: "ms",
      value: summarize(readyMs),
      better: "lower",
      verdict: "n/a"
    }]
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await cluster.down()
    fs.rmSync(bundleDir, { recursive: true, force: true })
    fs.rmSync(path.join(os.homedir(), installDir), { recursive: true, force: true })
  }
}
