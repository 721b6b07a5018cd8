// Slurm row, on a real Slurm cluster (slurm-wlm on netns hosts, test/support/slurmCluster.ts):
// submit→RUNNING on an idle cluster — the slurm backend's createInstance (sbatch over SSH, wait
// for RUNNING and for the runner in the step to say where it listens) against a raw
// `sbatch --wrap` over one SSH session polling `squeue` until RUNNING. Target ≤ raw + 100 ms.
//   BENCH_SLURM_ROUNDS (default 3; full 7)
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { promisify } from "node:util"
import { SlurmBackend } from "@dstack-ts/backend-slurm"
import { JobSpec, Requirements, RunnerLaunch } from "@dstack-ts/core"
import { Effect, Exit, Schema, Scope } from "effect"
import { createSlurmCluster, slurmUnavailable } from "../test/support/slurmCluster.ts"
import type { BenchContext } from "./context.ts"
import { now, summarize, type Row } from "./support/stats.ts"

const exec = promisify(execFile)
const RUNNER_ENTRY = fileURLToPath(new URL("../cli/src/runner.ts", import.meta.url))
const MEASURE = "submit→RUNNING on an idle cluster (slurm backend: sbatch, RUNNING, runner ready) vs raw sbatch --wrap polled to RUNNING"

export const run = async (ctx: BenchContext): Promise<Array<Row>> => {
  const missing = await slurmUnavailable()
  if (missing !== undefined) return [{ section: "slurm", measure: MEASURE, unit: "ms", better: "lower", target: "≤ raw + 100 ms", notMeasured: missing }]
  const rounds = Number(process.env.BENCH_SLURM_ROUNDS ?? (ctx.full ? 7 : 3))
  const bundleDir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-slurm-"))
  const cluster = await createSlurmCluster({ nodes: 1 })
  const scope = Effect.runSync(Scope.make())
  const installDir = `.dstack-ts/slurm-bench-${cluster.net.name}`
  try {
    const bundle = await RunnerLaunch.bundleRunner(RUNNER_ENTRY, bundleDir)
    const backend = await Effect.runPromise(Scope.extend(SlurmBackend.make({
      clusters: [Schema.decodeUnknownSync(SlurmBackend.SlurmClusterConfig)({ name: "bench", hostname: cluster.login.ip, user: "root", private_key: { content: cluster.net.privateKey } })],
      runnerEntry: bundle.file,
      installDir
    }), scope))
    const resources = { cpu: 1, memory: "0.5GB", disk: "1GB.." }
    const offer = (await Effect.runPromise(backend.getOffers(Schema.decodeUnknownSync(Requirements)({ resources })))).offers[0]!
    const spec = Schema.decodeUnknownSync(JobSpec)({ job_name: "bench-0-0", requirements: { resources } })
    const job = { jobName: spec.jobName, requirements: spec.requirements }
    const ssh = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-i", cluster.net.privateKeyFile, `root@${cluster.login.ip}`]
    const raw = `id=$(sbatch --parsable --output=/dev/null --wrap 'sleep 60'); while [ "$(squeue -h -j $id -o %T)" != RUNNING ]; do sleep 0.1; done; echo $id`
    // Warm-up: the bundle is shipped once and the SSH session opened.
    const warm = await Effect.runPromise(backend.createInstance(offer, { projectName: "bench", instanceName: "warm", instanceId: "warm", sshKeys: [], job }))
    await Effect.runPromise(backend.terminateInstance(warm.instanceId, warm.region))
    const ours: Array<number> = []
    const theirs: Array<number> = []
    const idle = async () => {
      for (let i = 0; i < 100 && (await cluster.slurm("squeue", ["-h", "-o", "%i"])).trim() !== ""; i++) await new Promise((r) => setTimeout(r, 100))
    }
    for (let i = 0; i < rounds; i++) {
      await idle()
      let started = now()
      const pd = await Effect.runPromise(backend.createInstance(offer, { projectName: "bench", instanceName: `b${i}`, instanceId: `b${i}`, sshKeys: [], job }))
      ours.push(now() - started)
      await Effect.runPromise(backend.terminateInstance(pd.instanceId, pd.region))
      await idle()
      started = now()
      const { stdout } = await exec("ssh", [...ssh, raw])
      theirs.push(now() - started)
      await cluster.slurm("scancel", [stdout.trim()])
      ctx.log(`slurm round ${i + 1}: ${ours[i]!.toFixed(0)} vs raw sbatch ${theirs[i]!.toFixed(0)} ms`)
    }
    const value = summarize(ours)
    const baseline = summarize(theirs)
    return [{
      section: "slurm",
      measure: `${MEASURE}, ${rounds} rounds`,
      unit: "ms",
      value,
      baseline,
      better: "lower",
      target: "≤ raw + 100 ms",
      verdict: value.p50 <= baseline.p50 + 100 ? "meets" : "short"
    }]
  } finally {
    await Effect.runPromise(Scope.close(scope, Exit.void))
    await cluster.down()
    fs.rmSync(bundleDir, { recursive: true, force: true })
    fs.rmSync(path.join(os.homedir(), installDir), { recursive: true, force: true })
  }
}
