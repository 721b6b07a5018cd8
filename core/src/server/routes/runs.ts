// /api/project/{p}/runs/* and /api/runs/list: planning, applying, reading, stopping and
// deleting runs. Applying stores the run with its jobs `submitted` and wakes the engine; the
// engine does the rest.
import { Effect, Option, Schema } from "effect"
import { Job, JobSpec, JobSubmission, latestSubmission } from "../../domain/Job.ts"
import { Run, RunSpec } from "../../domain/Run.ts"
import { jobSpecsFromRunSpec } from "../../domain/RunJobSpecs.ts"
import { JobPlan, RunPlan, makeJobPlan } from "../../domain/RunPlan.ts"
import { isRunStatusFinished } from "../../domain/Status.ts"
import { faultPoint } from "../../internal/Faults.ts"
import * as Api from "../../api/runs.ts"
import { Engine, ACTIVE_RUN_STATUSES } from "../../engine/Engine.ts"
import { explainNoOffers, offersForJob } from "../../engine/Planner.ts"
import { decodeRow, encodeRecord, loadRunByName, modifyRun, presentRun, runWireOf, storedRunCost, storedRunWire, type RunRecord, type RunWire } from "../../engine/RunRecord.ts"
import { InstanceCache } from "../InstanceCache.ts"
import { StateStore, type DocumentBody, type DocumentFilter, type Page, type StateStoreError } from "../../ports/StateStore.ts"
import { Access, authorizeProject } from "../Access.ts"
import { alreadyExists, badRequest, excerpt, fromStateStore, notFound, serverError } from "../ApiError.ts"
import type { ApiError } from "../ApiError.ts"
import * as Eager from "../Eager.ts"
import { encoded, type Encoded, jsonRoute } from "../Route.ts"
import { type SshProxyAddress, SshProxySettings, withConnectionInfo } from "../SshProxyInfo.ts"
import { RunCache } from "../RunCache.ts"
import { withRunMessages } from "../RunMessages.ts"
import { randomRunName } from "./runNames.ts"
import { refuseUnknownRepoType } from "./repoTypes.ts"
import { refuseUnsupported } from "./unsupported.ts"
import { BlobStore } from "../../ports/BlobStore.ts"
import { deleteRunArtifacts } from "../../workflows/Artifacts.ts"
import { checkServiceUpdate, updateService } from "../../services/Deployment.ts"

const runNotFound = (project: string, name: string) => notFound(`Run ${excerpt(name)} does not exist in project ${excerpt(project)}`)

const mapStore = (project: string, name?: string) => (e: StateStoreError): ApiError =>
  e.reason === "NotFound" && name !== undefined ? runNotFound(project, name) : fromStateStore(e)

/** A run as the API shows it: its cost up to now. */
const present = (run: Run): Run => presentRun(run, Date.now())

// The JSON text of each stored run's wire form, by the stored document (rows the caches hold are
// the same objects from one request to the next) and the cost it was made with: a finished
// run's cost no longer moves, so its text is made once; a running one's is made again when its
// cost moved.
const wireTexts = new WeakMap<object, { readonly cost: unknown; readonly json: string; readonly wire: RunWire }>()
const wireText = (doc: unknown, wire: RunWire): string => {
  if (doc === null || typeof doc !== "object") return JSON.stringify(wire)
  const known = wireTexts.get(doc)
  if (known !== undefined && known.cost === wire.cost) return known.json
  const json = JSON.stringify(wire)
  wireTexts.set(doc, { cost: wire.cost, json, wire })
  return json
}

/** The answer made last for a stored document, when its cost has not moved since: nothing to build. */
const knownAnswer = (doc: unknown, now: number): Encoded<RunWire> | undefined => {
  if (doc === null || typeof doc !== "object") return undefined
  const known = wireTexts.get(doc)
  return known !== undefined && known.cost === storedRunCost(doc, now) ? encoded(known.wire, known.json) : undefined
}

/**
 * A page of runs in wire form, with its JSON text made from each run's; undefined when a row
 * was written by an older build (`runPage` decodes and encodes those).
 */
const storedRunPage = (rows: ReadonlyArray<DocumentBody>, now: number) => {
  // A page the run cache holds is the same array from one request to the next: while no run's
  // cost moved, its UTF-8 bytes are sent again (no join, no encoding of ~130 KB per 100 runs).
  const costs: Array<number> = []
  for (const row of rows) {
    const cost = storedRunCost(row.doc, now)
    if (cost === undefined) return undefined
    costs.push(cost)
  }
  let known = pageBytes.get(rows)
  if (known !== undefined && known.costs.every((c, i) => c === costs[i])) {
    // Asked again unchanged: from now on it goes out as bytes.
    if (typeof known.json === "string") pageBytes.set(rows, (known = { ...known, json: textEncoder.encode(known.json) }))
    return encoded(known.wires, known.json)
  }
  const wires: Array<RunWire> = []
  // A page seen for the first time (just read from the store) is made as before, in one
  // JSON.stringify; one whose runs' costs moved, from the texts of the runs that did not.
  let json: string
  if (known === undefined) {
    for (const row of rows) wires.push(storedWire(row.doc, now)!)
    json = JSON.stringify(wires)
  } else {
    const texts: Array<string> = []
    for (const row of rows) {
      const wire = storedWire(row.doc, now)!
      wires.push(wire)
      texts.push(wireText(row.doc, wire))
    }
    json = `[${texts.join(",")}]`
  }
  pageBytes.set(rows, { costs, wires, json })
  return encoded(wires, json)
}

/** A stored run's wire form with upstream's derived fields (RunMessages.ts); undefined for rows of an older build. */
const storedWire = (doc: unknown, now: number): RunWire | undefined => {
  const wire = storedRunWire(doc, now)
  return wire === undefined ? undefined : withRunMessages(wire, doc)
}

/** `runWireOf` with upstream's derived fields. */
const wireOf = (row: DocumentBody, now: number = Date.now()) => Effect.map(runWireOf(row, now), (wire) => withRunMessages(wire))

const textEncoder = new TextEncoder()
const pageBytes = new WeakMap<ReadonlyArray<DocumentBody>, { readonly costs: ReadonlyArray<number>; readonly wires: ReadonlyArray<RunWire>; readonly json: string | Uint8Array }>()

const runPage = (rows: ReadonlyArray<DocumentBody>, now: number) =>
  Effect.suspend(() => {
    const page = storedRunPage(rows, now)
    return page !== undefined ? Effect.succeed(page) : Effect.map(Effect.forEach(rows, (r) => wireOf(r, now)), (all) => encoded(all))
  })

/** A page of wire runs whose jobs keep only their latest `n` submissions. */
const latestSubmissions = <A>(page: Encoded<A>, n: number): Encoded<A> => {
  const runs = (page.json !== undefined ? JSON.parse(typeof page.json === "string" ? page.json : new TextDecoder().decode(page.json)) : page.value) as Array<any>
  return encoded(runs.map((run) => ({
    ...run,
    jobs: (run.jobs ?? []).map((job: any) => ({ ...job, job_submissions: n === 0 ? [] : (job.job_submissions ?? []).slice(-n) }))
  })) as unknown as A)
}

/** Which runs a runs/list request selects, among `projects` (all when undefined). */
const listFilter = (input: typeof Api.ListRunsRequest.Type, projects: ReadonlyArray<string> | undefined): DocumentFilter => ({
  ...(projects ? { projects } : {}),
  ...(input.onlyActive ? { statuses: ACTIVE_RUN_STATUSES } : {}),
  ...(input.username ? { userName: input.username } : {}),
  ...(input.repoId ? { repoId: input.repoId } : {})
})

/** The page a runs/list request asks for. */
const listPage = (input: typeof Api.ListRunsRequest.Type): Page => ({
  limit: input.limit,
  ascending: input.ascending,
  ...(input.prevSubmittedAt ? { prevSubmittedAt: input.prevSubmittedAt } : {}),
  ...(input.prevRunId ? { prevId: input.prevRunId } : {})
})

/** The run's spec with every job's plan: idle instances first, then offers by price. */
const plan = (project: string, user: string, runSpec: RunSpec, maxOffers?: number) =>
  Effect.gen(function* () {
    const config = runSpec.configuration
    const specs = jobSpecsFromRunSpec(runSpec)
    const instances = yield* InstanceCache
    const runs = yield* RunCache
    const idleRows = instances.idle(project)
    const jobPlans = yield* Effect.forEach(specs, (spec) =>
      offersForJob(project, spec.requirements, {
        fleets: config.fleets,
        clusterOnly: spec.jobsPerReplica > 1,
        backends: config.backends,
        regions: config.regions,
        instanceTypes: config.instanceTypes
      }, { idleRows }).pipe(
        Effect.map((offers) => {
          const jp = makeJobPlan(spec, offers.offers, maxOffers)
          return offers.offers.length === 0 ? new JobPlan({ ...jp, noOffersReason: explainNoOffers(offers) }, { disableValidation: true }) : jp
        })
      )
    )
    let current: Run | undefined
    if (runSpec.runName !== undefined) {
      // A finished run (by its status column) is not decoded: it would not be shown.
      const row = yield* runs.findByName(project, runSpec.runName).pipe(Effect.orElseSucceed(() => undefined))
      if (row !== undefined && !isRunStatusFinished(row.status as Run["status"])) {
        const { record } = yield* decodeRow(row)
        if (!isRunStatusFinished(record.run.status)) current = record.run
      }
    }
    // Built from values already decoded and checked: validating them again on construction
    // only costs time (the response is encoded, hence checked, on the way out anyway).
    return new RunPlan(
      {
        projectName: project,
        user,
        runSpec,
        jobPlans,
        ...(current ? { currentResource: present(current) } : {}),
        action: current ? "update" : "create"
      },
      { disableValidation: true }
    )
  }).pipe(
    Effect.mapError((e): ApiError =>
      "_tag" in e && e._tag === "StateStoreError" ? fromStateStore(e) : badRequest(`Planning failed: ${e.message ?? e.reason}`)
    )
  )

/** Picks a name nobody in the project uses for a live run. */
const freeRunName = (project: string) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    for (let i = 0; i < 20; i++) {
      const name = randomRunName()
      const taken = yield* store.runs.getByName(project, name).pipe(Effect.option)
      if (Option.isNone(taken)) return name
    }
    return `run-${crypto.randomUUID().slice(0, 8)}`
  })

/** `submit`, answering the record stored and its encoded form. */
const storeRun = (project: string, user: string, runSpec: RunSpec, force: boolean, patchJobSpec: (spec: JobSpec) => JobSpec) =>
  Effect.gen(function* () {
    const store = yield* StateStore
    const engine = yield* Engine
    let runName = runSpec.runName
    if (runName !== undefined) {
      const check = Schema.decodeUnknownEither(Api.RunName)(runName)
      if (check._tag === "Left") return yield* Effect.fail(badRequest(`run_name: ${check.left.message.split("\n").pop()}`, ["body", "run_spec", "run_name"]))
      const existing = yield* store.runs.getByName(project, runName).pipe(Effect.option)
      if (Option.isSome(existing)) {
        if (ACTIVE_RUN_STATUSES.includes(existing.value.status as any)) {
          if (!force) {
            return yield* Effect.fail(alreadyExists(`Run ${runName} is still ${existing.value.status}; stop it first (dstack stop ${runName}) or pick another name`))
          }
          return yield* Effect.fail(badRequest(`Run ${runName} is still ${existing.value.status}; in-place updates of active runs are not supported yet — stop it first`))
        }
        // A finished run of the same name makes way for the new one, as upstream.
        yield* store.runs.update(existing.value.id, { deleted: true }).pipe(Effect.mapError(fromStateStore))
      }
    } else {
      runName = yield* freeRunName(project)
    }
    const spec = new RunSpec({ ...runSpec, runName, sshKeyPub: yield* sshKeyPubOf(runSpec, user) })
    const now = new Date()
    const jobs = jobSpecsFromRunSpec(spec).map(
      (jobSpec) =>
        new Job({
          jobSpec: patchJobSpec(jobSpec),
          jobSubmissions: [new JobSubmission({ id: crypto.randomUUID(), submissionNum: 0, submittedAt: now, lastProcessedAt: now, status: "submitted" })]
        })
    )
    const run = new Run({ id: crypto.randomUUID(), projectName: project, user, submittedAt: now, lastProcessedAt: now, status: "submitted", runSpec: spec, jobs })
    const record: RunRecord = { run, submittedToRunner: [] }
    const doc = encodeRecord(record)
    const row = yield* store.runs
      .insert({ id: run.id, project, name: runName, status: run.status, userName: user, repoId: spec.repoId, submittedAt: now, doc })
      .pipe(Effect.mapError((e) => (e.reason === "AlreadyExists" ? alreadyExists(`Run ${runName} already exists`) : fromStateStore(e))))
    faultPoint("run.accepted")
    yield* engine.wake(run.id, { version: row.version, record })
    return { run, doc }
  })

/** `storeRun`'s run as the API answers it: the run as stored (encoded once), as runs/get answers it. */
const submitted = ({ doc }: { readonly doc: ReturnType<typeof encodeRecord> }) => encoded(storedWire(doc, Date.now())!)

/**
 * Stores a new run for the spec, its jobs submitted, and wakes the engine. `patchJobSpec`
 * lets the workflow runner add what a configuration does not carry (artifacts).
 */
export const submit = (project: string, user: string, runSpec: RunSpec, force: boolean, patchJobSpec: (spec: JobSpec) => JobSpec = (s) => s) =>
  Effect.map(storeRun(project, user, runSpec, force, patchJobSpec), ({ run }) => present(run))

/**
 * As upstream: a spec without ssh_key_pub gets the user's own key (made on first need), which
 * upstream's CLI compares with the key it attaches with — before a new run is stored, and before
 * an update is compared with the run it updates (whose spec has the key already).
 */
const sshKeyPubOf = (runSpec: RunSpec, user: string): Effect.Effect<string, ApiError, Access> =>
  runSpec.sshKeyPub !== undefined ? Effect.succeed(runSpec.sshKeyPub) : Effect.flatMap(Access, (access) => access.sshPublicKey(user))

/**
 * runs/apply: a plan for an active service of the same name updates it in place (upstream's
 * deployment: replicas roll to the new spec, see services/Deployment.ts); anything else is a
 * new run. Without `force` the plan must name the run it replaces (its `current_resource`).
 */
const applyPlan = (project: string, user: string, plan: typeof Api.ApplyPlanInput.Type, force: boolean) =>
  Effect.gen(function* () {
    const runName = plan.runSpec.runName
    if (runName !== undefined && plan.runSpec.configuration.type === "service") {
      const existing = yield* loadRunByName(project, runName).pipe(
        Effect.map((loaded) => loaded.record.run),
        Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined)),
        Effect.mapError(fromStateStore)
      )
      if (existing !== undefined && !isRunStatusFinished(existing.status) && existing.status !== "terminating" && existing.runSpec.configuration.type === "service") {
        const next = new RunSpec({ ...plan.runSpec, runName, sshKeyPub: yield* sshKeyPubOf(plan.runSpec, user) })
        const check = checkServiceUpdate(existing.runSpec, next)
        if ("refused" in check) return yield* Effect.fail(badRequest(`Cannot update the active service ${runName}: ${check.refused}`, ["body", "plan", "run_spec"]))
        const planned = (plan.currentResource as { readonly id?: unknown } | null | undefined)?.id
        if (!force && planned !== existing.id) {
          return yield* Effect.fail(badRequest(`Failed to apply plan: run ${runName} is active and the plan does not name it as its current resource. Plan again, or use force apply`, ["body", "plan", "current_resource"]))
        }
        return present(yield* updateService(existing.id, next).pipe(Effect.mapError(fromStateStore)))
      }
    }
    return submitted(yield* storeRun(project, user, plan.runSpec, force, (s) => s))
  })

/** What plan and apply refuse before anything else: keys not carried out, repo types nothing handles. */
const refuseRunSpec = (runSpec: RunSpec, loc: ReadonlyArray<string>) =>
  Effect.zipRight(refuseUnsupported(runSpec, loc), refuseUnknownRepoType(runSpec, loc))

/** runs/get's answer for a row. */
const runAnswer = (row: DocumentBody, proxy: SshProxyAddress | undefined) => {
  const now = Date.now()
  if (proxy === undefined) {
    const known = knownAnswer(row.doc, now)
    if (known !== undefined) return Effect.succeed(known)
  }
  const wire = storedWire(row.doc, now)
  if (proxy !== undefined) return Effect.map(wire !== undefined ? Effect.succeed(wire) : wireOf(row), (w) => encoded(withConnectionInfo(w, proxy)))
  return wire !== undefined ? Effect.succeed(encoded(wire, wireText(row.doc, wire))) : Effect.map(wireOf(row), (w) => encoded(w))
}

/** A page of wire runs with `job_connection_info` for the SSH proxy. */
const withProxyInfo = <A>(page: Encoded<A>, proxy: SshProxyAddress): Encoded<A> => {
  const runs = (page.json !== undefined ? JSON.parse(typeof page.json === "string" ? page.json : new TextDecoder().decode(page.json)) : page.value) as Array<unknown>
  return encoded(runs.map((run) => withConnectionInfo(run, proxy)) as unknown as A)
}

export const runRoutes = [
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/get_plan", summary: "Plan a run: the offers for each of its jobs", tag: "runs", access: { project: "user" },
    request: Api.GetPlanRequest, response: RunPlan,
    handler: (input, ctx) => Effect.zipRight(refuseRunSpec(input.runSpec, ["body", "run_spec"]), plan(ctx.projectName!, ctx.principal!.username, input.runSpec, input.maxOffers))
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/apply", summary: "Submit a planned run", tag: "runs", access: { project: "user" },
    request: Api.ApplyRequest, response: Run,
    handler: (input, ctx) => Effect.zipRight(refuseRunSpec(input.plan.runSpec, ["body", "plan", "run_spec"]), applyPlan(ctx.projectName!, ctx.principal!.username, input.plan, input.force))
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/submit", summary: "Submit a run in one step (older clients)", tag: "runs", access: { project: "user" },
    request: Api.SubmitRequest, response: Run,
    handler: (input, ctx) => Effect.zipRight(refuseRunSpec(input.runSpec, ["body", "run_spec"]), Effect.map(storeRun(ctx.projectName!, ctx.principal!.username, input.runSpec, false, (s) => s), submitted))
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/get", summary: "A run by name or id", tag: "runs", access: { project: "user" },
    request: Api.GetRunRequest, response: Run,
    handler: (input, ctx) => {
      const project = ctx.projectName!
      if (input.runName === undefined && input.id === undefined) return Effect.fail(badRequest("Give run_name or id", ["body", "run_name"]))
      // The API's hottest read: answered from the run cache when it can, then with an Effect
      // already resolved (Eager), which the router answers without a fiber.
      const runs = ctx.service(RunCache)
      const row = input.runName !== undefined
        ? Eager.mapError(runs.getByName(project, input.runName), mapStore(project, input.runName))
        : Eager.mapError(runs.get(input.id!), mapStore(project, input.id))
      return Eager.flatMap(row, (row) =>
        row.project !== project ? Effect.fail(runNotFound(project, input.runName ?? input.id!)) : runAnswer(row, ctx.service(SshProxySettings).address)
      )
    },
    rememberInputs: true
  }),
  jsonRoute({
    method: "POST", path: "/api/runs/list", summary: "Runs across the projects you can see, newest first, with keyset pagination", tag: "runs", access: "user",
    request: Api.ListRunsRequest, response: Api.RunList,
    handler: (input, ctx) => {
      // Plain combinators: with the caller's role and the page in memory, nothing here waits.
      const principal = ctx.principal!
      const projects: Effect.Effect<ReadonlyArray<string> | undefined, ApiError, StateStore | Access> = input.projectName
        ? Effect.as(authorizeProject(principal, input.projectName, "user"), [input.projectName])
        : principal.globalRole === "admin"
        ? Effect.succeed(undefined)
        : Effect.flatMap(StateStore, (store) =>
            store.projects.listForUser(principal.username).pipe(
              Effect.map((ps) => ps.map((p) => p.projectName)),
              Effect.mapError(fromStateStore)
            )
          )
      return Effect.flatMap(projects, (ps) =>
        ps !== undefined && ps.length === 0
          ? Effect.succeed(encoded([], "[]"))
          : Effect.flatMap(RunCache, (runs) =>
              runs.listDocs(listFilter(input, ps), listPage(input)).pipe(
                Effect.mapError(fromStateStore),
                Effect.flatMap((rows) => runPage(rows, Date.now())),
                Effect.map((page) => (input.jobSubmissionsLimit === undefined ? page : latestSubmissions(page, input.jobSubmissionsLimit))),
                Effect.map((page) => {
                  const proxy = ctx.service(SshProxySettings).address
                  return proxy === undefined ? page : withProxyInfo(page, proxy)
                })
              )
            )
      )
    },
    rememberInputs: true
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/stop", summary: "Stop runs: gracefully, or at once with abort", tag: "runs", access: { project: "user" },
    request: Api.StopRunsRequest, response: Api.Empty,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const engine = yield* Engine
        for (const name of input.runsNames) {
          const { row, record } = yield* loadRunByName(project, name).pipe(Effect.mapError(mapStore(project, name)))
          if (isRunStatusFinished(record.run.status)) continue
          yield* modifyRun(row.id, (r) => ({ ...r, stopRequest: { abort: input.abort || (r.stopRequest?.abort ?? false) } })).pipe(
            Effect.mapError(mapStore(project, name))
          )
          yield* engine.wake(row.id)
        }
        return {}
      })
  }),
  jsonRoute({
    method: "POST", path: "/api/project/:project_name/runs/delete", summary: "Delete finished runs and their logs", tag: "runs", access: { project: "user" },
    request: Api.DeleteRunsRequest, response: Api.Empty,
    handler: (input, ctx) =>
      Effect.gen(function* () {
        const project = ctx.projectName!
        const store = yield* StateStore
        const loaded = yield* Effect.forEach(input.runsNames, (name) => loadRunByName(project, name).pipe(Effect.mapError(mapStore(project, name))))
        const active = loaded.filter((l) => !isRunStatusFinished(l.record.run.status)).map((l) => l.row.name)
        if (active.length > 0) return yield* Effect.fail(badRequest(`Cannot delete active runs: ${active.join(", ")}; stop them first`, ["body", "runs_names"]))
        for (const { row, record } of loaded) {
          const submissions = record.run.jobs.flatMap((j) => j.jobSubmissions.map((s) => s.id))
          yield* store.logs.delete(project, submissions).pipe(Effect.mapError(fromStateStore))
          // Workflow jobs' artifacts go with their run.
          yield* Effect.flatMap(BlobStore, (blobs) => deleteRunArtifacts(blobs, project, row.id)).pipe(
            Effect.mapError((e) => serverError(`Cannot delete the artifacts of run ${row.name}: ${e.message}`, e))
          )
          yield* store.runs.update(row.id, { deleted: true }).pipe(Effect.mapError(fromStateStore))
        }
        return {}
      })
  })
]

/** The submission whose logs a request means: the given one, else the latest of the first job. */
export const resolveSubmission = (run: Run, jobSubmissionId: string | null | undefined): string | undefined => {
  if (jobSubmissionId) return run.jobs.some((j) => j.jobSubmissions.some((s) => s.id === jobSubmissionId)) ? jobSubmissionId : undefined
  const first = run.jobs[0]
  return first ? latestSubmission(first)?.id : undefined
}
