/**
 * The built-in workflow providers. Each declares its parameters as an Effect Schema (unknown
 * keys are refused by the planner, which reports them at their line in workflows.yaml) and
 * makes one job from them.
 */
import { Effect, Schema } from "effect"
import { Provider, PYTHON_VERSIONS, PythonVersion, ResourcesSpec } from "@dstack-ts/core"

/** Quotes a word for bash: `'it'\''s'`. */
export const shellQuote = (s: string): string => (/^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`)

const Environment = Schema.Record({ key: Schema.String, value: Schema.Union(Schema.String, Schema.Number, Schema.Boolean) }).annotations({
  description: "Environment variables of the job."
})
const Commands = Schema.NonEmptyArray(Schema.String).annotations({ description: "Shell commands, run in order under bash." })
const Artifacts = Schema.Array(Schema.String).annotations({
  description: "Folders, relative to the working directory, kept when the job ends and given to the workflows that depend on it."
})
const Ports = Schema.Array(Schema.Int.pipe(Schema.between(1, 65535))).annotations({ description: "Ports the job listens on." })

/** Keys every built-in provider takes besides its own. */
const common = {
  environment: Schema.optional(Environment),
  artifacts: Schema.optional(Artifacts),
  resources: Schema.optional(ResourcesSpec),
  ports: Schema.optional(Ports),
  working_dir: Schema.optional(Schema.String.annotations({ description: "The working directory, relative to the code." }))
}

interface Common {
  readonly environment?: Readonly<Record<string, string | number | boolean>> | undefined
  readonly artifacts?: ReadonlyArray<string> | undefined
  readonly resources?: ResourcesSpec | undefined
  readonly ports?: ReadonlyArray<number> | undefined
  readonly working_dir?: string | undefined
}

/** The job fields the common keys give. */
const commonJob = (p: Common): Omit<Provider.ProviderJob, "commands"> => ({
  ...(p.environment === undefined ? {} : { env: Object.fromEntries(Object.entries(p.environment).map(([k, v]) => [k, String(v)])) }),
  ...(p.artifacts === undefined ? {} : { artifacts: p.artifacts }),
  ...(p.resources === undefined ? {} : { resources: p.resources }),
  ...(p.ports === undefined ? {} : { ports: p.ports }),
  ...(p.working_dir === undefined ? {} : { workingDir: p.working_dir })
})

const one = (job: Provider.ProviderJob) => Effect.succeed([job] as ReadonlyArray<Provider.ProviderJob>)

/** `bash`: shell commands on the host (no image: the process executor), or in `image`. */
export const bash = Provider.make({
  name: "bash",
  description: "Runs shell commands under bash, on the host or in an image.",
  parameters: Schema.Struct({
    commands: Commands,
    image: Schema.optional(Schema.String.annotations({ description: "A Docker image to run the commands in." })),
    ...common
  }),
  createJobs: (p) => one({ ...commonJob(p), commands: p.commands, ...(p.image === undefined ? {} : { image: p.image }) })
})

/** `python`: a Python script with optional requirements, on a host with that Python version. */
export const python = Provider.make({
  name: "python",
  description: "Runs a Python script (after `pip install -r` of its requirements) with the host's Python of the version given.",
  parameters: Schema.Struct({
    script: Schema.String.annotations({ description: "The script to run, relative to the working directory." }),
    args: Schema.optional(Schema.Union(Schema.String, Schema.Array(Schema.String)).annotations({ description: "Arguments of the script: a string or a list." })),
    version: Schema.optional(PythonVersion.annotations({ description: `The Python version (${PYTHON_VERSIONS.join(", ")}); the job fails when the host lacks it.` })),
    requirements: Schema.optional(Schema.String.annotations({ description: "A requirements file installed with pip before the script runs." })),
    ...common
  }),
  createJobs: (p) => {
    const args = p.args === undefined ? "" : typeof p.args === "string" ? ` ${p.args}` : p.args.map((a) => ` ${shellQuote(a)}`).join("")
    return one({
      ...commonJob(p),
      ...(p.version === undefined ? {} : { python: p.version }),
      commands: [
        // pip runs on the interpreter itself (its sys.executable), not through a version
        // manager's `python3` shim: pyenv's shim would rehash after the install, behind a lock
        // file that a killed rehash elsewhere leaves behind (60 s, then the job fails).
        ...(p.requirements === undefined ? [] : [`"$(python3 -c 'import sys; print(sys.executable)')" -m pip install --quiet -r ${shellQuote(p.requirements)}`]),
        `python3 ${shellQuote(p.script)}${args}`
      ]
    })
  }
})

/** `docker`: commands in a Docker image (the Docker executor). */
export const docker = Provider.make({
  name: "docker",
  description: "Runs commands in a Docker image.",
  parameters: Schema.Struct({
    image: Schema.String.annotations({ description: "The Docker image." }),
    commands: Schema.optional(Commands),
    ...common
  }),
  createJobs: (p) => one({ ...commonJob(p), image: p.image, commands: p.commands ?? [] })
})

/** `curl`: downloads a URL to a file (seed-003's example provider). */
export const curl = Provider.make({
  name: "curl",
  description: "Downloads a URL to a file with curl; keep the file's folder with `artifacts`.",
  parameters: Schema.Struct({
    url: Schema.String.annotations({ description: "The URL to download." }),
    output: Schema.String.annotations({ description: "The file to write, relative to the working directory." }),
    image: Schema.optional(Schema.String.annotations({ description: "A Docker image with curl to run in (default: the host)." })),
    ...common
  }),
  createJobs: (p) =>
    one({
      ...commonJob(p),
      ...(p.image === undefined ? {} : { image: p.image }),
      commands: [`mkdir -p "$(dirname ${shellQuote(p.output)})"`, `curl -fsSL ${shellQuote(p.url)} -o ${shellQuote(p.output)}`]
    })
})

/** torchrun's own default rendezvous port, used unless `master_port` says otherwise. */
export const TORCHRUN_MASTER_PORT = 29500

/**
 * `torchrun`: a PyTorch script under torchrun on `nodes` nodes: one multi-node task (the nodes
 * placed together on a `placement: cluster` fleet), every node running the same command with
 * its own rank from the engine's `DSTACK_*` variables, one process per GPU of its node (1 on a
 * node without GPUs). The host must have torch installed (`requirements` can install it).
 */
export const torchrun = Provider.make({
  name: "torchrun",
  description: "Runs a PyTorch script with torchrun on one or several nodes (a multi-node task on a placement: cluster fleet), one process per GPU of each node.",
  parameters: Schema.Struct({
    script: Schema.String.annotations({ description: "The training script, relative to the working directory." }),
    args: Schema.optional(Schema.Union(Schema.String, Schema.Array(Schema.String)).annotations({ description: "Arguments of the script: a string or a list." })),
    nodes: Schema.optional(Schema.Int.pipe(Schema.positive()).annotations({ description: "The number of nodes (default 1); more than 1 runs on a placement: cluster fleet with that many hosts." })),
    version: Schema.optional(PythonVersion.annotations({ description: `The Python version (${PYTHON_VERSIONS.join(", ")}); the job fails when a host lacks it.` })),
    requirements: Schema.optional(Schema.String.annotations({ description: "A requirements file installed with pip on every node before the script runs." })),
    master_port: Schema.optional(Schema.Int.pipe(Schema.between(1, 65535)).annotations({ description: `The port the master node (rank 0) listens on for the rendezvous (default ${TORCHRUN_MASTER_PORT}).` })),
    ...common
  }),
  createJobs: (p) => {
    const nodes = p.nodes ?? 1
    const args = p.args === undefined ? "" : typeof p.args === "string" ? ` ${p.args}` : p.args.map((a) => ` ${shellQuote(a)}`).join("")
    const launch = [
      "torchrun",
      `--nnodes=${nodes}`,
      "--node_rank=$DSTACK_NODE_RANK",
      // The GPUs of this node as the runner found them on the instance; a node without GPUs runs one process.
      "--nproc_per_node=$(( ${DSTACK_GPUS_PER_NODE:-0} > 0 ? DSTACK_GPUS_PER_NODE : 1 ))",
      "--master_addr=$DSTACK_MASTER_NODE_IP",
      `--master_port=${p.master_port ?? TORCHRUN_MASTER_PORT}`,
      shellQuote(p.script)
    ].join(" ")
    return one({
      ...commonJob(p),
      ...(p.version === undefined ? {} : { python: p.version }),
      ...(nodes > 1 ? { nodes } : {}),
      commands: [
        ...(p.requirements === undefined ? [] : [`"$(python3 -c 'import sys; print(sys.executable)')" -m pip install --quiet -r ${shellQuote(p.requirements)}`]),
        `${launch}${args}`
      ]
    })
  }
})
