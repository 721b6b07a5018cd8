/**
 * How a run spec becomes job specs: one job per node of a task, one per replica of a service,
 * one for a dev environment; each with the upstream `DSTACK_*` variables in its environment.
 * Pure: the server calls it when a run is planned and applied.
 */
import type { AnyRunConfiguration } from "./Configuration.ts"
import type { RetryPolicy } from "./RetryPolicy.ts"
import { AppSpec, JobRetry, JobSpec, Requirements } from "./Job.ts"
import type { RunSpec } from "./Run.ts"

/** Splits an entrypoint string the way a POSIX shell would split words (quotes, backslashes). */
export const splitShellWords = (input: string): Array<string> => {
  const words: Array<string> = []
  let word = ""
  let inWord = false
  let quote: "'" | "\"" | null = null
  for (let i = 0; i < input.length; i++) {
    const c = input[i]
    if (quote === "'") {
      if (c === "'") quote = null
      else word += c
    } else if (quote === "\"") {
      if (c === "\"") quote = null
      else if (c === "\\" && i + 1 < input.length && "\"\\$`".includes(input[i + 1])) word += input[++i]
      else word += c
    } else if (c === "'" || c === "\"") {
      quote = c
      inWord = true
    } else if (c === "\\" && i + 1 < input.length) {
      word += input[++i]
      inWord = true
    } else if (/\s/.test(c)) {
      if (inWord) words.push(word)
      word = ""
      inWord = false
    } else {
      word += c
      inWord = true
    }
  }
  if (inWord) words.push(word)
  return words
}

const spotFromPolicy = (policy: "spot" | "on-demand" | "auto" | undefined): boolean | null =>
  policy === "spot" ? true : policy === "auto" ? null : false

const jobRetry = (retry: RetryPolicy | undefined): JobRetry | undefined =>
  retry === undefined || retry.onEvents.length === 0
    ? undefined
    : new JobRetry({ onEvents: retry.onEvents, duration: retry.duration })

/** The least GPU count the requirements ask for (the real count comes from the instance). */
const requestedGpus = (configuration: AnyRunConfiguration): number => configuration.resources.gpu.count.min ?? 0

const userEnv = (configuration: AnyRunConfiguration): Record<string, string> => {
  const env: Record<string, string> = {}
  // Names without a value are filled by the client before submission; any left are dropped.
  for (const [name, value] of Object.entries(configuration.env ?? {})) if (value !== null) env[name] = value
  return env
}

export interface JobSpecsOptions {
  /** The number of service replicas to start with; defaults to the lower end of `replicas`. */
  readonly replicas?: number | undefined
}

/**
 * The job specs of a run: a task with `nodes: N` gives N jobs of one replica; a service gives
 * one job per replica; a dev environment one job. The environment holds the configuration's
 * variables and, taking precedence, `DSTACK_RUN_NAME`, `DSTACK_REPO_ID`, `DSTACK_NODES_NUM`,
 * `DSTACK_NODE_RANK`, `DSTACK_GPUS_PER_NODE` and `DSTACK_GPUS_NUM` (the GPU numbers from the
 * requirements; the runner corrects them from the instance, see `clusterEnv`).
 *
 * @example
 * jobSpecsFromRunSpec(runSpec).map((j) => j.jobName) // ["train-0-0", "train-1-0"] for nodes: 2
 */
export const jobSpecsFromRunSpec = (runSpec: RunSpec, options: JobSpecsOptions = {}): Array<JobSpec> => {
  const configuration = runSpec.configuration
  const runName = runSpec.runName ?? configuration.name ?? "run"
  const shape = (() => {
    switch (configuration.type) {
      case "task":
        return { replicas: 1, nodes: configuration.nodes, commands: configuration.commands ?? [], ports: configuration.ports ?? [] }
      case "service":
        return {
          replicas: options.replicas ?? configuration.replicas.min ?? 1,
          nodes: 1,
          commands: configuration.commands ?? [],
          ports: []
        }
      case "dev-environment":
        // The environment stays up until stopped: the init commands, then wait.
        return { replicas: 1, nodes: 1, commands: [...(configuration.init ?? []), ...ideReadme(configuration.ide, runName), "sleep infinity"], ports: configuration.ports ?? [] }
    }
  })()
  const gpusPerNode = requestedGpus(configuration)
  const maxDuration = configuration.maxDuration === undefined || configuration.maxDuration === "off"
    ? null
    : configuration.maxDuration
  const requirements = new Requirements({
    resources: configuration.resources,
    maxPrice: configuration.maxPrice,
    spot: spotFromPolicy(configuration.spotPolicy),
    reservation: configuration.reservation
  })
  const appSpecs = shape.ports.map((port) =>
    new AppSpec({ port: port.containerPort, mapToPort: port.localPort, appName: `port-${port.containerPort}` })
  )
  const specs: Array<JobSpec> = []
  for (let replicaNum = 0; replicaNum < shape.replicas; replicaNum++) {
    for (let jobNum = 0; jobNum < shape.nodes; jobNum++) {
      specs.push(
        new JobSpec({
          jobName: `${runName}-${jobNum}-${replicaNum}`,
          replicaNum,
          jobNum,
          jobsPerReplica: shape.nodes,
          commands: shape.commands,
          entrypoint: configuration.entrypoint === undefined ? undefined : splitShellWords(configuration.entrypoint),
          env: {
            ...userEnv(configuration),
            DSTACK_RUN_NAME: runName,
            DSTACK_REPO_ID: runSpec.repoId,
            DSTACK_NODES_NUM: String(shape.nodes),
            DSTACK_NODE_RANK: String(jobNum),
            DSTACK_GPUS_PER_NODE: String(gpusPerNode),
            DSTACK_GPUS_NUM: String(gpusPerNode * shape.nodes)
          },
          imageName: configuration.image,
          ...(configuration.image === undefined && configuration.python !== undefined ? { python: configuration.python } : {}),
          ...(configuration.image === undefined && configuration.nvcc === true ? { nvcc: true } : {}),
          user: configuration.user,
          privileged: configuration.privileged ?? false,
          workingDir: runSpec.workingDir ?? configuration.workingDir,
          maxDuration,
          stopDuration: 300,
          registryAuth: configuration.registryAuth,
          requirements,
          retry: jobRetry(configuration.retry),
          volumes: configuration.volumes ?? [],
          appSpecs,
          servicePort: configuration.type === "service" ? configuration.port.containerPort : undefined,
          shmSize: configuration.resources.shmSize,
          repoCodeHash: runSpec.repoCodeHash,
          repoData: runSpec.repoData
        })
      )
    }
  }
  return specs
}

/** What a job learns about its cluster at run time. */
export interface ClusterInfo {
  /** The addresses of the replica's nodes, by node rank; the first is the master. */
  readonly nodesIps: ReadonlyArray<string>
  /** GPUs of each node, from the instance actually provisioned. */
  readonly gpusPerNode: number
}

/** The `DSTACK_*` variables only known once the nodes are up (set by the runner). */
export const clusterEnv = (cluster: ClusterInfo): Record<string, string> => ({
  DSTACK_MASTER_NODE_IP: cluster.nodesIps[0] ?? "",
  DSTACK_NODES_IPS: cluster.nodesIps.join("\n"),
  DSTACK_NODES_NUM: String(cluster.nodesIps.length),
  DSTACK_GPUS_PER_NODE: String(cluster.gpusPerNode),
  DSTACK_GPUS_NUM: String(cluster.gpusPerNode * cluster.nodesIps.length)
})

const IDE_NAMES = { vscode: "VS Code", cursor: "Cursor" } as const

/**
 * What a dev environment with an `ide` prints once `init` is done, as upstream's does: the IDE's
 * remote-SSH link to the job's working directory through the `ssh RUN` alias.
 */
const ideReadme = (ide: "vscode" | "cursor" | undefined, runName: string): ReadonlyArray<string> =>
  ide === undefined
    ? []
    : [`echo 'To open in ${IDE_NAMES[ide]}, use link below:' && echo && echo "  ${ide}://vscode-remote/ssh-remote+${runName}$PWD" && echo`]
