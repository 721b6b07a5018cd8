// `dstack apply` of a fleet file: reads the keys on the client, shows the plan (one row per
// host, or the hosts added and removed when the fleet exists), creates or updates the fleet and
// follows its hosts until each is provisioned or failed.
import { dirname, resolve } from "node:path"
import type { FleetConfiguration } from "@dstack-ts/core"
import { CliError, clientFor, confirmOrFail } from "./context.ts"
import { fleetRows } from "./commands/fleet.ts"
import { print, success, table, withSpinner } from "./ui.ts"
import { withKeys } from "./fleetKeys.ts"

export const applyFleet = async (configuration: FleetConfiguration, file: string, options: { readonly yes?: boolean; readonly detach?: boolean }) => {
  const withSshKeys = await withKeys(configuration, dirname(resolve(file)))
  const client = await clientFor()
  const plan = await withSpinner("Getting the fleet plan", () => client.fleets.getPlan(withSshKeys))
  const name = plan.spec.configuration.name ?? "a fleet"
  const existing = plan.currentResource
  if (existing !== undefined && plan.action !== "update") {
    throw new CliError(`Fleet ${name} already exists (${existing.status}) and only its hosts can change in place: \`dstack fleet delete ${name}\` first to re-create it`)
  }
  if (existing !== undefined) {
    // An update: the hosts added and removed (by hostname, as the server matches them).
    const before = existing.instances.map((i) => i.hostname ?? "")
    const after = plan.offers.map((o) => o.instance.name)
    const rows = [
      ...after.filter((h) => !before.includes(h)).map((h) => ["add", h]),
      ...before.filter((h) => !after.includes(h)).map((h) => ["remove", h])
    ]
    print(`Project ${plan.projectName}, user ${plan.user}: update fleet ${name}: ${rows.length === 0 ? "no hosts change" : `${rows.length} host(s) change`}`)
    if (rows.length > 0) print(table(["CHANGE", "HOST"], rows))
    await confirmOrFail(options.yes, "Update the fleet?")
  } else {
    print(`Project ${plan.projectName}, user ${plan.user}: create fleet ${name}, placement ${configuration.placement ?? "any"}, ${plan.totalOffers} host(s)`)
    print(table(["#", "HOST", "BACKEND"], plan.offers.map((o, i) => [String(i), o.instance.name, o.backend])))
    await confirmOrFail(options.yes, "Create the fleet?")
  }
  const fleet = await client.fleets.apply(withSshKeys)
  success(existing !== undefined ? `Fleet ${fleet.name} updated` : `Fleet ${fleet.name} created: its hosts are being provisioned`)
  if (options.detach) return
  // Follow the hosts until each is idle or failed.
  const started = Date.now()
  let current = fleet
  while (Date.now() - started < 15 * 60_000) {
    current = (await client.fleets.get(fleet.name)) ?? current
    if (current.instances.every((i) => i.status !== "pending" && i.status !== "provisioning")) break
    await new Promise((r) => setTimeout(r, 500))
  }
  print(table(["FLEET", "INSTANCE", "HOST", "RESOURCES", "BACKEND", "STATUS"], fleetRows([current])))
  const failed = current.instances.filter((i) => i.status === "terminated")
  if (failed.length > 0) throw new CliError(`${failed.length} of ${current.instances.length} host(s) could not be provisioned: ${failed.map((i) => `${i.hostname}: ${i.terminationReasonMessage ?? i.terminationReason}`).join("; ")}`)
}
