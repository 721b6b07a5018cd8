/**
 * What a closing server does with the runners its backends started as processes of this
 * machine (the `local` backend's): `stop` them (the default of `server.close()`, so an embedded
 * server or a test leaves nothing behind) or `leave` them running, as a SIGKILL would, so that
 * a restart or an upgrade (`serve`'s SIGTERM/SIGINT handling) does not end running jobs — the
 * server started again on the same state follows them. A backend that owns such processes
 * reads `ServerShutdown` when it is made and asks `runners()` in its finalizer.
 */
import { Context } from "effect"

export type RunnersOnClose = "stop" | "leave"

export interface ServerShutdownService {
  /** What to do with runners, asked when the server closes. */
  readonly runners: () => RunnersOnClose
}

export class ServerShutdown extends Context.Reference<ServerShutdown>()("@dstack-ts/core/ServerShutdown", {
  defaultValue: (): ServerShutdownService => ({ runners: () => "stop" })
}) {}
