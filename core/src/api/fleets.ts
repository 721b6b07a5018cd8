/**
 * The wire contract of the fleets routes (upstream names and shapes), shared by the server and
 * the client: `/api/project/{p}/fleets/{list,get,get_plan,apply,delete,delete_instances}` and
 * the global `/api/fleets/list`. `include_imported` (upstream's fleets shared by other projects) is
 * accepted: fleets are not shared between projects here, so the list is the same either way.
 */
import { Schema } from "effect"
import { Fleet, FleetPlan, FleetSpec } from "../domain/Fleet.ts"

const key = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.propertySignature(schema).pipe(Schema.fromKey(wire))
const optionalKey = <S extends Schema.Schema.Any>(schema: S, wire: string) => Schema.optional(schema).pipe(Schema.fromKey(wire))

export const ListFleetsRequest = Schema.Struct({
  projectName: optionalKey(Schema.NullOr(Schema.String), "project_name"),
  onlyActive: Schema.optionalWith(Schema.Boolean, { default: () => false }).pipe(Schema.fromKey("only_active")),
  includeImported: optionalKey(Schema.Boolean, "include_imported"),
  prevCreatedAt: optionalKey(Schema.NullOr(Schema.Date), "prev_created_at"),
  prevId: optionalKey(Schema.NullOr(Schema.String), "prev_id"),
  limit: Schema.optionalWith(Schema.Int.pipe(Schema.between(0, 100)), { default: () => 100 }),
  ascending: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
export const ListProjectFleetsRequest = Schema.Struct({ includeImported: optionalKey(Schema.Boolean, "include_imported") })
export const GetFleetRequest = Schema.Struct({ name: Schema.optional(Schema.NullOr(Schema.String)), id: Schema.optional(Schema.NullOr(Schema.String)) })
export const GetFleetPlanRequest = Schema.Struct({ spec: FleetSpec })
export const ApplyFleetPlanInput = Schema.Struct({
  spec: FleetSpec,
  currentResource: optionalKey(Schema.NullOr(Schema.Unknown), "current_resource")
})
export const ApplyFleetPlanRequest = Schema.Struct({
  plan: ApplyFleetPlanInput,
  force: Schema.optionalWith(Schema.Boolean, { default: () => false })
})
export const DeleteFleetsRequest = Schema.Struct({ names: Schema.Array(Schema.String) })
export const DeleteFleetInstancesRequest = Schema.Struct({
  name: Schema.String,
  instanceNums: key(Schema.Array(Schema.Int), "instance_nums")
})

export { Fleet, FleetPlan, FleetSpec }
export const FleetList = Schema.Array(Fleet)
