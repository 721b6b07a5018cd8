/**
 * A project's services as the server's proxy sees them (`/api/project/{p}/services/get` and
 * `/list`): replicas in rotation, traffic, and a rolling deployment's progress.
 */
import { Effect } from "effect"
import { ServicesApi } from "@dstack-ts/core/wire"
import type { ClientError } from "./ClientError.ts"
import type { DstackApiShape } from "./DstackApi.ts"

export type ServiceInfo = ServicesApi.ServiceInfo

export interface ServicesOps {
  /** `services/get`: one live service; undefined when there is none (or it has finished). */
  readonly get: (runName: string) => Effect.Effect<ServiceInfo | undefined, ClientError>
  /** `services/list`: the project's live services the server follows. */
  readonly list: () => Effect.Effect<ReadonlyArray<ServiceInfo>, ClientError>
}

export const make = (api: DstackApiShape): ServicesOps => ({
  get: (runName) =>
    api.call({ method: "services.get", path: api.projectPath("services/get"), response: ServicesApi.ServiceInfo, idempotent: true }, { run_name: runName }).pipe(
      Effect.map((info): ServiceInfo | undefined => info),
      Effect.catchIf((e) => e.reason === "NotFound", () => Effect.succeed(undefined))
    ),
  list: () => api.call({ method: "services.list", path: api.projectPath("services/list"), response: ServicesApi.ServiceList, idempotent: true })
})
