/**
 * Run plans: what `get_plan` answers before a run is applied. For each job, the offers that fit
 * (idle fleet instances first, then backend offers by price), how many there were in all, and
 * the highest price among them; and whether applying creates a run or updates one.
 */
import { Schema } from "effect"
import { wire, wireDefault, wireOptional } from "./internal/wire.ts"
import { JobSpec } from "./Job.ts"
import { InstanceOffer } from "./Offer.ts"
import { Run, RunSpec } from "./Run.ts"

/** How many offers a plan shows per job (upstream). */
export const PLAN_OFFERS_LIMIT = 50

/** The offers for one job. */
export class JobPlan extends Schema.Class<JobPlan>("@dstack-ts/core/JobPlan")({
  jobSpec: wire(JobSpec, "job_spec"),
  /** The best offers, at most `PLAN_OFFERS_LIMIT`. */
  offers: Schema.Array(InstanceOffer),
  /** How many offers fit in all, beyond those shown. */
  totalOffers: wire(Schema.Int, "total_offers"),
  /** The highest price among the offers, `null` when there are none. */
  maxPrice: wireDefault(Schema.NullOr(Schema.Number), "max_price", () => null),
  /** When no offer fits: which requirements excluded what, in words a user can act on. */
  noOffersReason: wireOptional(Schema.String, "no_offers_reason")
}) {}

/** Whether applying the plan creates a new run or updates the one of the same name. */
export const ApplyAction = Schema.Literal("create", "update")
export type ApplyAction = typeof ApplyAction.Type

/** The plan of a run. */
export class RunPlan extends Schema.Class<RunPlan>("@dstack-ts/core/RunPlan")({
  projectName: wire(Schema.String, "project_name"),
  user: Schema.String,
  runSpec: wire(RunSpec, "run_spec"),
  /** The run spec after server-side defaults, when they changed anything. */
  effectiveRunSpec: wireOptional(RunSpec, "effective_run_spec"),
  jobPlans: wire(Schema.Array(JobPlan), "job_plans"),
  /** The run this plan would update, for `update`. */
  currentResource: wireOptional(Run, "current_resource"),
  action: wireDefault(ApplyAction, "action", () => "create" as const)
}) {}

/**
 * A job plan from every offer that fits: keeps the first `limit` (already in order), counts
 * them all and takes the highest price.
 */
export const makeJobPlan = (
  jobSpec: JobSpec,
  offers: ReadonlyArray<InstanceOffer>,
  limit: number = PLAN_OFFERS_LIMIT
): JobPlan =>
  new JobPlan({
    jobSpec,
    offers: offers.slice(0, limit),
    totalOffers: offers.length,
    maxPrice: offers.length === 0 ? null : Math.max(...offers.map((offer) => offer.price))
  })
