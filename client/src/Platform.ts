/**
 * What the client needs from its runtime beyond `fetch`: reading `~/.dstack/config.yml` and
 * forwarding a run's ports to this machine. A browser has neither, so the browser entry
 * (`index.ts`) leaves them out and the calls that need them say so; the Node.js/Deno entry
 * (`node.ts`) installs both before anything else runs.
 */
import type { AttachOptions, AttachServer, Attachment } from "./Attach.ts"
import type { resolveFromConfigFile } from "./ConfigFile.ts"
import type { Run as RunEntity } from "@dstack-ts/core/wire"
import { ClientConfigError } from "./ClientError.ts"

export interface ClientPlatform {
  readonly resolveFromConfigFile?: typeof resolveFromConfigFile
  readonly attach?: (run: RunEntity, server: AttachServer, options?: AttachOptions) => Promise<Attachment>
  /** The texts of a directory's workflow files (`.dstack/workflows.yaml` …) by relative path. */
  readonly readWorkflowFiles?: (dir: string) => Promise<Record<string, string>>
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

/** The runtime's workflow-file reader, or an Error saying to pass the files' texts. */
export const workflowFilesReader = (): NonNullable<ClientPlatform["readWorkflowFiles"]> => {
  if (installed.readWorkflowFiles === undefined) {
    throw new Error("this runtime cannot read .dstack/workflows.yaml (a browser): pass the files' texts as `files`")
  }
  return installed.readWorkflowFiles
}
