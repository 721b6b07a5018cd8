/**
 * A backend plugin for an imaginary cloud, "Fake Cloud", written as a template for real ones.
 * Its catalog offers two instance types in two regions at different prices; an "instance" is
 * the server's runner build started as a process on 127.0.0.1 with core's RunnerLaunch (the
 * same calls a real backend makes, over SSH, on a VM), so jobs really run. Each step says what
 * a real cloud backend would do instead.
 */
import { randomUUID } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import {
  Backend,
  type BackendFactory,
  definePlugin,
  InstanceDisk,
  InstanceOffer,
  InstanceResources,
  InstanceType,
  JobProvisioningData,
  RunnerLaunch
} from "@dstack-ts/core"
import { Effect, ParseResult, Schema } from "effect"

const TYPE = "fake-cloud"
const MODULE = "FakeCloudBackend"

/** The regions this cloud has. A real backend would list them from its API or SDK. */
export const REGIONS = ["us-east", "eu-west"] as const

/**
 * The plugin's section of the server configuration, as it appears in YAML (snake_case):
 * `{ type: fake-cloud, regions: [eu-west], api_key: ... }`. A real backend would take
 * credentials here; `regions` limits where it looks for offers.
 */
export const FakeCloudConfig = Schema.Struct({
  type: Schema.optional(Schema.Literal(TYPE)),
  regions: Schema.optional(Schema.Array(Schema.Literal(...REGIONS))),
  apiKey: Schema.optional(Schema.String).pipe(Schema.fromKey("api_key")),
  /** The runner build to start; default the server build's (`createServer({ runner: { entry } })`). */
  runnerEntry: Schema.optional(Schema.NonEmptyString).pipe(Schema.fromKey("runner_entry"))
})

/** Two instance types; the price list below gives each a price per region. */
const instanceTypes = {
  "fc.small": new InstanceType({
    name: "fc.small",
    resources: new InstanceResources({
      cpus: 2,
      memoryMib: 4 * 1024,
      gpus: [],
      spot: false,
      disk: new InstanceDisk({ sizeMib: 50 * 1024 }),
      description: "2 vCPU, 4 GB"
    })
  }),
  "fc.large": new InstanceType({
    name: "fc.large",
    resources: new InstanceResources({
      cpus: 8,
      memoryMib: 32 * 1024,
      gpus: [],
      spot: false,
      disk: new InstanceDisk({ sizeMib: 200 * 1024 }),
      description: "8 vCPU, 32 GB"
    })
  })
}

/** USD per hour by region and instance type: eu-west is a little dearer than us-east. */
export const PRICES: Readonly<Record<(typeof REGIONS)[number], Readonly<Record<keyof typeof instanceTypes, number>>>> = {
  "us-east": { "fc.small": 0.1, "fc.large": 0.4 },
  "eu-west": { "fc.small": 0.12, "fc.large": 0.48 }
}

const fail = (method: string, reason: Backend.BackendErrorReason, message: string, cause?: unknown) =>
  Backend.fail(MODULE, method, reason, message, cause)

/**
 * Makes the backend for one configuration section. Scoped: when the server stops, the scope
 * closes and every instance still running is terminated (a real backend would close its SDK
 * clients here; it would not terminate VMs, which outlive the server).
 */
export const makeFakeCloud: BackendFactory = (raw) =>
  Effect.gen(function*() {
    // 1. Decode the configuration; a bad section fails with `Invalid`, naming the field.
    const config = yield* Schema.decodeUnknown(FakeCloudConfig, { onExcessProperty: "error" })(raw ?? {}).pipe(
      Effect.mapError((error) =>
        new Backend.BackendError({
          module: MODULE,
          method: "make",
          reason: "Invalid",
          message: `invalid fake-cloud configuration:\n${ParseResult.TreeFormatter.formatErrorSync(error)}`,
          cause: error
        })
      )
    )
    const regions = config.regions ?? REGIONS

    // 2. Which runner build the instances run: the configured one, else the server build's.
    const entry = yield* RunnerLaunch.runnerEntry(config.runnerEntry)
    if (entry === undefined) {
      return yield* fail("make", "Invalid", "no runner build: set runner_entry, or the server build's runner (createServer({ runner: { entry } }))")
    }
    // A real backend bundles the build into one file (its sha256 tells whether a VM already
    // has it), copies it to each VM and starts it there with `node runner.mjs --host 0.0.0.0
    // --port 10999 --work-dir /var/lib/runner` over SSH, reading the same ready line. Here the
    // bundle runs on this machine (on Deno, which runs TypeScript itself, the entry as it is).
    const workRoot = fs.mkdtempSync(path.join(os.tmpdir(), "fake-cloud-"))
    const program = yield* Effect.cached(
      "Deno" in globalThis
        ? Effect.succeed(entry)
        : Effect.map(Effect.promise(() => RunnerLaunch.bundleRunner(entry, path.join(workRoot, ".runner"))), (bundle) => bundle.file)
    )

    // The "cloud": what runs, by instance id. A real backend keeps no such table; the cloud's
    // API is the source of truth, and the server stores the provisioning data we return.
    const running = new Map<string, { readonly runner: RunnerLaunch.RunnerProcess; readonly workDir: string }>()

    const stop = (instanceId: string) =>
      Effect.promise(async () => {
        const instance = running.get(instanceId)
        running.delete(instanceId)
        // SIGTERM: the runner aborts its job and exits; SIGKILL after 10 s.
        await instance?.runner.terminate(10_000)
        if (instance) fs.rmSync(instance.workDir, { recursive: true, force: true })
      })
    yield* Effect.addFinalizer(() =>
      Effect.forEach([...running.keys()], stop, { discard: true }).pipe(
        Effect.ensuring(Effect.sync(() => fs.rmSync(workRoot, { recursive: true, force: true })))
      )
    )

    return Backend.make({
      type: TYPE,

      // 3. The catalog: every (region, instance type) with its price. A real backend would call
      // the cloud's pricing and quota APIs (and cache them). `Backend.make` filters these by
      // the job's resources, spot policy and max_price, sorts them by price, and explains
      // every offer it leaves out; the server then applies `regions:` and `instance_types:`.
      catalog: () =>
        Effect.succeed(
          regions.flatMap((region) =>
            Object.values(instanceTypes).map((instance) =>
              new InstanceOffer({
                backend: TYPE,
                region,
                price: PRICES[region][instance.name as keyof typeof instanceTypes],
                instance,
                availability: "available"
              })
            )
          )
        ),

      // 4. Provision: a real backend would create a VM from an image, tagged with
      // `config.instanceId` so that a retried call finds the VM it already created; wait until
      // it has an address; start the runner build on it and read its ready line; then return
      // where it is. Here the "VM" is a runner process on loopback.
      createInstance: (offer, instanceConfig) =>
        Effect.gen(function*() {
          const instanceId = `fc-${randomUUID()}`
          const workDir = fs.mkdtempSync(path.join(workRoot, `${instanceConfig.instanceName}-`))
          const command = RunnerLaunch.RunnerCommand.forRuntime()(yield* program, RunnerLaunch.runnerArgs({ host: "127.0.0.1", port: 0, workDir }))
          // Resolves once the runner printed its ready line (`{"host":…,"port":…}`); a runner
          // that exits first, prints something else or stays silent is killed, and the error
          // carries the end of its stderr. A slow boot fails with `Timeout`, and the engine
          // tries the next offer or retries.
          const runner = yield* Effect.tryPromise({
            try: () => RunnerLaunch.startRunner(command, 60_000).ready,
            catch: (cause) =>
              new Backend.BackendError({
                module: MODULE,
                method: "createInstance",
                reason: cause instanceof RunnerLaunch.StartFailure && cause.kind === "timeout" ? "Timeout" : "Unknown",
                message: `the runner of ${instanceId} did not start: ${cause instanceof Error ? cause.message : String(cause)}`,
                cause
              })
          })
          running.set(instanceId, { runner, workDir })

          // The provisioning data: what the server stores and how it reaches the runner. A
          // real VM would have a public hostname, an SSH user and port, `dockerized: true`
          // when a host agent runs jobs in containers, and the VM id as `instanceId`.
          return new JobProvisioningData({
            backend: TYPE,
            instanceType: offer.instance,
            instanceId,
            hostname: "127.0.0.1",
            region: offer.region,
            price: offer.price,
            username: os.userInfo().username,
            dockerized: false,
            runnerPort: runner.port,
            // Anything the backend needs later to terminate the instance (a zone, a disk id).
            backendData: JSON.stringify({ workDir })
          })
        }),

      // 5. Terminate: a real backend would delete the VM by id in its region. An instance
      // that is already gone fails with `NotFound`, which `Backend.make` turns into success,
      // so termination is idempotent (the engine may call it more than once).
      terminateInstance: (instanceId) =>
        running.has(instanceId) ? stop(instanceId) : fail("terminateInstance", "NotFound", `no fake-cloud instance ${instanceId}`)
    })
  })

/** The plugin: contributes the backend type `fake-cloud`. */
export default definePlugin({
  name: "@acme/backend-fake-cloud",
  version: "0.1.0",
  core: "^0.1.0",
  description: "Fake Cloud: two instance types in two regions; instances are runners on loopback",
  backends: { [TYPE]: makeFakeCloud }
})
