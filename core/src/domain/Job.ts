/**
 * Jobs: what one unit of a run executes (`JobSpec`, everything a runner needs), each attempt at
 * executing it (`JobSubmission`), and where an attempt landed (`JobProvisioningData`).
 * Wire keys follow the upstream API (`job_spec`, `job_submissions`, …).
 */
import { Schema } from "effect"
import { wire, wireDefault, wireOptional, wireStringOrEmpty } from "./internal/wire.ts"
import { InstanceType } from "./Offer.ts"
import { RegistryAuth } from "./RegistryAuth.ts"
import { ResourcesSpec } from "./Resources.ts"
import { DEFAULT_RETRY_DURATION_SECONDS, RetryEvent } from "./RetryPolicy.ts"
import { JobStatus, JobTerminationReason } from "./Status.ts"
import { InstanceMountPoint, VolumeMountPoint } from "./Volume.ts"

// ---------------------------------------------------------------------------------------------
// Parts of a job spec

/**
 * What the job needs from an instance: the configuration's resources spec, a price cap, and
 * the spot policy resolved (`true` spot only, `false` on-demand only, `null` either: auto).
 */
export class Requirements extends Schema.Class<Requirements>("@dstack-ts/core/Requirements")({
  resources: ResourcesSpec,
  maxPrice: wireOptional(Schema.Number, "max_price"),
  spot: wireDefault(Schema.NullOr(Schema.Boolean), "spot", () => null),
  reservation: wireOptional(Schema.String, "reservation")
}) {}

/**
 * A job's resolved retry policy: which failures are retried and for how long. Same shape as
 * the configuration's `RetryPolicy`, but on the wire `duration` stays a number of seconds.
 */
export class JobRetry extends Schema.Class<JobRetry>("@dstack-ts/core/JobRetry")({
  onEvents: wire(Schema.Array(RetryEvent), "on_events"),
  duration: wireDefault(Schema.Number, "duration", () => DEFAULT_RETRY_DURATION_SECONDS)
}) {}

/** A mount of a job: a named network volume or a directory of the instance. */
export const JobMountPoint = Schema.Union(VolumeMountPoint, InstanceMountPoint)
export type JobMountPoint = typeof JobMountPoint.Type

/** A port the job listens on, and the local port `attach` forwards it to. */
export class AppSpec extends Schema.Class<AppSpec>("@dstack-ts/core/AppSpec")({
  port: Schema.Int,
  mapToPort: wireOptional(Schema.Int, "map_to_port"),
  appName: wire(Schema.String, "app_name"),
  urlPath: wireOptional(Schema.String, "url_path"),
  urlQueryParams: wireOptional(Schema.Record({ key: Schema.String, value: Schema.String }), "url_query_params")
}) {}

/** Where the job's code comes from. Upstream calls this the run repo data. */
export const LocalRunRepoData = Schema.Struct({
  repoType: wire(Schema.Literal("local"), "repo_type"),
  repoDir: wireOptional(Schema.String, "repo_dir")
})
/** A git remote at a branch and commit; uncommitted changes travel as a diff keyed by `repo_code_hash`. */
export const RemoteRunRepoData = Schema.Struct({
  repoType: wire(Schema.Literal("remote"), "repo_type"),
  repoUrl: wire(Schema.String, "repo_url"),
  repoBranch: wireOptional(Schema.String, "repo_branch"),
  repoHash: wireOptional(Schema.String, "repo_hash"),
  repoConfigName: wireOptional(Schema.String, "repo_config_name"),
  repoConfigEmail: wireOptional(Schema.String, "repo_config_email")
})
/** Files given programmatically (no directory, no git). */
export const VirtualRunRepoData = Schema.Struct({
  repoType: wire(Schema.Literal("virtual"), "repo_type")
})
/** The repo types core itself packs and materializes. */
export const BUILTIN_REPO_TYPES: ReadonlyArray<string> = ["local", "remote", "virtual"]
/**
 * A repo type a plugin contributes (`archive-url` …): its own fields travel as they are (the
 * plugin's `pack` writes them, its `materialize` on the runner reads them).
 */
export const PluginRunRepoData = Schema.Struct(
  {
    repoType: wire(
      Schema.String.pipe(
        Schema.pattern(/^[a-z0-9][a-z0-9._\-/]*$/),
        Schema.filter((type) => !BUILTIN_REPO_TYPES.includes(type) || `repo_type ${type} is built in: its fields do not match`)
      ),
      "repo_type"
    )
  },
  Schema.Record({ key: Schema.String, value: Schema.Unknown })
)
export const RunRepoData = Schema.Union(LocalRunRepoData, RemoteRunRepoData, VirtualRunRepoData, PluginRunRepoData)
export type RunRepoData = typeof RunRepoData.Type

// ---------------------------------------------------------------------------------------------
// Job spec

/** The default grace period between a graceful stop and a forced one, in seconds (upstream). */
export const DEFAULT_STOP_DURATION_SECONDS = 300

/** Upstream's `UnixUser`: a user and an optional group, each a name or a number. */
const UnixUser = Schema.Struct({
  uid: Schema.optionalWith(Schema.Int, { nullable: true }),
  gid: Schema.optionalWith(Schema.Int, { nullable: true }),
  username: Schema.optionalWith(Schema.String, { nullable: true }),
  groupname: Schema.optionalWith(Schema.String, { nullable: true })
})

/**
 * The user a job runs as, `<user>[:<group>]` as Docker writes it; on the wire upstream's object
 * (`{"username": "root"}`, `{"uid": 1000, "gid": 1000}`), and read from either form.
 */
const UnixUserWire = Schema.transform(Schema.Union(Schema.String, UnixUser), Schema.String, {
  strict: true,
  decode: (u) => {
    if (typeof u === "string") return u
    const user = u.username ?? (u.uid !== undefined ? String(u.uid) : "")
    const group = u.groupname ?? (u.gid !== undefined ? String(u.gid) : undefined)
    return group === undefined ? user : `${user}:${group}`
  },
  encode: (s) => {
    const [user = "", group] = s.split(":")
    const id = (v: string) => /^\d+$/.test(v)
    return {
      ...(id(user) ? { uid: Number(user) } : { username: user }),
      ...(group === undefined ? {} : id(group) ? { gid: Number(group) } : { groupname: group })
    }
  }
})

/**
 * Everything a runner needs to execute one job. A job without `image_name` (written `""`, as
 * upstream's clients require the key) runs as processes on the host (the process executor);
 * with it, in a container.
 *
 * @example
 * Schema.decodeUnknownSync(JobSpec)({ job_name: "train-0-0", commands: ["python train.py"], requirements: { resources: {} } })
 */
export class JobSpec extends Schema.Class<JobSpec>("@dstack-ts/core/JobSpec")({
  jobName: wire(Schema.String, "job_name"),
  replicaNum: wireDefault(Schema.Int, "replica_num", () => 0),
  jobNum: wireDefault(Schema.Int, "job_num", () => 0),
  jobsPerReplica: wireDefault(Schema.Int, "jobs_per_replica", () => 1),
  commands: wireDefault(Schema.Array(Schema.String), "commands", () => []),
  entrypoint: wireOptional(Schema.Array(Schema.String), "entrypoint"),
  env: wireDefault(Schema.Record({ key: Schema.String, value: Schema.String }), "env", () => ({})),
  imageName: wireStringOrEmpty("image_name"),
  user: wireOptional(UnixUserWire, "user"),
  privileged: wireDefault(Schema.Boolean, "privileged", () => false),
  workingDir: wireOptional(Schema.String, "working_dir"),
  /** Seconds the job may run before it is stopped; `null` for no limit. */
  maxDuration: wireDefault(Schema.NullOr(Schema.Number), "max_duration", () => null),
  /** Seconds between a graceful stop request and a forced one. */
  stopDuration: wireDefault(Schema.Number, "stop_duration", () => DEFAULT_STOP_DURATION_SECONDS),
  registryAuth: wireOptional(RegistryAuth, "registry_auth"),
  requirements: Requirements,
  retry: wireOptional(JobRetry, "retry"),
  volumes: wireDefault(Schema.Array(JobMountPoint), "volumes", () => []),
  appSpecs: wireDefault(Schema.Array(AppSpec), "app_specs", () => []),
  /** The port a service replica listens on (services only). */
  servicePort: wireOptional(Schema.Int, "service_port"),
  /** Shared memory size in GB, as in the resources spec. */
  shmSize: wireOptional(Schema.Number, "shm_size"),
  repoCodeHash: wireOptional(Schema.String, "repo_code_hash"),
  repoData: wireOptional(RunRepoData, "repo_data"),
  /** Without an image: the Python version the host must have (`python` of the configuration). */
  python: wireOptional(Schema.String, "python"),
  /** Without an image: whether the host must have the CUDA compiler (`nvcc`). */
  nvcc: wireOptional(Schema.Boolean, "nvcc"),
  /**
   * Workflow jobs (docs/workflows.md): folders, relative to the working directory, the server
   * keeps in its blob store when the job ends done (ours, not upstream's).
   */
  artifacts: wireOptional(Schema.Array(Schema.String), "artifacts"),
  /** Workflow jobs: blob keys of artifact archives (tar.gz) extracted into the working directory before the job starts. */
  artifactInputs: wireOptional(Schema.Array(Schema.String), "artifact_inputs")
}) {}

// ---------------------------------------------------------------------------------------------
// Provisioning and submissions

/** Where a job submission landed: the instance, how to reach it, what it costs. */
export class JobProvisioningData extends Schema.Class<JobProvisioningData>("@dstack-ts/core/JobProvisioningData")({
  backend: Schema.String,
  instanceType: wire(InstanceType, "instance_type"),
  /** The backend's own id of the instance (a VM id, a container id, a host name). */
  instanceId: wire(Schema.String, "instance_id"),
  /** How the server reaches the host; `null` until the backend knows it. */
  hostname: wireDefault(Schema.NullOr(Schema.String), "hostname", () => null),
  internalIp: wireOptional(Schema.String, "internal_ip"),
  region: Schema.String,
  availabilityZone: wireOptional(Schema.String, "availability_zone"),
  price: Schema.Number,
  username: wireDefault(Schema.String, "username", () => "root"),
  sshPort: wireOptional(Schema.Int, "ssh_port"),
  /** `true` when a host agent runs the job in a container, `false` when the runner runs it directly. */
  dockerized: wireDefault(Schema.Boolean, "dockerized", () => true),
  /** The runner's port when it is not the default (e.g. the local backend picks a free one). */
  runnerPort: wireOptional(Schema.Int, "runner_port"),
  backendData: wireOptional(Schema.String, "backend_data")
}) {}

/** One attempt at executing a job. A retry is a new submission with the next `submission_num`. */
export class JobSubmission extends Schema.Class<JobSubmission>("@dstack-ts/core/JobSubmission")({
  id: Schema.String,
  submissionNum: wireDefault(Schema.Int, "submission_num", () => 0),
  submittedAt: wire(Schema.Date, "submitted_at"),
  lastProcessedAt: wire(Schema.Date, "last_processed_at"),
  finishedAt: wireOptional(Schema.Date, "finished_at"),
  status: JobStatus,
  terminationReason: wireOptional(JobTerminationReason, "termination_reason"),
  terminationReasonMessage: wireOptional(Schema.String, "termination_reason_message"),
  exitStatus: wireOptional(Schema.Int, "exit_status"),
  jobProvisioningData: wireOptional(JobProvisioningData, "job_provisioning_data"),
  /** The fleet instance the submission runs on (an `Instance.id`), once it has one. */
  instanceId: wireOptional(Schema.String, "instance_id"),
  /** What the submission waits for while provisioning, in words (a batch scheduler's queue reason). */
  statusMessage: wireOptional(Schema.String, "status_message")
}) {}

/** A job of a run with all its submissions, oldest first. */
export class Job extends Schema.Class<Job>("@dstack-ts/core/Job")({
  jobSpec: wire(JobSpec, "job_spec"),
  jobSubmissions: wireDefault(Schema.Array(JobSubmission), "job_submissions", () => [])
}) {}

/** The latest submission of a job, if it was ever submitted. */
export const latestSubmission = (job: Job): JobSubmission | undefined =>
  job.jobSubmissions.length === 0 ? undefined : job.jobSubmissions[job.jobSubmissions.length - 1]

/** The latest submission that reached an instance; retry durations count from it. */
export const lastProvisionedSubmission = (job: Job): JobSubmission | undefined => {
  for (let i = job.jobSubmissions.length - 1; i >= 0; i--) {
    if (job.jobSubmissions[i].jobProvisioningData !== undefined) return job.jobSubmissions[i]
  }
  return undefined
}
