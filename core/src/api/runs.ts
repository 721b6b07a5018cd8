/**
 * The wire contract of the runs and logs routes, shared by the server and the client:
 * request and response schemas with the upstream snake_case field names.
 */
import { Schema } from "effect"
import { Run, RunSpec } from "../domain/Run.ts"
import { RunPlan } from "../domain/RunPlan.ts"

const key = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(wire))
const optionalKey = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.optional(schema).pipe(Schema.fromKey(wire))

/** A run name: lowercase letters, digits and dashes, starting with a letter (upstream's rule). */
export const RunName = Schema.String.pipe(
  Schema.pattern(/^[a-z][a-z0-9-]{1,40}$/, {
    message: () => "a run name is 2–41 lowercase letters, digits or '-', starting with a letter"
  })
)

export const GetPlanRequest = Schema.Struct({
  runSpec: key(RunSpec, "run_spec"),
  /** At most this many offers per job in the plan (upstream's `max_offers`; the default limit otherwise). */
  maxOffers: optionalKey(Schema.Int.pipe(Schema.nonNegative()), "max_offers"),
  /**
   * Upstream's `dstack offer` asks for a plan only to show its offers. A plan here is the same
   * either way (offers and the run it would replace), so the flag changes nothing.
   */
  forOffersOnly: optionalKey(Schema.Boolean, "for_offers_only")
})

export const ApplyPlanInput = Schema.Struct({
  runSpec: key(RunSpec, "run_spec"),
  currentResource: optionalKey(Schema.NullOr(Schema.Unknown), "current_resource")
})
export const ApplyRequest = Schema.Struct({
  plan: ApplyPlanInput,
  force: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
/** The older one-step submission (upstream `runs/submit`). */
export const SubmitRequest = Schema.Struct({ runSpec: key(RunSpec, "run_spec") })

export const GetRunRequest = Schema.Struct({
  runName: optionalKey(Schema.String, "run_name"),
  id: Schema.optional(Schema.String)
})

export const ListRunsRequest = Schema.Struct({
  projectName: optionalKey(Schema.NullOr(Schema.String), "project_name"),
  repoId: optionalKey(Schema.NullOr(Schema.String), "repo_id"),
  username: Schema.optional(Schema.NullOr(Schema.String)),
  onlyActive: Schema.optionalWith(Schema.Boolean, { default: () => false }).pipe(Schema.fromKey("only_active")),
  prevSubmittedAt: optionalKey(Schema.NullOr(Schema.Date), "prev_submitted_at"),
  prevRunId: optionalKey(Schema.NullOr(Schema.String), "prev_run_id"),
  limit: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 1000)), { default: () => 100 }),
  ascending: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  /** Each job with only its latest this many submissions (upstream's `job_submissions_limit`). */
  jobSubmissionsLimit: optionalKey(Schema.Int.pipe(Schema.nonNegative()), "job_submissions_limit")
})

export const StopRunsRequest = Schema.Struct({
  runsNames: key(Schema.Array(Schema.String), "runs_names"),
  abort: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
export const DeleteRunsRequest = Schema.Struct({ runsNames: key(Schema.Array(Schema.String), "runs_names") })

export { Run, RunPlan }
export const RunList = Schema.Array(Run)
export const Empty = Schema.Struct({})

// ---------------------------------------------------------------------------------------------
// Logs

export const LogSource = Schema.Literal("stdout", "stderr", "runner")

export const PollLogsRequest = Schema.Struct({
  runName: key(Schema.String, "run_name"),
  /** Defaults to the latest submission of the run's first job. */
  jobSubmissionId: optionalKey(Schema.NullOr(Schema.String), "job_submission_id"),
  startTime: optionalKey(Schema.NullOr(Schema.Date), "start_time"),
  endTime: optionalKey(Schema.NullOr(Schema.Date), "end_time"),
  descending: Schema.optionalWith(Schema.Boolean, { default: () => false }),
  nextToken: optionalKey(Schema.NullOr(Schema.String), "next_token"),
  limit: Schema.optionalWith(Schema.Int.pipe(Schema.between(1, 1000)), { default: () => 1000 }),
  diagnose: Schema.optionalWith(Schema.Boolean, { default: () => false })
})

/**
 * One log event; `message` is the text the job wrote (UTF-8, invalid bytes replaced), or for
 * upstream's client (a request with `X-API-VERSION`) its bytes in base64, as upstream sends them.
 */
export const LogEventWire = Schema.Struct({
  timestamp: Schema.Date,
  logSource: key(LogSource, "log_source"),
  message: Schema.String
})

export const JobSubmissionLogs = Schema.Struct({
  logs: Schema.Array(LogEventWire),
  nextToken: optionalKey(Schema.String, "next_token")
})
