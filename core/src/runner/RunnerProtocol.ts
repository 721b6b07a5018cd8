/**
 * The runner's wire: the body of `POST /api/submit` (job spec, run, cluster info, secrets,
 * repo credentials), the events `GET /api/pull` returns, and the one mapping from a
 * `JobSpec` to the executors' `ExecutionSpec` (with the upstream DSTACK_* environment).
 */
import { Either, Schema } from "effect"
import { JobSpec } from "../domain/Job.ts"
import { JobStatus, JobTerminationReason } from "../domain/Status.ts"
import type { ExecutionSpec } from "../ports/Executor.ts"
import * as SecretReferences from "../secrets/SecretReferences.ts"

const wire = <S extends Schema.Schema.Any, const K extends string>(schema: S, key: K) =>
  Schema.propertySignature(schema).pipe(Schema.fromKey(key))
const wireOptional = <S extends Schema.Schema.Any, const K extends string>(schema: S, key: K) =>
  Schema.optionalWith(schema, { nullable: true }).pipe(Schema.fromKey(key))
const wireDefault = <S extends Schema.Schema.Any, const K extends string>(
  schema: S,
  key: K,
  value: () => Schema.Schema.Type<S>
) => Schema.optionalWith(schema, { nullable: true, default: value }).pipe(Schema.fromKey(key))

/** The run a submitted job belongs to; the runner reads only its name and repo id. */
export const RunnerRun = Schema.Struct({
  id: Schema.optional(Schema.String),
  runName: wireOptional(Schema.String, "run_name"),
  runSpec: wireOptional(
    Schema.Struct({
      runName: wireOptional(Schema.String, "run_name"),
      repoId: wireOptional(Schema.String, "repo_id")
    }),
    "run_spec"
  ),
  repoId: wireOptional(Schema.String, "repo_id")
})
export type RunnerRun = typeof RunnerRun.Type

/** Where the job sits in a multi-node run. */
export const ClusterInfo = Schema.Struct({
  jobIps: wireDefault(Schema.Array(Schema.String), "job_ips", () => []),
  masterJobIp: wireDefault(Schema.String, "master_job_ip", () => ""),
  gpusPerJob: wireDefault(Schema.Int, "gpus_per_job", () => 0)
})
export type ClusterInfo = typeof ClusterInfo.Type

/** Credentials for cloning a private git repo. */
export const RepoCredentials = Schema.Struct({
  cloneUrl: wireOptional(Schema.String, "clone_url"),
  privateKey: wireOptional(Schema.String, "private_key"),
  oauthToken: wireOptional(Schema.String, "oauth_token")
})

/** The body of `POST /api/submit`. */
export const SubmitBody = Schema.Struct({
  run: wireDefault(RunnerRun, "run", () => ({})),
  jobSpec: wire(JobSpec, "job_spec"),
  clusterInfo: wireDefault(ClusterInfo, "cluster_info", () => ({ jobIps: [], masterJobIp: "", gpusPerJob: 0 })),
  secrets: wireDefault(Schema.Record({ key: Schema.String, value: Schema.String }), "secrets", () => ({})),
  repoCredentials: wireOptional(RepoCredentials, "repo_credentials"),
  /**
   * The job submission this hand-over is for (ours; upstream's runner has none): a runner that
   * already took this submission answers a repeated start as done, without starting it again.
   */
  jobSubmissionId: wireOptional(Schema.String, "job_submission_id"),
  /**
   * A dev environment's `inactivity_duration` in seconds (ours): the runner stops the job once
   * no SSH connection through the server's proxy has been open for that long.
   */
  inactivityDuration: wireOptional(Schema.Number, "inactivity_duration"),
  /** Bytes of log output the job may write in an hour (upstream's field); absent: no quota. */
  logQuotaHour: wireOptional(Schema.Int.pipe(Schema.positive()), "log_quota_hour")
})
export type SubmitBody = typeof SubmitBody.Type

/**
 * The body of `POST /api/start`, which submits, uploads the code and runs in one request (and
 * answers with the job's event stream): byte 0 is 1 when a code archive follows, else 0;
 * bytes 1–4 the byte length of the submit JSON (unsigned, big-endian); then that JSON (the
 * body of `/api/submit`); then the code archive (the body of `/api/upload_code`), if any.
 */
export const START_CONTENT_TYPE = "application/x-dstack-ts-start"

const START_HEADER_BYTES = 5

/** Frames the submit JSON and the code archive (`undefined`: no upload) as one start body. */
export const encodeStartBody = (submitJson: string, code: Uint8Array | undefined): Uint8Array => {
  const json = new TextEncoder().encode(submitJson)
  const out = new Uint8Array(START_HEADER_BYTES + json.byteLength + (code?.byteLength ?? 0))
  const view = new DataView(out.buffer)
  view.setUint8(0, code === undefined ? 0 : 1)
  view.setUint32(1, json.byteLength)
  out.set(json, START_HEADER_BYTES)
  if (code !== undefined) out.set(code, START_HEADER_BYTES + json.byteLength)
  return out
}

/** Splits a start body into the submit JSON (parsed) and the code archive; a malformed one is a message. */
export const decodeStartBody = (bytes: Uint8Array): Either.Either<{ readonly submit: unknown; readonly code: Uint8Array | undefined }, string> => {
  if (bytes.byteLength < START_HEADER_BYTES) {
    return Either.left(`the start body needs a ${START_HEADER_BYTES}-byte header (code flag, submit length), got ${bytes.byteLength} bytes`)
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  const flag = view.getUint8(0)
  if (flag > 1) return Either.left(`the start body's code flag (byte 0) must be 0 or 1, got ${flag}`)
  const length = view.getUint32(1)
  const end = START_HEADER_BYTES + length
  if (end > bytes.byteLength) {
    return Either.left(`the start body says the submit JSON has ${length} bytes, but only ${bytes.byteLength - START_HEADER_BYTES} follow the header`)
  }
  if (flag === 0 && end !== bytes.byteLength) {
    return Either.left(`the start body has ${bytes.byteLength - end} bytes after the submit JSON but its code flag (byte 0) is 0`)
  }
  let submit: unknown
  try {
    submit = JSON.parse(new TextDecoder().decode(bytes.subarray(START_HEADER_BYTES, end)))
  } catch (cause) {
    return Either.left(`the start body's submit JSON is not JSON: ${(cause as Error).message}`)
  }
  return Either.right({ submit, code: flag === 1 ? bytes.subarray(end) : undefined })
}

/** A job state change, as `GET /api/pull` reports it. Timestamps are milliseconds since the epoch. */
export const JobStateEvent = Schema.Struct({
  state: JobStatus,
  timestamp: Schema.Number,
  terminationReason: wireOptional(JobTerminationReason, "termination_reason"),
  terminationMessage: wireOptional(Schema.String, "termination_message"),
  exitStatus: wireOptional(Schema.Int, "exit_status")
})
export type JobStateEvent = typeof JobStateEvent.Type

/** A chunk of output. On the wire `message` is base64, as upstream (bytes, not text). */
export const LogEvent = Schema.Struct({
  timestamp: Schema.Number,
  message: Schema.Uint8ArrayFromBase64
})
export type LogEvent = typeof LogEvent.Type

/** The answer of `GET /api/pull?timestamp=`: everything after that timestamp. */
export const PullResponse = Schema.Struct({
  jobStates: wire(Schema.Array(JobStateEvent), "job_states"),
  jobLogs: wire(Schema.Array(LogEvent), "job_logs"),
  runnerLogs: wire(Schema.Array(LogEvent), "runner_logs"),
  /** The cursor for the next pull: the newest timestamp included in this answer. */
  lastUpdated: wire(Schema.Number, "last_updated"),
  /** More events are waiting (the answer was cut at its size limit). */
  hasMore: wire(Schema.Boolean, "has_more")
})
export type PullResponse = typeof PullResponse.Type

/** The body of `POST /api/stop`. */
export const StopBody = Schema.Struct({ abort: Schema.optionalWith(Schema.Boolean, { default: () => false }) })

/** The answer of `GET /api/metrics`, with the upstream field names plus the CPU share. */
export interface RunnerMetrics {
  readonly timestamp_micro: number
  readonly cpu_usage_micro: number
  /** CPU used since the previous metrics call, in percent of one core. */
  readonly cpu_percent: number
  readonly memory_usage_bytes: number
  readonly memory_working_set_bytes: number
  readonly gpus: ReadonlyArray<{ readonly gpu_memory_usage_bytes: number; readonly gpu_util_percent: number }>
}

/** Replaces `${{ secrets.NAME }}` in env values; a missing secret is an error naming it. */
export const interpolateSecrets = (
  env: Readonly<Record<string, string>>,
  secrets: Readonly<Record<string, string>>
): Either.Either<Record<string, string>, string> =>
  Either.map(SecretReferences.interpolateSpec({ env }, secrets), (done) => ({ ...done.env }))

/** The environment every job gets from the runner, before its own env (which wins). */
export const dstackEnv = (body: SubmitBody): Record<string, string> => {
  const spec = body.jobSpec
  const cluster = body.clusterInfo
  const nodes = cluster.jobIps.length > 0 ? cluster.jobIps.length : spec.jobsPerReplica
  const runName = body.run.runName ?? body.run.runSpec?.runName ?? ""
  const repoId = body.run.repoId ?? body.run.runSpec?.repoId ?? ""
  return {
    DSTACK_RUN_NAME: runName,
    DSTACK_REPO_ID: repoId,
    DSTACK_NODES_NUM: String(nodes),
    DSTACK_NODE_RANK: String(spec.jobNum),
    DSTACK_MASTER_NODE_IP: cluster.masterJobIp,
    DSTACK_NODES_IPS: cluster.jobIps.join("\n"),
    DSTACK_GPUS_PER_NODE: String(cluster.gpusPerJob),
    DSTACK_GPUS_NUM: String(cluster.gpusPerJob * nodes)
  }
}

/**
 * The one place a submitted job becomes what an executor runs. Instance mounts become host
 * mounts; network volumes are the backend's business and are left out here.
 */
export const toExecutionSpec = (
  body: SubmitBody,
  repoDir: string
): Either.Either<ExecutionSpec, string> =>
  // Secrets go into the env and registry credentials here, in memory, and nowhere else.
  Either.map(SecretReferences.interpolateSpec(body.jobSpec, body.secrets), ({ env: jobEnv, registryAuth }): ExecutionSpec => {
    const spec = body.jobSpec
    const ports = [...new Set([...spec.appSpecs.map((a) => a.port), ...(spec.servicePort ? [spec.servicePort] : [])])]
    const gpuCount = body.clusterInfo.gpusPerJob > 0 ? body.clusterInfo.gpusPerJob : spec.requirements.resources.gpu.count.min ?? 0
    const shmSizeGb = spec.shmSize ?? spec.requirements.resources.shmSize
    const mounts = spec.volumes.flatMap((v) =>
      "instancePath" in v ? [{ hostPath: v.instancePath, containerPath: v.path }] : []
    )
    return {
      commands: spec.commands,
      ...(spec.entrypoint ? { entrypoint: spec.entrypoint } : {}),
      env: { ...dstackEnv(body), ...jobEnv },
      ...(spec.workingDir ? { workingDir: spec.workingDir } : {}),
      repoDir,
      ...(spec.imageName ? { image: spec.imageName } : {}),
      ...(registryAuth ? { registryAuth: { username: registryAuth.username, password: registryAuth.password } } : {}),
      ...(spec.user ? { user: spec.user } : {}),
      privileged: spec.privileged,
      ports: ports.map((containerPort) => ({ containerPort })),
      ...(shmSizeGb ? { shmSizeBytes: Math.round(shmSizeGb * 1024 ** 3) } : {}),
      mounts,
      gpus: gpuCount,
      labels: { "dstack-ts.job": spec.jobName }
    }
  })
