/**
 * The `slurm` backend: runs where an HPC cluster already is. Each configured cluster is a region
 * reached over SSH at its login node (`proxy_jump` allowed). Offers come from the cluster itself
 * (`scontrol show node|partition`: CPUs, memory, GRES GPUs, TmpDisk, partitions), one per
 * partition and node shape, sized to what the job asks. An instance is one `sbatch` allocation
 * (`--nodes`, `--cpus-per-task`, `--mem`, `--gres=gpu:N`, `--time` from `max_duration`,
 * partition, account, QoS) whose step starts the server's runner build on the node with `node`;
 * the instance is answered as soon as the allocation runs, and the runner's address, once it
 * listens, through the step's output file on the shared filesystem (`updateProvisioningData`);
 * the server reaches it over SSH through the login node (`runnerAccess`). Terminating is
 * `scancel` (Slurm signals the step with SIGTERM, then SIGKILL after its KillWait).
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Backend, type BackendFactory, InstanceDisk, InstanceGpu, InstanceOffer, InstanceResources, InstanceType, JobProvisioningData, type Requirements, RunnerLaunch, type RunnerTransport, configDecoder } from "@dstack-ts/core"
import { describeHop, HopFailure, type HostAccess, runScript, type Session, shQuote, SshPool, streamScript } from "@dstack-ts/ssh"
import { Effect, Queue, Schema, type Scope } from "effect"
import { FINAL_STATES, nodeUsable, parseNode, parsePartition, parseScontrolLine, type SlurmNode, type SlurmPartition, slurmJobName, slurmTimeLimit, stateMeaning } from "./internal/Slurm.ts"

const TYPE = "slurm"
const MODULE = "SlurmBackend"

// ---------------------------------------------------------------------------------------------
// Configuration (upstream 0.21's keys, plus proxy_jump, account, qos and the runner's settings)

const PrivateKey = Schema.Struct({
  path: Schema.optional(Schema.String),
  content: Schema.optional(Schema.String)
})

const GpuPartition = Schema.Struct({
  gpu: Schema.NonEmptyString,
  partitions: Schema.Array(Schema.NonEmptyString)
})

const Jump = Schema.Struct({
  hostname: Schema.NonEmptyString,
  port: Schema.optional(Schema.Int.pipe(Schema.between(1, 65535))),
  user: Schema.NonEmptyString,
  privateKey: Schema.optional(PrivateKey).pipe(Schema.fromKey("private_key"))
})

/** One cluster: its name is the region; the login node is where the server logs in. */
export const SlurmClusterConfig = Schema.Struct({
  name: Schema.NonEmptyString.pipe(Schema.pattern(/^[A-Za-z0-9._-]+$/)),
  hostname: Schema.NonEmptyString,
  port: Schema.optional(Schema.Int.pipe(Schema.between(1, 65535))),
  user: Schema.NonEmptyString,
  privateKey: PrivateKey.pipe(Schema.propertySignature, Schema.fromKey("private_key")),
  proxyJump: Schema.optional(Jump).pipe(Schema.fromKey("proxy_jump")),
  gpuPartitions: Schema.optional(Schema.Array(GpuPartition)).pipe(Schema.fromKey("gpu_partitions")),
  cpuPartitions: Schema.optional(Schema.Array(Schema.NonEmptyString)).pipe(Schema.fromKey("cpu_partitions")),
  account: Schema.optional(Schema.NonEmptyString),
  qos: Schema.optional(Schema.NonEmptyString)
})
export type SlurmClusterConfig = typeof SlurmClusterConfig.Type

/** The backend's configuration section (snake_case keys, as upstream's). */
export const SlurmBackendConfig = Schema.Struct({
  type: Schema.optional(Schema.Literal(TYPE)),
  clusters: Schema.Array(SlurmClusterConfig).pipe(Schema.minItems(1)),
  runnerEntry: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("runner_entry")),
  node: Schema.optional(Schema.NonEmptyString),
  installDir: Schema.optional(Schema.NonEmptyString.pipe(Schema.pattern(/^[A-Za-z0-9._/-]+$/))).pipe(Schema.fromKey("install_dir")),
  startTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("start_timeout_seconds")),
  connectTimeoutSeconds: Schema.optional(Schema.Number.pipe(Schema.positive())).pipe(Schema.fromKey("connect_timeout_seconds"))
})
export type SlurmBackendConfig = typeof SlurmBackendConfig.Type

/** What the provisioning data's `backend_data` says of an allocation (no secrets). */
export interface SlurmJobData {
  readonly cluster: string
  /** The login node as `user@host:port`: which configured cluster made it. */
  readonly login: string
  readonly jobId: string
  readonly jobName: string
  readonly partition: string
  /** The allocation's nodes, in rank order. */
  readonly nodes: ReadonlyArray<string>
  /** This instance's node rank in the allocation (0: the master, whose instance id is the Slurm job id). */
  readonly rank?: number
  readonly dir: string
}

/** Between the Slurm job id and the node rank in the instance id of a node other than the master (`1234+1`). */
const NODE_SEPARATOR = "+"

/** How long one `updateProvisioningData` waits on the login node for a runner to come up before it answers "still starting". */
const UPDATE_WAIT_SECONDS = 5

/** Pending reasons that do not pass by waiting (a partition, QoS or association limit, a bad request). */
const NEVER_STARTS = /^(Partition(Time|Node)Limit|PartitionConfig|PartitionDown|PartitionInactive|BadConstraints|InvalidAccount|InvalidQOS|QOS.*Limit|Assoc.*Limit|AccountNotAllowed|QOSNotAllowed|JobHeldAdmin|ReqNodeNotAvail.*|InactiveLimit)$/

const fail = (method: string, reason: Backend.BackendErrorReason, message: string, cause?: unknown) => Backend.fail(MODULE, method, reason, message, cause)

/** A cluster ready to dial: its keys read. */
interface Cluster {
  readonly config: SlurmClusterConfig
  readonly access: HostAccess
  readonly login: string
}

const readKey = (key: { readonly path?: string | undefined; readonly content?: string | undefined }, where: string): string => {
  if (key.content !== undefined && key.content.trim() !== "") return key.content
  if (key.path === undefined || key.path === "") throw new Error(`${where}: private_key needs content or path`)
  const file = key.path.startsWith("~/") ? path.join(os.homedir(), key.path.slice(2)) : key.path
  try {
    return fs.readFileSync(file, "utf8")
  } catch (error) {
    throw new Error(`${where}: cannot read private_key.path ${file}: ${error instanceof Error ? error.message : String(error)}`)
  }
}

const clusterOf = (config: SlurmClusterConfig): Cluster => {
  const privateKey = readKey(config.privateKey, `clusters[${config.name}]`)
  const port = config.port ?? 22
  const jump = config.proxyJump
  return {
    config,
    login: `${config.user}@${config.hostname}:${port}`,
    access: {
      hostname: config.hostname,
      port,
      user: config.user,
      privateKey,
      ...(jump === undefined ? {} : {
        proxyJump: {
          hostname: jump.hostname,
          port: jump.port ?? 22,
          user: jump.user,
          privateKey: jump.privateKey === undefined ? privateKey : readKey(jump.privateKey, `clusters[${config.name}].proxy_jump`)
        }
      })
    }
  }
}

/** `[vendor:]name[:memory]` of gpu_partitions, e.g. `H200`, `A100:40GB`, `amd:MI300X`. */
const parseGpuModel = (text: string): { readonly vendor: "nvidia" | "amd" | "intel" | "google"; readonly name: string; readonly memoryMib: number } => {
  const parts = text.split(":")
  const vendors = ["nvidia", "amd", "intel", "google"] as const
  const vendor = vendors.find((v) => v === parts[0].toLowerCase())
  const rest = vendor === undefined ? parts : parts.slice(1)
  const memory = rest[1] === undefined ? 0 : Number(/^(\d+(?:\.\d+)?)\s*GB$/i.exec(rest[1])?.[1] ?? NaN) * 1024
  if (!rest[0] || !Number.isFinite(memory)) throw new Error(`gpu_partitions: ${JSON.stringify(text)} is not [vendor:]name[:memory], e.g. A100:40GB`)
  return { vendor: vendor ?? (/^MI\d/i.test(rest[0]) ? "amd" : "nvidia"), name: rest[0], memoryMib: memory }
}

// ---------------------------------------------------------------------------------------------
// Offers

/** The partitions a job may go to: GPU jobs only to gpu_partitions, CPU jobs to cpu_partitions or every other one. */
const partitionsFor = (config: SlurmClusterConfig, discovered: ReadonlyArray<string>, wantsGpu: boolean): ReadonlySet<string> => {
  const gpuParts = new Set((config.gpuPartitions ?? []).flatMap((g) => g.partitions))
  if (wantsGpu) return new Set(discovered.filter((p) => gpuParts.has(p)))
  if (config.cpuPartitions !== undefined) return new Set(discovered.filter((p) => config.cpuPartitions!.includes(p)))
  return new Set(discovered.filter((p) => !gpuParts.has(p)))
}

const minOf = (range: { readonly min?: number; readonly max?: number }, fallback: number) => range.min ?? range.max ?? fallback

/**
 * The offers of one cluster: per partition, per node shape (CPUs, memory, GPUs, TmpDisk), sized
 * to the job's minimums capped by the shape (a job gets `--cpus-per-task`/`--mem`/`--gres`, not
 * the whole node), so a shape too small shows what it lacks in the plan.
 */
export const clusterOffers = (
  config: SlurmClusterConfig,
  partitions: ReadonlyArray<SlurmPartition>,
  nodes: ReadonlyArray<SlurmNode>,
  requirements: Requirements
): ReadonlyArray<InstanceOffer> => {
  const wantsGpu = minOf(requirements.resources.gpu.count, 0) > 0
  const allowed = partitionsFor(config, partitions.map((p) => p.name), wantsGpu)
  const offers: Array<InstanceOffer> = []
  for (const partition of partitions) {
    if (!allowed.has(partition.name)) continue
    const model = (config.gpuPartitions ?? []).find((g) => g.partitions.includes(partition.name))
    const gpuModel = model === undefined ? undefined : parseGpuModel(model.gpu)
    const shapes = new Map<string, Array<SlurmNode>>()
    for (const node of nodes.filter((n) => n.partitions.includes(partition.name))) {
      const key = `${node.cpus}/${node.memoryMib}/${node.gpus}/${node.tmpDiskMib}/${node.arch ?? ""}`
      shapes.set(key, [...(shapes.get(key) ?? []), node])
    }
    for (const group of shapes.values()) {
      const node = group[0]
      const usable = partition.up && group.some((n) => nodeUsable(n.state))
      const gpus = (n: number) => Array.from({ length: n }, () => new InstanceGpu({ name: gpuModel?.name ?? "gpu", memoryMib: gpuModel?.memoryMib ?? 0, vendor: gpuModel?.vendor ?? "nvidia" }))
      const arch = node.arch === undefined ? undefined : /aarch64|arm/.test(node.arch) ? "arm" as const : "x86" as const
      const whole = new InstanceResources({
        cpus: node.cpus,
        memoryMib: node.memoryMib,
        gpus: gpus(node.gpus),
        spot: false,
        disk: new InstanceDisk({ sizeMib: node.tmpDiskMib }),
        ...(arch === undefined ? {} : { cpuArch: arch }),
        description: `${partition.name}: ${group.map((n) => n.name).join(",")}`
      })
      const offer = (resources: InstanceResources) =>
        new InstanceOffer({
          backend: TYPE,
          region: config.name,
          price: 0,
          instance: new InstanceType({ name: `${partition.name}.${node.cpus}cpu.${node.memoryMib}mib${node.gpus > 0 ? `.${node.gpus}gpu` : ""}`, resources }),
          availability: usable ? "available" : "not_available",
          availabilityZones: [partition.name]
        })
      // Sized to the job's minimums, capped by the node: what does not fit then shows in the
      // plan's reasons (`cpu: needs 64, offer has 32`).
      const r = requirements.resources
      const sized = new InstanceResources({
        ...whole,
        cpus: Math.min(node.cpus, Math.max(1, minOf(r.cpu.count, 1))),
        memoryMib: Math.min(node.memoryMib, Math.max(1, Math.round(minOf(r.memory, 1) * 1024))),
        gpus: gpus(Math.min(node.gpus, minOf(r.gpu.count, 0)))
      })
      offers.push(offer(sized))
    }
  }
  return offers
}

// ---------------------------------------------------------------------------------------------
// The batch script

/**
 * The sbatch script of an allocation that starts the runner on each node. Node 0's runner runs
 * in the batch script itself, as soon as the allocation exists (no `srun` step launch in the
 * way); the other nodes' start in one `srun --relative=1` step beside it. The job lasts as long
 * as node 0's runner: when it exits, Slurm ends the allocation.
 */
export const batchScript = (options: {
  readonly jobName: string
  readonly dir: string
  readonly partition: string
  readonly nodes: number
  readonly resources: InstanceResources
  readonly timeLimitSeconds?: number
  readonly account?: string
  readonly qos?: string
  readonly node: string
  readonly bundle: string
  readonly needsDocker: boolean
}): string => {
  const r = options.resources
  const directives = [
    `--job-name=${options.jobName}`,
    `--output=${options.dir}/%j.batch.out`,
    "--no-requeue",
    `--partition=${options.partition}`,
    `--nodes=${options.nodes}`,
    "--ntasks-per-node=1",
    `--cpus-per-task=${r.cpus}`,
    `--mem=${Math.max(1, Math.floor(r.memoryMib))}M`,
    ...(r.gpus.length > 0 ? [`--gres=gpu:${r.gpus.length}`] : []),
    ...(options.timeLimitSeconds === undefined ? [] : [`--time=${slurmTimeLimit(options.timeLimitSeconds)}`]),
    ...(options.account === undefined ? [] : [`--account=${options.account}`]),
    ...(options.qos === undefined ? [] : [`--qos=${options.qos}`])
  ]
  // Each node writes `<dir>/<job>.<rank>.out`, which the login node reads on the shared
  // filesystem: first `dstack-ts: node NAME MS` (its Slurm name, and when it started, for the
  // latency breakdown), then the runner's ready line, or why it cannot start. The rank is the
  // node's index in the allocation (SLURM_NODEID, relative in the `--relative=1` step).
  const step = [
    "set -u",
    `rank=$((\${SLURM_NODEID:-0} + \${DSTACK_TS_RANK_BASE:-0}))`,
    `out=${shQuote(options.dir)}/$SLURM_JOB_ID.$rank.out`,
    `echo "dstack-ts: node $SLURMD_NODENAME $(date +%s%3N)" >"$out"`,
    `node_bin=$(command -v ${shQuote(options.node)}) || { echo "dstack-ts: refused: no ${options.node} on $(hostname) ($SLURMD_NODENAME): the runner needs Node.js 20 or later on the compute nodes" >>"$out"; exit 97; }`,
    ...(options.needsDocker
      ? [`[ -S /var/run/docker.sock ] && command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 || { echo "dstack-ts: refused: no Docker on $SLURMD_NODENAME: a job with an image runs in Docker on the node, and this node has none (run it without image, or on nodes with Docker)" >>"$out"; exit 98; }`]
      : []),
    `work=${shQuote(options.dir)}/$SLURM_JOB_ID.$rank.work`,
    `mkdir -p "$work"`,
    // From a startup snapshot of the bundle made on the node, once there is one (RunnerLaunch).
    RunnerLaunch.runnerStartScript({ out: `"$out"`, node: `"$node_bin"`, bundle: options.bundle, args: ["--host", "127.0.0.1", "--port", "0", "--work-dir", `"$work"`] })
  ].join("\n")
  const others = options.nodes - 1
  return [
    "#!/bin/sh",
    ...directives.map((d) => `#SBATCH ${d}`),
    // The allocation exists: its nodes, for the login node's watch (polled every 20 ms).
    `echo "$(date +%s%3N) $SLURM_JOB_NODELIST" >${shQuote(options.dir)}/$SLURM_JOB_ID.alloc`,
    `step=${shQuote(step)}`,
    ...(others > 0 ? [`DSTACK_TS_RANK_BASE=1 srun --relative=1 --nodes=${others} --ntasks=${others} --ntasks-per-node=1 --kill-on-bad-exit=0 sh -c "$step" &`] : []),
    `DSTACK_TS_RANK_BASE=0 sh -c "$step"`,
    ""
  ].join("\n")
}

/** The heredoc delimiter of the batch script inside the submission script. */
const BATCH_EOF = "DSTACK_TS_BATCH_SCRIPT"

/**
 * The one script a submission runs on the login node (`sh -s -- DIR RUNNER SECONDS`): says
 * `missing-bundle` when the runner bundle is not on the shared filesystem yet; else submits the
 * batch script (`sbatch-failed WHY`, or `job ID MS`), then watches the job from the login node
 * itself until its allocation runs: the batch script's first line writes `<dir>/<job>.alloc`
 * (looked for every 20 ms) and `squeue` is asked every 80 ms. It streams `q MS STATE|REASON`
 * at each look at the queue, `gone` when the job left the queue first, or, once the allocation
 * runs, `running MS NODE...` (its nodes in rank order) and ends: the runners then start in the
 * allocation, which `waitScript` follows. A server that goes away while the job is being
 * watched cuts the channel: the next line fails (SIGPIPE) and the script cancels the job.
 * Times are the login node's clock, in ms.
 */
export const submissionScript = (batch: string): string => {
  if (batch.split("\n").includes(BATCH_EOF)) throw new Error(`the batch script contains the line ${BATCH_EOF}`)
  return `set -u
dir=$1 runner=$2 limit=$3
[ -s "$runner" ] || { echo missing-bundle; exit 0; }
mkdir -p "$dir" || exit 1
sub=$(sbatch --parsable 2>&1 <<'${BATCH_EOF}'
${batch}${batch.endsWith("\n") ? "" : "\n"}${BATCH_EOF}
) || { echo "sbatch-failed $(printf '%s' "$sub" | tr '\\n' ' ')"; exit 0; }
id=\${sub%%;*}
trap 'scancel "$id" 2>/dev/null; exit 1' PIPE HUP TERM
echo "job $id $(date +%s%3N)"
end=$(( $(date +%s) + limit ))
running() {
  trap - PIPE HUP TERM
  case $1 in *[],[]*) nodes=$(scontrol show hostnames "$1" | tr '\\n' ' ') ;; *) nodes=$1 ;; esac
  echo "running $(date +%s%3N) $nodes"; exit 0
}
i=0
while :; do
  # Opened each time, never just stat'ed: on NFS an open revalidates what a stat may cache.
  { read -r at list <"$dir/$id.alloc" && [ -n "$list" ] && running "$list"; } 2>/dev/null
  if [ $((i % 4)) -eq 0 ]; then
    q=$(squeue -h -j "$id" -o '%T|%r|%N' 2>&1)
    case $q in
      'RUNNING|'*'|'?*) running "\${q##*|}" ;;
      *'|'*) echo "q $(date +%s%3N) \${q%|*}" ;;
      ''|*'Invalid job id'*) echo gone; exit 0 ;;
      *) echo "squeue-error $(printf '%s' "$q" | tr '\\n' ' ')" ;;
    esac
    [ "$(date +%s)" -lt "$end" ] || { echo expired; exit 0; }
  fi
  i=$((i + 1))
  sleep 0.02 2>/dev/null || sleep 1
done
`
}

/**
 * The script that waits on the login node for the runner of one node of a running allocation
 * (`sh -s -- DIR JOB RANK SECONDS`): reads the node's output file every 20 ms and answers
 * `refused WHY` when the node cannot start the runner, `ready MS` and the file as `out LINE`
 * once the runner printed its ready line, `gone` and the file when the job left the queue
 * first (`squeue` every 200 ms), or `waiting STATE|REASON` after SECONDS.
 */
export const waitScript = `set -u
dir=$1 id=$2 rank=$3 limit=$4
out="$dir/$id.$rank.out"
outs() { { while IFS= read -r l || [ -n "$l" ]; do echo "out $l"; done <"$out"; } 2>/dev/null; }
end=$(( $(date +%s) + limit ))
i=0 q=
while :; do
  { while IFS= read -r l || [ -n "$l" ]; do
      case $l in
        'dstack-ts: refused: '*) echo "refused \${l#dstack-ts: refused: }"; exit 0 ;;
        '{'*'"port":'*) echo "ready $(date +%s%3N)"; outs; exit 0 ;;
      esac
    done <"$out"; } 2>/dev/null
  if [ $((i % 10)) -eq 0 ]; then
    q=$(squeue -h -j "$id" -o '%T|%r' 2>&1)
    case $q in
      ''|*'Invalid job id'*) echo gone; outs; exit 0 ;;
    esac
    [ "$(date +%s)" -lt "$end" ] || { echo "waiting $q"; exit 0; }
  fi
  i=$((i + 1))
  sleep 0.02 2>/dev/null || sleep 1
done
`

/**
 * Where the time of one allocation went, in ms since `allocate` began (server clock), with the
 * login node's times taken as the same clock: `submitted` (sbatch answered on the login node),
 * `runningSeen` (the login node's watch saw the allocation running: its batch script's first
 * line, or `squeue`), `handedOver` (the provisioning data answered, without the runner's port:
 * the runners start in the allocation meanwhile). Logged at debug level as the annotation
 * `slurmStartTimes` of each allocation; `updateProvisioningData` logs when each runner was seen
 * ready.
 */
export interface SlurmStartTimes {
  readonly jobId: string
  readonly submitted: number
  readonly runningSeen?: number
  readonly handedOver: number
}

// ---------------------------------------------------------------------------------------------
// The backend

export interface SlurmBackend extends Backend.Backend {
  readonly runnerAccess: NonNullable<Backend.Backend["runnerAccess"]>
  readonly updateProvisioningData: NonNullable<Backend.Backend["updateProvisioningData"]>
  /** The Slurm state of an allocation (`squeue`), read as a dstack job; undefined once it has left the queue. */
  readonly jobState: (pd: JobProvisioningData) => Effect.Effect<ReturnType<typeof stateMeaning> | undefined, Backend.BackendError>
}

/**
 * Makes the Slurm backend. The runner bundle is built on first use and removed with the scope.
 *
 * @example
 * const backend = yield* SlurmBackend.make({ clusters: [{ name: "hpc", hostname: "login.hpc", user: "me", privateKey: { path: "~/.ssh/id_ed25519" } }] })
 */
export const make = (config: Omit<SlurmBackendConfig, "type">): Effect.Effect<SlurmBackend, Backend.BackendError, Scope.Scope> =>
  Effect.gen(function*() {
    const clusters = new Map<string, Cluster>()
    for (const c of config.clusters) {
      if (clusters.has(c.name)) return yield* fail("make", "Invalid", `clusters: the name ${c.name} is given twice (it is the region)`)
      const made = yield* Effect.try({ try: () => clusterOf(c), catch: (e) => new Backend.BackendError({ module: MODULE, method: "make", reason: "Invalid", message: (e as Error).message }) })
      for (const g of c.gpuPartitions ?? []) {
        yield* Effect.try({ try: () => parseGpuModel(g.gpu), catch: (e) => new Backend.BackendError({ module: MODULE, method: "make", reason: "Invalid", message: `clusters[${c.name}].${(e as Error).message}` }) })
      }
      clusters.set(c.name, made)
    }
    const connectTimeoutMs = (config.connectTimeoutSeconds ?? 10) * 1000
    const startTimeoutMs = (config.startTimeoutSeconds ?? 120) * 1000
    const installDir = (config.installDir ?? ".dstack-ts/slurm").replace(/^\/+|\/+$/g, "")
    const nodeBin = config.node ?? "node"
    const pool = yield* Effect.acquireRelease(
      Effect.sync(() => new SshPool({ readyTimeoutMs: connectTimeoutMs, keepaliveIntervalMs: 10_000, keepaliveCountMax: 3, reconnectAttempts: 2, backoffMs: 200, maxBackoffMs: 2000, idleCloseMs: 30_000 })),
      (p) => Effect.sync(() => p.closeAll())
    )

    const configured = yield* RunnerLaunch.runnerEntry(config.runnerEntry)
    const tmp = yield* Effect.acquireRelease(
      Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "dstack-ts-slurm-"))),
      (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )
    const bundle = yield* Effect.cached(Effect.gen(function*() {
      if (configured === undefined) {
        return yield* fail("createInstance", "Invalid", "no runner build to ship: set runner_entry in the slurm backend's configuration, or the server build's runner (`dstack server` sets it)")
      }
      const entry = path.resolve(configured)
      if (!fs.existsSync(entry)) return yield* fail("createInstance", "Invalid", `the runner entry ${entry} does not exist`)
      if (/\.[cm]?js$/.test(entry)) return { file: entry, sha256: createHash("sha256").update(fs.readFileSync(entry)).digest("hex") }
      return yield* Effect.tryPromise({
        try: () => RunnerLaunch.bundleRunner(entry, tmp, { snapshot: true }),
        catch: (cause) => new Backend.BackendError({ module: MODULE, method: "createInstance", reason: "Invalid", message: `cannot bundle the runner ${entry}: ${String(cause)}`, cause })
      })
    }))

    const cluster = (method: string, region: string) => {
      const c = clusters.get(region)
      return c === undefined ? fail(method, "Invalid", `no Slurm cluster named ${region} in this backend (it has: ${[...clusters.keys()].join(", ")})`) : Effect.succeed(c)
    }

    const loginError = (method: string, c: Cluster) => (error: unknown) => {
      const hop = error instanceof HopFailure ? error : undefined
      return new Backend.BackendError({
        module: MODULE,
        method,
        reason: hop?.kind === "auth" ? "PermissionDenied" : hop?.kind === "timeout" ? "Timeout" : hop?.kind === "key" ? "Invalid" : "Transport",
        message: `cannot reach the login node ${describeHop(c.access)} of cluster ${c.config.name}: ${error instanceof Error ? error.message : String(error)}`,
        cause: error
      })
    }

    /** Runs a script on the login node with `sh -s -- ARGS` (a login shell's environment: SLURM_CONF, PATH). */
    const onLogin = (method: string, c: Cluster, script: string | NodeJS.ReadableStream, args: ReadonlyArray<string> = [], command?: string) =>
      Effect.acquireUseRelease(
        Effect.sync(() => pool.hold(c.access)),
        () =>
          Effect.tryPromise({
            try: async () => runScript(await pool.session(c.access), script, args, command),
            catch: loginError(method, c)
          }),
        (release) => Effect.sync(release)
      )

    const checked = (method: string, c: Cluster, what: string) => (r: { code: number | null; stdout: string; stderr: string }) =>
      r.code === 0 ? Effect.succeed(r.stdout) : fail(method, "Unknown", `${what} on the login node of ${c.config.name} failed: ${r.stderr.trim() || r.stdout.trim() || `exit status ${r.code}`}`)

    /** Node addresses (NodeAddr) by `cluster/node`, as the last `scontrol show node` answered. */
    const addresses = new Map<string, string>()
    /** Partitions (MaxTime, TotalNodes, MaxNodes) by `cluster/partition`, as the last plan read them. */
    const partitionsRead = new Map<string, SlurmPartition>()
    /** The login user's home directory by cluster, once asked. */
    const homes = new Map<string, string>()

    const discover = (c: Cluster) =>
      onLogin("getOffers", c, "scontrol show -o partition && echo --- && scontrol show -o node").pipe(
        Effect.flatMap(checked("getOffers", c, "scontrol show partition/node")),
        Effect.flatMap((out) =>
          Effect.try({
            try: () => {
              const [parts, nodes] = out.split(/^---$/m)
              const lines = (t: string | undefined) => (t ?? "").split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("No "))
              const found = { partitions: lines(parts).map(parsePartition), nodes: lines(nodes).map(parseNode) }
              for (const n of found.nodes) addresses.set(`${c.config.name}/${n.name}`, n.address)
              for (const p of found.partitions) partitionsRead.set(`${c.config.name}/${p.name}`, p)
              return found
            },
            catch: (e) => new Backend.BackendError({ module: MODULE, method: "getOffers", reason: "Unknown", message: `cannot read the nodes of ${c.config.name}: ${(e as Error).message}` })
          })
        )
      )

    const catalog = (requirements: Requirements) =>
      Effect.forEach([...clusters.values()], (c) =>
        discover(c).pipe(
          Effect.map(({ partitions, nodes }) => clusterOffers(c.config, partitions, nodes, requirements)),
          // One cluster that cannot be reached does not hide the others' offers.
          Effect.catchAll((e) => Effect.as(Effect.logWarning(`slurm backend: no offers from cluster ${c.config.name}: ${e.message}`), []))
        ), { concurrency: "unbounded" }).pipe(Effect.map((all) => all.flat()))

    const squeue = (method: string, c: Cluster, jobId: string) =>
      onLogin(method, c, `squeue -h -j "$1" -o '%T|%r|%N|%P' 2>&1; true`, [jobId]).pipe(
        Effect.map((r) => {
          const line = r.stdout.trim().split("\n").find((l) => l.includes("|"))
          if (line === undefined) return undefined
          const [state, reason, nodes, partition] = line.split("|")
          return { state, reason, nodes, partition }
        })
      )

    const cancel = (method: string, c: Cluster, jobId: string) =>
      onLogin(method, c, `scancel "$1" 2>&1`, [jobId]).pipe(
        Effect.flatMap((r) =>
          r.code === 0 || /Invalid job id|already completing or completed/i.test(r.stdout)
            ? Effect.void
            : fail(method, "Unknown", `scancel ${jobId} on ${c.config.name} failed: ${r.stdout.trim() || `exit status ${r.code}`}`)
        )
      )

    type Watched =
      | { readonly kind: "missing-bundle" }
      | { readonly kind: "running"; readonly jobId: string; readonly nodes: ReadonlyArray<string>; readonly times: Omit<SlurmStartTimes, "handedOver"> }

    /**
     * Runs the submission script on the login node over the pooled session and follows what it
     * streams, until the allocation runs (its nodes known). `job.id` is set as soon as sbatch
     * answered, for the caller to cancel the job on any failure or interruption. Waits on real
     * time: Slurm runs on it, whatever Clock the caller provides.
     */
    const submitAndWatch = (
      method: string,
      c: Cluster,
      script: string,
      args: { readonly dir: string; readonly runner: string; readonly nodes: number },
      started: number,
      job: { id?: string },
      onPending: Backend.InstanceConfiguration["onPending"]
    ) =>
      Effect.scoped(Effect.gen(function*() {
        type Event = { readonly line: string } | { readonly end: { readonly code: number | null; readonly stderr: string } } | { readonly deadline: true }
        const events = yield* Queue.unbounded<Event>()
        yield* Effect.acquireRelease(Effect.sync(() => pool.hold(c.access)), (release) => Effect.sync(release))
        const stream = yield* Effect.acquireRelease(
          Effect.tryPromise({
            try: async () =>
              streamScript(await pool.session(c.access), script, [args.dir, args.runner, String(Math.ceil(startTimeoutMs / 1000) + 30)], (line) => Queue.unsafeOffer(events, { line })),
            catch: loginError(method, c)
          }),
          (s) => Effect.sync(() => s.close())
        )
        void stream.done.then((end) => Queue.unsafeOffer(events, { end }))
        yield* Effect.acquireRelease(
          Effect.sync(() => setTimeout(() => Queue.unsafeOffer(events, { deadline: true }), startTimeoutMs)),
          (timer) => Effect.sync(() => clearTimeout(timer))
        )
        const at = (ms: string | undefined) => {
          const n = Number(ms)
          return Number.isFinite(n) && n > 0 ? n - started : undefined
        }
        let submitted: number | undefined
        let gone = false
        let last = "not in the queue"
        let state = ""
        let reported: string | undefined
        while (true) {
          const event = yield* Queue.take(events)
          if ("deadline" in event) {
            return yield* fail(
              method,
              state === "PENDING" || state === "" ? "NoCapacity" : "Timeout",
              `Slurm job ${job.id ?? "(not submitted yet)"} on ${c.config.name} did not get its allocation within ${startTimeoutMs / 1000}s: ${last}`
            )
          }
          if ("end" in event) {
            if (gone) return yield* fail(method, "Unknown", `Slurm job ${job.id} left the queue before its allocation was seen running`)
            return yield* fail(method, "Unknown", `the submission on the login node of ${c.config.name} ended early (exit status ${event.end.code ?? "none"}): ${event.end.stderr.trim() || "no message"}`)
          }
          const line = event.line
          const [word = "", ...rest] = line.split(" ")
          if (word === "missing-bundle") return { kind: "missing-bundle" } satisfies Watched
          if (word === "sbatch-failed") {
            const why = rest.join(" ").trim() || "no message"
            const limit = /time limit|Requested node configuration is not available|node count specification|memory specification|Invalid (account|qos)/i.test(why)
            return yield* fail(method, limit ? "Invalid" : "Unknown", `sbatch on ${c.config.name} refused the job: ${why}`)
          }
          if (word === "job") {
            if (!/^\d+$/.test(rest[0] ?? "")) return yield* fail(method, "Unknown", `sbatch on ${c.config.name} answered ${JSON.stringify(rest[0] ?? "")}, not a job id`)
            job.id = rest[0]
            submitted = at(rest[1])
          } else if (word === "running" && job.id !== undefined) {
            // The script ends right after this line: no need to wait for the channel's close.
            const runningSeen = at(rest[0])
            const nodes = rest.slice(1).filter((n) => n !== "")
            if (nodes.length !== args.nodes) {
              return yield* fail(method, "Unknown", `Slurm job ${job.id} on ${c.config.name} runs on ${nodes.length} nodes (${nodes.join(", ")}), not ${args.nodes}`)
            }
            return {
              kind: "running",
              jobId: job.id,
              nodes,
              times: { jobId: job.id, submitted: submitted ?? 0, ...(runningSeen === undefined ? {} : { runningSeen }) }
            } satisfies Watched
          } else if (word === "q") {
            const [stateText = "", reason = ""] = rest.slice(1).join(" ").split("|")
            state = stateText
            last = stateMeaning(state, reason).message
            // Waiting in the queue: the job shows as provisioning with Slurm's reason.
            if (state === "PENDING" && last !== reported && onPending !== undefined) {
              reported = last
              yield* onPending(last)
            }
            // Reasons Slurm keeps a job pending for until someone changes a limit: not capacity.
            if (state === "PENDING" && NEVER_STARTS.test(reason)) {
              return yield* fail(method, "Invalid", `Slurm will not start job ${job.id} on ${c.config.name}: ${last}; the job's size, max_duration or the cluster's account/QoS exceed a limit there`)
            }
          } else if (word === "gone") {
            gone = true
          } else if (word === "expired") {
            last = `${last} (the watch on the login node stopped)`
          } else if (word === "squeue-error") {
            yield* Effect.logDebug(`slurm backend: squeue on ${c.config.name} failed, asking again: ${rest.join(" ")}`)
          }
        }
      }))

    /**
     * One allocation of `nodes` nodes for the job of `configs[0]` (one configuration per node
     * rank): one script on the login node submits it with sbatch and watches it until every
     * node's runner says where it listens; the job is cancelled when that fails or is
     * interrupted. Answers one provisioning data per rank.
     */
    const allocate = (method: string, offer: InstanceOffer, configs: ReadonlyArray<Backend.InstanceConfiguration>) =>
      Effect.gen(function*() {
        const started = Date.now()
        const ic = configs[0]
        const nodes = configs.length
        const c = yield* cluster(method, offer.region)
        const partition = offer.availabilityZones?.[0]
        if (partition === undefined) return yield* fail(method, "Invalid", "the offer names no partition")
        const maxDuration = ic.job?.maxDuration ?? undefined
        const { file, sha256 } = yield* bundle
        const relRunner = `${installDir}/runner-${sha256.slice(0, 16)}${path.extname(file)}`
        // The home directory (once per cluster) and the partition's limits when the job has a
        // max_duration or several nodes and the last plan did not read them: one round trip,
        // skipped when known.
        const limitKey = `${c.config.name}/${partition}`
        const wantsLimit = ((maxDuration !== undefined && maxDuration !== null) || nodes > 1) && !partitionsRead.has(limitKey)
        if (!homes.has(c.config.name) || wantsLimit) {
          const prep = yield* onLogin(method, c, `printf '%s\\n' "$HOME"; if [ -n "$1" ]; then scontrol show -o partition "$1" || exit 1; fi`, [wantsLimit ? partition : ""]).pipe(
            Effect.flatMap(checked(method, c, `reading $HOME and scontrol show partition ${partition}`))
          )
          const [home = "", partitionLine = ""] = prep.split("\n")
          homes.set(c.config.name, home.trim())
          if (wantsLimit) partitionsRead.set(limitKey, parsePartition(partitionLine))
        }
        // A job of more nodes than the partition has, or lets one job have, would pend for ever
        // (Slurm accepts it: PartitionConfig, PartitionNodeLimit): refused before sbatch.
        const read = partitionsRead.get(limitKey)
        if (read?.totalNodes !== undefined && nodes > read.totalNodes) {
          return yield* fail(method, "Invalid", `nodes: the task asks for ${nodes} nodes, and partition ${partition} of cluster ${c.config.name} has ${read.totalNodes}`)
        }
        if (read?.maxNodes !== undefined && nodes > read.maxNodes) {
          return yield* fail(method, "Invalid", `nodes: the task asks for ${nodes} nodes, and partition ${partition} of cluster ${c.config.name} allows ${read.maxNodes} per job (MaxNodes)`)
        }
        if (maxDuration !== undefined && maxDuration !== null) {
          const limit = read?.maxTimeSeconds
          if (limit !== undefined && maxDuration > limit) {
            return yield* fail(method, "Invalid", `max_duration ${maxDuration}s is longer than the time limit of partition ${partition} on ${c.config.name} (MaxTime ${limit}s)`)
          }
        }
        const home = homes.get(c.config.name)!
        const dir = `${home}/${installDir}`
        const runner = `${home}/${relRunner}`
        const jobName = slurmJobName(ic.instanceName)
        const script = submissionScript(batchScript({
          jobName,
          dir,
          partition,
          nodes,
          resources: offer.instance.resources,
          ...(maxDuration === undefined || maxDuration === null ? {} : { timeLimitSeconds: maxDuration }),
          ...(c.config.account === undefined ? {} : { account: c.config.account }),
          ...(c.config.qos === undefined ? {} : { qos: c.config.qos }),
          node: nodeBin,
          bundle: runner,
          needsDocker: (ic.job?.image ?? "") !== ""
        }))

        // The wait may be interrupted (the run was stopped while its job pends in the queue)
        // even where the caller made the creation uninterruptible: the job is then cancelled at
        // once, as on any failure.
        const job: { id?: string } = {}
        const watch = Effect.interruptible(submitAndWatch(method, c, script, { dir, runner, nodes }, started, job, ic.onPending)).pipe(
          Effect.onError(() => job.id === undefined ? Effect.void : cancel(method, c, job.id).pipe(Effect.ignore))
        )
        let watched = yield* watch
        if (watched.kind === "missing-bundle") {
          // The first submission with this runner build: it is copied to the shared filesystem once.
          yield* onLogin(method, c, fs.createReadStream(file), [], `sh -c ${shQuote(`mkdir -p "$(dirname "$0")" && cat > "$0.tmp" && mv "$0.tmp" "$0"`)} ${shQuote(runner)}`).pipe(
            Effect.flatMap(checked(method, c, `writing ${runner}`))
          )
          watched = yield* watch
          if (watched.kind === "missing-bundle") return yield* fail(method, "Unknown", `${runner} on ${c.config.name} is still missing after it was written`)
        }
        const { jobId, times, nodes: hosts } = watched
        const named = yield* Effect.gen(function*() {
          // The nodes' addresses as the last plan read them, else asked now.
          const known = hosts.map((h) => addresses.get(`${c.config.name}/${h}`))
          if (known.every((a) => a !== undefined)) return hosts.map((name, i) => ({ name, address: known[i]! }))
          const shown = yield* onLogin(method, c, `for n in "$@"; do scontrol show -o node "$n" || exit 1; done`, hosts).pipe(
            Effect.flatMap(checked(method, c, `scontrol show node ${hosts.join(",")}`))
          )
          const byName = new Map(shown.trim().split("\n").filter((l) => l.trim() !== "").map(parseNode).map((n) => [n.name, n.address]))
          for (const [name, address] of byName) addresses.set(`${c.config.name}/${name}`, address)
          return hosts.map((name) => ({ name, address: byName.get(name) ?? name }))
        }).pipe(Effect.tapError(() => cancel(method, c, jobId).pipe(Effect.ignore)))
        // Without the runner's port: the runners start in the allocation now, and
        // updateProvisioningData completes each node's data once its runner listens.
        const pds = named.map((node, rank) => {
          const data: SlurmJobData = { cluster: c.config.name, login: c.login, jobId, jobName, partition, nodes: hosts, rank, dir }
          return new JobProvisioningData({
            backend: TYPE,
            instanceType: offer.instance,
            // The master's instance is the allocation; the other nodes' end with it.
            instanceId: rank === 0 ? jobId : `${jobId}${NODE_SEPARATOR}${rank}`,
            hostname: node.address,
            internalIp: node.address,
            region: c.config.name,
            availabilityZone: partition,
            price: 0,
            username: c.config.user,
            sshPort: 22,
            dockerized: false,
            backendData: JSON.stringify(data)
          })
        })
        const handed: SlurmStartTimes = { ...times, handedOver: Date.now() - started }
        yield* Effect.logDebug(`slurm backend: job ${jobId} on ${c.config.name} running, handed over`).pipe(Effect.annotateLogs("slurmStartTimes", handed))
        return pds
      })

    const createInstance = (offer: InstanceOffer, ic: Backend.InstanceConfiguration) =>
      Effect.map(allocate("createInstance", offer, [ic]), (pds) => pds[0])

    const dataOf = (pd: JobProvisioningData): SlurmJobData | undefined => {
      try {
        const d = JSON.parse(pd.backendData ?? "") as SlurmJobData
        return typeof d?.jobId === "string" && typeof d.login === "string" ? d : undefined
      } catch {
        return undefined
      }
    }

    const runnerAccess = (pd: JobProvisioningData): RunnerTransport.SshAccess | undefined => {
      if (pd.backend !== TYPE) return undefined
      const d = dataOf(pd)
      const c = d === undefined ? undefined : clusters.get(d.cluster)
      if (c === undefined || d === undefined || c.login !== d.login) return undefined
      // The node is logged in to as the cluster's user with its key, through the login node.
      const { proxyJump: _outer, ...login } = c.access
      return { user: c.config.user, port: pd.sshPort ?? 22, privateKey: c.access.privateKey, proxyJump: login }
    }

    /** The Slurm job id of an allocation's instance (the master's instance id, or the part before `+rank`). */
    const jobIdOf = (pd: JobProvisioningData) => dataOf(pd)?.jobId ?? pd.instanceId.split(NODE_SEPARATOR)[0]

    /**
     * A node's provisioning data with its runner's port, once the runner started in the
     * allocation printed its ready line (the login node looks every 20 ms, for up to
     * UPDATE_WAIT_SECONDS per call); undefined while it is still starting. Fails `Invalid` when
     * the node refused to start it (no Node.js, no Docker for an image), `NotFound` when the
     * Slurm job left the queue first (with the node's output).
     */
    const updateProvisioningData = (pd: JobProvisioningData): Effect.Effect<JobProvisioningData | undefined, Backend.BackendError> =>
      Effect.gen(function*() {
        const method = "updateProvisioningData"
        if (pd.runnerPort !== undefined) return pd
        const d = dataOf(pd)
        if (d === undefined || d.dir === undefined) return yield* fail(method, "Invalid", `instance ${pd.instanceId} has no Slurm job data`)
        const c = yield* cluster(method, pd.region)
        const rank = d.rank ?? 0
        const asked = Date.now()
        const r = yield* onLogin(method, c, waitScript, [d.dir, d.jobId, String(rank), String(UPDATE_WAIT_SECONDS)]).pipe(
          Effect.flatMap(checked(method, c, `watching the runner of Slurm job ${d.jobId}`))
        )
        const lines = r.split("\n")
        const [word = "", ...rest] = (lines[0] ?? "").split(" ")
        const output = lines.filter((l) => l.startsWith("out ")).map((l) => l.slice(4))
        const where = `Slurm job ${d.jobId} on ${c.config.name}${d.nodes.length > 1 ? ` (node ${rank}, ${d.nodes[rank] ?? "?"})` : ""}`
        if (word === "waiting") return undefined
        if (word === "refused") return yield* fail(method, "Invalid", rest.join(" "))
        if (word === "gone") {
          return yield* fail(method, "NotFound", `${where} left the queue before its runner started; its output:\n${output.join("\n").trim().slice(-2000) || "(none)"}`)
        }
        if (word !== "ready") return yield* fail(method, "Unknown", `${where}: the login node's watch answered ${JSON.stringify(r.slice(0, 200))}`)
        const port = output.map((l) => RunnerLaunch.parseAddress(l.trim())).find((a) => a !== undefined)?.port
        if (port === undefined) return yield* fail(method, "Unknown", `${where}: the node's output names no runner address:\n${output.join("\n").slice(-2000)}`)
        yield* Effect.logDebug(`slurm backend: the runner of ${where} is up`).pipe(
          Effect.annotateLogs("slurmRunnerReady", { jobId: d.jobId, rank, readyOnLogin: Number(rest[0]), seen: Date.now(), asked })
        )
        return new JobProvisioningData({ ...pd, runnerPort: port })
      })

    const jobState = (pd: JobProvisioningData) =>
      Effect.gen(function*() {
        const c = yield* cluster("jobState", pd.region)
        const q = yield* squeue("jobState", c, jobIdOf(pd))
        return q === undefined ? undefined : stateMeaning(q.state, q.reason)
      })

    /**
     * How the allocation ended, from `scontrol show job` (slurmctld keeps an ended job for
     * MinJobAge): TIMEOUT, PREEMPTED, NODE_FAIL, OUT_OF_MEMORY… as the job's termination
     * reason. A job still completing is asked again for a few seconds until its end state
     * shows; a running one (or COMPLETED: the runner's own account stands) answers undefined.
     */
    const instanceEnd = (pd: JobProvisioningData) =>
      Effect.gen(function*() {
        const c = yield* cluster("instanceEnd", pd.region)
        const jobId = jobIdOf(pd)
        if (!/^\d+$/.test(jobId)) return undefined
        for (let attempt = 0; ; attempt++) {
          const shown = yield* onLogin("instanceEnd", c, `scontrol show -o job "$1" 2>&1; true`, [jobId])
          const record = parseScontrolLine(shown.stdout.trim().split("\n")[0] ?? "")
          const state = (record.JobState ?? "").split(/\s|\+/)[0]
          if (state === "" || state === "COMPLETED" || !(FINAL_STATES as ReadonlyArray<string>).includes(state)) {
            if (state === "COMPLETING" && attempt < 20) {
              yield* Effect.promise(() => new Promise<void>((resolve) => setTimeout(resolve, 250)))
              continue
            }
            return undefined
          }
          const meaning = stateMeaning(state, record.Reason ?? "")
          return meaning.terminationReason === undefined ? undefined : { reason: meaning.terminationReason, message: `${meaning.message}: Slurm job ${jobId} on ${c.config.name}` }
        }
      })

    const backend = Backend.make({
      type: TYPE,
      catalog,
      createInstance,
      createInstanceGroup: (offer, configs) => allocate("createInstanceGroup", offer, configs),
      // An allocation on a cluster this backend does not have, or with no Slurm job id, is gone.
      // A node other than the master (`1234+1`) ends with the allocation, which its master's
      // instance holds: a node whose job ended first must not cancel the others'.
      terminateInstance: (instanceId, region) =>
        !clusters.has(region) || !/^\d+(\+\d+)?$/.test(instanceId)
          ? fail("terminateInstance", "NotFound", `no Slurm job ${instanceId} on a cluster ${region}`)
          : instanceId.includes(NODE_SEPARATOR)
          ? Effect.void
          : Effect.flatMap(cluster("terminateInstance", region), (c) => cancel("terminateInstance", c, instanceId)),
      runnerAccess,
      instanceEnd,
      updateProvisioningData,
      instancePerJob: true
    })
    return { ...backend, runnerAccess, updateProvisioningData, jobState }
  })

const decodeConfig = configDecoder(SlurmBackendConfig, "slurm backend configuration")

/** The plugin's factory: decodes the configuration and makes the backend; a bad one is `Invalid`, naming every wrong field. */
export const fromConfig: BackendFactory = (config) =>
  decodeConfig(config).pipe(
    Effect.mapError((error) =>
      new Backend.BackendError({
        module: MODULE,
        method: "fromConfig",
        reason: "Invalid",
        message: error.message,
        cause: error.cause
      })
    ),
    Effect.flatMap(({ type: _type, ...options }) => make(options))
  )

