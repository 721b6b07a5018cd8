/**
 * What the client needs from its runtime beyond `fetch`: reading `~/.dstack/config.yml` and
 * forwarding a run's ports to this machine. A browser has neither, so the browser entry
 * (`index.ts`) leaves them out and the calls that need them say so; the Node.js/Deno entry
 * (`node.ts`) installs both before anything else runs.
 */
import type { Attachment } from "./Attach.ts"
import type { resolveFromConfigFile } from "./ConfigFile.ts"
import type { Run as RunEntity } from "@dstack-ts/core/wire"
import { ClientConfigError } from "./ClientError.ts"

export interface ClientPlatform {
  readonly resolveFromConfigFile?: typeof resolveFromConfigFile
  readonly attach?: (run: RunEntity) => Promise<Attachment>
}

let installed: ClientPlatform = {}

/** Called once by the Node.js/Deno entry. */
export const installPlatform = (platform: ClientPlatform): void => {
  installed = { ...installed, ...platform }
}

/** The runtime's config-file reader, or a ClientConfigError saying what to pass instead. */
export const configFileReader = (): typeof resolveFromConfigFile => {
  if (installed.resolveFromConfigFile === undefined) {
    throw new ClientConfigError({
      reason: "NoConfig",
      message: "this runtime cannot read ~/.dstack/config.yml (a browser): pass serverUrl, userToken and projectName"
    })
  }
  return installed.resolveFromConfigFile
}

/** The runtime's port forwarder, or an Error saying that this runtime has none. */
export const portForwarder = (): NonNullable<ClientPlatform["attach"]> => {
  if (installed.attach === undefined) {
    throw new Error("attaching to a run forwards ports to this machine, which a browser cannot do: use the CLI or the SDK on Node.js or Deno")
  }
  return installed.attach
}
