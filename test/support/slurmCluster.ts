// A real Slurm cluster for tests and benchmarks (Debian's slurm-wlm and munge): netns hosts from
// ./netnsHosts.ts, the first a login node that also runs slurmctld, the others compute nodes,
// each with its own slurmd (`-N nN`, NodeAddr its IP, its own spool). One munged serves them
// all through a socket on the shared filesystem: the namespaces share this machine's files, as
// the nodes of an HPC cluster share /home. SSH logins on every host get SLURM_CONF, so `sinfo`
// and `sbatch` work there as on a real login node. No vitest here (bench/ imports it); tests use
// ./slurm.ts, which adds `describeWithSlurm`.
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { createNetnsHosts, type NetnsHost, type NetnsHosts, netnsUnavailable } from "./netnsHosts.ts"

const run = promisify(execFile)

const BINARIES = ["slurmctld", "slurmd", "munged", "sinfo", "sbatch", "squeue", "scancel", "scontrol"] as const

/** Why a Slurm cluster cannot be made here, or undefined when it can. */
export const slurmUnavailable = async (): Promise<string | undefined> => {
  const netns = await netnsUnavailable()
  if (netns !== undefined) return netns
  const dirs = ["/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"]
  for (const binary of BINARIES) {
    if (!dirs.some((d) => fs.existsSync(path.join(d, binary)))) return `${binary} is not installed (apt-get install slurm-wlm munge)`
  }
  return undefined
}

/** One partition of the test cluster. */
export interface SlurmPartitionSpec {
  readonly name: string
  /** Indexes into the compute nodes (default: all). */
  readonly nodes?: ReadonlyArray<number>
  /** MaxTime in minutes (default 60). */
  readonly maxTimeMinutes?: number
  readonly default?: boolean
}

export interface SlurmClusterOptions {
  /** Compute nodes (default 2). */
  readonly nodes?: number
  /** CPUs and memory (MiB) each node declares (default 2 and 2048); TmpDisk is 200 GiB. */
  readonly cpus?: number
  readonly memoryMib?: number
  /** Default: one partition `debug` with every node, MaxTime 60 minutes. */
  readonly partitions?: ReadonlyArray<SlurmPartitionSpec>
}

export interface SlurmCluster {
  readonly net: NetnsHosts
  /** The login node (also the controller's host). */
  readonly login: NetnsHost
  /** The compute nodes, `n1`, `n2`, … in order. */
  readonly computes: ReadonlyArray<NetnsHost & { readonly nodeName: string }>
  /** slurm.conf, for SLURM_CONF. */
  readonly conf: string
  readonly dir: string
  /** Runs a Slurm client command on the login node (`sinfo`, `squeue`, …); stdout. */
  readonly slurm: (command: string, args: ReadonlyArray<string>) => Promise<string>
  /** The job's state from `squeue` (PENDING, RUNNING, …), or undefined once it has left the queue. */
  readonly queueState: (jobId: string) => Promise<string | undefined>
  readonly down: () => Promise<void>
}

const waitFor = async (what: string, check: () => Promise<boolean>, timeoutMs: number, detail: () => string): Promise<void> => {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await new Promise((r) => setTimeout(r, 200))
  }
  throw new Error(`${what} within ${timeoutMs / 1000}s; ${detail()}`)
}

const tail = (file: string) => {
  try {
    return `the end of ${file}:\n${fs.readFileSync(file, "utf8").split("\n").slice(-12).join("\n")}`
  } catch {
    return `${file} is missing`
  }
}

/** cgroup v1 or v2 as this machine mounts it (slurmd's cgroup plugin autodetection misreads a hybrid layout). */
const cgroupPlugin = (): string => {
  try {
    if (fs.existsSync("/sys/fs/cgroup/cgroup.controllers")) return "cgroup/v2"
  } catch {
    // fall through
  }
  return "cgroup/v1"
}

/**
 * Starts a Slurm cluster: `nodes` compute nodes on netns hosts, a login node running slurmctld,
 * until every node is idle in `sinfo`. Call `down` when done (afterAll).
 *
 * @example
 * const cluster = await createSlurmCluster({ nodes: 2 })
 * await cluster.slurm("sinfo", []) // debug* up 1:00:00 2 idle n[1-2]
 * await cluster.down()
 */
export const createSlurmCluster = async (options: SlurmClusterOptions = {}): Promise<SlurmCluster> => {
  const count = options.nodes ?? 2
  const net = await createNetnsHosts({ count: count + 1 })
  try {
    const [login, ...rest] = net.hosts
    const computes = rest.map((h, i) => ({ ...h, nodeName: `n${i + 1}` }))
    const dir = path.join(net.dir, "slurm")
    const mungeDir = path.join(dir, "munge")
    fs.mkdirSync(mungeDir, { recursive: true, mode: 0o700 })
    fs.mkdirSync(path.join(dir, "state"), { recursive: true })
    for (const c of computes) fs.mkdirSync(path.join(dir, "spool", c.nodeName), { recursive: true })
    const key = path.join(mungeDir, "munge.key")
    fs.writeFileSync(key, (await import("node:crypto")).randomBytes(1024), { mode: 0o400 })
    const socket = path.join(mungeDir, "munge.sock")
    const cpus = options.cpus ?? 2
    const memory = options.memoryMib ?? 2048
    const partitions = options.partitions ?? [{ name: "debug", default: true }]
    const conf = path.join(dir, "slurm.conf")
    fs.writeFileSync(
      conf,
      [
        `ClusterName=dts${net.name}`,
        // slurmctld accepts only a controller named like the machine: the namespaces share its hostname.
        `SlurmctldHost=${os.hostname()}(${login.ip})`,
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        `AuthInfo=socket=${socket}`,
        `StateSaveLocation=${dir}/state`,
        `SlurmdSpoolDir=${dir}/spool/%n`,
        `SlurmctldPidFile=${dir}/slurmctld.pid`,
        `SlurmdPidFile=${dir}/slurmd-%n.pid`,
        `SlurmctldLogFile=${dir}/slurmctld.log`,
        `SlurmdLogFile=${dir}/slurmd-%n.log`,
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "SchedulerType=sched/backfill",
        "MpiDefault=none",
        "SwitchType=switch/none",
        "ReturnToService=2",
        // The nodes declare what the test says, whatever this machine has.
        "SlurmdParameters=config_overrides",
        "KillWait=5",
        ...computes.map((c) => `NodeName=${c.nodeName} NodeAddr=${c.ip} CPUs=${cpus} RealMemory=${memory} TmpDisk=204800 State=UNKNOWN`),
        ...partitions.map((p) =>
          `PartitionName=${p.name} Nodes=${(p.nodes ?? computes.map((_, i) => i)).map((i) => computes[i].nodeName).join(",")} MaxTime=${p.maxTimeMinutes ?? 60} State=UP${p.default ? " Default=YES" : ""}`
        ),
        ""
      ].join("\n")
    )
    fs.writeFileSync(path.join(dir, "cgroup.conf"), `CgroupPlugin=${cgroupPlugin()}\nCgroupMountpoint=/sys/fs/cgroup\n`)

    // munged in the login node's namespace (removed with it); its socket is a file all hosts see.
    await net.exec(login, "munged", [
      "--force",
      `--socket=${socket}`,
      `--key-file=${key}`,
      `--pid-file=${mungeDir}/munged.pid`,
      `--log-file=${mungeDir}/munged.log`,
      `--seed-file=${mungeDir}/munged.seed`
    ])
    const env = { ...process.env, SLURM_CONF: conf }
    const inNs = async (host: NetnsHost, file: string, args: ReadonlyArray<string>) =>
      (await run("ip", ["netns", "exec", host.netns, file, ...args], { env, maxBuffer: 16 << 20 })).stdout
    await inNs(login, "slurmctld", ["-f", conf, "-c"]).catch((e) => {
      throw new Error(`slurmctld did not start: ${String(e)}; ${tail(`${dir}/slurmctld.log`)}`)
    })
    for (const c of computes) {
      await inNs(c, "slurmd", ["-f", conf, "-N", c.nodeName]).catch((e) => {
        throw new Error(`slurmd ${c.nodeName} did not start: ${String(e)}; ${tail(`${dir}/slurmd-${c.nodeName}.log`)}`)
      })
    }
    const slurm = (command: string, args: ReadonlyArray<string>) => inNs(login, command, args)
    await waitFor(
      "the compute nodes were not all idle",
      async () => {
        const states = (await slurm("sinfo", ["-h", "-N", "-o", "%N %T"])).trim().split("\n")
        return states.length >= computes.length && states.every((l) => l.endsWith(" idle"))
      },
      30_000,
      () => tail(`${dir}/slurmctld.log`)
    )

    // Logins get SLURM_CONF, as a login node has /etc/slurm/slurm.conf.
    for (const host of net.hosts) {
      const config = path.join(net.dir, host.name, "sshd_config")
      const text = fs.readFileSync(config, "utf8")
      fs.writeFileSync(config, text.replace(/^SetEnv (.*)$/m, `SetEnv $1 SLURM_CONF=${conf}`))
      await net.stopSshd(host)
      await net.startSshd(host)
    }

    return {
      net,
      login,
      computes,
      conf,
      dir,
      slurm,
      queueState: async (jobId) => (await slurm("squeue", ["-h", "-j", jobId, "-o", "%T"]).catch(() => "")).trim() || undefined,
      down: () => net.down()
    }
  } catch (error) {
    await net.down()
    throw error
  }
}
