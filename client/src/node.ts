/**
 * @dstack-ts/client on Node.js and Deno (the default export condition): everything of the
 * browser entry, plus the two things only a machine's runtime can do — read the client config
 * (`~/.dstack/config.yml`, `ClientConfigFile`) and forward a run's ports (`run.attach()`).
 */
import { attach } from "./Attach.ts"
import { resolveFromConfigFile } from "./ConfigFile.ts"
import { installPlatform } from "./Platform.ts"
import { readWorkflowFiles } from "./WorkflowFiles.ts"

installPlatform({ resolveFromConfigFile, attach, readWorkflowFiles })

export * from "./index.ts"
export * as ClientConfigFile from "./ConfigFile.ts"
export { readWorkflowFiles } from "./WorkflowFiles.ts"
