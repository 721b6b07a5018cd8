/**
 * How the engine reaches instances of SSH fleets (the `remote` backend): the credentials of a
 * host are kept in its instance row (`remote_host`, never part of an API answer) and become
 * the `ssh` of the `RunnerTarget` the transport dials. Other backends' targets come from the
 * provisioning data alone.
 */
import { Effect } from "effect"
import type { JobProvisioningData } from "../domain/Job.ts"
import type { RemoteHost } from "../ports/Backend.ts"
import * as RunnerTransport from "../ports/RunnerTransport.ts"
import type { StateStoreService } from "../ports/StateStore.ts"

/** The backend type of SSH fleet hosts (upstream's name). */
export const REMOTE_BACKEND = "remote"

/** The field of an instance row that holds its host's credentials. */
export const REMOTE_HOST_FIELD = "remote_host"

/** The host record of an instance row, if it is an SSH fleet host. */
export const remoteHostOf = (doc: unknown): RemoteHost | undefined => {
  const host = doc !== null && typeof doc === "object" ? (doc as Record<string, unknown>)[REMOTE_HOST_FIELD] : undefined
  return host !== null && typeof host === "object" ? (host as RemoteHost) : undefined
}

/** SSH access to a host from its record. */
export const sshAccessOf = (host: RemoteHost): RunnerTransport.SshAccess => ({
  user: host.user,
  port: host.port,
  privateKey: host.privateKey,
  ...(host.hostKey !== undefined ? { hostKey: host.hostKey } : {}),
  ...(host.proxyJump !== undefined
    ? {
      proxyJump: {
        hostname: host.proxyJump.hostname,
        user: host.proxyJump.user,
        port: host.proxyJump.port,
        privateKey: host.proxyJump.privateKey,
        ...(host.proxyJump.hostKey !== undefined ? { hostKey: host.proxyJump.hostKey } : {})
      }
    }
    : {})
})

/** The target from provisioning data alone. */
export const baseTarget = (pd: JobProvisioningData): RunnerTransport.RunnerTarget => ({
  hostname: pd.hostname ?? "",
  runnerPort: pd.runnerPort ?? 10999,
  ...(pd.sshPort !== undefined ? { sshPort: pd.sshPort } : {}),
  username: pd.username,
  instanceId: pd.instanceId
})

/**
 * Targets for runners: a backend's own SSH access where it gives one (`backendAccess`, which
 * makes the project's backend first: see `Compute.target`);
 * an SSH fleet host's (provisioning data with backend `remote`, whose
 * `instanceId` is the server's instance id) carries the host's SSH access, read once from its
 * instance row and kept (a host's credentials and recorded host key are written before its
 * provisioning data and do not change while its instance lives).
 */
export const makeTargets = (
  store: StateStoreService,
  backendAccess: (project: string, pd: JobProvisioningData) => Effect.Effect<RunnerTransport.SshAccess | undefined, RunnerTransport.RunnerTransportError> = () =>
    Effect.succeed(undefined)
) => {
  const known = new Map<string, RunnerTransport.SshAccess>()
  return (project: string, pd: JobProvisioningData): Effect.Effect<RunnerTransport.RunnerTarget, RunnerTransport.RunnerTransportError> => {
    if (pd.backend !== REMOTE_BACKEND) {
      return Effect.map(backendAccess(project, pd), (ssh) => (ssh === undefined ? baseTarget(pd) : { ...baseTarget(pd), ssh }))
    }
    const cached = known.get(pd.instanceId)
    if (cached !== undefined) return Effect.succeed({ ...baseTarget(pd), ssh: cached })
    return store.instances.get(pd.instanceId).pipe(
      Effect.mapError((e) =>
        new RunnerTransport.RunnerTransportError({ module: "Compute", method: "target", reason: e.reason === "NotFound" ? "NotFound" : "Transport", message: `the SSH access of instance ${pd.instanceId} cannot be read: ${e.message ?? e.reason}`, cause: e })
      ),
      Effect.flatMap((row) => {
        const host = remoteHostOf(row.doc)
        if (host === undefined) {
          return RunnerTransport.fail("Compute", "target", "Invalid", `instance ${pd.instanceId} of backend remote has no SSH access recorded`)
        }
        const access = sshAccessOf(host)
        known.set(pd.instanceId, access)
        return Effect.succeed({ ...baseTarget(pd), ssh: access })
      })
    )
  }
}
