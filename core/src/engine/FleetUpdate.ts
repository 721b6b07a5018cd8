/**
 * Re-applying an SSH fleet in place (upstream's rules): only `ssh_config.hosts` may change.
 * Hosts are matched by hostname: a new one becomes a `pending` instance (provisioned by the
 * fleet processor), a removed one's instance goes `terminating` (its runner and files are
 * removed from the host), the others are left as they are. A host whose settings changed,
 * any other changed key, or a removed host that is running a job refuses the whole update,
 * saying why; nothing is changed then.
 */
import { Data, Effect, Either, Schema } from "effect"
import { FleetConfiguration } from "../domain/Configuration.ts"
import { Fleet, type FleetSpec } from "../domain/Fleet.ts"
import { Instance } from "../domain/Instance.ts"
import type * as Backend from "../ports/Backend.ts"
import { decodeDocument, type StateStoreError, type StateStoreService, type StoredDocument } from "../ports/StateStore.ts"
import { hostInstance, LIVE_INSTANCE_STATUSES } from "./Fleets.ts"
import { REMOTE_HOST_FIELD } from "./RemoteAccess.ts"

const encodeConfiguration = Schema.encodeSync(FleetConfiguration)
const encodeInstance = Schema.encodeSync(Instance)
const encodeFleet = Schema.encodeSync(Fleet)
const readInstance = decodeDocument("instance", Instance)
const readFleet = decodeDocument("fleet", Fleet)

/** Why a fleet cannot be updated in place (a 400 for the API). */
export class FleetUpdateRefused extends Data.TaggedError("FleetUpdateRefused")<{ readonly message: string }> {}

/** The hosts a re-applied fleet adds and removes, by hostname. */
export interface HostChanges {
  readonly added: ReadonlyArray<string>
  readonly removed: ReadonlyArray<string>
}

/** A value as JSON with object keys sorted, for comparing encoded configurations. */
const canonical = (value: unknown): string =>
  JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : v)

type Encoded = Record<string, unknown>

/** A host entry as compared: its `identity_file`s left out (the key itself is in `ssh_key`). */
const hostEntry = (host: unknown): Encoded => {
  const h: Encoded = typeof host === "string" ? { hostname: host } : { ...(host as Encoded) }
  delete h.identity_file
  if (h.proxy_jump !== undefined && h.proxy_jump !== null) {
    const jump = { ...(h.proxy_jump as Encoded) }
    delete jump.identity_file
    h.proxy_jump = jump
  }
  return h
}

/**
 * What re-applying `next` over `current` changes, or why it cannot be done in place.
 *
 * @example
 * hostChanges(current, next) // Right({ added: ["10.0.0.4"], removed: ["10.0.0.2"] })
 */
export const hostChanges = (current: FleetConfiguration, next: FleetConfiguration): Either.Either<HostChanges, string> => {
  const a = encodeConfiguration(current) as Encoded
  const b = encodeConfiguration(next) as Encoded
  const changed = [...new Set([...Object.keys(a), ...Object.keys(b)])]
    .filter((k) => k !== "ssh_config" && canonical(a[k]) !== canonical(b[k]))
  const sshA = (a.ssh_config ?? {}) as Encoded
  const sshB = (b.ssh_config ?? {}) as Encoded
  if (a.ssh_config === undefined || b.ssh_config === undefined) changed.push("ssh_config")
  else {
    for (const k of new Set([...Object.keys(sshA), ...Object.keys(sshB)])) {
      if (k !== "hosts" && canonical(sshA[k]) !== canonical(sshB[k])) changed.push(`ssh_config.${k}`)
    }
  }
  if (changed.length > 0) {
    return Either.left(`only ssh_config.hosts can change in place (hosts added or removed), but ${changed.sort().join(", ")} changed: delete the fleet and apply it again`)
  }
  const byName = (hosts: unknown) => new Map(((hosts ?? []) as Array<unknown>).map(hostEntry).map((h) => [String(h.hostname), h]))
  const before = byName(sshA.hosts)
  const after = byName(sshB.hosts)
  const altered = [...before.keys()].filter((h) => after.has(h) && canonical(before.get(h)) !== canonical(after.get(h)))
  if (altered.length > 0) {
    return Either.left(
      `the settings of host ${altered.join(", ")} changed, which cannot be updated in place: remove the host in one apply and add it back in the next, or delete the fleet and apply it again`
    )
  }
  return Either.right({ added: [...after.keys()].filter((h) => !before.has(h)), removed: [...before.keys()].filter((h) => !after.has(h)) })
}

/**
 * Updates the fleet in `row` to `spec` (`hosts`: the new spec's hosts as the server dials them):
 * removed hosts' instances go `terminating`, added hosts get `pending` instances numbered after
 * the highest number in use, the stored spec is replaced. Refused, with nothing changed, when a
 * removed host runs a job or is being provisioned.
 */
export const updateSshFleet = (
  store: StateStoreService,
  row: StoredDocument,
  spec: FleetSpec,
  hosts: ReadonlyArray<Backend.RemoteHost>,
  changes: HostChanges
): Effect.Effect<Fleet, StateStoreError | FleetUpdateRefused> =>
  Effect.gen(function*() {
    const fleet = yield* readFleet(row)
    const rows = yield* store.instances.list({ parentIds: [row.id], statuses: [...LIVE_INSTANCE_STATUSES] })
    const live = yield* Effect.forEach(rows, (r) => Effect.map(readInstance(r), (instance) => ({ row: r, instance })))
    const leaving = live.filter(({ instance }) => changes.removed.includes(instance.hostname ?? "") && instance.status !== "terminating")
    const refuse = (why: ReadonlyArray<string>) =>
      Effect.fail(new FleetUpdateRefused({ message: `Fleet ${fleet.name} cannot remove ${why.join(", ")}; nothing was changed` }))
    const inUse = leaving.filter(({ instance }) => instance.status === "busy" || instance.status === "provisioning")
    if (inUse.length > 0) {
      return yield* refuse(inUse.map(({ instance }) =>
        instance.status === "busy"
          ? `host ${instance.hostname} (instance ${instance.instanceNum}): it runs ${instance.jobName ?? "a job"}, stop that run first`
          : `host ${instance.hostname} (instance ${instance.instanceNum}): it is being provisioned, apply again once it is idle`
      ))
    }
    // Leased, so that no job takes a leaving host between this check and the update.
    const leases: Array<{ id: string; token: string }> = []
    const releaseAll = Effect.forEach(leases, (l) => store.instances.release(l.id, l.token).pipe(Effect.ignore), { discard: true })
    return yield* Effect.gen(function*() {
      for (const { instance } of leaving) {
        const got = yield* store.instances.claim({ filter: { ids: [instance.id], statuses: ["idle", "pending"] }, owner: "api", leaseMs: 30_000 })
        if (got.length === 0) return yield* refuse([`host ${instance.hostname} (instance ${instance.instanceNum}): it has just taken a job, stop that run first`])
        leases.push({ id: instance.id, token: got[0].lease!.token })
      }
      const now = new Date()
      let next = Math.max(-1, ...live.map(({ instance }) => instance.instanceNum)) + 1
      const added = changes.added.map((name) => hosts.find((h) => h.hostname === name)!).map((host) => ({
        host,
        instance: hostInstance({ id: fleet.id, name: fleet.name, project: row.project }, host, next++, now)
      }))
      return yield* store.withTransaction(Effect.gen(function*() {
        for (const [i, { instance }] of leaving.entries()) {
          const current = yield* store.instances.get(instance.id)
          const doc = { ...(current.doc as Encoded), ...encodeInstance(new Instance({ ...(yield* readInstance(current)), status: "terminating", terminationReason: "terminated_by_user" })) }
          yield* store.instances.update(instance.id, { status: "terminating", doc }, { lease: leases[i].token })
        }
        for (const { host, instance } of added) {
          yield* store.instances.insert({
            id: instance.id,
            project: row.project,
            name: instance.name,
            status: instance.status,
            parentId: fleet.id,
            userName: row.userName ?? "",
            submittedAt: now,
            doc: { ...encodeInstance(instance), [REMOTE_HOST_FIELD]: host }
          })
        }
        // Writing the fleet wakes the fleet processor.
        const updated = new Fleet({ ...fleet, spec, instances: [] }, { disableValidation: true })
        yield* store.fleets.update(row.id, { doc: encodeFleet(updated) })
        return updated
      }))
    }).pipe(Effect.ensuring(releaseAll))
  })
